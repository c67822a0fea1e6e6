"""The training engine: exact resume, checkpoints, rollouts, PPO pieces, MAPPO masking and evaluation."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_same, freeze_enemies, whole_and_resumed
from hypothesis import given, settings
from hypothesis import strategies as st

from marl import checkpoint
from marl import config as config_mod
from marl.agents.ppo import gae, next_values_of, policy_loss, value_loss
from marl.envs.smac import SMACVecEnv
from marl.registry import make_learner
from marl.rollout import collect
from marl.spec import Step
from marl.trainer import Trainer, evaluate, wilson

PER_UPDATE = 2 * 16  # envs x rollout of the tiny config
# one torch thread for the tiny networks: two threads are many times slower when another job shares the cores
ONE_THREAD = [f"train.{key}=1" for key in ("torch_threads", "update_threads")
              if key in config_mod.load("smac", "3m", "mappo")["train"]]


def tiny(tmp_path, *extra: str) -> dict:
    """A config whose updates take a fraction of a second."""
    return config_mod.load("smac", "3m", "mappo", [
        "train.envs=2", "train.rollout=16", "algo.ppo_epochs=2", "train.eval_interval=0",
        "train.checkpoint_interval=1", "train.log_interval=1", f"train.runs_dir={tmp_path}", "train.steps=100000",
        *ONE_THREAD, *extra])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tensors_differ(a: dict, b: dict) -> bool:
    """Whether any parameter of two module state dicts differs."""
    return any(not torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ exact resume
@pytest.mark.parametrize("extra", [[], ["train.eval_interval=2", "train.eval_episodes=2", "algo.minibatches=2",
                                          "train.log_interval=2"]])
def test_resume_continues_exactly(tmp_path, extra):
    n = 3
    cfg = tiny(tmp_path, *extra)
    whole = Trainer(cfg, tmp_path / "whole", show_progress=False)
    whole.run(max_updates=2 * n)

    first = Trainer(cfg, tmp_path / "split", show_progress=False)
    first.run(max_updates=n)
    half = {k: v.clone() for k, v in first.learner.actor.state_dict().items()}
    del first
    second = Trainer(cfg, tmp_path / "split", resume=True, show_progress=False)
    assert (second.update_index, second.env_steps) == (n, n * PER_UPDATE)
    second.run(max_updates=n)

    assert tensors_differ(half, whole.learner.actor.state_dict())  # the comparison below is not vacuous
    assert_same(whole.learner.state_dict(), second.learner.state_dict(), "learner")
    assert_same(whole.env.get_state(), second.env.get_state(), "env")
    for k in ("obs", "state", "avail", "alive", "t"):
        assert np.array_equal(getattr(whole.step, k), getattr(second.step, k)), k
    assert (whole.update_index, whole.env_steps, whole.episodes) == (second.update_index, second.env_steps,
                                                                     second.episodes)
    assert whole.episodes > 0  # battles ended and restarted inside the compared stretch
    # and the checkpoints the two runs end with hold the same learner and battles
    a = checkpoint.load(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "split" / "checkpoints" / "last.pt")
    for key in ("learner", "env", "torch_rng", "counters", "config"):
        assert_same(a[key], b[key], key)


def test_a_deadline_already_past_stops_after_one_update_with_a_checkpoint(tmp_path):
    trainer = Trainer(tiny(tmp_path, "train.checkpoint_interval=0"), tmp_path / "run", show_progress=False)
    out = trainer.run(deadline=time.monotonic())
    assert (out["update"], out["env_steps"], out["interrupted"]) == (1, PER_UPDATE, False)
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["counters"]["env_steps"] == PER_UPDATE
    assert trainer.run(max_updates=2, deadline=time.monotonic() + 3600)["update"] == 3  # far off: no effect


def test_linear_lr_decay_follows_the_budget_and_resumes_exactly(tmp_path):
    budget = 256  # six updates of 32 env steps: the rate falls to 1 - 160/256 of lr before the sixth
    cfg = tiny(tmp_path, "algo.lr_decay=linear", f"train.steps={budget}")
    whole, resumed = whole_and_resumed(cfg, tmp_path, 3)
    assert_same(whole.learner.state_dict(), resumed.learner.state_dict(), "learner")
    for trainer in (whole, resumed):
        for opt, key in ((trainer.learner.actor_opt, "lr"), (trainer.learner.critic_opt, "critic_lr")):
            assert opt.param_groups[0]["lr"] == pytest.approx(cfg["algo"][key] * (1 - 5 * PER_UPDATE / budget),
                                                              rel=1e-12)


def test_a_resumed_run_logs_the_whole_runs_scalars_the_checkpoints_step_included(tmp_path):
    """TensorBoard after a resume holds each update's scalars once, those of the checkpoint's own update and
    evaluation too (they were written before the checkpoint), with the uninterrupted run's values; what a killed
    run logged after its last checkpoint is gone."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    n = 2
    cfg = tiny(tmp_path, "train.eval_interval=2", "train.eval_episodes=2", "train.record_replays=false")
    Trainer(cfg, tmp_path / "whole", show_progress=False).run(max_updates=2 * n)
    Trainer(cfg, tmp_path / "split", show_progress=False).run(max_updates=n)
    # a run killed after logging one more update than its checkpoint holds: that update's events are dropped
    last = tmp_path / "split" / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    Trainer(cfg, tmp_path / "split", resume=True, show_progress=False).run(max_updates=1)
    last.write_bytes(saved)
    Trainer(cfg, tmp_path / "split", resume=True, show_progress=False).run(max_updates=n)

    def scalars(run: str) -> dict:
        acc = EventAccumulator(str(tmp_path / run / "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                for tag in ("loss/policy_loss", "train/episode_length", "eval/win_rate", "eval/episode_return")}

    whole, split = scalars("whole"), scalars("split")
    assert [s for s, _ in whole["loss/policy_loss"]] == [PER_UPDATE * (i + 1) for i in range(2 * n)]
    assert [s for s, _ in whole["eval/win_rate"]] == [2 * PER_UPDATE, 4 * PER_UPDATE]
    assert split == whole


def test_resume_twice_from_one_checkpoint_is_reproducible(tmp_path):
    cfg = tiny(tmp_path)
    Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    results = []
    for _ in range(2):
        last.write_bytes(saved)
        tr = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False)
        tr.run(max_updates=1)
        results.append((tr.learner.state_dict(), tr.env.get_state()))
    assert_same(results[0], results[1])


def test_same_seed_same_parameters_other_seed_differs(tmp_path):
    params = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        tr = Trainer(tiny(tmp_path, f"train.seed={seed}"), tmp_path / name, show_progress=False)
        tr.run(max_updates=2)
        params[name] = tr.learner.state_dict()
    assert_same(params["a"], params["b"])
    assert tensors_differ(params["a"]["actor"], params["c"]["actor"])
    assert tensors_differ(params["a"]["critic"], params["c"]["critic"])


def test_budget_is_rounded_up_to_whole_updates(tmp_path):
    tr = Trainer(tiny(tmp_path, "train.steps=100"), tmp_path / "run", show_progress=False)
    result = tr.run()
    assert result["update"] == math.ceil(100 / PER_UPDATE) and result["env_steps"] == 4 * PER_UPDATE
    assert not result["interrupted"]
    again = Trainer(tiny(tmp_path, "train.steps=100"), tmp_path / "run", resume=True, show_progress=False)
    assert again.run()["update"] == 4  # a finished run has nothing left to do


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_holds_everything_to_resume(tmp_path):
    cfg = tiny(tmp_path)
    tr = Trainer(cfg, tmp_path / "run", show_progress=False)
    tr.run(max_updates=2)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    raw = torch.load(path, weights_only=True)  # loadable without trusting the file
    data = checkpoint.load(path)
    assert set(raw) == set(data)
    assert {"format", "version", "learner", "env", "torch_rng", "counters", "config"} <= set(data)
    learner = data["learner"]
    assert {"actor", "critic", "actor_opt", "critic_opt", "value_norm", "generator"} <= set(learner)
    assert set(learner["value_norm"]) == {"mean", "mean_sq", "debias"}
    assert learner["value_norm"]["debias"].item() > 0  # statistics were gathered
    for opt in ("actor_opt", "critic_opt"):
        state = learner[opt]["state"]
        assert state and all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in state.values())
    assert isinstance(learner["generator"], torch.Tensor) and learner["generator"].dtype == torch.uint8
    assert isinstance(data["torch_rng"], torch.Tensor)
    env = checkpoint.to_numpy(data["env"])
    assert env["rng"].dtype == np.uint64  # the battles' random streams
    assert_same(env, tr.env.get_state())
    assert data["counters"] == {"update": 2, "env_steps": 2 * PER_UPDATE, "episodes": tr.episodes,
                                "eval_env_steps": 0}
    assert data["config"] == cfg
    assert_same(learner, tr.learner.state_dict())
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_config_yaml_is_the_resolved_config(tmp_path):
    cfg = tiny(tmp_path, "algo.lr=0.001")
    Trainer(cfg, tmp_path / "run", show_progress=False)
    saved = tmp_path / "run" / "config.yaml"
    assert config_mod.load_file(saved) == cfg
    assert yaml.safe_load(saved.read_text())["algo"]["lr"] == 0.001


