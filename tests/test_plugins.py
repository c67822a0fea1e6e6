"""A real plug-in package: pip-install examples/marl-plugin-example, see it in `marl envs`, train it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import MARL, TINY, run_dirs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "marl-plugin-example"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.fixture(scope="module")
def example_installed():
    """The example plug-in installed (editable, no dependencies, no build isolation) for this module's tests."""
    proc = subprocess.run([*PIP, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    yield
    subprocess.run([*PIP, "uninstall", "-q", "-y", "marl-plugin-example"], capture_output=True, timeout=300)


def test_marl_envs_lists_the_installed_plugin(example_installed, tmp_path):
    proc = subprocess.run([*MARL, "envs"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "\n  meet        Meet: agents walk a line to meet (example plug-in)\n" in proc.stdout
    assert "\nmeet scenarios\n  pair, trio, wide\n" in proc.stdout
    assert "SMAC maps (smac)" in proc.stdout


def test_marl_train_trains_the_installed_plugin(example_installed, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = subprocess.run([*MARL, "train", "meet", "trio", "--steps", "64", *TINY, "train.eval_interval=1",
                           "train.eval_episodes=2", "train.log_interval=1", "env.max_cycles=6",
                           "train.runs_dir=RUNS"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("last evaluation: 2 episodes, mean return "), proc.stdout
    [run] = run_dirs(tmp_path / "RUNS")
    assert run.name.startswith("meet-trio-mappo-")
    assert (run / "checkpoints" / "last.pt").is_file()
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    # a game without wins logs returns, and no win rate that would read as 0%
    assert {"eval/episode_return", "train/episode_return"} <= set(tags)
    assert not [t for t in tags if "win_rate" in t]


def test_the_plugin_schema_checks_its_settings_before_anything_is_built(example_installed, tmp_path):
    proc = subprocess.run([*MARL, "train", "meet", "trio", "--algo", "mappo", "env.size=1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (2, "marl: error: env.size must be an integer >= 2, got 1\n")
    proc = subprocess.run([*MARL, "train", "meet", "trio", "--algo", "mappo", "env.sizes=9"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("marl: error: unknown config key 'env.sizes'; valid keys "
                                                           "in env: max_cycles, n_agents, seed, size, "), proc.stderr
    assert not list(tmp_path.iterdir())  # no run directory


def test_marl_config_shows_the_plugin_settings_and_envs_does_not_load_pydantic(example_installed, tmp_path):
    proc = subprocess.run([*MARL, "config", "mappo", "--env", "meet", "trio"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("  ")[0] for line in proc.stdout.splitlines() if line.startswith("env.")]
    assert rows == ["env.workers", "env.worker_timeout", "env.team_reward", "env.win_info", "env.seed",
                    "env.n_agents", "env.size", "env.max_cycles"]
    assert "(factory default)" in proc.stdout and "(other env.KEY=VALUE" not in proc.stdout
    code = "import sys; from marl.cli import main; main(['envs', 'meet']); print('pydantic' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr
