"""Settings with declared domains (marl/settings.py): YAML and schemas agree, bad values get one exact line,
random values drawn from the domains behave, plug-in schemas are honoured, and checks against the built env."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from marl import config, registry
from marl import settings as marl_settings
from marl.cli import main
from marl.config import ConfigError
from marl.settings import PassThroughSettings, Settings, setting
from marl.spec import EnvSpec

CONFIGS = Path(str(resources.files("marl.configs")))


def _yaml(relpath: str) -> dict:
    return yaml.safe_load((CONFIGS / relpath).read_text()) or {}


def _spec(n_agents: int, reward_dim: int = 1) -> EnvSpec:
    return EnvSpec(n_agents=n_agents, obs_dim=4, state_dim=4, n_actions=3, episode_limit=10,
                   agent_names=tuple(f"a{i}" for i in range(n_agents)), reward_dim=reward_dim,
                   reward_names=tuple(f"r{i}" for i in range(reward_dim)), name="toy")


# ------------------------------------------------------------------------------------ YAML files and schemas
def _schema_files() -> list[tuple[str, type[Settings]]]:
    files = [("train.yaml", marl_settings.TrainSettings)]
    files += [(f"envs/{name}.yaml", schema) for name, schema in marl_settings.ENV_SCHEMAS.items()]
    files += [(f"algos/{name}.yaml", schema) for name, schema in marl_settings.LEARNER_SCHEMAS.items()]
    return files


def test_every_defaults_file_has_a_schema_and_every_schema_a_file():
    on_disk = {"train.yaml", *(f"envs/{p.name}" for p in (CONFIGS / "envs").glob("*.yaml")),
               *(f"algos/{p.name}" for p in (CONFIGS / "algos").glob("*.yaml"))}
    assert {path for path, _ in _schema_files()} == on_disk


@pytest.mark.parametrize("relpath, schema", _schema_files(), ids=lambda x: x if isinstance(x, str) else "")
def test_yaml_keys_are_the_schema_keys_and_the_defaults_validate(relpath, schema):
    data = _yaml(relpath)
    passes = data.pop("pass_through", False)
    assert sorted(data) == sorted(schema.model_fields), relpath  # same keys; `marl config` keeps the file's order
    # only the pass-through adapters take keys they do not list
    assert (schema.model_config.get("extra") == "allow") == bool(passes), relpath
    schema.model_validate(data)  # strict: the defaults have the declared types and lie in their domains
    for name, field in schema.model_fields.items():
        assert field.is_required(), f"{relpath}: {name} has a default in its schema; defaults live in the YAML"
        assert field.description and "\n" not in field.description, f"{relpath}: {name} needs a one-line description"


def _presets() -> list[Path]:
    return sorted((CONFIGS / "presets").glob("*/*.yaml"))


@pytest.mark.parametrize("path", _presets(), ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.parametrize("algo", ["mappo", "commformer", "cmorl", "stepmix", "mra"])
def test_every_preset_validates_with_every_learner(path, algo):
    assert config.available_algos() == ["cmorl", "commformer", "mappo", "mra", "stepmix"]
    c = config.load(path.parent.name, path.stem, algo)  # load validates every section
    config.validate(c)
    assert c["run"] == {"env": path.parent.name, "scenario": path.stem, "algo": algo}


# ------------------------------------------------------------------------------ the bad values, via the CLI
@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `marl ...` in process in an empty folder: (exit status, stderr); asserts nothing was created."""
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str]:
        before = sorted(tmp_path.rglob("*"))
        status = main(list(argv))
        err = capsys.readouterr().err
        assert sorted(tmp_path.rglob("*")) == before  # no run directory, no file
        return status, err

    return run