def test_resume_with_a_checkpoint_of_other_shapes_is_a_one_line_error(tmp_path):
    Trainer(tiny(tmp_path), tmp_path / "run", show_progress=False).run(max_updates=1)
    with pytest.raises(ValueError) as err:
        Trainer(tiny(tmp_path, "algo.hidden=32"), tmp_path / "run", resume=True, show_progress=False)
    assert "\n" not in str(err.value)


def _corrupt(path) -> None:
    """Flip one bit of a checkpoint inside the bytes of the actor's first weight matrix."""
    weights = checkpoint.load(path)["learner"]["actor"]["0.weight"].numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(weights)
    assert at > 0
    data[at + len(weights) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_and_eval_of_a_flipped_checkpoint_are_one_line_corrupt_errors(tmp_path, capsys):
    from marl.cli import main

    Trainer(tiny(tmp_path), tmp_path / "run", show_progress=False).run(max_updates=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    _corrupt(last)
    expected = f"{last} is a corrupt checkpoint: its bytes do not match their sha256 (damaged on disk or in a copy)"
    with pytest.raises(checkpoint.CheckpointError) as err:
        Trainer(tiny(tmp_path), tmp_path / "run", resume=True, show_progress=False)
    assert str(err.value) == expected
    capsys.readouterr()
    for argv in (["eval", str(tmp_path / "run"), "--episodes", "1"], ["train", "--resume", str(tmp_path / "run")]):
        assert main(argv) == 2
        out = capsys.readouterr()
        assert out.err == f"marl: error: {expected}\n" and out.out == ""


def _as_version_1(path) -> None:
    """Rewrite a checkpoint the way marl wrote them before checksums (format version 1)."""
    import io

    data = checkpoint.load(path)
    buf = io.BytesIO()
    torch.save({**data, "version": 1}, buf)
    checkpoint.atomic_write_bytes(path, buf.getvalue())


def test_a_version_1_checkpoint_resumes_exactly_with_a_warning(tmp_path, capsys):
    cfg = tiny(tmp_path)
    Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    results = []
    for version in (2, 1):
        last.write_bytes(saved)
        if version == 1:
            _as_version_1(last)
        capsys.readouterr()
        tr = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False)
        warned = f"marl: warning: {last} is a version-1 checkpoint without a checksum; loaded unverified\n"
        assert capsys.readouterr().err == (warned if version == 1 else "")
        tr.run(max_updates=1)
        results.append((tr.learner.state_dict(), tr.env.get_state(), tr.episodes))
        assert checkpoint.load(last)["version"] == 2  # the next save writes the sealed format
    assert_same(results[0], results[1])


# ------------------------------------------------------------------------------------ the loop's parts
class BudgetRecorder:
    """A learner that wraps another and records the budget fractions it is told (the BudgetAware capability)."""

    def __init__(self, inner):
        self.inner, self.fractions, self.updates_seen = inner, [], 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def set_budget_fraction(self, fraction: float) -> None:
        """Record the fraction, and that it came before the update it is for."""
        self.fractions.append((fraction, self.updates_seen))

    def update(self, rollout):
        """The wrapped learner's update, counted."""
        self.updates_seen += 1
        return self.inner.update(rollout)


def test_a_budget_aware_learner_is_told_the_fraction_before_each_update(tmp_path):
    from marl.spec import BudgetAware

    steps = 5 * PER_UPDATE
    tr = Trainer(tiny(tmp_path, f"train.steps={steps}"), tmp_path / "run", show_progress=False)
    tr.learner = BudgetRecorder(tr.learner)
    assert isinstance(tr.learner, BudgetAware)
    tr.run(max_updates=3)
    assert tr.learner.fractions == [(0.0, 0), (PER_UPDATE / steps, 1), (2 * PER_UPDATE / steps, 2)]
    tr.run()  # the rest of the budget
    assert [f for f, _ in tr.learner.fractions] == [i * PER_UPDATE / steps for i in range(5)]


def test_stop_signals_first_requests_a_stop_second_interrupts_and_handlers_come_back():
    from marl.trainer import StopSignals

    def mine(signum, frame):
        raise AssertionError("the handler before the block must not run inside it")

    before = signal.signal(signal.SIGTERM, mine)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with StopSignals() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is previous_int
        with pytest.raises(ZeroDivisionError), StopSignals():  # restored however the block ends
            raise ZeroDivisionError
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is previous_int
    finally:
        signal.signal(signal.SIGTERM, before)


def _scalars_of(tmp_path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("can_win", [True, False])
def test_run_logger_writes_an_update_and_an_evaluation(tmp_path, can_win):
    from marl.logging import RunLogger

    episodes = [{"return": 1.0, "length": 10, "won": True}, {"return": 3.0, "length": 20, "won": False}]
    timing = {"env": 0.5, "act": 0.25, "update": 2.0}
    with RunLogger(tmp_path, 1000, show_progress=False, can_win=can_win) as logger:
        logger.update(64, {"policy_loss": 0.5}, timing, 16.0, episodes, lost_episodes=3)
        logger.update(128, {"policy_loss": 0.25}, {"update": 1.0}, 32.0, [])
        logger.evaluation({"episodes": 4, "episode_return": 2.5, "win_rate": 0.75}, 128)
    won = {"train/win_rate": [(64, 0.5)]} if can_win else {}
    assert _scalars_of(tmp_path) == {
        "loss/policy_loss": [(64, 0.5), (128, 0.25)], "perf/env_steps_per_s": [(64, 16.0), (128, 32.0)],
        "perf/seconds_env": [(64, 0.5), (128, 0.0)], "perf/seconds_act": [(64, 0.25), (128, 0.0)],
        "perf/seconds_update": [(64, 2.0), (128, 1.0)], "train/episode_return": [(64, 2.0)],
        "train/episode_length": [(64, 15.0)], **won, "train/lost_episodes": [(64, 3.0)],
        "eval/episode_return": [(128, 2.5)], "eval/win_rate": [(128, 0.75)]}


@pytest.mark.parametrize("last_eval, shown", [(None, {"sps": "1,235"}),
                                              ({"win_rate": 0.5, "episode_return": 1.0}, {"sps": "1,235",
                                                                                          "eval_win": "50%"}),
                                              ({"episode_return": -12.345}, {"sps": "1,235", "eval_return": "-12.35"})])
def test_run_logger_progress_shows_speed_and_the_last_evaluation(tmp_path, last_eval, shown):
    from marl.logging import RunLogger

    with RunLogger(tmp_path, 1000) as logger:  # a shown bar (a hidden one counts nothing); pytest takes stderr
        logger.progress(64, 1234.6, last_eval)
        assert logger.bar.n == 64 and logger.bar.postfix == ", ".join(f"{k}={v}" for k, v in shown.items())


def test_build_makes_the_trainers_env_and_learner(tmp_path):
    from marl.trainer import build

    cfg = tiny(tmp_path)
    env, learner = build(cfg, n_envs=3)
    assert env.n_envs == 3 and env.spec == Trainer(cfg, tmp_path / "run", show_progress=False).spec
    tr = Trainer(cfg, tmp_path / "run2", show_progress=False)
    assert tr.env.n_envs == cfg["train"]["envs"] == 2
    assert_same(learner.state_dict(), tr.learner.state_dict())  # the same seeded learner `marl eval` restores into


# ------------------------------------------------------------------------------------ Ctrl-C
def test_sigint_finishes_the_update_checkpoints_and_resumes_exactly(tmp_path, capsys):
    cfg = tiny(tmp_path, f"train.steps={6 * PER_UPDATE}", "train.checkpoint_interval=1000")
    tr = Trainer(cfg, tmp_path / "run", show_progress=False)
    real_update = tr.learner.update
    calls = []

    def update(rollout):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the second update
        return real_update(rollout)

    tr.learner.update = update
    before = signal.getsignal(signal.SIGINT)
    result = tr.run()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert result["interrupted"] and result["update"] == 2 and len(calls) == 2
    data = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert data["counters"]["update"] == 2
    err = capsys.readouterr().err
    assert f"continue with: marl train --resume {tmp_path / 'run'}" in err

    resumed = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False)
    assert resumed.run()["update"] == 6
    whole = Trainer(cfg, tmp_path / "whole", show_progress=False)
    whole.run()
    assert_same(whole.learner.state_dict(), resumed.learner.state_dict())
    assert_same(whole.env.get_state(), resumed.env.get_state())


# ------------------------------------------------------------------------------------ rollouts
def _learner(env, seed=0, **algo):
    cfg = config_mod.load("smac", "3m", "mappo")["algo"]
    cfg.update(algo)
    return make_learner("mappo", env.spec, cfg, seed=seed, device="cpu")


def test_rollout_shapes_and_extras_for_3m():
    env = SMACVecEnv("3m", 2)
    learner = _learner(env)
    step = env.reset(seed=0)
    first_obs = step.obs.copy()
    rollout, nxt, episodes = collect(env, learner, step, 16)
    T, E, A = 16, 2, 3
    assert (rollout.steps, rollout.n_envs) == (T, E)
    expect = {"obs": ((T, E, A, 30), np.float32), "state": ((T, E, 48), np.float32),
              "avail": ((T, E, A, 9), np.bool_), "alive": ((T, E, A), np.bool_), "actions": ((T, E, A), np.int64),
              "reward": ((T, E), np.float32), "done": ((T, E), np.bool_), "truncated": ((T, E), np.bool_),
              "next_obs": ((E, A, 30), np.float32), "next_state": ((E, 48), np.float32),
              "next_avail": ((E, A, 9), np.bool_), "next_alive": ((E, A), np.bool_)}
    for name, (shape, dtype) in expect.items():
        arr = getattr(rollout, name)
        assert arr.shape == shape and arr.dtype == dtype, (name, arr.shape, arr.dtype)
    assert set(rollout.extras) == {"log_prob", "value"}
    for name in ("log_prob", "value"):
        assert rollout.extras[name].shape == (T, E, A) and rollout.extras[name].dtype == np.float32
    assert np.all(rollout.extras["log_prob"] <= 0)
    n = len(rollout.final_t)
    assert rollout.final_obs.shape == (n, A, 30) and rollout.final_state.shape == (n, 48)
    assert rollout.final_t.dtype == np.int64 and rollout.final_e.dtype == np.int64
    # the actions taken were available, and the first row is the Step the rollout started from
    taken = np.take_along_axis(rollout.avail, rollout.actions[..., None], -1)[..., 0]
    assert taken.all()
    assert np.array_equal(rollout.obs[0], first_obs)
    assert np.array_equal(rollout.next_obs, nxt.obs) and np.array_equal(rollout.next_state, nxt.state)
    assert len(episodes) == int(rollout.done.sum())


class StopPolicy:
    """Stop (1) for the living, no-op (0) for the dead."""

    def act(self, step, deterministic=False):
        actions = np.where(step.alive, 1, 0).astype(np.int64)
        return actions, {"value": np.ones(step.alive.shape, np.float32)}


class SpreadPolicy(StopPolicy):
    """Agent 0 walks north and agent 1 south while they can; the rest stop (so observations change)."""

    def act(self, step, deterministic=False):
        actions, extras = super().act(step, deterministic)
        for agent, move in ((0, 2), (1, 3)):
            can = step.avail[:, agent, move] & step.alive[:, agent]
            actions[can, agent] = move
        return actions, extras


class Recording:
    """A VecEnv wrapper that keeps every Step it returns."""

    def __init__(self, env):
        self.env, self.steps = env, []

    def step(self, actions):
        out = self.env.step(actions)
        self.steps.append(out)
        return out


def test_final_arrays_follow_the_truncated_flags():
    env = SMACVecEnv("3m", 2)
    step = env.reset(seed=0)
    for e in range(2):
        freeze_enemies(env.batch, e)  # nobody fights, so both battles run into 3m's 60-step limit
    rec = Recording(env)
    rollout, _, episodes = collect(rec, SpreadPolicy(), step, 70)
    limit = env.spec.episode_limit
    assert limit == 60
    assert np.array_equal(np.argwhere(rollout.truncated), [[limit - 1, 0], [limit - 1, 1]])
    assert np.array_equal(rollout.done, rollout.truncated)
    assert rollout.final_t.tolist() == [limit - 1, limit - 1] and rollout.final_e.tolist() == [0, 1]
    for i, (t, e) in enumerate(zip(rollout.final_t, rollout.final_e)):
        assert rollout.truncated[t, e]
        assert np.array_equal(rollout.final_obs[i], rec.steps[t].final_obs[e])
        assert np.array_equal(rollout.final_state[i], rec.steps[t].final_state[e])
        # the row after the cut belongs to the new battle, not to the one that ended
        assert not np.array_equal(rollout.final_obs[i], rollout.obs[t + 1, e])
    assert rec.steps[limit - 1].t.tolist() == [0, 0]  # reset already
    assert [ep["length"] for ep in episodes] == [limit, limit] and not any(ep["won"] for ep in episodes)
    assert rollout.extras["value"].shape == (70, 2, 3)


def test_final_arrays_are_empty_without_truncation():
    env = SMACVecEnv("3m", 2)
    rollout, _, _ = collect(env, StopPolicy(), env.reset(seed=0), 30)  # the enemies win in ~21 steps
    assert rollout.done.any() and not rollout.truncated.any()
    assert rollout.final_t.shape == (0,) and rollout.final_obs.shape == (0, 3, 30)
    assert rollout.final_state.shape == (0, 48)


# ------------------------------------------------------------------------------------ PPO pieces
def test_gae_by_hand_with_a_truncated_and_a_terminated_step():
    # one env, one agent, four steps: t=0 ordinary, t=1 cut by the time limit (bootstrap from the final
    # state's value 6), t=2 terminated (no bootstrap), t=3 ordinary (bootstrap from the next state, 5)
    gamma, lam = 0.9, 0.8
    values = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1)
    rewards = np.array([0.5, 1.0, 2.0, -1.0]).reshape(4, 1, 1)
    done = np.array([0, 1, 1, 0], float).reshape(4, 1)
    truncated = np.array([0, 1, 0, 0], float).reshape(4, 1)
    terminated = done * (1 - truncated)
    rollout = SimpleNamespace(final_t=np.array([1]), final_e=np.array([0]))
    nxt = next_values_of(values, np.array([[5.0]]), rollout, np.array([[6.0]]))
    assert nxt[:, 0, 0].tolist() == [2.0, 6.0, 4.0, 5.0]
    adv, ret = gae(values, nxt, rewards, terminated, done, gamma, lam)
    d3 = -1.0 + gamma * 5.0 - 4.0  # -0.5
    d2 = 2.0 - 3.0  # terminated: -1
    d1 = 1.0 + gamma * 6.0 - 2.0  # 4.4, and the trace stops at the cut
    d0 = 0.5 + gamma * 2.0 - 1.0  # 1.3
    expected = [d0 + gamma * lam * d1, d1, d2, d3]
    assert adv[:, 0, 0] == pytest.approx(expected, abs=1e-12)
    assert adv[0, 0, 0] == pytest.approx(4.468, abs=1e-12)
    assert ret[:, 0, 0] == pytest.approx([5.468, 6.4, 2.0, 3.5], abs=1e-12)


