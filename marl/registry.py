"""Registries of environments and learners: names to factories, plug-ins found by entry point, typo hints.

An environment kind is an `EnvPlugin`: a factory `factory(scenario, n_envs, options) -> VecEnv`, a
one-line description and its scenarios (names, or a function that lists them). Built-in kinds are
registered here; other packages add theirs through the entry-point group `marl.envs`:

    [project.entry-points."marl.envs"]
    relay = "marl_plugin_example:plugin"

The entry point may load an `EnvPlugin`, or a bare factory callable, which may carry `description`,
`scenarios`, `schema` and `check` attributes (`check(scenario)` raises for a scenario the factory would refuse,
without building it; `marl config` calls it). `options` holds the run's `env.KEY=VALUE` settings. Learners are
found the same way through `marl.agents`: the entry point loads a class `cls(spec, cfg, seed=, device=)`
with a `defaults` dict of its settings (the `algo` section of the config) and, optionally, a `schema`
beside it. A plug-in that fails to load is reported in one line on stderr and left out; it never stops
`marl envs` or a run of another.

A `schema` declares each setting's type, domain and description (`marl config` prints them): a
subclass of `marl.settings.Settings` (pydantic), or a "module:Class" path to one, so that the module
`marl envs` imports need not import pydantic. A learner's schema names every key of its `defaults`
(fields without defaults: the values stay in `defaults`); an environment's schema checks the
`env.KEY=VALUE` keys a run sets (its defaults live in its factory; `extra="allow"` lets unlisted keys
through as factory kwargs, as `marl.settings.PassThroughSettings` does). A schema's classmethod
`check_spec(config, spec)` runs once the environment is built, before the run directory is made, for
checks that need the EnvSpec or span sections. Without a schema a plug-in's values are only checked
against the types of its defaults.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from marl.spec import EnvSpec, VecEnv

EnvFactory = Callable[[str | None, int, dict], VecEnv]


def error_line(err: BaseException) -> str:
    """An error as one line for a message that must not break: its type and its message's first line."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


class RegistryError(ValueError):
    """An unknown environment, scenario or learner name; the message is one line."""


@dataclass(frozen=True)
class EnvPlugin:
    """An environment kind for `marl train NAME SCENARIO`: its factory, a description and its scenarios."""

    factory: EnvFactory
    description: str = ""
    scenarios: Sequence[str] | Callable[[], Sequence[str]] = ()
    schema: Any = None  # the env section's settings: a marl.settings.Settings subclass or a "module:Class" path
    check: Callable[[str], Any] | None = None  # raises RegistryError for a scenario the factory would refuse,
    # without building it (`marl config` calls it; None: the factory alone knows)

    def scenario_names(self) -> list[str]:
        """The scenarios this kind offers (an empty list when it takes any, such as a factory path)."""
        names = self.scenarios() if callable(self.scenarios) else self.scenarios
        return [str(n) for n in names]


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _smac_scenarios(scenario: str | None) -> list[str]:
    """The maps `marl train smac SCENARIO` names (`3m,5m,8m`: three); RegistryError for a missing or unknown one."""
    from marl.envs.smac import is_scenario, scenario_names
    from marl.envs.smac.maps import MARINE_PATTERN

    names = scenario_names()
    if scenario is None:
        raise RegistryError(f"smac needs a map, e.g. `marl train smac 3m` (or several: 3m,5m,8m); maps: "
                            f"{', '.join(names)}; marine battles {MARINE_PATTERN}")
    listed = [s.strip() for s in scenario.split(",")]
    for name in listed:
        if not name:
            raise RegistryError(f"empty map name in {scenario!r}; several maps are written 3m,5m,8m")
        if not is_scenario(name):
            raise RegistryError(f"unknown SMAC map {name!r}{_suggest(name, names)}; maps: {', '.join(names)}; "
                                f"marine battles {MARINE_PATTERN}")
    return listed


