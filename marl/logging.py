"""Run logging: TensorBoard scalars and a console progress bar.

Tag conventions: `train/*` (episodes finished while collecting: episode_return, win_rate,
episode_length), `eval/*` (deterministic evaluation: win_rate, win_rate_low/high for the 95% interval,
episode_return, episode_length), `loss/*` (what the learner's update returns: policy_loss, value_loss,
entropy, approx_kl, clip_frac, grad_norm, ...), `perf/*` (env_steps_per_s and seconds spent in the env,
in acting and in updates). The x axis is always env steps. Environments without wins
(EnvSpec.can_win False: MPE, Gymnasium) log no win_rate tags; environments whose workers can crash
log `train/lost_episodes`, the episodes lost with a crashed worker so far. With a vector reward (K
objectives, EnvSpec.reward_names) each objective's mean return goes to `train/return/<objective>` and
`eval/return/<objective>` instead of the one `episode_return`. A run of several scenarios (a mixture,
EnvSpec.scenarios) also writes each scenario's evaluation under `eval/<scenario>/<metric>`
(`eval/3m/win_rate`, `eval/3m/episode_return`, ...; `eval/3m/return/<objective>` for a vector reward),
beside `eval/<metric>` over all its episodes (every scenario plays the same number).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm


class RunLogger:
    """TensorBoard writer plus a tqdm bar over env steps (steps, env-steps/s, eval win rate, ETA).

    A context manager: leaving the block flushes and closes both. `can_win` False (the EnvSpec's) logs
    returns where win rates would be. `reward_names` (the EnvSpec's) name the objectives of vector returns.
    """

    def __init__(self, run_dir: Path, total_steps: int, initial_steps: int = 0, *, show_progress: bool = True,
                 can_win: bool = True, reward_names: tuple[str, ...] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.can_win = can_win
        self.reward_names = tuple(reward_names) if reward_names else None
        # purge_step drops the events a killed run wrote after its last checkpoint, so a resume has no duplicates.
        # TensorBoard hides every event at or after purge_step; the checkpoint's own step was logged before the
        # checkpoint was written (its update and evaluation), so the purge starts one step after it
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=initial_steps + 1 if initial_steps else None)
        self.bar = tqdm(total=total_steps, initial=initial_steps, unit="step", unit_scale=True,
                        dynamic_ncols=True, disable=not show_progress, file=sys.stderr, smoothing=0.1)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, step: int, metrics: dict, timing: dict, steps_per_s: float, episodes: list[dict],
               lost_episodes: int | None = None, eval_env_steps: int | None = None) -> None:
        """One update's scalars: the learner's metrics, seconds by phase, and the episodes finished collecting.

        timing holds the seconds spent in the env, acting and updating ("env", "act", "update"); episodes
        are collect()'s dicts (return, length, won); lost_episodes is the Step's info["lost_episodes"];
        eval_env_steps counts the transitions a learner's own evaluations took (outside the budget).
        """
        scalars = {f"loss/{k}": v for k, v in metrics.items()}
        scalars.update({"perf/env_steps_per_s": steps_per_s, "perf/seconds_env": timing.get("env", 0.0),
                        "perf/seconds_act": timing.get("act", 0.0), "perf/seconds_update": timing["update"]})
        if episodes:
            scalars.update(self._returns("train", np.mean([e["return"] for e in episodes], axis=0)))
            scalars["train/episode_length"] = float(np.mean([e["length"] for e in episodes]))
            if self.can_win:
                scalars["train/win_rate"] = float(np.mean([e["won"] for e in episodes]))
        if lost_episodes is not None:
            scalars["train/lost_episodes"] = lost_episodes
        if eval_env_steps is not None:
            scalars["train/eval_env_steps"] = eval_env_steps
        self.scalars(scalars, step)

    def evaluation(self, result: dict, step: int) -> None:
        """An evaluate() result as eval/* scalars (all but its episode count)."""
        scalars = self._evaluation_scalars("eval", result)
        for label, part in result.get("scenarios", {}).items():  # several scenarios: eval/<scenario>/<metric>
            scalars.update(self._evaluation_scalars(f"eval/{label}", part))
        self.scalars(scalars, step)

    def _evaluation_scalars(self, prefix: str, result: dict) -> dict:
        """An evaluate() result's numbers as `<prefix>/<metric>` tags (a vector return as its objectives)."""
        scalars = {}
        for k, v in result.items():
            if k == "episode_return":
                scalars.update(self._returns(prefix, v))
            elif k not in ("episodes", "scenarios"):
                scalars[f"{prefix}/{k}"] = v
        return scalars

    def objective_names(self, k: int) -> tuple[str, ...]:
        """The names of k objectives: the EnvSpec's reward_names, else objective_0, objective_1, ..."""
        if self.reward_names and len(self.reward_names) == k:
            return self.reward_names
        return tuple(f"objective_{i}" for i in range(k))

    def _returns(self, prefix: str, mean_return) -> dict:
        """A mean return as tags: `<prefix>/episode_return` for a number, `<prefix>/return/<objective>` per
        objective for a vector."""
        mean_return = np.asarray(mean_return, float)
        if mean_return.ndim == 0:
            return {f"{prefix}/episode_return": float(mean_return)}
        names = self.objective_names(mean_return.size)
        return {f"{prefix}/return/{name}": float(v) for name, v in zip(names, mean_return, strict=True)}

    def scalars(self, values: dict, step: int) -> None:
        """Write tag -> number pairs at an env-step count."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        """Write an HWC uint8 image."""
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def histogram(self, tag: str, values, step: int) -> None:
        """Write a histogram of values."""
        self.writer.add_histogram(tag, values, step)

    def diagnostics(self, diag: dict, step: int) -> None:
        """Write a learner's diagnostics(): {"scalars": {...}, "images": {...}, "histograms": {...}}."""
        self.scalars(diag.get("scalars", {}), step)
        for tag, img in diag.get("images", {}).items():
            self.image(tag, img, step)
        for tag, values in diag.get("histograms", {}).items():
            self.histogram(tag, values, step)

    def progress(self, steps: int, steps_per_s: float, last_eval: dict | None = None) -> None:
        """Advance the bar by `steps`, showing env steps per second and the last evaluation's result."""
        postfix = {"sps": f"{steps_per_s:,.0f}"}
        if last_eval and "win_rate" in last_eval:
            postfix["eval_win"] = f"{last_eval['win_rate']:.0%}"
        elif last_eval:  # a game without wins: the mean evaluation return is what tells progress
            ret = np.asarray(last_eval["episode_return"], float)
            postfix["eval_return"] = f"{float(ret):.4g}" if ret.ndim == 0 else "/".join(f"{r:.4g}" for r in ret)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(steps)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        """Flush and close the writer and the bar."""
        self.writer.flush()
        self.writer.close()
        self.bar.close()
