"""`marl adapt RUN_DIR --scenario MAP`: fast adaptation of a learner's latent prior to a game it never trained on.

Only the prior's logits for the new game move; the network stays frozen. Each of `steps` steps plays
`episodes` fresh episodes on the new scenario (deterministic actions, as evaluation plays, each agent's
latent mode drawn from the current prior) and takes one plain gradient step (SGD, `lr`) of REINFORCE on
the logits: -mean_episodes (R - mean R) / std R * sum_agents log softmax(logits)[z] (`reinforce_loss`).
A step moves the logits as far as the episodes' evidence goes, and not at all when every episode returns
the same; Adam would move them by about its rate whatever the evidence, and carry one noisy step's
direction on through its momentum (measured in BENCHMARKS.md).

The steps start from the game's prior tempered so that no mode holds more than `start_max_prob` (0.5 by
default; 1 starts from the prior as it is). A prior that is nearly one-hot on one mode, as the prior MLP's
extrapolation to a team larger than any trained on can be (p > 0.999 on 10m and 12m after training on
3m, 5m, 8m), draws that mode for every agent of every episode: the advantages then sum to zero against
the same log-probability and the gradient is zero (to rounding), so the steps could never leave a losing mode.
Tempering keeps the prior's order of the modes and lets the episodes try the others. The win rate is measured
before and after on `eval_episodes` fresh episodes of another seed, with the same latent draws (the
evaluation generator reseeded alike), and the adapted learner is written as a new run directory
whose config names the new scenario (`marl eval` and `marl train --resume` take it as any run; the
battles of the old run are not carried over).

The learner needs the `LatentPrior` capability (MRA has it); the new environment is built with the
run's config and the scenario replaced, and the learner for its spec takes the run's checkpoint, which
works when no parameter depends on the team size.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from marl import checkpoint
from marl import config as config_mod
from marl.registry import make_learner
from marl.rollout import play_episodes
from marl.spec import EnvSpec, VecEnv
from marl.trainer import LAST, build_env, evaluate

LR = 2.0  # SGD's rate on the logits: chosen on adaptation seeds 501-502 of two 3m,5m,8m runs (BENCHMARKS.md)
START_MAX_PROB = 0.5


class AdaptError(ValueError):
    """A run or a request that `marl adapt` cannot serve; one line."""


@runtime_checkable
class LatentPrior(Protocol):
    """Optional Learner capability: a prior over latent modes per game, which `marl adapt` can move on its own."""

    def game_of(self, spec: EnvSpec) -> tuple:
        """The key of the game a single-scenario spec plays (MRA: its team sizes)."""

    def game_prior_logits(self, game: tuple) -> np.ndarray:
        """The prior's logits [K] for a game."""

    def set_game_prior_logits(self, game: tuple, logits: np.ndarray) -> None:
        """Use these logits [K] as the game's prior from now on."""

    def held_latents(self, deterministic: bool = True) -> np.ndarray:
        """The modes int[E, A] the battles' agents hold now (evaluation's, or training's)."""

    def reseed_latents(self, seed: int) -> None:
        """Restart evaluation's latent draws from a seed."""


def tempered(logits: np.ndarray, max_prob: float) -> np.ndarray:
    """The logits [K] divided by the smallest temperature T >= 1 at which no mode's probability exceeds max_prob
    (the logits themselves when none does at T = 1; all zeros, the uniform prior, when max_prob <= 1/K)."""
    logits = np.asarray(logits, np.float64)

    def top(t: float) -> float:  # the most likely mode's probability at temperature t; falls towards 1/K as t grows
        return float(torch.softmax(torch.as_tensor(logits / t), -1).max())

    if top(1.0) <= max_prob:
        return logits.astype(np.float32)
    if max_prob <= 1.0 / len(logits):
        return np.zeros(len(logits), np.float32)
    lo, hi = 1.0, 2.0
    while top(hi) > max_prob:
        lo, hi = hi, hi * 2
    for _ in range(60):  # bisection on the temperature: top(lo) > max_prob >= top(hi)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if top(mid) > max_prob else (lo, mid)
    return (logits / hi).astype(np.float32)


def reinforce_loss(logits: torch.Tensor, z: torch.Tensor, returns: np.ndarray) -> torch.Tensor:
    """REINFORCE's loss on prior logits [K]: -mean_e (R_e - mean R) / (std R + 1e-8) * sum_a log softmax(logits)[z_ea],
    for the modes int[E, A] the episodes' agents held and their returns [E]."""
    adv = torch.as_tensor((returns - returns.mean()) / (returns.std() + 1e-8), dtype=torch.float32)
    return -(adv * torch.log_softmax(logits, -1)[z].sum(-1)).mean()


