"""Run configuration: YAML defaults, per-scenario presets, dotted `key=value` overrides, validated.

A config has three sections: `train` (configs/train.yaml), `env` (configs/envs/<env>.yaml) and `algo`
(configs/algos/<algo>.yaml). A preset, configs/presets/<env>/<scenario>.yaml (after configs/presets/<env>.yaml,
the preset of every scenario of that environment, such as C-MORL's objectives for the simulator), may override keys of
`train`, of `env` and, under `algos: {<algo>: ...}`, of one learner (whose entry may carry its own
`train:` and `env:` keys, such as the batch its authors used). The user's overrides come last:
`algo.lr=3e-4 train.envs=16 env.obs_last_action=true`. Every value keeps the type of its default.
A key whose declared type is a list (algo.preference, env.objectives) takes `[0.3,0.7]` and `0.3,0.7`
alike (and one item, `0.5`, as a list of one); a comma in any other key's value stays in its string.

An environment whose defaults file says `pass_through: true` (the PettingZoo, MPE and Gymnasium
adapters), or that has no defaults file (a plug-in), also takes `env.KEY=VALUE` keys it does not list:
they reach its factory as keyword arguments, typed as YAML reads them, and the factory judges them.

Every value is then checked against its section's schema (marl/settings.py: type, domain and
description of each key; `marl config` prints them): `load` and `load_file` raise a one-line
ConfigError such as `algo.sparsity must be in (0, 1], got 2`, prefixed with the file that set the
value when it was not the command line (a preset, a defaults file, RUN_DIR/config.yaml). A plug-in
without a schema keeps the type check against its defaults. `check_built` runs the checks that need
the built environment, before the run directory is made. pydantic is imported only when validating.

A scenario written as a comma list (`marl train smac 3m,5m,8m`) names several scenarios played in one
VecEnv; `check_scenarios` (part of `validate`, so before any environment is built) wants train.envs to
be at least their number. The preset of such a run is the file named by the whole list
(configs/presets/smac/3m,5m,8m.yaml, when there is one); the members' own presets do not apply.
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import yaml

SECTIONS = ("train", "env", "algo")


class ConfigError(ValueError):
    """A bad key, value or file in the configuration; the message is one line."""


def _root():
    """The folder of the YAML files: the package marl.configs (a test may point it at a copy)."""
    return resources.files("marl.configs")


def config_path(relpath: str) -> str:
    """Where a file under configs/ lies, as an error message names it."""
    return str(_root().joinpath(relpath))


def _read_yaml(relpath: str) -> dict | None:
    node = _root().joinpath(relpath)
    if not node.is_file():
        return None
    data = yaml.safe_load(node.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"configs/{relpath} must hold a mapping")
    return data


def available_algos() -> list[str]:
    """Learners that have a defaults file under configs/algos/."""
    folder = _root().joinpath("algos")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_value(text: str) -> Any:
    """A `key=value` value as YAML reads it (numbers, true/false, null, strings); 3e-4 and 1e5 are numbers."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            number = float(value)  # YAML 1.1 wants a dot in 3.0e-4; users write 3e-4
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    return value


def parse_list(text: Any) -> Any:
    """A list value as the command line gives it: `[0.3,0.7]` (read as YAML), `0.3,0.7` or `0.3`, each item read
    as parse_value reads it. A list, or null, is returned as it is."""
    if text is None or isinstance(text, list):
        return text
    if not isinstance(text, str):  # one number (or true/false) already read: a list of one
        return [text]
    text = text.strip()
    if text.startswith("[") or text in ("null", "~", ""):
        return parse_value(text)
    return [parse_value(item.strip()) for item in text.split(",")]


