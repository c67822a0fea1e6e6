"""The `marl` command: train, eval, one-line errors, Ctrl-C and SIGKILL safety (run as subprocesses)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marl import checkpoint
from marl import config as config_mod
from marl.cli import EVAL_SEED, evaluate_run, main

_SCRIPT = Path(sys.executable).with_name("marl")
MARL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "marl"]
# MAPPO on tiny batches; one torch thread keeps tiny networks fast when another job shares the cores
ONE_THREAD = [f"train.{key}=1" for key in ("torch_threads", "update_threads")
              if key in config_mod.load("smac", "3m", "mappo")["train"]]
TINY = ["--algo", "mappo", "train.envs=2", "train.rollout=16", "algo.ppo_epochs=1", *ONE_THREAD]
TIMEOUT = 300


def marl(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run the marl command and wait for it."""
    return subprocess.run([*MARL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, start: str) -> str:
    """Exit status 2 and exactly one stderr line that starts with `start`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def run_dirs(runs: Path) -> list[Path]:
    """The run directories under a runs folder."""
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short `marl train` run with evaluations: (cwd, completed process, run directory)."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = marl("train", "smac", "3m", "--steps", "64", *TINY, "train.eval_interval=1", "train.eval_episodes=2",
                "train.runs_dir=RUNS", cwd=cwd)
    dirs = run_dirs(cwd / "RUNS")
    return cwd, proc, (dirs[0] if dirs else None)


def copy_run(trained, tmp_path: Path) -> Path:
    """A copy of the trained run directory that a test may damage."""
    return Path(shutil.copytree(trained[2], tmp_path / "run"))


# ------------------------------------------------------------------------------------ train and eval
def test_train_writes_the_run_directory(trained):
    cwd, proc, run = trained
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert run is not None and re.fullmatch(r"smac-3m-mappo-\d{8}-\d{6}-s1", run.name)
    assert f"run directory: {run.relative_to(cwd)}" in proc.stdout
    assert re.search(r"last evaluation: win rate \d+\.\d% over 2 episodes, mean return -?\d+\.\d\d", proc.stdout)
    cfg = config_mod.load_file(run / "config.yaml")
    assert cfg["run"] == {"env": "smac", "scenario": "3m", "algo": "mappo"}
    assert (cfg["train"]["steps"], cfg["train"]["envs"], cfg["train"]["rollout"]) == (64, 2, 16)
    assert cfg["algo"]["ppo_epochs"] == 1 and cfg["train"]["runs_dir"] == "RUNS"
    data = checkpoint.load(run / "checkpoints" / "last.pt")
    assert data["counters"]["update"] == 2 and data["counters"]["env_steps"] == 64
    assert data["config"] == cfg
    assert data["last_eval"]["episodes"] == 2
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_train_logs_the_documented_tensorboard_tags(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained[2] / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("loss/policy_loss", "loss/value_loss", "loss/entropy", "perf/env_steps_per_s", "eval/win_rate",
                "eval/win_rate_low", "eval/win_rate_high", "eval/episode_return", "eval/episode_length"):
        assert tag in tags, (tag, sorted(tags))
    # the x axis is env steps: the first update is always logged (log_interval is 5), evaluations every update
    assert [e.step for e in acc.Scalars("loss/policy_loss")] == [32]
    assert [e.step for e in acc.Scalars("eval/win_rate")] == [32, 64]


EVAL_LINE = re.compile(r"win rate (\d+\.\d)% \(95% CI (\d+\.\d)%-(\d+\.\d)%\) over 4 episodes, "
                       r"mean return (-?\d+\.\d+), mean episode length (\d+\.\d+)")


def test_eval_prints_win_rate_interval_return_and_length(trained):
    cwd, _, run = trained
    proc = marl("eval", str(run.relative_to(cwd)), "--episodes", "4", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"win rate \d+\.\d% \(95% CI .*\) over 4 episodes, mean return .*, mean episode length .*",
                     proc.stdout)
    m = EVAL_LINE.search(proc.stdout)
    rate, low, high = (float(m.group(i)) for i in (1, 2, 3))
    assert rate in (0.0, 25.0, 50.0, 75.0, 100.0) and low <= rate <= high
    assert 1.0 <= float(m.group(5)) <= 60.0
    assert "after 64 env steps" in proc.stdout
    again = marl("eval", str(run), "--episodes", "4", cwd=cwd)
    assert again.stdout == proc.stdout  # deterministic


def test_resume_of_a_finished_run_does_nothing_more(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    before = checkpoint.load(run / "checkpoints" / "last.pt")
    proc = marl("train", "--resume", str(run), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {run} at 64 env steps" in proc.stderr
    after = checkpoint.load(run / "checkpoints" / "last.pt")
    assert after["counters"] == before["counters"]


# ------------------------------------------------------------------------------------ one-line errors
def test_unknown_config_key(tmp_path):
    proc = marl("train", "smac", "3m", "--algo", "mappo", "algo.lrr=1", cwd=tmp_path)
    line = assert_one_line_error(proc, "marl: error: unknown config key 'algo.lrr'")
    assert "valid keys in algo:" in line and "critic_lr" in line
    assert not (tmp_path / "runs").exists()


def test_wrong_type_names_the_expected_type(tmp_path):
    proc = marl("train", "smac", "3m", "--algo", "mappo", "algo.lr=abc", cwd=tmp_path)
    assert_one_line_error(proc, "marl: error: algo.lr expects a number, got 'abc'")


def test_unknown_map_lists_the_maps(tmp_path):
    proc = marl("train", "smac", "3x", "--algo", "mappo", cwd=tmp_path)
    line = assert_one_line_error(proc, "marl: error: unknown SMAC map '3x'")
    assert re.search(r"maps: .*\b3m\b.*\b3s5z\b", line), line
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_unknown_map_gets_a_suggestion(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "smac", "3s5y", "--algo", "mappo"]) == 2
    assert capsys.readouterr().err.startswith("marl: error: unknown SMAC map '3s5y' (did you mean 3s5z")


def test_unknown_short_map_gets_a_suggestion(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "smac", "3x", "--algo", "mappo"]) == 2
    assert "did you mean 3m" in capsys.readouterr().err


def test_eval_with_env_options_plays_other_battles_and_refuses_other_shapes(trained):
    cwd, _, run = trained
    proc = marl("eval", str(run), "--episodes", "4", "--env-option", "turning=true", "--env-option",
                "weapon_delay=true", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "smac 3m (turning=true, weapon_delay=true) mappo after 64 env steps: " in proc.stdout
    assert EVAL_LINE.search(proc.stdout)
    changes = marl("eval", str(run), "--env-option", "obs_last_action=true", cwd=cwd)
    assert_one_line_error(changes, "marl: error: --env-option obs_last_action=true changes what the learner sees "
                          "(obs, state, actions, agents (30, 48, 9, 3) -> (48, 48, 9, 3))")  # + 2 allies x 9 actions
    assert_one_line_error(marl("eval", str(run), "--env-option", "turning", cwd=cwd),
                          "marl: error: --env-option takes KEY=VALUE (for example turning=true), got 'turning'")
    assert_one_line_error(marl("eval", str(run), "--env-option", "turnin=1", cwd=cwd),
                          "marl: error: unknown config key 'env.turnin'; valid keys in env: ")


def test_eval_of_a_kept_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "smac", "3m", "--steps", "64", *TINY, "train.checkpoint_interval=1", "train.eval_interval=0",
                 "train.keep_checkpoints=true", "train.record_replays=false", "train.runs_dir=R"]) == 0
    (run,) = run_dirs(tmp_path / "R")
    folder = run / "checkpoints"
    capsys.readouterr()
    for name, steps in [("32", 32), ("step-64.pt", 64), (str(folder / "step-32.pt"), 32), (None, 64)]:
        assert main(["eval", str(run), "--episodes", "2", *(["--checkpoint", name] if name else [])]) == 0
        assert f" mappo after {steps} env steps: " in capsys.readouterr().out
    # benchmarks/checkpoint_evals.py: each kept checkpoint in both modes, then read back from its jsonl
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint_evals.py"
    proc = subprocess.run([sys.executable, str(script), str(run), "--episodes", "2", "--to", "40"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (run / "checkpoint_evals.jsonl").read_text().splitlines()]
    assert [(r["env_steps"], r["mode"], r["episodes"]) for r in rows] == [(32, "deterministic", 2), (32, "sampled", 2)]
    assert proc.stdout.splitlines()[1].split()[0] == "32" and len(proc.stdout.splitlines()) == 2
    for row in rows:  # each row is marl eval's figure for that checkpoint, the sampled one seeded by --seed
        res = evaluate_run(run, 2, EVAL_SEED, checkpoint_name="32", sampled=row["mode"] == "sampled")
        assert (row["win_rate"], row["episode_return"]) == (res["win_rate"], res["episode_return"])
    again = subprocess.run([sys.executable, str(script), str(run), "--episodes", "2", "--to", "40"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert again.stdout == proc.stdout and len((run / "checkpoint_evals.jsonl").read_text().splitlines()) == 2
    assert main(["eval", str(run), "--checkpoint", "48"]) == 2
    assert capsys.readouterr().err == (
        f"marl: error: no checkpoint '48' in {folder}; there: last.pt, step-32.pt, step-64.pt (keep one per "
        "checkpoint interval with train.keep_checkpoints=true)\n")


def test_checkpoint_names_are_listed_at_most_eight_at_a_time(tmp_path):
    from marl.cli import CLIError, checkpoint_file

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for steps in range(1, 11):
        (folder / f"step-{steps * 1000}.pt").write_bytes(b"")
    with pytest.raises(CLIError) as err:
        checkpoint_file(tmp_path, "\u00b2")  # a digit to str.isdigit, not an env-step count
    assert str(err.value) == (f"no checkpoint '\u00b2' in {folder}; there: step-1000.pt, step-2000.pt, step-3000.pt, "
                              "step-4000.pt, ..., step-8000.pt, step-9000.pt, step-10000.pt (10 in all) (keep one per "
                              "checkpoint interval with train.keep_checkpoints=true)")
    assert checkpoint_file(tmp_path, "3000") == folder / "step-3000.pt"


def test_eval_of_a_missing_run(tmp_path):
    proc = marl("eval", "NONEXISTENT", cwd=tmp_path)
    assert_one_line_error(proc, "marl: error: ")


def test_eval_of_a_truncated_checkpoint(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    proc = marl("eval", str(run), "--episodes", "2", cwd=tmp_path)
    assert_one_line_error(proc, f"marl: error: {last} is not a readable marl checkpoint")


def test_eval_of_a_text_file_checkpoint(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "checkpoints" / "last.pt").write_text("hello")
    proc = marl("eval", str(run), "--episodes", "2", cwd=tmp_path)
    assert_one_line_error(proc, "marl: error: ")


def _other_shapes(run: Path) -> None:
    cfg = config_mod.load_file(run / "config.yaml")
    cfg["algo"]["hidden"] = 32  # the checkpoint now belongs to another run
    config_mod.dump(cfg, run / "config.yaml")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_checkpoint_of_another_run(trained, tmp_path, command):
    run = copy_run(trained, tmp_path)
    _other_shapes(run)
    args = ["eval", str(run), "--episodes", "2"] if command == "eval" else ["train", "--resume", str(run)]
    proc = marl(*args, cwd=tmp_path)
    assert_one_line_error(proc, "marl: error: ")


def test_resume_without_a_checkpoint(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    shutil.rmtree(run / "checkpoints")
    proc = marl("train", "--resume", str(run), cwd=tmp_path)
    assert_one_line_error(proc, f"marl: error: no checkpoint at {run / 'checkpoints' / 'last.pt'}")


@pytest.mark.parametrize("flags, named", [(["--steps", "128"], "--steps"), (["--algo", "mappo"], "--algo"),
                                          (["--seed", "2", "--envs", "4"], "--seed, --envs"), (["train.lr=1"], None)])
def test_resume_refuses_what_would_change_the_run_and_leaves_it_untouched(trained, tmp_path, flags, named):
    run = copy_run(trained, tmp_path)
    before = checkpoint.load(run / "checkpoints" / "last.pt")
    proc = marl("train", "--resume", str(run), *flags, cwd=tmp_path)
    given = f" (not {named})" if named else ""
    line = assert_one_line_error(proc, "marl: error: --resume continues a run as it was configured; give only the "
                                       f"run directory{given}, with --ray-workers/--address at most")
    assert line.endswith("at most")
    assert checkpoint.load(run / "checkpoints" / "last.pt")["counters"] == before["counters"]


@pytest.mark.parametrize("argv, start", [
    (["train", "smac", "3m", "--algo", "nope"], "marl: error: unknown learner 'nope'; available: "),
    (["train", "smac", "3m", "algo.lr", "--algo", "mappo"], "marl: error: override 'algo.lr' is not key=value"),
    (["train", "smac", "3m", "--algo", "mappo", "train.envs=2.5"],
     "marl: error: train.envs expects an integer, got 2.5"),
    (["train", "smac", "3m", "--algo", "mappo", "env.obs_last_action=maybe"],
     "marl: error: env.obs_last_action expects true or false, got 'maybe'"),
    (["train", "smac", "3m", "--algo", "mappo", "foo.bar=1"], "marl: error: unknown config key 'foo.bar'"),
    (["train", "nosuchenv", "x", "--algo", "mappo"], "marl: error: unknown environment 'nosuchenv'"),
    (["train", "smac", "--algo", "mappo"], "marl: error: smac needs a map"),
    (["train"], "marl: error: marl train needs an environment"),
    (["train", "--resume", "NONEXISTENT"], "marl: error: no run directory at NONEXISTENT"),
    (["train", "--resume", "NONEXISTENT", "smac"], "marl: error: --resume continues a run as it was configured"),
    (["eval", "NONEXISTENT"], "marl: error: no config.yaml in the run directory"),
])
def test_more_one_line_errors_in_process(tmp_path, monkeypatch, capsys, argv, start):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(start), err
    assert not list(tmp_path.iterdir())  # no run directory was made


def test_eval_of_a_run_without_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("- not a config\n")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "marl: error: run/config.yaml is not a marl run config (needs sections train, env, algo, run)"


# ------------------------------------------------------------------------------------ Ctrl-C and SIGKILL
def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"marl exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _start(args: list[str], cwd: Path, log: str, sigint=signal.SIG_DFL) -> tuple[subprocess.Popen, Path]:
    """Start marl with SIGINT's disposition set to `sigint`, whatever the disposition pytest itself inherited."""
    err = cwd / f"{log}.err"
    with open(cwd / f"{log}.out", "w") as out, open(err, "w") as errf:
        proc = subprocess.Popen([*MARL, *args], cwd=cwd, stdout=out, stderr=errf,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    return proc, err


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def test_sigint_checkpoints_and_exits_130_then_resume_continues(tmp_path):
    args = ["train", "smac", "3m", "--steps", "100000000", *TINY, "train.eval_interval=0",
            "train.checkpoint_interval=100000", "train.runs_dir=RUNS"]
    proc, err = _start(args, tmp_path, "first")
    runs = tmp_path / "RUNS"
    # training has started (TensorBoard events exist) and an update has finished (the bar shows sps=)
    _wait_for(lambda: any(runs.glob("*/tb/events.*")) and "sps=" in _read(err), proc, 180, "the first update")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    text = _read(err)
    assert "Traceback" not in text
    run = run_dirs(runs)[0]
    assert f"continue with: marl train --resume {run.relative_to(tmp_path)}" in text
    assert "marl train --resume" in text
    first = checkpoint.load(run / "checkpoints" / "last.pt")
    assert first["counters"]["update"] >= 1
    assert first["counters"]["env_steps"] == first["counters"]["update"] * 32

    # `marl train --resume RUN` continues from there (and a second Ctrl-C stops it the same way)
    proc, err = _start(["train", "--resume", str(run)], tmp_path, "second")
    _wait_for(lambda: "sps=" in _read(err), proc, 180, "the first resumed update")
    assert f"resuming {run} at {first['counters']['env_steps']:,} env steps" in _read(err)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in _read(err)
    second = checkpoint.load(run / "checkpoints" / "last.pt")
    assert second["counters"]["update"] > first["counters"]["update"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_sigint_during_start_up_exits_cleanly(tmp_path, inherited):
    # "ignored": how a non-interactive shell starts a background job (`marl train ... &` in a script)
    proc, err = _start(["train", "smac", "3m", "--steps", "100000000", *TINY, "train.runs_dir=RUNS"], tmp_path, "early",
                       sigint=inherited)
    time.sleep(0.5)  # still importing torch
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()  # never leave a training behind
    assert "Traceback" not in _read(err) and rc in (2, 130)


TMP_NAME = re.compile(r"\.last\.pt\..+\.tmp")


@pytest.mark.parametrize("kills", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path, kills):
    rng = random.Random(20240601 + kills)
    args = ["train", "smac", "3m", "--steps", "100000000", *TINY, "train.rollout=8", "algo.hidden=256",
            "train.eval_interval=0", "train.checkpoint_interval=1", "train.log_interval=1", "train.runs_dir=RUNS"]
    runs, last_update, run = tmp_path / "RUNS", 0, None
    for i in range(kills):
        if run is None:
            proc, err = _start(args, tmp_path, f"kill{i}")
            _wait_for(lambda: any(runs.glob("*/checkpoints/last.pt")), proc, 180, "the first checkpoint")
            run = run_dirs(runs)[0]
        else:
            proc, err = _start(["train", "--resume", str(run)], tmp_path, f"kill{i}")
            _wait_for(lambda err=err: "sps=" in _read(err), proc, 180, "a resumed update")
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        folder = run / "checkpoints"
        names = [p.name for p in folder.iterdir()]
        assert "last.pt" in names
        assert all(n == "last.pt" or TMP_NAME.fullmatch(n) for n in names), names  # only a torn temp file
        data = checkpoint.load(folder / "last.pt")
        c = data["counters"]
        assert c["update"] >= max(1, last_update) and c["env_steps"] == c["update"] * 16
        last_update = c["update"]
    # the last kill's checkpoint resumes too (temporary files left behind do not get in the way)
    proc = marl("eval", str(run), "--episodes", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_console_script_and_module_agree(tmp_path):
    a = subprocess.run([sys.executable, "-m", "marl", "train", "smac", "3x", "--algo", "mappo"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert a.returncode == 2 and a.stderr.startswith("marl: error: unknown SMAC map '3x'")
    assert os.access(MARL[0], os.X_OK) or MARL[0] == sys.executable
