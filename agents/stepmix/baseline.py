"""The deep StepMix learner's safe baseline: an earlier marl run or a user's scripted policy, and V_b's interval.

`algo.baseline` is either a run directory (any earlier marl run on the same environment: its
`config.yaml` names the learner, whose networks are built for this run's EnvSpec and filled from its
`checkpoints/last.pt`, loaded with marl.checkpoint's weights-only, sealed reader) or `module:factory`,
a scripted policy: `factory(spec)` returns an object with `act(step, deterministic)` giving int[E, A]
actions (or a Learner's (actions, extras) pair). A run baseline's config and weights travel in the
StepMix checkpoint (`Baseline.state_dict`), so a resumed run or `marl eval` never reads the directory
again; a scripted baseline's code stays the user's module, imported again on resume.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np

from marl.spec import EnvSpec, Step, check_actions

RUN = "run"
SCRIPTED = "scripted"


class BaselineError(ValueError):
    """A baseline that cannot be loaded or does not fit the environment; the message is one line."""


def kind_of(source: str) -> str:
    """"run" for a directory, "scripted" for module:factory; BaselineError for anything else."""
    if not source:
        raise BaselineError("stepmix needs a baseline: algo.baseline=RUN_DIR (an earlier marl run on this "
                            "environment) or algo.baseline=module:factory (a scripted policy)")
    if Path(source).is_dir():
        return RUN
    module, sep, attr = source.partition(":")
    if sep and module and attr and "/" not in module:
        return SCRIPTED
    raise BaselineError(f"algo.baseline {source!r} is neither a run directory (holding config.yaml and "
                        f"checkpoints/last.pt) nor module:factory (a scripted policy)")


class Baseline:
    """A frozen policy the learner mixes with: acts by sampling, as it plays in training and V_b's episodes."""

    def __init__(self, source: str, spec: EnvSpec, seed: int, device: str, state: dict | None = None):
        self.source, self.spec, self.device = source, spec, device
        self.kind = state["kind"] if state is not None else kind_of(source)
        self.config: dict | None = None
        if self.kind == SCRIPTED:
            self.policy = self._scripted(source, spec)
            self.shadow = self._scripted(source, spec)  # a second instance for V_b's episodes on other battles
            return
        if state is None:
            state = self._read_run(Path(source))
        from marl import config as config_mod
        from marl.registry import make_learner

        # a checkpoint written before a key was added to the baseline learner's defaults lacks it
        self.config = config_mod.complete(state["config"])

        r = self.config["run"]
        self.policy = make_learner(r["algo"], spec, self.config["algo"], seed=seed, device=device)
        try:
            self.policy.load_state_dict(state["learner"])
        except (RuntimeError, KeyError, ValueError, TypeError):
            raise BaselineError(
                f"algo.baseline {source} ({r['env']} {r.get('scenario') or ''}, {r['algo']}) does not fit this "
                f"environment ({spec.name or 'this run'}: {spec.n_agents} agents, obs_dim {spec.obs_dim}, state_dim "
                f"{spec.state_dim}, {spec.n_actions} actions); give a run of the same environment") from None
        if getattr(self.policy, "recurrent", False):
            raise BaselineError(f"algo.baseline {source} is a recurrent {r['algo']} run (algo.recurrent=true); stepmix "
                                f"takes a feed-forward baseline, whose actions depend on the step alone")
        self.shadow = self.policy  # a run's feed-forward learner keeps no state between steps

    @staticmethod
    def _scripted(source: str, spec: EnvSpec):
        module, _, attr = source.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise BaselineError(f"algo.baseline {source!r}: cannot import {attr!r} from {module!r} "
                                f"({type(err).__name__}); give module:factory with factory(spec) -> policy") from None
        policy = factory(spec)
        if not callable(getattr(policy, "act", None)):
            raise BaselineError(f"algo.baseline {source!r}: factory(spec) returned {type(policy).__name__!r}, which "
                                f"has no act(step, deterministic)")
        return policy

    @staticmethod
    def _read_run(run_dir: Path) -> dict:
        """The run's config and its last checkpoint's learner state (weights only, sealed)."""
        from marl import checkpoint
        from marl import config as config_mod
        from marl.trainer import LAST

        path = run_dir / "checkpoints" / LAST
        try:
            config = config_mod.load_file(run_dir / "config.yaml")
            data = checkpoint.load(path)
        except (ValueError, OSError) as err:
            raise BaselineError(f"algo.baseline {run_dir}: {err}") from None
        if config["run"]["algo"] == "stepmix":
            raise BaselineError(f"algo.baseline {run_dir} is a stepmix run; give the run of a learner without a "
                                f"baseline of its own (mappo, commformer)")
        return {"config": {"run": dict(config["run"]), "algo": dict(config["algo"])}, "learner": data["learner"]}

    def act(self, step: Step, shadow: bool = False) -> np.ndarray:
        """Sampled actions int[E, A] (on the training battles, or with shadow on V_b's evaluation battles)."""
        out = (self.shadow if shadow else self.policy).act(step, deterministic=False)
        actions = out[0] if isinstance(out, tuple) else out
        try:
            return check_actions(actions, step.n_envs, self.spec.n_agents)
        except ValueError as err:
            raise BaselineError(f"algo.baseline {self.source!r} gave wrong actions: {err}") from None

    def state_dict(self) -> dict:
        """What a checkpoint needs to rebuild it without its source: the kind, a run's config and weights."""
        if self.kind == SCRIPTED:
            return {"kind": SCRIPTED}
        return {"kind": RUN, "config": self.config, "learner": self.policy.state_dict()}


class ReturnStats:
    """Running count, mean and sum of squares of episode returns, and a normal 95% interval on their mean."""

    def __init__(self):
        self.n, self.total, self.total_sq = 0, 0.0, 0.0

    def add(self, returns) -> None:
        """Fold in episode returns."""
        r = np.asarray(returns, np.float64).ravel()
        self.n += r.size
        self.total += float(r.sum())
        self.total_sq += float((r * r).sum())

    @property
    def mean(self) -> float:
        """The mean return (0 before any)."""
        return self.total / self.n if self.n else 0.0

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """(low, high): mean -/+ z * sample std / sqrt(n); infinite without two episodes."""
        if self.n < 2:
            return -math.inf, math.inf
        var = max(self.total_sq - self.n * self.mean ** 2, 0.0) / (self.n - 1)
        half = z * math.sqrt(var / self.n)
        return self.mean - half, self.mean + half

    def state_dict(self) -> dict:
        """The three sums."""
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        self.n, self.total, self.total_sq = int(state["n"]), float(state["total"]), float(state["total_sq"])