def test_gae_without_episode_ends_is_the_lambda_return():
    rng = np.random.default_rng(0)
    T, E, A, gamma, lam = 5, 2, 3, 0.99, 0.95
    values, rewards = rng.normal(size=(T, E, A)), rng.normal(size=(T, E, A))
    bootstrap = rng.normal(size=(E, A))
    rollout = SimpleNamespace(final_t=np.zeros(0, np.int64), final_e=np.zeros(0, np.int64))
    nxt = next_values_of(values, bootstrap, rollout, np.zeros((0, A)))
    zeros = np.zeros((T, E))
    adv, _ = gae(values, nxt, rewards, zeros, zeros, gamma, lam)
    for t in range(T):
        deltas = [rewards[k] + gamma * nxt[k] - values[k] for k in range(t, T)]
        direct = sum((gamma * lam) ** (k - t) * deltas[k - t] for k in range(t, T))
        np.testing.assert_allclose(adv[t], direct, rtol=1e-12, atol=1e-12)


def test_next_values_of_puts_final_values_where_episodes_were_cut():
    values = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    rollout = SimpleNamespace(final_t=np.array([0, 2]), final_e=np.array([1, 0]))
    finals = np.array([[100.0, 101.0], [200.0, 201.0]])
    nxt = next_values_of(values, np.array([[-1.0, -2.0], [-3.0, -4.0]]), rollout, finals)
    assert nxt[0, 0].tolist() == values[1, 0].tolist() and nxt[0, 1].tolist() == [100.0, 101.0]
    assert nxt[1].tolist() == values[2].tolist()
    assert nxt[2, 0].tolist() == [200.0, 201.0] and nxt[2, 1].tolist() == [-3.0, -4.0]


