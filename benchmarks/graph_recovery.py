"""CommFormer's graph on the probe game `comm`, where the right graph is known: learned, random and full.

Each variant trains with benchmarks/ablation.py's run_variant (the probe's scenario instead of a SMAC
map), one run per seed, then the table gives per run: the fraction of planted edges the deployed graph
holds (graph/planted_recall, logged at each evaluation), the last evaluation's return as a fraction of
the optimum, the expected return of the graph's recall (f + (1 - f) / m) and the messages each agent
heard per step over the last tenth of training.

    python benchmarks/graph_recovery.py --steps 1000000 --seeds 1 2 3 algo.sparsity=0.125
    python benchmarks/graph_recovery.py --variants learned_authors --steps 300000 algo.sparsity=0.125
    python benchmarks/graph_recovery.py --table runs/graph_recovery/informants-learned-s1
    python benchmarks/graph_recovery.py --eval-gates runs/graph_recovery/intermittent-learned-s1

`--eval-gates` plays a run's last checkpoint deterministically (as the trainer's evaluation does) and
prints how often the gates open there (P(open) > 0.5) beside the sampled open rate of training
(graph/gate_open_rate over the last tenth) and the messages each agent heard per step.

`learned` is CommFormer with the probe's preset (configs/presets/comm/informants.yaml); `learned_authors`
is the same with the authors' graph settings; `random` and `full` are the fixed-graph ablations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ablation import run_variant  # noqa: E402

AUTHORS = ["algo.graph_lr=0.0001", "algo.graph_noise=batch", "algo.graph_objective=ppo",
           "algo.graph_estimator=straight_through", "algo.graph_tau_end=1.0"]
VARIANTS = {
    "learned": ("commformer", []),
    "learned_authors": ("commformer", AUTHORS),
    "random": ("commformer", ["algo.graph=random"]),
    "full": ("commformer", ["algo.graph=full"]),
}


def summarise(run_dir: Path, at: int | None = None) -> dict:
    """The last evaluation up to `at` env steps: recall, return / optimum, its graph's expected return / optimum,
    and messages per agent per step over the last tenth."""
    from learning import scalars

    from marl import config as config_mod
    from marl.envs.comm import optimal_return, step_value

    cfg = config_mod.load_file(run_dir / "config.yaml")
    env, scenario = cfg["env"], cfg["run"]["scenario"]
    limit = float("inf") if at is None else at
    rets = [(s, v) for s, _, v in scalars(run_dir, "eval/episode_return") if s <= limit]
    recall = [v for s, _, v in scalars(run_dir, "graph/planted_recall") if s <= limit]
    msgs = [(s, v) for s, _, v in scalars(run_dir, "graph/messages_per_agent_step") if s <= limit]
    tail = [v for s, v in msgs if s >= 0.9 * msgs[-1][0]] if msgs else []
    best = optimal_return(env["episode_limit"])
    f = recall[-1] if recall else None
    return {"steps": rets[-1][0] if rets else None, "recall": f,
            "return_fraction": rets[-1][1] / best if rets else None,
            "graph_fraction": None if f is None else step_value(f, env["symbols"], scenario, env["need_prob"]),
            "first_95": next((s for s, v in rets if v / best >= 0.95), None),
            "messages_per_agent_step": sum(tail) / len(tail) if tail else None}


class NeedSplit:
    """A learner's actions unchanged, with its gates' openings counted apart for the living agent-steps whose
    observation says the message is needed (the intermittent game's flag) and those where it is not.

    The overall open rate and the messages come from evaluate() itself (CommFormer's EvalCounters); this split
    is the probe game's own."""

    def __init__(self, learner, need: slice | None):
        self.learner = learner
        if hasattr(learner, "eval_counters"):  # evaluate() counts through the wrapper what it counts of the learner
            self.eval_counters = learner.eval_counters
        self.need = need  # where the observation holds the needed flag (None: no split)
        self.has_gates = False
        self.by_need = {True: [0, 0.0], False: [0, 0.0]}  # needed flag -> [agent-steps, open gates]

    def act(self, step, deterministic: bool = False):
        """The wrapped learner's act; its extras' gates (1 open) summed over living agents by the needed flag."""
        actions, extras = self.learner.act(step, deterministic)
        if "gates" in extras and self.need is not None:
            self.has_gates = True
            alive = np.asarray(step.alive, bool)
            gates = np.asarray(extras["gates"])
            needed = np.asarray(step.obs)[..., self.need][..., 0] > 0.5
            for flag in (True, False):
                rows = alive & (needed == flag)
                self.by_need[flag][0] += int(rows.sum())
                self.by_need[flag][1] += float(gates[rows].sum())
        return actions, extras

    def rates(self) -> dict:
        """The gate open rate where the message is needed and where not (None without gates or the flag)."""
        return {f"gate_open_rate_{name}": (self.by_need[flag][1] / max(self.by_need[flag][0], 1)
                                           if self.has_gates else None)
                for flag, name in ((True, "needed"), (False, "unneeded"))}


def eval_gates(run_dir: Path, episodes: int = 32) -> dict:
    """A run's last checkpoint played deterministically on the trainer's evaluation seed: return / optimum,
    gate open rate and messages per agent-step there, and the sampled training open rate over the last tenth."""
    from learning import scalars

    from marl.cli import load_for_eval
    from marl.envs.comm import optimal_return
    from marl.spec import BudgetAware
    from marl.trainer import evaluate

    cfg, data, env, learner, _ = load_for_eval(run_dir, episodes)
    if isinstance(learner, BudgetAware) and "budget_fraction" not in data["learner"]:
        # checkpoints from before the learner kept its budget fraction: the schedules (gates_from) where they stood
        learner.set_budget_fraction(data["counters"]["env_steps"] / cfg["train"]["steps"])
    split = NeedSplit(learner, env.spec.block_slices().get("need"))
    res = evaluate(env, split, episodes, seed=cfg["train"]["seed"] + 1_000_003)  # the trainer's evaluation seed
    train = [(s, v) for s, _, v in scalars(run_dir, "graph/gate_open_rate")]
    tail = [v for s, v in train if s >= 0.9 * train[-1][0]] if train else []
    return {"steps": data["counters"]["env_steps"],
            "return_fraction": res["episode_return"] / optimal_return(cfg["env"]["episode_limit"]),
            "eval_gate_open_rate": res.get("gate_open_rate"),
            **{f"eval_{k}": v for k, v in split.rates().items()},
            "eval_messages_per_agent_step": res["messages_per_agent_step"],
            "train_gate_open_rate": sum(tail) / len(tail) if tail else None}


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv=None) -> None:
    """Train the variants for each seed and print a markdown table (and JSON lines)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="informants", help="informants or intermittent")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--variants", nargs="+", default=["learned", "random", "full"], choices=list(VARIANTS))
    p.add_argument("--runs-dir", default="runs/graph_recovery")
    p.add_argument("--table", nargs="+", metavar="RUN_DIR", help="only print the table of these run directories")
    p.add_argument("--at", type=int, help="with --table: read every run up to this many env steps")
    p.add_argument("--eval-gates", nargs="+", metavar="RUN_DIR",
                   help="only play these runs' last checkpoints and print their gate open rates")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every variant")
    args = p.parse_args(argv)
    if args.eval_gates:
        print("| run | env steps | return / optimum | gate open rate at evaluation | ... when needed | ... when not "
              "needed | sampled open rate in training (last tenth) | messages / agent / step at evaluation |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for d in args.eval_gates:
            r = eval_gates(Path(d))
            print(f"| {Path(d).name} | {r['steps']:,} | {r['return_fraction']:.3f} | "
                  f"{_fmt(r['eval_gate_open_rate'], '.3f')} | {_fmt(r['eval_gate_open_rate_needed'], '.3f')} | "
                  f"{_fmt(r['eval_gate_open_rate_unneeded'], '.3f')} | {_fmt(r['train_gate_open_rate'], '.3f')} | "
                  f"{r['eval_messages_per_agent_step']:.2f} |", flush=True)
        return
    if args.table:
        rows = [{"run": Path(d).name, **summarise(Path(d), args.at)} for d in args.table]
    else:
        rows = []
        for name in args.variants:
            for seed in args.seeds:
                run_dir = run_variant(name, args.scenario, args.steps, seed, Path(args.runs_dir), args.overrides,
                                      env="comm", variants=VARIANTS, show_progress=False)
                rows.append({"run": run_dir.name, **summarise(run_dir)})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| run | env steps | planted recall | return / optimum | recall's expected return / optimum | "
          "first eval >= 95% at | messages / agent / step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {_fmt(r['steps'], ',')} | {_fmt(r['recall'], '.3f')} | "
              f"{_fmt(r['return_fraction'], '.3f')} | {_fmt(r['graph_fraction'], '.3f')} | "
              f"{_fmt(r['first_95'], ',')} | {_fmt(r['messages_per_agent_step'], '.2f')} |")


if __name__ == "__main__":
    main()