@pytest.mark.parametrize("argv, message", [
    (["train", "smac", "3s5z", "--steps", "-5"], "train.steps must be a positive integer, got -5"),
    (["train", "smac", "3m", "algo.sparsity=2"], "algo.sparsity must be in (0, 1], got 2"),
    (["train", "smac", "3m", "algo.sparsity=-1"], "algo.sparsity must be in (0, 1], got -1"),
    (["train", "smac", "3m", "algo.gate_cost=-3"], "algo.gate_cost must be >= 0, got -3"),
    (["train", "smac", "3m", "--algo", "mappo", "algo.clip=0"], "algo.clip must be in (0, 1], got 0"),
    (["train", "smac", "3m", "--algo", "mappo", "algo.actor_gain=0"], "algo.actor_gain must be > 0, got 0"),
    (["train", "smac", "3m", "train.rollout=0"], "train.rollout must be a positive integer, got 0"),
    (["train", "smac", "3m", "train.log_interval=0"], "train.log_interval must be a positive integer, got 0"),
    (["train", "smac", "3m", "--envs", "0"], "train.envs must be a positive integer, got 0"),
    (["train", "smac", "3m", "algo.graph=ring"], "algo.graph must be one of learned, full, random, got 'ring'"),
    (["train", "smac", "3m", "algo.lr=inf"], "algo.lr must be > 0, got inf"),
    (["train", "smac", "3m", "env.step_mul=4"], "env.step_mul must be 8, got 4"),
    (["train", "smac", "3m", "env.difficulty=9"], "env.difficulty must be '7', got '9'"),
    (["train", "smac", "3m", "env.seed=-2"], "env.seed must be an integer in [0, 4294967295] or null, got -2"),
    (["train", "smac", "3m", "env.obs_own_pos=1"], "env.obs_own_pos must be true, false or null, got 1"),
    (["train", "smac", "3m", "train.device=tpu"], "train.device must be cpu, cuda or cuda:N (cuda needs a GPU), "
                                                  "got 'tpu'"),
    (["train", "mpe", "simple_spread", "env.worker_timeout=0"], "env.worker_timeout must be > 0, got 0"),
    (["train", "mpe", "simple_spread", "env.team_reward=max"], "env.team_reward must be one of mean, sum, got 'max'"),
])
def test_a_bad_value_is_one_exact_line_and_nothing_is_made(cli, argv, message):
    assert cli(*argv) == (2, f"marl: error: {message}\n")


