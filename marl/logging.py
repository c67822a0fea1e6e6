"""Run logging: TensorBoard scalars and a console progress bar.

Tag conventions: `train/*` (episodes finished while collecting: episode_return, win_rate,
episode_length), `eval/*` (deterministic evaluation: win_rate, win_rate_low/high for the 95% interval,
episode_return, episode_length), `loss/*` (what the learner's update returns: policy_loss, value_loss,
entropy, approx_kl, clip_frac, grad_norm, ...), `perf/*` (env_steps_per_s and seconds spent in the env,
in acting and in updates). The x axis is always env steps. Environments without wins
(EnvSpec.can_win False: MPE, Gymnasium) log no win_rate tags; environments whose workers can crash
log `train/lost_episodes`, the episodes lost with a crashed worker so far.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm


class RunLogger:
    """TensorBoard writer plus a tqdm bar over env steps (steps, env-steps/s, eval win rate, ETA)."""

    def __init__(self, run_dir: Path, total_steps: int, initial_steps: int = 0, progress: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run wrote after its last checkpoint, so a resume has no duplicates
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=initial_steps or None)
        self.bar = tqdm(total=total_steps, initial=initial_steps, unit="step", unit_scale=True,
                        dynamic_ncols=True, disable=not progress, file=sys.stderr, smoothing=0.1)

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

    def progress(self, steps: int, **postfix) -> None:
        """Advance the bar by `steps` and show the postfix values."""
        self.bar.set_postfix({k: v for k, v in postfix.items() if v is not None}, refresh=False)
        self.bar.update(steps)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        """Flush and close the writer and the bar."""
        self.writer.flush()
        self.writer.close()
        self.bar.close()