def _make_smac(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    """One SMAC map (SMACVecEnv), or several named with commas (SMACMixture: `3m,5m,8m`)."""
    from marl.envs.smac import SMACMixture, SMACVecEnv

    listed = _smac_scenarios(scenario)
    if "," in scenario:
        return SMACMixture(listed, n_envs, **options)
    return SMACVecEnv(scenario, n_envs, **options)


def _smac_maps() -> list[str]:
    from marl.envs.smac import map_names

    return map_names()


def _make_pettingzoo(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    from marl.envs.pettingzoo import make_pettingzoo

    return make_pettingzoo(scenario, n_envs, options)


def _make_mpe(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    from marl.envs.pettingzoo import make_mpe

    return make_mpe(scenario, n_envs, options)


def _mpe_games() -> list[str]:
    from marl.envs.pettingzoo import mpe_games

    return list(mpe_games())


def _make_gym(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    from marl.envs.gym import make_gym

    return make_gym(scenario, n_envs, options)


def _make_sc2(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    from marl.envs.sc2 import make_sc2

    return make_sc2(scenario, n_envs, options)


def _make_comm(scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    from marl.envs.comm import make_comm

    return make_comm(scenario, n_envs, options)


BUILTIN_ENVS: dict[str, EnvPlugin] = {
    "smac": EnvPlugin(_make_smac, "embedded SMAC-compatible simulator (no StarCraft II needed): marl train smac MAP, "
                      "or several maps in one run: marl train smac 3m,5m,8m", _smac_maps, check=_smac_scenarios),
    "pettingzoo": EnvPlugin(_make_pettingzoo, "any PettingZoo ParallelEnv: marl train pettingzoo "
                            "module:factory (e.g. mpe2:simple_spread_v3) env.KEY=VALUE ..."),
    "mpe": EnvPlugin(_make_mpe, "mpe2's particle games: marl train mpe simple_spread env.N=3",
                     _mpe_games),
    "gym": EnvPlugin(_make_gym, "Gymnasium / MO-Gymnasium single-agent envs as one-agent teams: "
                     "marl train gym CartPole-v1"),
    "sc2": EnvPlugin(_make_sc2, "real StarCraft II through smacv2 or smac (optional install): marl train sc2 3s5z"),
    "comm": EnvPlugin(_make_comm, "probe game whose right communication graph is known (name your informant's "
                      "symbol): marl train comm informants", ("informants", "intermittent")),
}
ENVS: dict[str, EnvPlugin] = dict(BUILTIN_ENVS)
LEARNERS: dict[str, str] = {"mappo": "marl.agents.mappo:MAPPO", "commformer": "marl.agents.commformer:CommFormer",
                             "cmorl": "marl.agents.cmorl:CMORL",
                             "stepmix": "marl.agents.stepmix.learner:StepMix",
                             "mra": "marl.agents.mra:MRA"}

_discovered: dict[str, dict[str, Any]] = {}
PLUGIN_ERRORS: dict[str, str] = {}  # "group:name" -> the one-line error it failed to load with


def _warn(text: str) -> None:
    print(f"marl: warning: {text}", file=sys.stderr)


def _entry_points(group: str) -> dict[str, Any]:
    """The loaded objects of an entry-point group, once per process; failures are warned about and skipped."""
    if group in _discovered:
        return _discovered[group]
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        try:
            found[ep.name] = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break marl
            message = error_line(err)
            PLUGIN_ERRORS[f"{group}:{ep.name}"] = message
            _warn(f"{group} plug-in {ep.name!r} ({ep.value}) failed to load and is skipped: {message}")
    _discovered[group] = found
    return found


def as_env_plugin(name: str, obj: Any) -> EnvPlugin:
    """An EnvPlugin from what an entry point loaded: an EnvPlugin, or a factory with optional attributes."""
    if isinstance(obj, EnvPlugin):
        return obj
    if callable(obj):
        return EnvPlugin(obj, str(getattr(obj, "description", "") or ""), getattr(obj, "scenarios", ()) or (),
                         getattr(obj, "schema", None), getattr(obj, "check", None))
    raise RegistryError(f"marl.envs plug-in {name!r} is a {type(obj).__name__}, not an EnvPlugin or a factory")


def env_plugins() -> dict[str, EnvPlugin]:
    """Every environment kind: built-in and registered ones, then those plug-ins declare (built-ins win)."""
    out = dict(ENVS)
    for name, obj in _entry_points("marl.envs").items():
        if name in out:
            if f"marl.envs:{name}" not in PLUGIN_ERRORS:
                PLUGIN_ERRORS[f"marl.envs:{name}"] = "its name is taken by a built-in environment"
                _warn(f"marl.envs plug-in {name!r} has the name of a built-in environment and is skipped")
            continue
        try:
            out[name] = as_env_plugin(name, obj)
        except RegistryError as err:
            if f"marl.envs:{name}" not in PLUGIN_ERRORS:
                PLUGIN_ERRORS[f"marl.envs:{name}"] = str(err)
                _warn(f"{err}; skipped")
    return out


def register_env(name: str, factory: EnvFactory | EnvPlugin, description: str = "",
                 scenarios: Sequence[str] | Callable[[], Sequence[str]] = ()) -> None:
    """Make `marl train NAME SCENARIO` build factory(scenario, n_envs, options)."""
    ENVS[name] = factory if isinstance(factory, EnvPlugin) else EnvPlugin(factory, description, scenarios)


def make_env(name: str, scenario: str | None, n_envs: int, options: dict) -> VecEnv:
    """Build E environments of a registered or discovered kind."""
    plugin = ENVS.get(name)
    if plugin is None:
        known = env_plugins()
        if name not in known:
            broken = PLUGIN_ERRORS.get(f"marl.envs:{name}")
            if broken and name not in known:
                raise RegistryError(f"environment plug-in {name!r} failed to load: {broken}")
            raise RegistryError(f"unknown environment {name!r}{_suggest(name, list(known))}; "
                                f"known environments: {', '.join(sorted(known))}")
        plugin = known[name]
    return plugin.factory(scenario, n_envs, options)


def learner_plugins() -> dict[str, Any]:
    """Learner classes that packages declare in the entry-point group marl.agents (built-ins win)."""
    return {k: v for k, v in _entry_points("marl.agents").items() if k not in LEARNERS}


def learner_defaults(name: str) -> dict | None:
    """A plug-in learner's settings (its class's `defaults` dict), or None when there is no such plug-in."""
    cls = learner_plugins().get(name)
    if cls is None:
        return None
    defaults = getattr(cls, "defaults", None)
    return dict(defaults) if isinstance(defaults, dict) else {}


def make_learner(name: str, spec: EnvSpec, cfg: dict, seed: int, device: str):
    """Build a registered or discovered learner for an environment's spec."""
    if name in LEARNERS:
        module, _, cls = LEARNERS[name].partition(":")
        return getattr(importlib.import_module(module), cls)(spec, cfg, seed=seed, device=device)
    plugins = learner_plugins()
    if name not in plugins:
        known = sorted({*LEARNERS, *plugins})
        raise RegistryError(f"unknown learner {name!r}{_suggest(name, known)}; known learners: {', '.join(known)}")
    return plugins[name](spec, cfg, seed=seed, device=device)
