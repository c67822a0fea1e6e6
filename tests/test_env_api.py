"""marl.testing.vec_env_api_test: every environment marl ships passes it, and broken ones fail in one clear line."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from toy_envs import CountVecEnv, CrashEnv, LeaveEnv, VectorRewardEnv

from marl.envs.gym import make_gym
from marl.envs.pettingzoo import EnvMaker, PettingZooVecEnv, make_mpe, make_pettingzoo
from marl.envs.sc2 import SC2VecEnv
from marl.envs.smac import SMACEnv, SMACParallelEnv, SMACVecEnv
from marl.spec import Step, check_actions, finished_envs, first_step
from marl.testing import VecEnvAPIError, random_actions, vec_env_api_test

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "marl-plugin-example"


def _stop(step, rng):
    """Stop where it is available: 2s_vs_1sc's battles, with a crawler that does not decay, run into the time limit."""
    return np.where(step.avail[..., 1], 1, 0).astype(np.int64)


def _plugin(monkeypatch):
    """The example plug-in's factory, imported from the repo when the package is not installed."""
    try:
        module = importlib.import_module("marl_plugin_example")
    except ImportError:
        monkeypatch.syspath_prepend(str(PLUGIN))
        module = importlib.import_module("marl_plugin_example")
    return module.plugin.factory("trio", 2, {"max_cycles": 8})


def _vector_reward(monkeypatch):
    monkeypatch.setitem(gymnasium.registry, "marl-test/VectorReward-v0",
                        gymnasium.envs.registration.EnvSpec("marl-test/VectorReward-v0", entry_point=VectorRewardEnv))
    return make_gym("marl-test/VectorReward-v0", 2, {})


def _mo(module: str, build):
    """An environment of an optional multi-objective package (README's set-up installs it), else skipped."""
    def make(mp):
        pytest.importorskip(module, reason="pip install --no-deps mo-gymnasium==1.3.2 momaland==0.2.0")
        return build()
    return make


# name: (build, steps, policy, what the run must have seen)
ENVS = {
    "smac 3m": (lambda mp: SMACVecEnv("3m", 4), 150, None, {"dead", "resumed"}),
    "smacv2 protoss_5_vs_5": (lambda mp: SMACVecEnv("protoss_5_vs_5", 2), 150, None, {"dead", "resumed"}),
    "smac 2s3z combat and safety": (lambda mp: SMACVecEnv("2s3z", 2, objectives=["combat", "safety"]), 150, None,
                                    {"dead", "resumed"}),
    "smac 2s_vs_1sc time limit": (lambda mp: SMACVecEnv("2s_vs_1sc", 1, off_creep_decay=False), 305, _stop,
                                  {"truncated", "resumed"}),
    "sc2 face on SMACEnv": (lambda mp: SC2VecEnv("3m", 2, env_class=SMACEnv), 150, None, {"dead"}),
    "smac pettingzoo face": (lambda mp: PettingZooVecEnv(EnvMaker(SMACParallelEnv, {"map_name": "3m"}), 2,
                                                         win_info="battle_won"), 150, None, {"dead"}),
    "pettingzoo mpe2": (lambda mp: make_pettingzoo("mpe2:simple_spread_v3", 2, {"N": 2, "max_cycles": 10}), 60, None,
                        {"truncated"}),
    "mpe simple_tag": (lambda mp: make_mpe("simple_tag", 2, {"max_cycles": 10}), 40, None, {"truncated"}),
    "gym CartPole-v1": (lambda mp: make_gym("CartPole-v1", 3, {"max_episode_steps": 20}), 100, None, {"truncated"}),
    "gym vector reward": (_vector_reward, 20, None, set()),
    "mo-gymnasium deep-sea-treasure-concave": (_mo("mo_gymnasium", lambda: make_gym(
        "deep-sea-treasure-concave-v0", 2, {"max_episode_steps": 8})), 60, None, {"truncated"}),
    "momaland mo-beach-v0": (_mo("momaland", lambda: make_pettingzoo("momaland.envs.beach.mobeach_v0", 2, {
        "team_reward": "sum", "num_agents": 6, "num_timesteps": 4})), 30, None, set()),
    "toy LeaveEnv": (lambda mp: PettingZooVecEnv(EnvMaker(LeaveEnv), 2), 30, None, {"dead", "truncated"}),
    "toy LeaveEnv in a worker": (lambda mp: PettingZooVecEnv(EnvMaker(LeaveEnv), 2, workers=1), 30, None,
                                 {"dead", "truncated"}),
    "toy CrashEnv (no crash)": (lambda mp: PettingZooVecEnv(EnvMaker(CrashEnv), 2), 30, None, {"truncated"}),
    "toy CountVecEnv": (lambda mp: CountVecEnv(), 60, None, {"dead", "truncated", "won", "resumed"}),
    "toy CountVecEnv losing an episode": (lambda mp: CountVecEnv(lose_at=2), 60, None, {"lost", "resumed"}),
    "example plug-in": (_plugin, 40, None, {"truncated"}),
}


@pytest.mark.filterwarnings("ignore:.*The reward returned by `step\\(\\)` must be a float")
@pytest.mark.parametrize("name", list(ENVS))
def test_every_environment_passes(name, monkeypatch):
    build, steps, policy, expect = ENVS[name]
    env = build(monkeypatch)
    try:
        seen = vec_env_api_test(env, seed=3, steps=steps, **({"policy": policy} if policy else {}))
    finally:
        env.close()
    assert seen["episodes"] > 0  # the rules on episode ends were exercised
    for what in expect:
        assert seen[what], f"the run saw no {what}: {seen}"
    assert seen["resumed"] == ("resumed" in expect)


@pytest.mark.parametrize("broken, message", [
    ("no_reset", "run step 3: Step.t[1] is 3 where done is set; the environment must already have reset, "
                 "its new episode at t == 0"),
    ("obs_dtype", "reset: Step.obs has dtype float64, expected float32"),
    ("truncated_without_done", "run step 6: truncated is set without done in env 0; truncated implies done"),
    ("dead_avail", "run step 2: dead agent 1 of env 0 may take actions [0, 1, 2]; a dead agent (alive False) may "
                   "take only the no-op, action 0"),
    ("ignores_seed", "reset(seed) again: Step.obs differs (first at index (0, 0, 2)); reset(seed=0) must give the "
                     "same Step every time"),
    ("state_alias", "set_state: Step.obs differs (first at index (2, 0, 0)); set_state() must return the Step the "
                    "environments stood at when get_state() was called"),
    ("episode_length", "run step 3: Step.episode_length[1] is 2, but the episode that ended took 3 steps"),
])
def test_a_broken_env_fails_with_one_line_naming_the_rule(broken, message):
    with pytest.raises(VecEnvAPIError) as err:
        vec_env_api_test(CountVecEnv(broken=broken), seed=0, steps=60)
    assert str(err.value) == message
    assert isinstance(err.value, AssertionError)


def test_a_wrong_shape_and_a_missing_final_obs_are_named():
    class Short(CountVecEnv):
        def step(self, actions):
            step = super().step(actions)
            step.state = step.state[:, :1]
            return step

    class NoFinal(CountVecEnv):
        def step(self, actions):
            step = super().step(actions)
            step.final_obs = None
            return step

    with pytest.raises(VecEnvAPIError, match=r"^run step 1: Step.state has shape \(3, 1\), expected \(3, 2\)$"):
        vec_env_api_test(Short(), steps=10)
    with pytest.raises(VecEnvAPIError, match=r"^run step 3: Step.final_obs is None where done is set in env 1; "
                                             r"it must hold the observation the episode ended on$"):
        vec_env_api_test(NoFinal(), steps=10)


def _with_spec(**changes) -> CountVecEnv:
    env = CountVecEnv()
    env.spec = dataclasses.replace(env.spec, **changes)
    return env


def test_the_spec_promises_are_checked():
    with pytest.raises(VecEnvAPIError, match=r"^run step 6: the episode of env 0 lasted 6 steps, more than "
                                             r"EnvSpec.episode_limit 3$"):
        vec_env_api_test(_with_spec(episode_limit=3), steps=10)
    with pytest.raises(VecEnvAPIError, match=r"^run step 3: won is set in env 2 but EnvSpec.can_win is False$"):
        vec_env_api_test(_with_spec(can_win=False), steps=10)