def _loss_inputs(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, generator=g) > 0.4).float()
    mask[0], mask[1] = 1.0, 0.0
    return g, mask, [torch.randn(n, generator=g) * 0.3 for _ in range(5)]


def test_policy_loss_ignores_masked_entries():
    g, mask, (logp, old, adv, _, _) = _loss_inputs()
    loss, info = policy_loss(logp, old, adv, 0.2, mask)
    dead = mask == 0
    logp2, old2, adv2 = logp.clone(), old.clone(), adv.clone()
    logp2[dead] += torch.randn(int(dead.sum()), generator=g) * 3
    old2[dead] -= 1.5
    adv2[dead] = torch.randn(int(dead.sum()), generator=g) * 100
    loss2, info2 = policy_loss(logp2, old2, adv2, 0.2, mask)
    assert torch.equal(loss, loss2) and info == info2
    # and the value is the clipped surrogate's mean over the living
    live = mask > 0
    ratio = torch.exp(logp[live] - old[live])
    surr = torch.min(ratio * adv[live], ratio.clamp(0.8, 1.2) * adv[live])
    assert loss.item() == pytest.approx(-surr.mean().item(), rel=1e-6)
    # no gradient reaches a masked entry
    x = logp.clone().requires_grad_()
    policy_loss(x, old, adv, 0.2, mask)[0].backward()
    assert torch.all(x.grad[dead] == 0) and torch.any(x.grad[live] != 0)


