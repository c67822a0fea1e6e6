"""The training loop: collect -> learner.update -> log -> evaluate -> checkpoint, resumable exactly.

Ctrl-C (or SIGTERM) finishes the update in progress, writes a checkpoint and returns (a second
Ctrl-C aborts at once). A checkpoint holds the learner (networks, optimisers, statistics, its random generator), the
environments' full state, torch's RNG state, the counters and the config, so that `--resume`
continues exactly where the run stopped: on the CPU, N updates + resume + N updates give the same
parameters as 2N updates in one go.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from marl import checkpoint
from marl import config as config_mod
from marl import replay as replay_mod
from marl.logging import RunLogger
from marl.registry import make_env, make_learner
from marl.rollout import collect
from marl.spec import FrameSource

LAST = "last.pt"


def run_dir_name(config: dict) -> str:
    """runs/<env>-<scenario>-<algo>-<timestamp>-s<seed>."""
    r = config["run"]
    parts = [r["env"], r["scenario"], r["algo"]] if r["scenario"] else [r["env"], r["algo"]]
    name = "-".join(str(p).replace(":", "_").replace("/", "_") for p in parts)
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-s{config['train']['seed']}"


def wilson(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a win rate."""
    if n == 0:
        return 0.0, 0.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(env, learner, episodes: int, seed: int) -> dict:
    """Deterministic episodes of the learner: win rate (with 95% interval), mean return and length.

    For an environment without wins (EnvSpec.can_win False) the win-rate entries are left out.
    """
    step = env.reset(seed=seed)
    # each battle slot plays a fixed number of episodes, so short episodes are not over-counted
    E = step.n_envs
    quota = np.full(E, episodes // E)
    quota[: episodes % E] += 1
    taken = np.zeros(E, int)
    results: list[tuple[float, int, bool]] = []
    while len(results) < episodes:
        actions, _ = learner.act(step, deterministic=True)
        step = env.step(actions)
        lost = step.info.get("lost")  # episodes a crashed worker took with it are played again
        for e in np.flatnonzero(step.done if lost is None else step.done & ~lost):
            if taken[e] < quota[e]:
                taken[e] += 1
                results.append((float(np.sum(step.episode_return[e])), int(step.episode_length[e]),
                                bool(step.won[e])))
    out = {"episodes": episodes, "episode_return": float(np.mean([r for r, _, _ in results])),
           "episode_length": float(np.mean([n for _, n, _ in results]))}
    if getattr(getattr(env, "spec", None), "can_win", True):  # scripted test envs may carry no spec
        wins = sum(w for _, _, w in results)
        low, high = wilson(wins, episodes)
        out.update(win_rate=wins / episodes, win_rate_low=low, win_rate_high=high)
    return out


class Trainer:
    """One training run in its run directory."""

    def __init__(self, config: dict, run_dir: Path, resume: bool = False, progress: bool = True):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        t, r = config["train"], config["run"]
        # acting runs many tiny ops (one thread is fastest); an update runs large ones while the env waits
        self._act_threads = int(t["torch_threads"]) or os.cpu_count() or 1
        self._update_threads = int(t["update_threads"]) or os.cpu_count() or 1
        torch.set_num_threads(self._act_threads)
        self.env = make_env(r["env"], r["scenario"], t["envs"], dict(config["env"]))
        self.spec = self.env.spec
        config_mod.check_built(config, self.spec)  # checks against the built env, before RUN_DIR is made
        self.learner = make_learner(r["algo"], self.spec, config["algo"], seed=t["seed"], device=t["device"])
        self.update_index, self.env_steps, self.episodes = 0, 0, 0
        self.last_eval: dict | None = None
        self._eval_env = None
        self._record_env = None
        self._stop = False
        if resume:
            self._load()
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_mod.dump(config, self.run_dir / "config.yaml")
            torch.manual_seed(t["seed"])
            self.step = self.env.reset(seed=t["seed"])

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict:
        # environments that cannot save their episodes (PettingZoo, Gymnasium) start new ones on resume
        env_state = self.env.get_state() if hasattr(self.env, "get_state") else None
        return {"learner": self.learner.state_dict(), "env": checkpoint.to_tensors(env_state),
                "torch_rng": torch.get_rng_state(),
                "counters": {"update": self.update_index, "env_steps": self.env_steps, "episodes": self.episodes},
                "last_eval": self.last_eval, "config": self.config}

    def save(self) -> Path:
        """Write checkpoints/last.pt atomically; returns its path."""
        path = self.run_dir / "checkpoints" / LAST
        checkpoint.save(path, self._payload())
        return path

    def _load(self) -> None:
        path = self.run_dir / "checkpoints" / LAST
        data = checkpoint.load(path)
        checkpoint.restore(self.learner, data["learner"], path)
        c = data["counters"]
        if data.get("env") is None or not hasattr(self.env, "set_state"):
            # new episodes on a seed of their own, so a resumed run does not replay its first ones
            self.step = self.env.reset(seed=self.config["train"]["seed"] + 7919 * c["update"])
        else:
            try:
                self.step = self.env.set_state(checkpoint.to_numpy(data["env"]))
            except ValueError as err:
                raise checkpoint.CheckpointError(f"{path} does not fit this run's environments: {err}") from None
        torch.set_rng_state(data["torch_rng"])
        self.update_index, self.env_steps, self.episodes = c["update"], c["env_steps"], c["episodes"]
        self.last_eval = data.get("last_eval")

    # ------------------------------------------------------------------ loop
    def _on_sigint(self, signum, frame):
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True

    def evaluate(self) -> dict:
        """Deterministic evaluation on a separate set of battles (training state is untouched)."""
        t, r = self.config["train"], self.config["run"]
        if self._eval_env is None:
            self._eval_env = make_env(r["env"], r["scenario"], min(t["eval_episodes"], 32), dict(self.config["env"]))
        return evaluate(self._eval_env, self.learner, t["eval_episodes"], seed=t["seed"] + 1_000_003)

    def record_replay(self) -> Path | None:
        """Record one deterministic battle into RUN_DIR/replays/; None when the env cannot record."""
        t, r = self.config["train"], self.config["run"]
        if self._record_env is None:
            # one battle of its own, so the batched evaluation is not slowed by frame copies
            self._record_env = make_env(r["env"], r["scenario"], 1, dict(self.config["env"]))
        if not isinstance(self._record_env, FrameSource):
            return None
        meta = {"env": r["env"], "learner": r["algo"], "env_steps": self.env_steps}
        # a new battle at each evaluation, the same one on a resumed run
        (rep,) = replay_mod.record(self._record_env, self.learner, 1, t["seed"] + 2_000_003 + self.update_index, meta)
        return replay_mod.save(rep, self.run_dir / "replays" / replay_mod.file_name(rep))

    def run(self, max_updates: int | None = None) -> dict:
        """Train until the step budget (or max_updates more updates, or Ctrl-C); returns the last eval."""
        t = self.config["train"]
        per_update = t["rollout"] * self.env.n_envs
        total = math.ceil(t["steps"] / per_update) * per_update  # the budget rounded up to whole updates
        logger = RunLogger(self.run_dir, total, self.env_steps, progress=self.progress)
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        previous_term = signal.signal(signal.SIGTERM, self._on_sigint)
        done_updates = 0
        try:
            while self.env_steps < t["steps"] and not self._stop:
                if max_updates is not None and done_updates >= max_updates:
                    break
                timing: dict[str, float] = {}
                start = time.perf_counter()
                rollout, self.step, episodes = collect(self.env, self.learner, self.step, t["rollout"], timing)
                t_up = time.perf_counter()
                if hasattr(self.learner, "progress"):
                    self.learner.progress = self.env_steps / t["steps"]  # for schedules such as post-stable
                torch.set_num_threads(self._update_threads)
                metrics = self.learner.update(rollout)
                torch.set_num_threads(self._act_threads)
                timing["update"] = time.perf_counter() - t_up
                elapsed = time.perf_counter() - start
                self.update_index += 1
                done_updates += 1
                self.env_steps += per_update
                self.episodes += len(episodes)
                sps = per_update / elapsed
                if self.update_index % t["log_interval"] == 0 or self.update_index == 1:
                    scalars = {f"loss/{k}": v for k, v in metrics.items()}
                    scalars.update({"perf/env_steps_per_s": sps, "perf/seconds_env": timing.get("env", 0.0),
                                    "perf/seconds_act": timing.get("act", 0.0),
                                    "perf/seconds_update": timing["update"]})
                    if episodes:
                        scalars.update({
                            "train/episode_return": float(np.mean([e["return"] for e in episodes])),
                            "train/episode_length": float(np.mean([e["length"] for e in episodes]))})
                        if self.spec.can_win:
                            scalars["train/win_rate"] = float(np.mean([e["won"] for e in episodes]))
                    if "lost_episodes" in self.step.info:
                        scalars["train/lost_episodes"] = self.step.info["lost_episodes"]
                    logger.scalars(scalars, self.env_steps)
                    logger.diagnostics(self.learner.diagnostics(), self.env_steps)
                if t["eval_interval"] and self.update_index % t["eval_interval"] == 0:
                    self.last_eval = self.evaluate()
                    logger.scalars({f"eval/{k}": v for k, v in self.last_eval.items() if k != "episodes"},
                                   self.env_steps)
                    if t["record_replays"]:
                        path = self.record_replay()
                        if path is not None:
                            logger.message(f"replay: {path} (watch it: marl replay {path})")
                if t["checkpoint_interval"] and self.update_index % t["checkpoint_interval"] == 0:
                    self.save()
                if not self.last_eval:
                    logger.progress(per_update, sps=f"{sps:,.0f}")
                elif "win_rate" in self.last_eval:
                    logger.progress(per_update, sps=f"{sps:,.0f}", eval_win=f"{self.last_eval['win_rate']:.0%}")
                else:  # a game without wins: the mean evaluation return is what tells progress
                    logger.progress(per_update, sps=f"{sps:,.0f}",
                                    eval_return=f"{self.last_eval['episode_return']:.4g}")
            path = self.save()
            if self._stop:
                logger.message(f"interrupted: checkpoint saved at {path}; continue with: marl train --resume "
                               f"{self.run_dir}")
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
            logger.close()
        return {"update": self.update_index, "env_steps": self.env_steps, "eval": self.last_eval,
                "interrupted": self._stop}