def _declares_list(config: dict, section: str, name: str) -> bool:
    """Whether section.name is declared a list (its schema's type, or a plug-in's list default)."""
    if isinstance(config[section].get(name), list):
        return True
    from typing import Union, get_args, get_origin

    from marl import settings  # pydantic, which validation loads anyway

    try:
        schema = settings.schema_of(section, config)
    except ConfigError:
        return False
    field = schema.model_fields.get(name) if schema is not None else None
    if field is None:
        return False
    annotation = field.annotation
    if get_origin(annotation) in (Union, type(int | None)):
        return any(get_origin(a) is list for a in get_args(annotation))
    return get_origin(annotation) is list


def _coerce(key: str, value: Any, default: Any) -> Any:
    if default is None or value is None and default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} expects an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} expects a string, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, list):
            return value
        raise ConfigError(f"{key} expects a list, got {value!r}")
    return value


def apply(config: dict, key: str, value: Any) -> None:
    """Set `section.name` to value, checking that the key exists and the type matches its default."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"unknown config key {key!r}; keys look like section.name with section one of: "
                          f"{', '.join(SECTIONS)}")
    known = config[section]
    if name not in known and section == "env" and env_passes_through(config.get("run", {}).get("env")):
        known[name] = value
        return
    if name not in known:
        raise ConfigError(f"unknown config key {key!r}; valid keys in {section}: {', '.join(sorted(known))}")
    if value is not None and not isinstance(value, list) and _declares_list(config, section, name):
        value = parse_list(value)
    known[name] = _coerce(key, value, known[name])


def env_passes_through(env: str | None) -> bool:
    """Whether unknown env.KEY overrides go to the environment's factory (see the module docstring)."""
    if not env or "/" in env or "." in env:
        return False
    try:
        data = _read_yaml(f"envs/{env}.yaml")
    except ConfigError:
        return False
    return data is None or bool(data.get("pass_through", False))


def load(env: str, scenario: str | None, algo: str, overrides: list[str] | dict | None = None) -> dict:
    """The resolved and validated config of a run: defaults, then the scenario preset, then the overrides."""
    config, sources = resolve(env, scenario, algo, overrides)
    validate(config, sources)
    return config


def _apply_preset(config: dict, sources: dict[str, str], relpath: str | None, algo: str) -> None:
    """Apply one preset file (configs/presets/<env>.yaml or <env>/<scenario>.yaml) if it exists."""
    preset = _read_yaml(relpath) if relpath else None
    if preset:
        where = config_path(relpath)
        items = [(f"{section}.{k}", v) for section in ("train", "env") for k, v in (preset.get(section) or {}).items()]
        for k, v in ((preset.get("algos") or {}).get(algo) or {}).items():
            if k in ("train", "env"):  # a learner's own settings for the run (e.g. its authors' batch)
                items += [(f"{k}.{kk}", vv) for kk, vv in (v or {}).items()]
            else:
                items.append((f"algo.{k}", v))
        for k, v in items:
            try:
                apply(config, k, v)
            except ConfigError as err:  # a key renamed or removed since the preset was written
                raise ConfigError(f"{where}: {err}") from None
            sources[k] = where


def resolve(env: str, scenario: str | None, algo: str, overrides: list[str] | dict | None = None
             ) -> tuple[dict, dict[str, str]]:
    """The config before validation, and the file each `section.key` value came from (none for a key set on
    the command line; under a bare section name, its defaults file). `load` is this plus `validate`."""
    algos = available_algos()
    algo_defaults = _read_yaml(f"algos/{algo}.yaml") if algo in algos else None
    algo_origin = config_path(f"algos/{algo}.yaml")
    if algo_defaults is None:
        from marl.registry import learner_defaults, learner_plugins

        algo_defaults = learner_defaults(algo)  # a learner from another package (entry point marl.agents)
        algo_origin = f"the defaults of learner plug-in {algo!r}"
        if algo_defaults is None:
            known = sorted({*algos, *learner_plugins()})
            raise ConfigError(f"unknown learner {algo!r}; available: {', '.join(known)}")
    config = {"train": _read_yaml("train.yaml") or {}, "env": _read_yaml(f"envs/{env}.yaml") or {},
              "algo": algo_defaults}
    config["env"].pop("pass_through", None)
    config["run"] = {"env": env, "scenario": scenario, "algo": algo}
    origins = {"train": config_path("train.yaml"), "env": config_path(f"envs/{env}.yaml"), "algo": algo_origin}
    sources = {f"{section}.{k}": origins[section] for section in SECTIONS for k in config[section]}
    sources.update(origins)  # a key missing from a section is the fault of that section's defaults
    # the environment's preset (every scenario), then the scenario's, which may override it
    for relpath in (f"presets/{env}.yaml", f"presets/{env}/{scenario}.yaml" if scenario else None):
        _apply_preset(config, sources, relpath, algo)
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides or [])
    for k, v in items:
        apply(config, k, v)
        sources.pop(k, None)
    return config, sources