def test_cuda_without_cuda_says_so_and_what_is_accepted(cli, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli("train", "smac", "3m", "train.device=cuda") == (
        2, f"marl: error: train.device is cuda but CUDA is not available on this machine (torch {torch.__version__}, "
           f"no usable GPU); accepted here: cpu\n")


def test_cuda_with_cuda_loads_and_a_missing_device_number_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert config.load("smac", "3m", "mappo", ["train.device=cuda:1"])["train"]["device"] == "cuda:1"
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", ["train.device=cuda:2"])
    assert str(err.value) == ("train.device is cuda:2 but this machine has 2 CUDA device(s); accepted: cpu, cuda, "
                              "cuda:0 to cuda:1")


def test_cpu_never_asks_torch_about_cuda(monkeypatch):
    import torch

    def ask():
        raise AssertionError("torch.cuda.is_available() called for a cpu run")

    monkeypatch.setattr(torch.cuda, "is_available", ask)
    config.load("smac", "3m", "mappo")


def test_runs_dir_that_is_a_file(cli, tmp_path):
    (tmp_path / "taken").write_text("a file\n")
    assert cli("train", "smac", "3m", "train.runs_dir=taken") == (
        2, "marl: error: train.runs_dir must be a folder path (not an existing file), got 'taken'\n")


@pytest.fixture
def config_copy(tmp_path, monkeypatch):
    """A copy of configs/ that marl.config reads instead of the package's, for a test to edit."""
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    monkeypatch.setattr(config, "_root", lambda: root)
    return root


def test_a_preset_key_that_no_longer_exists_names_the_preset(config_copy, tmp_path, monkeypatch, capsys):
    preset = config_copy / "presets" / "smac" / "3m.yaml"
    preset.write_text(preset.read_text() + "  commformer_old:\n    x: 1\ntrain:\n  rollouts: 100\n")
    run = tmp_path / "cwd"
    run.mkdir()
    monkeypatch.chdir(run)
    assert main(["train", "smac", "3m"]) == 2
    err = capsys.readouterr().err
    assert err == (f"marl: error: {preset}: unknown config key 'train.rollouts'; valid keys in train: "
                   f"{', '.join(sorted(_yaml('train.yaml')))}\n")
    assert not list(run.iterdir())


def test_a_bad_default_names_the_defaults_file(config_copy):
    path = config_copy / "algos" / "mappo.yaml"
    path.write_text(path.read_text().replace("hidden: 64", "hidden: 0"))
    with pytest.raises(ConfigError) as err:
        config.load("smac", "8m", "mappo")
    assert str(err.value) == f"{path}: algo.hidden must be a positive integer, got 0"


@pytest.fixture
def old_run(tmp_path):
    """RUN_DIR/config.yaml of a run made before gate_cost had a domain, with gate_cost -3."""
    run = tmp_path / "old-run"
    run.mkdir()
    c = config.load("smac", "3m", "commformer")
    c["algo"]["gate_cost"] = -3.0
    config.dump(c, run / "config.yaml")
    return run


@pytest.mark.parametrize("argv", [["train", "--resume", "old-run"], ["eval", "old-run"]])
def test_an_old_run_breaking_a_new_domain_names_its_config(old_run, cli, argv):
    assert cli(*argv) == (2, f"marl: error: {Path('old-run') / 'config.yaml'}: algo.gate_cost must be >= 0, got -3\n")
    assert sorted(p.name for p in old_run.iterdir()) == ["config.yaml"]


# ------------------------------------------------------------------------------------ checks against the built env
def test_commformer_needs_a_team_of_two(cli):
    status, err = cli("train", "gym", "CartPole-v1", "train.steps=200", "train.envs=1")
    assert (status, err) == (2, "marl: error: commformer needs a team of at least 2 agents (each hears k = max(int(N "
                                "* algo.sparsity), 1) of the N - 1 others), but gym:CartPole-v1 has 1; train it with "
                                "--algo mappo\n")


@pytest.mark.parametrize("n_agents", [2, 3, 27])
@pytest.mark.parametrize("sparsity", [0.01, 0.4, 0.99, 1.0])
def test_every_sparsity_fits_a_team_of_two_or_more(n_agents, sparsity):
    from marl.agents.commformer.graph import CommGraph

    c = config.load("smac", "3m", "commformer", {"algo.sparsity": sparsity})
    config.check_built(c, _spec(n_agents))
    assert 1 <= CommGraph(n_agents, sparsity).k <= n_agents - 1  # the graph the check lets through is well formed
    with pytest.raises(ConfigError, match=r"^commformer needs a team of at least 2 agents"):
        config.check_built(c, _spec(1))


def test_mappo_trains_a_team_of_one():
    config.check_built(config.load("gym", "CartPole-v1", "mappo"), _spec(1))


# ------------------------------------------------------------------------------------ plug-ins
class PrefSettings(Settings):
    """A multi-objective plug-in learner's settings (a test stand-in)."""

    lr: float = setting("learning rate", gt=0)
    preference: list[float] = setting("weight of each objective")

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """The preference has one weight per objective."""
        prefs = config["algo"]["preference"]
        if len(prefs) != spec.reward_dim:
            raise ConfigError(f"algo.preference has {len(prefs)} weights but the environment has reward_dim "
                              f"{spec.reward_dim}")


class PrefLearner:
    """A plug-in learner that declares a schema beside its defaults."""

    defaults = {"lr": 0.1, "preference": [0.5, 0.5]}
    schema = PrefSettings


class PrefLearnerByPath(PrefLearner):
    """The same, with the schema named by its path."""

    schema = "test_settings:PrefSettings"


class MissingKeyLearner:
    """Defaults without a key its schema requires."""

    defaults = {"lr": 0.1}
    schema = PrefSettings


class BareLearner:
    """A plug-in learner without a schema: today's type check against its defaults."""

    defaults = {"lr": 0.1}


class GridSettings(PassThroughSettings):
    """An environment plug-in's settings: its own keys; others go to its factory."""

    size: int = setting("cells per side", ge=2)


def grid_factory(scenario, n_envs, options):
    """An environment factory that is never built in these tests."""
    raise AssertionError("not built")


grid_factory.schema = "test_settings:GridSettings"


@pytest.fixture
def plugins(monkeypatch):
    """Learner and environment plug-ins as entry points would declare them."""
    from importlib.metadata import EntryPoint

    eps = [EntryPoint(name=n, value=f"test_settings:{v}", group="marl.agents") for n, v in [
        ("pref", "PrefLearner"), ("prefpath", "PrefLearnerByPath"), ("missing", "MissingKeyLearner"),
        ("bare", "BareLearner")]]
    eps.append(EntryPoint(name="grid", value="test_settings:grid_factory", group="marl.envs"))
    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in eps if e.group == group])
    monkeypatch.setattr(registry, "_discovered", {})
    monkeypatch.setattr(registry, "PLUGIN_ERRORS", {})


