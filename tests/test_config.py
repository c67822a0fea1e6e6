"""Run configuration (marl.config): defaults, dotted overrides with type checks, presets, saved configs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from marl import config
from marl.config import ConfigError


def _yaml(relpath: str) -> dict:
    return yaml.safe_load(resources.files("marl.configs").joinpath(relpath).read_text())


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text, f"message is not one line: {text!r}"
    return text


# ------------------------------------------------------------------------------------ defaults
def test_defaults_are_the_yaml_files():
    assert not resources.files("marl.configs").joinpath("presets/smac/8m.yaml").is_file()
    c = config.load("smac", "8m", "mappo")  # a map without a preset
    assert set(c) == {"train", "env", "algo", "run"}
    assert c["train"] == _yaml("train.yaml")
    assert c["env"] == _yaml("envs/smac.yaml")
    assert c["algo"] == _yaml("algos/mappo.yaml")
    assert c["run"] == {"env": "smac", "scenario": "8m", "algo": "mappo"}
    assert isinstance(c["algo"]["lr"], float) and isinstance(c["train"]["envs"], int)
    assert isinstance(c["algo"]["value_norm"], bool)


def test_available_algos_lists_mappo():
    assert "mappo" in config.available_algos()


def test_each_load_is_a_fresh_copy():
    a = config.load("smac", "3m", "mappo")
    a["algo"]["lr"] = 123.0
    a["train"]["envs"] = 99
    b = config.load("smac", "3m", "mappo")
    assert b["algo"]["lr"] == _yaml("algos/mappo.yaml")["lr"]
    assert b["train"]["envs"] == _yaml("train.yaml")["envs"]


# ------------------------------------------------------------------------------------ overrides
@pytest.mark.parametrize("item, key, expected, typ", [
    ("train.envs=4", ("train", "envs"), 4, int),
    ("train.steps=1000.0", ("train", "steps"), 1000, int),  # a whole float is an integer
    ("algo.lr=1", ("algo", "lr"), 1.0, float),  # int -> float
    ("algo.lr=0.001", ("algo", "lr"), 0.001, float),
    ("algo.gamma = 0.9", ("algo", "gamma"), 0.9, float),  # spaces around '=' are allowed
    ("env.obs_last_action=true", ("env", "obs_last_action"), True, bool),
    ("env.obs_last_action=True", ("env", "obs_last_action"), True, bool),
    ("env.obs_last_action=yes", ("env", "obs_last_action"), True, bool),
    ("env.obs_last_action=on", ("env", "obs_last_action"), True, bool),
    ("algo.value_norm=false", ("algo", "value_norm"), False, bool),
    ("algo.value_norm=FALSE", ("algo", "value_norm"), False, bool),
    ("env.difficulty=7", ("env", "difficulty"), "7", str),  # an int where a string is expected
    ("train.device=cpu", ("train", "device"), "cpu", str),
    ("env.seed=5", ("env", "seed"), 5, int),  # a null default takes any value
    ("train.runs_dir=/tmp/x y", ("train", "runs_dir"), "/tmp/x y", str),
])
def test_override_applies_with_type_coercion(item, key, expected, typ):
    c = config.load("smac", "3m", "mappo", [item])
    value = c[key[0]][key[1]]
    assert value == expected and type(value) is typ


@pytest.mark.parametrize("item, expected", [("algo.lr=3e-4", 3e-4), ("algo.adam_eps=1e-5", 1e-5),
                                            ("train.steps=1e5", 100000)])
def test_override_in_scientific_notation(item, expected):
    key = item.partition("=")[0].split(".")
    c = config.load("smac", "3m", "mappo", [item])
    assert c[key[0]][key[1]] == expected


def test_override_as_dict_and_last_one_wins():
    c = config.load("smac", "3m", "mappo", {"algo.lr": 0.1, "train.envs": 3})
    assert c["algo"]["lr"] == 0.1 and c["train"]["envs"] == 3
    c = config.load("smac", "3m", "mappo", ["train.envs=3", "train.envs=5"])
    assert c["train"]["envs"] == 5


def test_apply_edits_a_config_in_place():
    c = config.load("smac", "3m", "mappo")
    config.apply(c, "algo.hidden", 32)
    assert c["algo"]["hidden"] == 32


# ------------------------------------------------------------------------------------ error messages
def test_unknown_section():
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", ["foo.bar=1"])
    assert _one_line(err) == ("unknown config key 'foo.bar'; keys look like section.name with section one of: "
                              "train, env, algo")


@pytest.mark.parametrize("item, key", [("lr=1", "lr"), ("run.env=x", "run.env"), ("algo.=1", "algo.")])
def test_key_without_a_valid_section(item, key):
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", [item])
    assert _one_line(err).startswith(f"unknown config key {key!r}; keys look like section.name")


@pytest.mark.parametrize("section", ["train", "env", "algo"])
def test_unknown_key_lists_the_valid_ones(section):
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", [f"{section}.nope=1"])
    valid = sorted(config.load("smac", "3m", "mappo")[section])
    assert _one_line(err) == f"unknown config key '{section}.nope'; valid keys in {section}: {', '.join(valid)}"


def test_unknown_key_algo_lrr():
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", ["algo.lrr=1"])
    msg = _one_line(err)
    assert msg.startswith("unknown config key 'algo.lrr'; valid keys in algo: ")
    assert "critic_lr" in msg and " lr," in msg


@pytest.mark.parametrize("item, message", [
    ("env.obs_last_action=1", "env.obs_last_action expects true or false, got 1"),
    ("env.obs_last_action=maybe", "env.obs_last_action expects true or false, got 'maybe'"),
    ("train.envs=2.5", "train.envs expects an integer, got 2.5"),
    ("train.envs=true", "train.envs expects an integer, got True"),
    ("train.envs=abc", "train.envs expects an integer, got 'abc'"),
    ("train.envs=null", "train.envs expects an integer, got None"),
    ("algo.lr=abc", "algo.lr expects a number, got 'abc'"),
    ("algo.lr=false", "algo.lr expects a number, got False"),
    ("algo.lr=[1, 2]", "algo.lr expects a number, got [1, 2]"),
    ("train.device=[1]", "train.device expects a string, got [1]"),
    ("train.device=true", "train.device expects a string, got True"),
])
def test_wrong_type_names_the_expected_type(item, message):
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", [item])
    assert _one_line(err) == message


def test_override_that_is_not_key_value():
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo", ["algo.lr"])
    assert _one_line(err) == "override 'algo.lr' is not key=value (for example algo.lr=0.0003)"


def test_unknown_learner():
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "nope")
    assert _one_line(err) == f"unknown learner 'nope'; available: {', '.join(config.available_algos())}"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)  # the CLI turns ValueErrors into one-line errors


# ------------------------------------------------------------------------------------ presets
PRESETS = Path(str(resources.files("marl.configs").joinpath("presets")))


@pytest.mark.skipif(not PRESETS.is_dir(), reason="no configs/presets/ yet")
def test_every_shipped_preset_loads_and_applies():
    paths = sorted(PRESETS.glob("*/*.yaml"))
    assert paths
    for path in paths:
        env, scenario = path.parent.name, path.stem
        preset = yaml.safe_load(path.read_text()) or {}
        assert set(preset) <= {"train", "env", "algos"}, path
        for algo in config.available_algos():
            c = config.load(env, scenario, algo)
            for section in ("train", "env"):
                for k, v in (preset.get(section) or {}).items():
                    assert c[section][k] == v, (path, section, k)
            for k, v in ((preset.get("algos") or {}).get(algo) or {}).items():
                if k in ("train", "env"):  # a learner's own run settings
                    for kk, vv in (v or {}).items():
                        assert c[k][kk] == vv, (path, algo, k, kk)
                else:
                    assert c["algo"][k] == v, (path, algo, k)
            # the user's override beats the preset
            c = config.load(env, scenario, algo, ["train.steps=77"])
            assert c["train"]["steps"] == 77


def _fake_preset(monkeypatch, preset: dict) -> None:
    real = config._read_yaml

    def read(relpath):
        if relpath == "presets/smac/3m.yaml":
            return preset
        return real(relpath)

    monkeypatch.setattr(config, "_read_yaml", read)


def test_preset_mechanism(monkeypatch):
    _fake_preset(monkeypatch, {"train": {"envs": 3, "rollout": 100}, "env": {"obs_last_action": True},
                               "algos": {"mappo": {"lr": 1, "hidden": 32}, "other": {"nope": 1}}})
    c = config.load("smac", "3m", "mappo")
    assert c["train"]["envs"] == 3 and c["train"]["rollout"] == 100
    assert c["env"]["obs_last_action"] is True
    assert c["algo"]["lr"] == 1.0 and type(c["algo"]["lr"]) is float and c["algo"]["hidden"] == 32
    # the user's overrides come after the preset
    c = config.load("smac", "3m", "mappo", ["train.envs=5", "algo.hidden=16"])
    assert c["train"]["envs"] == 5 and c["algo"]["hidden"] == 16 and c["train"]["rollout"] == 100
    # another scenario gets no preset
    c = config.load("smac", "8m", "mappo")
    assert c["train"]["envs"] == _yaml("train.yaml")["envs"]


def test_preset_keys_are_checked(monkeypatch):
    _fake_preset(monkeypatch, {"train": {"nope": 3}})
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "mappo")
    # the message names the preset file, the one to edit
    assert _one_line(err).startswith(f"{config.config_path('presets/smac/3m.yaml')}: unknown config key 'train.nope'")


def test_a_preset_value_of_the_wrong_type_names_the_preset(monkeypatch):
    _fake_preset(monkeypatch, {"algos": {"commformer": {"gate_cost": "high"}}})
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "commformer")
    preset = config.config_path("presets/smac/3m.yaml")
    assert _one_line(err) == f"{preset}: algo.gate_cost expects a number, got 'high'"


@pytest.mark.parametrize("preset, message, good", [
    ({"train": {"rollout": 0}}, "train.rollout must be a positive integer, got 0", 8),
    ({"algos": {"commformer": {"sparsity": 2}}}, "algo.sparsity must be in (0, 1], got 2", 0.5),
    ({"algos": {"commformer": {"train": {"envs": -1}}}}, "train.envs must be a positive integer, got -1", 2),
    ({"env": {"reward_scale_rate": 0}}, "env.reward_scale_rate must be a positive integer, got 0", 10),
])
def test_a_preset_value_out_of_its_domain_names_the_preset(monkeypatch, preset, message, good):
    _fake_preset(monkeypatch, preset)
    with pytest.raises(ConfigError) as err:
        config.load("smac", "3m", "commformer")
    assert _one_line(err) == f"{config.config_path('presets/smac/3m.yaml')}: {message}"
    # the user's override of that key comes after the preset, and then nothing is wrong
    key = message.split(" ")[0]
    section, name = key.split(".")
    assert config.load("smac", "3m", "commformer", {key: good})[section][name] == good
    # a bad value the user gives is the user's: no file is named
    with pytest.raises(ConfigError) as err:
        config.load("smac", "8m", "commformer", {key: preset_value(preset)})
    assert _one_line(err) == message


def preset_value(preset: dict):
    """The one leaf value of a one-key preset."""
    node = preset
    while isinstance(node, dict):
        [node] = node.values()
    return node


# ------------------------------------------------------------------------------------ saved configs
def test_dump_then_load_file_round_trip(tmp_path):
    c = config.load("smac", "3m", "mappo", ["algo.lr=0.001", "train.envs=3", "env.obs_last_action=true"])
    path = tmp_path / "config.yaml"
    config.dump(c, path)
    assert config.load_file(path) == c
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temporary file left
    config.dump(c, path)  # overwriting works too
    assert config.load_file(path) == c


def test_load_file_missing(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load_file(tmp_path / "config.yaml")
    assert _one_line(err) == f"no config.yaml in the run directory ({tmp_path / 'config.yaml'})"


@pytest.mark.parametrize("text", ["a: [1, 2", "a:\n\tb: 1\n", "\x00\x01"])
def test_load_file_invalid_yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load_file(path)
    assert _one_line(err).startswith(f"{path} is not valid YAML: ")


@pytest.mark.parametrize("text", ["", "hello", "- 1\n- 2\n", "train: {}\nenv: {}\nalgo: {}\n"])
def test_load_file_not_a_run_config(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load_file(path)
    assert _one_line(err) == f"{path} is not a marl run config (needs sections train, env, algo, run)"


@pytest.mark.parametrize("data", [bytes(range(256)) * 4, "caf\xe9: 1".encode("latin-1")])
def test_load_file_binary_garbage(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        config.load_file(path)
    assert str(path) in _one_line(err)
