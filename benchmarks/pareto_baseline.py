"""The linear-scalarisation baseline of a Pareto front: a MAPPO population, one policy per preference.

C-MORL (`--algo cmorl`) is compared with what linear scalarisation finds at the same total budget: N
MAPPO runs, run i learning w_i . r for the i-th of N evenly spaced preferences (2 objectives:
w_i = (i / (N - 1), 1 - i / (N - 1))), each with budget / N env steps (the budget: --steps, else the
run's train.steps with its preset). Each trained policy then plays --episodes deterministic episodes, and
its mean discounted return (gamma --gamma, as C-MORL's archive records it) is a point; the front is the
union's non-dominated points, with HV (reference --ref, else the simulator's fixed references), EU over
101 weights and SP (marl/pareto.py). Prints one JSON line per policy, then one for the front.

    python benchmarks/pareto_baseline.py gym deep-sea-treasure-concave-v0 --policies 8 --seed 1 --ref 0,-25 \\
        train.torch_threads=1 train.update_threads=1 train.eval_interval=0 train.record_replays=false
    python benchmarks/pareto_baseline.py pettingzoo momaland:mo-beach-v0 --policies 6 --steps 300000 ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def preferences(n_policies: int, n_objectives: int) -> np.ndarray:
    """N evenly spaced preferences for 2 objectives: (0, 1), ..., (1, 0) (weight_grid(2, N - 1))."""
    from marl.pareto import weight_grid

    if n_objectives != 2:
        raise SystemExit(f"pareto_baseline: error: the preference spread is defined for 2 objectives; the "
                         f"environment has {n_objectives}")
    if n_policies < 2:
        raise SystemExit("pareto_baseline: error: --policies must be at least 2 (both extremes)")
    return weight_grid(2, n_policies - 1)


def front_metrics(points: np.ndarray, ref) -> dict:
    """HV (when a reference is known), EU over 101 weights, SP and the size of the points' non-dominated set."""
    from marl.pareto import expected_utility, hypervolume, non_dominated, sparsity, weight_grid

    front = points[non_dominated(points)]
    out = {"front": front.round(4).tolist(), "size": len(front),
           "eu": expected_utility(front, weight_grid(points.shape[1], 100)), "sp": sparsity(front)}
    if ref is not None:
        out["hv"] = hypervolume(front, ref, strict=False)
    return out


def reference(ref: str | None, reward_names) -> np.ndarray | None:
    """--ref as numbers, else the simulator's fixed references when every objective is one of its own."""
    if ref:
        return np.asarray([float(v) for v in ref.strip("[]").split(",")], np.float64)
    from marl.envs.smac.env import OBJECTIVES

    if all(n in OBJECTIVES for n in reward_names):
        return np.array([OBJECTIVES[n] for n in reward_names], np.float64)
    return None


def run(env: str, scenario: str | None, n_policies: int, seed: int, steps: int | None, episodes: int, gamma: float,
        ref: str | None, runs_dir: str, overrides: list[str]) -> dict:
    """Train and evaluate the population; returns each policy's point and the front's metrics."""
    import torch

    from marl import config as config_mod
    from marl.rollout import play_episodes
    from marl.trainer import Trainer, build_env

    base = config_mod.load(env, scenario, "mappo", [f"train.seed={seed}", *overrides])
    total = steps if steps is not None else int(base["train"]["steps"])
    probe_env = build_env(base, 1)  # the objectives' names and number
    names, K = probe_env.spec.reward_names, probe_env.spec.reward_dim
    probe_env.close()
    weights = preferences(n_policies, K)
    rows, points = [], []
    for i, w in enumerate(weights):
        pref = ",".join(f"{x:g}" for x in w)
        cfg = config_mod.load(env, scenario, "mappo", [f"train.seed={seed}", f"train.steps={total // n_policies}",
                                                       f"algo.preference={pref}", f"train.runs_dir={runs_dir}",
                                                       *overrides])
        start = time.perf_counter()
        trainer = Trainer(cfg, Path(runs_dir) / f"{cfg['run']['env']}-{scenario}-linear-s{seed}-w{i}",
                          show_progress=False)
        trainer.run()
        wall = time.perf_counter() - start
        learner = trainer.learner
        eval_env = build_env(cfg, 1)
        torch.set_num_threads(1)
        played = play_episodes(eval_env, lambda step, net=learner: net.act(step, deterministic=True)[0],
                               np.array([episodes]), seed=seed + 4_000_037, gamma=gamma)
        eval_env.close()
        G = np.asarray(played["discounted_return"], np.float64).reshape(-1, K).mean(0)
        points.append(G)
        row = {"policy": i, "preference": w.tolist(), "returns": dict(zip(names, G.round(4).tolist())),
               "env_steps": trainer.env_steps, "eval_env_steps": int(played["env_steps"]), "wall_s": round(wall, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"env": env, "scenario": scenario, "seed": seed, "policies": n_policies, "budget": total,
               "env_steps": sum(r["env_steps"] for r in rows), "wall_s": round(sum(r["wall_s"] for r in rows), 1),
               "gamma": gamma, "episodes": episodes, **front_metrics(np.stack(points), reference(ref, names))}
    print(json.dumps(summary), flush=True)
    return summary


def main(argv=None) -> None:
    """Parse the command line and run the baseline."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("env")
    p.add_argument("scenario", nargs="?")
    p.add_argument("--policies", type=int, required=True, help="N: the population's size (C-MORL's front size)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="total budget (default: the run's train.steps)")
    p.add_argument("--episodes", type=int, default=5, help="deterministic episodes per policy (C-MORL's eval_episodes)")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--ref", default=None, help="HV reference point, e.g. 0,-25")
    p.add_argument("--runs-dir", default="runs/pareto_baseline")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_intermixed_args(argv)
    run(args.env, args.scenario, args.policies, args.seed, args.steps, args.episodes, args.gamma, args.ref,
        args.runs_dir, args.overrides)


if __name__ == "__main__":
    main()
