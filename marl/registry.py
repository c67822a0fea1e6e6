"""Registries of environments and learners: names to factories, with suggestions for typos."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from marl.spec import EnvSpec, VecEnv


class RegistryError(ValueError):
    """An unknown environment, scenario or learner name; the message is one line."""


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _make_smac(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    from marl.envs.smac import SMACVecEnv, scenario_names

    names = scenario_names()
    if scenario is None:
        raise RegistryError(f"smac needs a map, e.g. `marl train smac 3m`; maps: {', '.join(names)}")
    if scenario not in names:
        raise RegistryError(f"unknown SMAC map {scenario!r}{_suggest(scenario, names)}; maps: {', '.join(names)}")
    return SMACVecEnv(scenario, n_envs, **options)


ENVS: dict[str, Callable[[str | None, int, dict], VecEnv]] = {"smac": _make_smac}
LEARNERS: dict[str, str] = {"mappo": "marl.agents.mappo:MAPPO", "commformer": "marl.agents.commformer:CommFormer"}


def register_env(name: str, factory: Callable[[str | None, int, dict], VecEnv]) -> None:
    """Make `marl train NAME SCENARIO` build factory(scenario, n_envs, options)."""
    ENVS[name] = factory


def make_env(name: str, scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    """Build E environments of a registered kind."""
    if name not in ENVS:
        raise RegistryError(f"unknown environment {name!r}{_suggest(name, list(ENVS))}; "
                            f"known environments: {', '.join(sorted(ENVS))}")
    return ENVS[name](scenario, n_envs, options)


def make_learner(name: str, spec: EnvSpec, cfg: dict, seed: int, device: str):
    """Build a registered learner for an environment's spec."""
    if name not in LEARNERS:
        raise RegistryError(f"unknown learner {name!r}{_suggest(name, list(LEARNERS))}; "
                            f"known learners: {', '.join(sorted(LEARNERS))}")
    module, _, cls = LEARNERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(spec, cfg, seed=seed, device=device)