@pytest.mark.parametrize("use_clip", [True, False])
def test_value_loss_ignores_masked_entries(use_clip):
    g, mask, (values, old, targets, _, _) = _loss_inputs(1)
    targets = targets * 30  # some errors beyond the Huber delta
    loss = value_loss(values, old, targets, 0.2, 10.0, use_clip, mask)
    dead = mask == 0
    v2, o2, t2 = values.clone(), old.clone(), targets.clone()
    v2[dead] = 1e3
    o2[dead] = -1e3
    t2[dead] = torch.randn(int(dead.sum()), generator=g) * 1e4
    assert torch.equal(loss, value_loss(v2, o2, t2, 0.2, 10.0, use_clip, mask))
    if not use_clip:
        live = mask > 0
        err = (targets - values)[live]
        huber = torch.where(err.abs() <= 10, 0.5 * err**2, 10 * (err.abs() - 5))
        assert loss.item() == pytest.approx(huber.mean().item(), rel=1e-6)


def test_losses_with_everyone_dead_are_zero_not_nan():
    _, _, (logp, old, adv, _, _) = _loss_inputs()
    mask = torch.zeros_like(logp)
    assert policy_loss(logp, old, adv, 0.2, mask)[0].item() == 0.0
    assert value_loss(logp, old, adv, 0.2, 10.0, True, mask).item() == 0.0