@pytest.mark.parametrize("algo", ["pref", "prefpath"])
def test_a_plugin_learner_schema_is_honoured(plugins, algo):
    c = config.load("smac", "3m", algo, ["algo.lr=0.5"])
    assert c["algo"] == {"lr": 0.5, "preference": [0.5, 0.5]}
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", algo, ["algo.lr=0"])
    assert str(err.value) == "algo.lr must be > 0, got 0"
    config.check_built(c, _spec(3, reward_dim=2))
    with pytest.raises(ConfigError) as err:
        config.check_built(c, _spec(3, reward_dim=3))
    assert str(err.value) == "algo.preference has 2 weights but the environment has reward_dim 3"


def test_a_plugin_learner_whose_defaults_miss_a_schema_key(plugins):
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "missing")
    assert str(err.value) == ("the defaults of learner plug-in 'missing': algo.preference is missing; it must be a "
                              "list[float] (weight of each objective)")


def test_a_plugin_learner_without_schema_keeps_the_type_check(plugins):
    assert config.load("smac", "3m", "bare", ["algo.lr=-1"])["algo"]["lr"] == -1.0  # no domain declared
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "bare", ["algo.lr=abc"])
    assert str(err.value) == "algo.lr expects a number, got 'abc'"


def test_an_env_plugin_schema_checks_the_keys_a_run_sets(plugins):
    assert config.load("grid", None, "mappo")["env"] == {}  # its defaults live in its factory
    assert config.load("grid", None, "mappo", ["env.size=5", "env.walls=3"])["env"] == {"size": 5, "walls": 3}
    with pytest.raises(ConfigError) as err:
        config.load("grid", None, "mappo", ["env.size=1"])
    assert str(err.value) == "env.size must be an integer >= 2, got 1"


def test_an_env_plugin_schema_that_cannot_be_imported(plugins, monkeypatch):
    monkeypatch.setattr(grid_factory, "schema", "no_such_module:Settings")
    with pytest.raises(ConfigError) as err:
        config.load("grid", None, "mappo", ["env.size=5"])
    assert str(err.value) == ("environment plug-in 'grid' declares schema 'no_such_module:Settings', which cannot be "
                              "imported: ModuleNotFoundError: No module named 'no_such_module'")


# ------------------------------------------------------------------------------------ hypothesis over the domains
def _cases() -> list[tuple[str, str, str, str, object]]:
    """(env, scenario, algo, key, field) for every declared key of every built-in schema."""
    runs = [("smac", "3m", "commformer"), ("mpe", "simple_spread", "mappo"), ("sc2", "3m", "mappo")]
    out = []
    for env, scenario, algo in runs:
        c = config.load(env, scenario, algo)
        for section in ("train", "env", "algo"):
            schema = marl_settings.schema_of(section, c)
            for name, field in schema.model_fields.items():
                if (section, name) == ("train", "device") and env != "smac":
                    continue
                out.append((env, scenario, algo, f"{section}.{name}", field))
    return list({(e, k): (e, s, a, k, f) for e, s, a, k, f in out}.values())


CASES = _cases()
# words a user types that stay words: "nan", "inf", "yes", "null" and the like read as numbers, booleans or none
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda w: config.parse_value(w) == w)
BIG = 2**40


def _parts(field) -> tuple[object, bool, dict]:
    annotation, optional = field.annotation, False
    if type(None) in get_args(annotation):
        [annotation] = [a for a in get_args(annotation) if a is not type(None)]
        optional = True
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("gt", "ge", "lt", "le") if getattr(m, k, None)
              is not None}
    return annotation, optional, bounds