def prior_learner(run_dir: Path, config: dict, scenario: str, n_envs: int) -> tuple[dict, dict, VecEnv, LatentPrior]:
    """The run's learner, restored from its last checkpoint, playing n_envs battles of `scenario` (which works when no
    parameter depends on the team size): (the config naming the scenario, the checkpoint's data, the env, the
    learner). AdaptError when the learner has no latent prior; the env is closed on any error."""
    path = run_dir / "checkpoints" / LAST
    data = checkpoint.load(path)
    new_config = copy.deepcopy(config)
    new_config["run"]["scenario"] = scenario
    env = build_env(new_config, n_envs)
    algo = config["run"]["algo"]
    try:
        learner = make_learner(algo, env.spec, config["algo"], seed=config["train"]["seed"], device="cpu")
        if not isinstance(learner, LatentPrior):
            raise AdaptError(f"{run_dir} was trained with {algo}, which has no latent prior to adapt; marl adapt "
                             "adapts runs of --algo mra")
        checkpoint.restore(learner, data["learner"], path)
    except BaseException:
        env.close()
        raise
    return new_config, data, env, learner


def adapt(run_dir, scenario: str, episodes: int = 8, steps: int = 5, lr: float = LR, seed: int = 12345,
          eval_episodes: int = 64, out=None, start_max_prob: float = START_MAX_PROB) -> dict:
    """Adapt the run's prior to `scenario`; write the adapted run to `out`; returns before, after and the logits."""
    if not 0 < start_max_prob <= 1:
        raise AdaptError(f"start_max_prob must lie in (0, 1], got {start_max_prob}")
    run_dir = Path(run_dir)
    config = config_mod.load_file(run_dir / "config.yaml")
    out = Path(out) if out is not None else run_dir.parent / f"{run_dir.name}-adapt-{scenario}"
    if out.exists():
        raise AdaptError(f"{out} already exists; give another --out DIR")
    new_config, data, env, learner = prior_learner(run_dir, config, scenario, episodes)
    try:
        game = learner.game_of(env.spec)
        logits0 = np.asarray(learner.game_prior_logits(game), np.float32)
        if len(logits0) < 2:
            raise AdaptError(f"{run_dir} has one latent mode (algo.latent_modes=1): its prior has nothing to adapt")
        eval_env = build_env(new_config, min(eval_episodes, 32))

        def measure() -> dict:
            learner.reseed_latents(seed + 1)  # the same latent noise before and after: only the prior differs
            return evaluate(eval_env, learner, eval_episodes, seed=seed + 1_000_003)

        torch.set_num_threads(1)
        before = measure()
        start = tempered(logits0, start_max_prob)
        logits = torch.tensor(start, requires_grad=True)
        opt = torch.optim.SGD([logits], lr=lr)
        history = []
        for s in range(steps):
            learner.set_game_prior_logits(game, logits.detach().numpy())
            learner.reseed_latents(seed + 17 * (s + 1))
            held: list[np.ndarray] = []

            def act(step, held=held):
                actions = learner.act(step, deterministic=True)[0]
                if not held:  # the modes every battle's first episode plays (the ones counted)
                    held.append(learner.held_latents(deterministic=True))
                return actions

            played = play_episodes(env, act, np.ones(episodes, np.int64), seed=seed + 7919 * (s + 1))
            ret = played["return"]
            if ret.ndim > 1:  # a vector reward: the run's preference scalarises it, as training did
                ret = ret @ np.asarray(config["algo"].get("preference") or np.ones(ret.shape[1]), np.float32)
            z = torch.as_tensor(held[0][played["env"]])  # [episodes, A]
            loss = reinforce_loss(logits, z, ret)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append({"step": s + 1, "mean_return": float(ret.mean()),
                            "win_rate": float(played["won"].mean())})
        learner.set_game_prior_logits(game, logits.detach().numpy())
        after = measure()
        eval_env.close()
    finally:
        env.close()

    payload = {k: v for k, v in data.items() if k not in ("format", "version")}
    payload.update(learner=learner.state_dict(), env=None, config=new_config, last_eval=after)
    out.mkdir(parents=True)
    config_mod.dump(new_config, out / "config.yaml")
    checkpoint.save(out / "checkpoints" / LAST, payload)
    result = {"run": str(run_dir), "scenario": scenario, "episodes": episodes, "steps": steps, "lr": lr,
              "seed": seed, "before": before, "after": after, "prior_before": logits0.tolist(),
              "start_max_prob": start_max_prob, "prior_start": start.tolist(),
              "prior_after": logits.detach().numpy().tolist(), "history": history, "out": str(out)}
    checkpoint.atomic_write_text(out / "adapt.json", json.dumps(result, indent=2))
    return result


def probabilities(logits) -> str:
    """A prior's mode probabilities in words: "0.17 0.17 ..."."""
    p = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1)
    return " ".join(f"{x:.2f}" for x in p.tolist())