# ------------------------------------------------------------------------------------ MAPPO masking
_ENV3M = SMACVecEnv("3m", 4)
_MAPPO = _learner(_ENV3M)
with torch.no_grad():  # make the policy want the actions the masks forbid, so a leak would show
    _MAPPO.actor[-1].bias.copy_(torch.linspace(50.0, -50.0, _ENV3M.spec.n_actions))


def _fake_step(rng: np.random.Generator, avail: np.ndarray) -> Step:
    E, A, _ = avail.shape
    spec = _ENV3M.spec
    z = np.zeros(E)
    return Step(obs=rng.normal(size=(E, A, spec.obs_dim)).astype(np.float32),
                state=rng.normal(size=(E, spec.state_dim)).astype(np.float32), avail=avail,
                reward=z.astype(np.float32), done=z.astype(bool), truncated=z.astype(bool),
                alive=np.ones((E, A), bool), t=z.astype(np.int64), episode_return=z.astype(np.float32),
                episode_length=z.astype(np.int64), won=z.astype(bool))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 1.0))
def test_mappo_never_picks_an_unavailable_action(seed, density):
    rng = np.random.default_rng(seed)
    E, A, n = 4, 3, _ENV3M.spec.n_actions
    avail = rng.random((E, A, n)) < density
    avail[np.arange(E)[:, None], np.arange(A)[None], rng.integers(0, n, (E, A))] = True  # at least one each
    step = _fake_step(rng, avail)
    for _ in range(5):
        actions, extras = _MAPPO.act(step, deterministic=False)
        assert actions.shape == (E, A) and actions.dtype == np.int64
        assert np.take_along_axis(avail, actions[..., None], -1).all()
        assert np.all(np.isfinite(extras["log_prob"])) and np.all(extras["log_prob"] <= 0)
    greedy, _ = _MAPPO.act(step, deterministic=True)
    assert np.take_along_axis(avail, greedy[..., None], -1).all()


def test_mappo_in_real_battles_only_takes_available_actions():
    env = SMACVecEnv("3m", 4)
    learner = _learner(env, seed=3)
    step = env.reset(seed=3)
    for _ in range(200):  # the env itself refuses an unavailable action with SMACError
        actions, _ = learner.act(step)
        assert np.take_along_axis(step.avail, actions[..., None], -1).all()
        assert np.all(actions[~step.alive] == 0)  # the dead can only no-op
        step = env.step(actions)