def _inside(key: str, field) -> st.SearchStrategy:
    base, optional, b = _parts(field)
    if key == "train.device":
        strategy = st.just("cpu")
    elif key == "train.runs_dir":
        strategy = WORDS.map(lambda w: f"runs_{w}")
    elif key == "train.ray_address":  # HOST:PORT or empty
        strategy = st.one_of(st.just(""), st.tuples(WORDS, st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}"))
    elif get_origin(base) is Literal:
        strategy = st.sampled_from(get_args(base))
    elif base is bool:
        strategy = st.booleans()
    elif base is int:
        strategy = st.integers(b.get("ge", b["gt"] + 1 if "gt" in b else -BIG),
                               b.get("le", b["lt"] - 1 if "lt" in b else BIG))
    elif base is float:
        strategy = st.floats(b.get("gt", b.get("ge", -1e12)), b.get("lt", b.get("le", 1e12)),
                             exclude_min="gt" in b, exclude_max="lt" in b, allow_nan=False, allow_infinity=False)
    elif get_origin(base) is list:  # the items' own domain: numbers >= 0, or choices
        (item,) = get_args(base)
        choices = get_origin(item) is Literal  # each choice at most once (env.objectives)
        items = st.sampled_from(get_args(item)) if choices else st.floats(0, 1e6, allow_nan=False,
                                                                          allow_infinity=False)
        strategy = st.lists(items, min_size=1, max_size=4, unique=choices)
    else:
        assert base is str, key
        strategy = WORDS
    return st.one_of(st.none(), strategy) if optional else strategy


def _outside(key: str, field) -> st.SearchStrategy:
    base, optional, b = _parts(field)
    wrong_type = st.lists(st.integers(0, 9), min_size=1, max_size=3)  # a list is no scalar setting's type
    options = [wrong_type]
    if get_origin(base) is list:  # an item outside the items' domain: a word where numbers go, a negative one
        (item,) = get_args(base)
        if get_origin(item) is Literal:
            options = [st.lists(WORDS.filter(lambda w: w not in get_args(item)), min_size=1, max_size=3)]
        else:
            options = [st.lists(WORDS, min_size=1, max_size=3),
                       st.lists(st.floats(-1e6, -1e-3), min_size=1, max_size=3).map(lambda v: [*v, 1.0])]
    elif key == "train.device":
        options.append(WORDS.filter(lambda w: not re.fullmatch(r"cpu|cuda(:\d+)?", w)))
    elif get_origin(base) is Literal:
        choices = get_args(base)
        options.append((WORDS if isinstance(choices[0], str) else st.integers(-BIG, BIG)).filter(
            lambda v: v not in choices))
    elif base is bool:
        options.append(st.integers(-BIG, BIG))
    elif base in (int, float):
        options.append(WORDS)
        if base is float:
            options.append(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        low = b.get("gt", b.get("ge"))
        high = b.get("lt", b.get("le"))
        if base is int and low is not None:
            options.append(st.integers(-BIG, low - 1 if "ge" in b else low))
        if base is int and high is not None:
            options.append(st.integers(high + 1 if "le" in b else high, BIG))
        if base is float and low is not None:
            options.append(st.floats(-1e12, low, exclude_max="ge" in b))
        if base is float and high is not None:
            options.append(st.floats(high, 1e12, exclude_min="le" in b))
    return st.one_of(options)


def _text(value) -> str:
    """The value as a user types it after `key=` (marl.config.parse_value reads it back)."""
    if isinstance(value, float):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_out_of_domain_value_is_one_line_and_no_run(data, tmp_path, monkeypatch):
    env, scenario, algo, key, field = data.draw(st.sampled_from(CASES))
    value = data.draw(_outside(key, field))
    assert config.parse_value(_text(value)) == value or value != value  # nan is not equal to itself
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["train", env, scenario, "--algo", algo, f"{key}={_text(value)}"])
    line = err.getvalue()
    assert status == 2 and line.startswith(f"marl: error: {key} ") and line.count("\n") == 1, line
    assert not list(tmp_path.iterdir())


@hsettings(max_examples=150, deadline=None)
@given(data=st.data())
def test_an_in_domain_value_loads(data):
    env, scenario, algo, key, field = data.draw(st.sampled_from(CASES))
    value = data.draw(_inside(key, field))
    section, name = key.split(".")
    loaded = config.load(env, scenario, algo, {key: value})[section][name]
    assert loaded == value and (type(loaded) is type(value) or isinstance(value, int) and type(loaded) is float)


# ------------------------------------------------------------------------------------ marl config
def test_marl_config_prints_every_key_with_type_domain_value_and_description(capsys):
    assert main(["config", "commformer", "--env", "smac", "3s5z"]) == 0
    out = capsys.readouterr().out
    c = config.load("smac", "3s5z", "commformer")
    lines = out.splitlines()
    assert lines[0] == "Settings of commformer on smac 3s5z (set one with SECTION.KEY=VALUE on marl train)"
    for section in ("train", "env", "algo"):
        for key in c[section]:
            assert len([ln for ln in lines if ln.startswith(f"{section}.{key} ")]) == 1, key
    rows = {ln.split()[0]: re.split(r"\s{2,}", ln) for ln in lines if re.match(r"(train|env|algo)\.", ln)}
    assert rows["train.envs"] == ["train.envs", "int", "32 *", "a positive integer",
                                  "parallel environments stepped together"]  # the preset's value, starred
    assert rows["algo.sparsity"][:4] == ["algo.sparsity", "float", "0.4", "in (0, 1]"]
    assert rows["env.seed"][:4] == ["env.seed", "int | null", "null", "an integer in [0, 4294967295] or null"]
    assert rows["env.difficulty"][:4] == ["env.difficulty", "str", "'7'", "'7'"]
    assert lines[-1] == f"* set by the preset {config.config_path('presets/smac/3s5z.yaml')}"


def test_marl_config_of_an_adapter_says_other_keys_pass_through(capsys):
    assert main(["config", "mappo", "--env", "mpe", "simple_spread"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^env\.worker_timeout +float +60\.0 +> 0 +seconds a worker may take", out, re.M)
    assert "\n(other env.KEY=VALUE keys go to the mpe environment's factory as keyword arguments)\n" in out
    assert "* set by" not in out


def test_marl_config_shows_overrides_after_the_learner_or_the_scenario(capsys):
    assert main(["config", "mappo", "algo.lr=0.001", "--env", "smac", "3m", "train.envs=4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: re.split(r"\s{2,}", ln) for ln in lines if re.match(r"(train|env|algo)\.", ln)}
    assert rows["algo.lr"][:3] == ["algo.lr", "float", "0.001 +"]
    assert rows["train.envs"][:3] == ["train.envs", "int", "4 +"]  # over the preset's value
    assert rows["algo.ppo_epochs"][:3] == ["algo.ppo_epochs", "int", "15 *"]  # 3m's preset
    assert lines[-2:] == [f"* set by the preset {config.config_path('presets/smac/3m.yaml')}",
                          "+ set on the command line"]
    assert main(["config", "algo.gate_cost=0.5"]) == 0  # an override alone: CommFormer, the default learner
    out = capsys.readouterr().out
    assert out.startswith("Settings of commformer on smac (")
    assert re.search(r"^algo\.gate_cost +float +0\.5 \+ ", out, re.M)
    assert "* set by" not in out


def test_marl_config_refuses_a_map_the_simulator_does_not_play(capsys):
    assert main(["config", "--env", "smac", "3s5zz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marl: error: unknown SMAC map '3s5zz' (did you mean 3s5z, 1c3s5z, 3s_vs_5z?); maps: ")
    assert err.count("\n") == 1
    assert main(["config", "--env", "smac", "9m_vs_10m"]) == 0  # a generated marine battle is a map too
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["config", "nope"], "unknown learner 'nope'; available: cmorl, commformer, mappo, mra, stepmix"),
    (["config", "commformer", "--env", "smac", "3s5z", "algo.clip=-1"], "algo.clip must be in (0, 1], got -1"),
    (["config", "--env", "smac", "3m,,5m"], "empty map name in '3m,,5m'; several maps are written 3m,5m,8m"),
    (["config", "--env", "smak"], "unknown environment 'smak' (did you mean smac?); known environments: comm, gym, "
                                  "mpe, pettingzoo, sc2, smac"),
    (["config", "--env", "smac", "3m", "extra"], "--env takes an environment and at most one scenario, got smac 3m "
                                                 "extra"),
])
def test_marl_config_errors(capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"marl: error: {message}\n"


# ------------------------------------------------------------------------------------ lazy import
def test_envs_and_replay_never_import_pydantic(tmp_path):
    code = ("import sys; from marl.cli import main; import marl.replay, marl.viewer, marl.config, marl.registry; "
            "main(['envs', 'gym']); main(['replay', 'missing.npz']); "
            "print('pydantic' in sys.modules, 'marl.settings' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False False", proc.stdout + proc.stderr