def test_the_step_rules_are_checked():
    class Skips(CountVecEnv):
        def step(self, actions):
            step = super().step(actions)
            step.t = np.where(step.done, 0, step.t + 1)
            return step

    class Stuck(CountVecEnv):
        def step(self, actions):
            step = super().step(actions)
            step.avail[0, 0] = False
            return step

    class Started(CountVecEnv):
        def reset(self, seed=None):
            step = super().reset(seed)
            step.done[1] = True
            return step

    with pytest.raises(VecEnvAPIError, match=r"^run step 1: Step.t\[0\] is 2, expected 1 \(one more than the step "
                                             r"before\) where done is not set$"):
        vec_env_api_test(Skips(), steps=10)
    with pytest.raises(VecEnvAPIError, match=r"^run step 1: agent 0 of env 0 has no available action \(avail is all "
                                             r"False\); a dead agent has the no-op$"):
        vec_env_api_test(Stuck(), steps=10)
    with pytest.raises(VecEnvAPIError, match=r"^reset: done or truncated is set on the Step reset\(\) returned; "
                                             r"nothing has ended yet$"):
        vec_env_api_test(Started(), steps=10)


def test_a_vector_reward_must_keep_its_objectives():
    with pytest.raises(VecEnvAPIError, match=r"^reset: Step.reward has shape \(3,\), expected \(3, 2\)$"):
        vec_env_api_test(_with_spec(reward_dim=2, reward_names=("a", "b")), steps=10)


def test_what_is_not_a_vec_env_or_a_bad_step_count_is_refused():
    with pytest.raises(VecEnvAPIError, match=r"^env: LeaveEnv is not a VecEnv: it lacks spec, n_envs$"):
        vec_env_api_test(LeaveEnv())
    with pytest.raises(ValueError, match=r"^steps must be an integer of at least 2, got 1$"):
        vec_env_api_test(CountVecEnv(), steps=1)


def test_random_actions_are_uniform_over_the_available_ones():
    avail = np.zeros((2, 2, 4), bool)
    avail[0, 0, [1, 3]] = True
    avail[0, 1, 0] = True
    avail[1, :, :] = True
    step = first_step(np.zeros((2, 2, 1), np.float32), np.zeros((2, 1), np.float32), avail, np.ones((2, 2), bool),
                      np.zeros(2, np.int64))
    draws = np.stack([random_actions(step, np.random.default_rng(s)) for s in range(400)])
    assert draws.dtype == np.int64 and draws.shape == (400, 2, 2)
    assert set(draws[:, 0, 0].tolist()) == {1, 3} and set(draws[:, 0, 1].tolist()) == {0}
    assert set(draws[:, 1, 0].tolist()) == {0, 1, 2, 3}
    assert 150 < (draws[:, 0, 0] == 1).sum() < 250


# ------------------------------------------------------------------------------ the shared helpers in marl.spec
def test_first_step_is_all_zero_with_final_observations_copied():
    obs, state = np.ones((2, 3, 4), np.float32), np.full((2, 5), 2, np.float32)
    avail, alive, t = np.ones((2, 3, 6), bool), np.ones((2, 3), bool), np.array([0, 7])
    step = first_step(obs, state, avail, alive, t, reward_dim=2, info={"lost": np.zeros(2, bool)})
    assert step.obs is obs and step.t is t and step.alive is alive and step.avail is avail
    assert step.final_obs is not obs and np.array_equal(step.final_obs, obs) and np.array_equal(step.final_state, state)
    for name, shape, dtype in (("reward", (2, 2), np.float32), ("episode_return", (2, 2), np.float32),
                               ("done", (2,), bool), ("truncated", (2,), bool), ("won", (2,), bool),
                               ("episode_length", (2,), np.int64)):
        value = getattr(step, name)
        assert value.shape == shape and value.dtype == dtype and not value.any(), name
    assert list(step.info) == ["lost"]
    assert first_step(obs, state, avail, alive, t).reward.shape == (2,) and first_step(obs, state, avail, alive,
                                                                                       t).info == {}


def test_check_actions_names_the_expected_shape():
    out = check_actions([[1, 2]], 1, 2)
    assert isinstance(out, np.ndarray) and out.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match=r"^actions must be integers of shape \(1, 2\), got int64 \(2,\)$"):
        check_actions(np.array([1, 2]), 1, 2)

    class Mine(ValueError):
        pass

    with pytest.raises(Mine, match=r"^actions must be integers of shape \(1, 2\), got float64 \(1, 2\)$"):
        check_actions(np.zeros((1, 2)), 1, 2, Mine)


def test_finished_envs_leave_out_lost_episodes():
    step = Step(**{k: np.zeros(4) for k in ("obs", "state", "avail", "reward", "truncated", "alive", "t",
                                            "episode_return", "episode_length", "won")},
                done=np.array([True, True, False, True]))
    assert finished_envs(step).tolist() == [0, 1, 3]
    step.info["lost"] = np.array([False, True, False, False])
    assert finished_envs(step).tolist() == [0, 3]