# ------------------------------------------------------------------------------------ evaluation
def _wilson_by_quadratic(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    # the p with |p_hat - p| = z sqrt(p (1 - p) / n): (1 + z2/n) p^2 - (2 p_hat + z2/n) p + p_hat^2 = 0
    ph, z2 = wins / n, z * z
    a, b, c = 1 + z2 / n, -(2 * ph + z2 / n), ph * ph
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize("wins, n", [(16, 32), (0, 10), (10, 10), (1, 3), (31, 32), (500, 1000)])
def test_wilson_matches_the_standard_interval(wins, n):
    low, high = wilson(wins, n)
    ref_low, ref_high = _wilson_by_quadratic(wins, n)
    assert low == pytest.approx(max(0.0, ref_low), abs=1e-9) and high == pytest.approx(min(1.0, ref_high), abs=1e-9)
    assert 0.0 <= low <= wins / n <= high <= 1.0


def test_wilson_16_of_32():
    low, high = wilson(16, 32)
    assert low == pytest.approx(0.336306, abs=1e-6) and high == pytest.approx(0.663694, abs=1e-6)
    assert low + high == pytest.approx(1.0, abs=1e-12)  # symmetric around one half
    assert wilson(0, 0) == (0.0, 0.0)


class ScriptedEnv:
    """E fake battles: battle e ends every lengths[e] steps with return returns[e] and outcome won[e]."""

    def __init__(self, lengths, returns, won):
        self.lengths, self.returns, self.won = np.array(lengths), np.array(returns, np.float32), np.array(won)
        self.n_envs = len(lengths)
        self.t = np.zeros(self.n_envs, np.int64)
        self.seeds = []

    def _step(self, done):
        E = self.n_envs
        return Step(obs=np.zeros((E, 1, 1), np.float32), state=np.zeros((E, 1), np.float32),
                    avail=np.ones((E, 1, 2), bool), reward=np.zeros(E, np.float32), done=done,
                    truncated=np.zeros(E, bool), alive=np.ones((E, 1), bool), t=self.t.copy(),
                    episode_return=np.where(done, self.returns, 0).astype(np.float32),
                    episode_length=np.where(done, self.lengths, 0), won=done & self.won)

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t[:] = 0
        return self._step(np.zeros(self.n_envs, bool))

    def step(self, actions):
        self.t += 1
        done = self.t == self.lengths
        self.t[done] = 0
        return self._step(done)


class GreedyOnly:
    """A learner that records how it was asked to act."""

    def __init__(self):
        self.modes = []

    def act(self, step, deterministic=False):
        self.modes.append(deterministic)
        return np.zeros(step.alive.shape, np.int64), {}


def test_evaluate_takes_a_fixed_number_of_episodes_from_each_battle():
    env = ScriptedEnv(lengths=[2, 3], returns=[1.0, 0.5], won=[True, False])
    learner = GreedyOnly()
    res = evaluate(env, learner, 4, seed=77)
    # two episodes per battle slot: battle 0 at t=2 and t=4 (won), battle 1 at t=3 and t=6 (lost); battle 0's
    # third episode (t=6) is not counted, so the short battle is not over-represented
    assert env.seeds == [77] and set(learner.modes) == {True}
    assert res["episodes"] == 4 and res["win_rate"] == 0.5
    assert (res["win_rate_low"], res["win_rate_high"]) == wilson(2, 4)
    assert res["episode_return"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    assert res["episode_length"] == pytest.approx((2 + 3 + 2 + 3) / 4)


def test_evaluate_asks_for_sampled_actions_when_told():
    learner = GreedyOnly()
    res = evaluate(ScriptedEnv(lengths=[2, 3], returns=[1.0, 0.5], won=[True, False]), learner, 4, seed=77,
                   deterministic=False)
    assert set(learner.modes) == {False} and res["episodes"] == 4 and res["win_rate"] == 0.5


def test_evaluate_is_not_biased_towards_short_episodes():
    env = ScriptedEnv(lengths=[1, 3], returns=[1.0, 0.0], won=[True, False])
    res = evaluate(env, GreedyOnly(), 2, seed=0)  # one episode per battle would give 1 win in 2
    assert res["win_rate"] == 0.5 and res["episode_length"] == 2.0


class TwoAgentEnv(ScriptedEnv):
    """ScriptedEnv with two agents: agent 1 is dead at odd episode steps."""

    def _step(self, done):
        s = super()._step(done)
        alive = np.stack([np.ones(self.n_envs, bool), self.t % 2 == 0], 1)
        E = self.n_envs
        return dataclasses.replace(s, obs=np.zeros((E, 2, 1), np.float32), avail=np.ones((E, 2, 2), bool), alive=alive)


class Counting(GreedyOnly):
    """A learner with EvalCounters: its extra "heard" is the episode step + 1 for a living agent, 100 for a dead one."""

    eval_counters = {"heard": "heard_per_agent_step", "never_given": "absent_from_results"}

    def act(self, step, deterministic=False):
        actions, _ = super().act(step, deterministic)
        return actions, {"heard": np.where(step.alive, step.t[:, None] + 1.0, 100.0)}


def test_evaluate_averages_eval_counters_over_the_living_agent_steps_of_counted_episodes():
    from marl.spec import EvalCounters

    env = TwoAgentEnv(lengths=[2, 3], returns=[1.0, 0.5], won=[True, False])
    learner = Counting()
    assert isinstance(learner, EvalCounters) and not isinstance(GreedyOnly(), EvalCounters)
    res = evaluate(env, learner, 4, seed=0)
    # battle 0, an episode of steps 0, 1: 2 + 1 living agent-steps, heard 1 + 1 + 2 = 4; two counted episodes.
    # battle 1, steps 0, 1, 2: 2 + 1 + 2 agent-steps, heard 1 + 1 + 2 + 3 + 3 = 10; two counted episodes.
    # Battle 0's third episode (its steps 4-5) ends with battle 1's second and is not counted: (8 + 20) / (6 + 10)
    assert res["heard_per_agent_step"] == pytest.approx(28 / 16)
    assert "absent_from_results" not in res  # an extra act() never returned is not reported
    assert res["episodes"] == 4 and res["win_rate"] == 0.5  # the rest as without counters


def test_trainer_evaluate_on_real_battles(tmp_path):
    tr = Trainer(tiny(tmp_path, "train.eval_episodes=3"), tmp_path / "run", show_progress=False)
    before = tr.env.get_state()
    res = tr.evaluate()
    assert set(res) == {"win_rate", "win_rate_low", "win_rate_high", "episodes", "episode_return",
                        "episode_length"}
    assert res["episodes"] == 3 and res["win_rate"] in (0, 1 / 3, 2 / 3, 1)
    assert res["win_rate_low"] <= res["win_rate"] <= res["win_rate_high"]
    assert 1 <= res["episode_length"] <= 60
    assert_same(before, tr.env.get_state())  # the training battles are untouched
    assert tr.evaluate() == res  # deterministic


# ------------------------------------------------------------------------------------ same-seed reference
# one set per machine (conftest's per-machine references); this machine's set is added (or replaced) only on
# purpose (a new torch, a new kind of CPU, or a change meant to alter training), from the repository root:
# python -c "import sys, pathlib, tempfile, torch; sys.path.insert(0, 'tests'); torch.set_num_threads(1);
#   import conftest, test_trainer as t; d = pathlib.Path(tempfile.mkdtemp());
#   conftest.write_reference(t.REFERENCE, t.reference_run(d))"
# (the first set was written before machines were recorded; its machine is the PPO reference's first one)
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "trainer_reference.json")
# wall-clock timings: their tags and steps are compared, their values cannot be
TIMED = ("perf/env_steps_per_s", "perf/seconds_env", "perf/seconds_act", "perf/seconds_update")


def digest(obj, h=None) -> str:
    """sha256 over a nested state's keys, tensor dtypes, shapes and bytes, and plain values (in order)."""
    import hashlib

    top = h is None
    h = hashlib.sha256() if top else h
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        for k in obj:
            h.update(f"K{k!r}".encode())
            digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            digest(v, h)
    else:
        h.update(f"V{obj!r}".encode())
    return h.hexdigest() if top else ""


def tensorboard_scalars(run_dir) -> list[list]:
    """Every scalar a run wrote: [tag, step, value] sorted by tag then step (timings' values as None)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return sorted([tag, e.step, None if tag in TIMED else e.value]
                  for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag))


def reference_run(tmp_path) -> dict:
    """Five MAPPO updates of the tiny config with logs at 1, 2, 4 and evaluations at 2, 4."""
    cfg = tiny(tmp_path, "train.log_interval=2", "train.eval_interval=2", "train.eval_episodes=2")
    tr = Trainer(cfg, tmp_path / "ref", show_progress=False)
    tr.run(max_updates=5)
    return {"learner_sha256": digest(tr.learner.state_dict()), "scalars": tensorboard_scalars(tmp_path / "ref")}


def test_same_seed_gives_the_stored_parameters_and_scalars(tmp_path):
    # recorded from the trainer before its loop was split into named steps (tests/data/trainer_reference.json);
    # bit-exact with one torch thread on one torch build and CPU: a new one may need a new set, a refactor may not
    from conftest import stored_reference

    expected = stored_reference(REFERENCE)
    got = reference_run(tmp_path)
    assert [s[:2] for s in got["scalars"]] == [s[:2] for s in expected["scalars"]]  # the same tags at the same steps
    assert got["scalars"] == expected["scalars"]
    assert got["learner_sha256"] == expected["learner_sha256"]


def test_play_episodes_counts_each_battles_quota_and_its_steps():
    """play_episodes: battle e plays quota[e] episodes, reported per battle with every transition counted."""
    from toy_envs import CountVecEnv

    from marl.rollout import play_episodes

    env = CountVecEnv(n_envs=3)
    played = play_episodes(env, lambda step: np.zeros((3, 2), np.int64), np.array([2, 0, 1]), seed=5)
    assert sorted(played["env"].tolist()) == [0, 0, 2]
    assert played["return"].shape == (3,) and played["length"].shape == (3,) and played["won"].dtype == bool
    assert played["env_steps"] == 3 * env.steps
    # all-zero actions: the return is the luck summed over the episode's steps, and each length is 3 or 6
    assert set(played["length"].tolist()) <= {3, 6}
    again = play_episodes(CountVecEnv(n_envs=3), lambda step: np.zeros((3, 2), np.int64), np.array([2, 0, 1]), seed=5)
    assert np.array_equal(played["return"], again["return"]) and np.array_equal(played["env"], again["env"])


def test_a_learner_that_evaluates_its_own_policies_gets_an_evaluator_counted_outside_the_budget(tmp_path,
                                                                                                monkeypatch):
    """EvaluatesPolicies: the trainer hands over an Evaluator; its steps are logged and survive resume."""
    import marl.trainer as trainer_mod
    from marl.agents.mappo import MAPPO
    from marl.spec import EvaluatesPolicies, Evaluator

    class SelfEvaluating(MAPPO):
        def attach_evaluator(self, evaluator):
            self.evaluator = evaluator

        def update(self, rollout):
            self.played = self.evaluator(lambda step: self.act(step, deterministic=True)[0], 3, 1, seed=11)
            return super().update(rollout)

    def make_self_evaluating(*args, **kwargs):
        learner = make_learner(*args, **kwargs)
        learner.__class__ = SelfEvaluating
        return learner

    monkeypatch.setattr(trainer_mod, "make_learner", make_self_evaluating)
    cfg = tiny(tmp_path)
    tr = Trainer(cfg, tmp_path / "run")
    assert isinstance(tr.learner, EvaluatesPolicies) and isinstance(tr.learner.evaluator, Evaluator)
    tr.run(max_updates=2)
    played = tr.learner.played
    assert played["return"].shape == (3,) and sorted(played["env"].tolist()) == [0, 1, 2]
    assert tr.eval_env_steps >= 2 * 3 and tr.env_steps == 2 * PER_UPDATE  # outside the budget
    resumed = Trainer(cfg, tmp_path / "run", resume=True)
    assert resumed.eval_env_steps == tr.eval_env_steps