def validate(config: dict, sources: dict[str, str] | None = None, where: str | None = None) -> None:
    """Check each section against its schema; the error names the key, and the file that set it (or `where`)."""
    from marl import settings  # pydantic loads here, never for `marl envs` or `marl replay`

    for section in SECTIONS:
        found = settings.problem(section, config)
        if found:
            key, message = found
            sources = sources or {}
            missing = key.partition(".")[2] not in config[section]
            origin = where or sources.get(key) or (sources.get(section) if missing else None)
            raise ConfigError(f"{origin}: {message}" if origin else message)
    check_scenarios(config)


def scenario_list(config: dict) -> list[str]:
    """The scenarios a run plays: `3m,5m,8m` names three (one VecEnv of several, as smac builds), `3m` one,
    none when the run names no scenario."""
    scenario = config.get("run", {}).get("scenario")
    return [s.strip() for s in str(scenario).split(",")] if scenario else []


def check_scenarios(config: dict) -> None:
    """A run of several scenarios gives each at least one battle: train.envs >= their number (ConfigError)."""
    names = scenario_list(config)
    envs = config["train"].get("envs")
    if len(names) > 1 and isinstance(envs, int) and envs < len(names):
        raise ConfigError(f"train.envs={envs} is fewer than the {len(names)} scenarios {','.join(names)}: each "
                          f"scenario needs a battle of its own; accepted: train.envs >= {len(names)}")


def check_built(config: dict, spec) -> None:
    """The checks that need the built environment (its marl.spec.EnvSpec) or span sections: each schema's
    `check_spec(config, spec)`; raises a one-line ConfigError. The trainer calls it before making RUN_DIR."""
    from marl import settings

    for section in SECTIONS:
        schema = settings.schema_of(section, config)
        check = getattr(schema, "check_spec", None)
        if check is not None:
            check(config, spec)


def override_key(item: str) -> str:
    """The `section.key` a `section.key=value` override sets (ConfigError for one without `=`)."""
    return _split(item)[0]


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (for example algo.lr=0.0003)")
    key, _, text = item.partition("=")
    return key.strip(), parse_value(text.strip())


def load_file(path) -> dict:
    """A resolved config saved in a run directory."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config.yaml in the run directory ({path})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict) for s in (*SECTIONS, "run")):
        raise ConfigError(f"{path} is not a marl run config (needs sections train, env, algo, run)")
    config = complete(data)
    validate(config, where=str(path))  # a run made before a domain was declared may break it
    return config


def complete(saved: dict) -> dict:
    """A saved config (or the sections of one a checkpoint keeps) with keys added to marl's defaults since the
    run was made filled in."""
    r = saved["run"]
    try:
        defaults, _ = resolve(r.get("env"), r.get("scenario"), r.get("algo"))
    except (ConfigError, TypeError):
        return saved
    for section in SECTIONS:
        for key, value in defaults[section].items():
            if section in saved:
                saved[section].setdefault(key, value)
    return saved


def dump(config: dict, path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from marl.checkpoint import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(copy.deepcopy(config), sort_keys=False))
