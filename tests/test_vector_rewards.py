"""Vector rewards through the engine: per-objective returns in collect(), evaluate(), TensorBoard and the CLI."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_envs import CountVecEnv, VectorRewardEnv

from marl import config as config_mod
from marl.agents.ppo import rollout_advantages, scalarise, team_reward
from marl.cli import returns_text
from marl.config import ConfigError
from marl.envs.gym import make_gym
from marl.registry import make_learner
from marl.rollout import collect
from marl.spec import Rollout
from marl.trainer import evaluate

VECTOR_ID = "marl-test/VectorReward-v0"
# Gymnasium's checker wants a scalar reward; a vector one is what these games give
pytestmark = pytest.mark.filterwarnings("ignore:.*The reward returned by `step\\(\\)` must be a float")


@pytest.fixture
def vector_env(monkeypatch):
    """Two copies of a one-agent game with reward [1, -t] and 3-step episodes: each returns [3, -6]."""
    monkeypatch.setitem(gymnasium.registry, VECTOR_ID,
                        gymnasium.envs.registration.EnvSpec(VECTOR_ID, entry_point=VectorRewardEnv))
    env = make_gym(VECTOR_ID, 2, {})
    yield env
    env.close()


class Zeros:
    """A learner that always takes action 0."""

    def act(self, step, deterministic=False):
        """Action 0 everywhere, nothing stored."""
        return np.zeros(step.alive.shape, np.int64), {}


def test_collect_keeps_each_objective_of_a_finished_episode(vector_env):
    rollout, _, episodes = collect(vector_env, Zeros(), vector_env.reset(seed=0), 7)
    assert rollout.reward.shape == (7, 2, 2) and rollout.reward.dtype == np.float32
    np.testing.assert_array_equal(rollout.reward[:3, 0], [[1, -1], [1, -2], [1, -3]])
    assert episodes == [{"return": [3.0, -6.0], "length": 3, "won": False}] * 4  # two per copy in 7 steps


def test_evaluate_averages_each_objective(vector_env):
    res = evaluate(vector_env, Zeros(), 3, seed=0)
    assert res == {"episodes": 3, "episode_return": [3.0, -6.0], "episode_length": 3.0}


def _scalars_of(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_run_logger_writes_one_tag_per_objective(tmp_path):
    from marl.logging import RunLogger

    episodes = [{"return": [1.0, -4.0], "length": 10, "won": False}, {"return": [3.0, -2.0], "length": 20,
                                                                      "won": False}]
    with RunLogger(tmp_path, 1000, show_progress=False, can_win=False, reward_names=("combat", "safety")) as log:
        log.update(64, {}, {"update": 1.0}, 16.0, episodes)
        log.evaluation({"episodes": 2, "episode_return": [2.5, -0.5], "episode_length": 7.0}, 64)
    scalars = _scalars_of(tmp_path)
    assert {k: v for k, v in scalars.items() if "return" in k} == {
        "train/return/combat": [(64, 2.0)], "train/return/safety": [(64, -3.0)],
        "eval/return/combat": [(64, 2.5)], "eval/return/safety": [(64, -0.5)]}
    assert "train/episode_return" not in scalars and scalars["eval/episode_length"] == [(64, 7.0)]


def test_run_logger_names_objectives_it_was_not_told_of(tmp_path):
    from marl.logging import RunLogger

    with RunLogger(tmp_path, 1000, show_progress=False, can_win=False) as log:
        assert log.objective_names(3) == ("objective_0", "objective_1", "objective_2")
        log.evaluation({"episodes": 1, "episode_return": [1.0, 2.0]}, 8)
    assert set(_scalars_of(tmp_path)) == {"eval/return/objective_0", "eval/return/objective_1"}


def test_progress_bar_shows_each_objective(tmp_path):
    from marl.logging import RunLogger

    with RunLogger(tmp_path, 1000) as logger:
        logger.progress(8, 100.0, {"episode_return": [12.345, -3.0]})
        assert logger.bar.postfix == "sps=100, eval_return=12.35/-3"


def test_returns_in_words():
    assert returns_text(1.5, ("reward",)) == "mean return 1.50"
    assert returns_text([12.3, -3.2], ("combat", "safety")) == "mean return combat 12.30, safety -3.20"
    assert returns_text([1.0, 2.0], ("reward",)) == "mean return objective_0 1.00, objective_1 2.00"


# ------------------------------------------------------------------------------------ the shared PPO core
def _rollout(reward: np.ndarray, done: np.ndarray, n_agents: int = 2) -> Rollout:
    T, E = done.shape
    z = np.zeros((T, E, n_agents, 1), np.float32)
    return Rollout(obs=z, state=z[:, :, 0], avail=np.ones((T, E, n_agents, 1), bool),
                   alive=np.ones((T, E, n_agents), bool), actions=np.zeros((T, E, n_agents), np.int64),
                   reward=reward, done=done, truncated=np.zeros_like(done), extras={}, next_obs=z[0],
                   next_state=z[0, :, 0], next_avail=np.ones((E, n_agents, 1), bool),
                   next_alive=np.ones((E, n_agents), bool), final_t=np.zeros(0, np.int64),
                   final_e=np.zeros(0, np.int64), final_obs=np.zeros((0, n_agents, 1), np.float32),
                   final_state=np.zeros((0, 1), np.float32))


def test_scalarise_is_the_weighted_sum_over_the_last_axis():
    r = np.array([[[1.0, -2.0], [0.5, 4.0]]], np.float32)  # [T=1, E=2, K=2]
    np.testing.assert_array_equal(scalarise(r, [0.25, 0.75]), [[-1.25, 3.125]])
    np.testing.assert_array_equal(scalarise(np.array([[2.0, -4.0]], np.float32), [0.5]), [[1.0, -2.0]])
    assert scalarise(r, [1, 0]).dtype == np.float32


def test_team_reward_keeps_the_objective_axis_or_scalarises_it():
    r = np.arange(12, dtype=np.float32).reshape(2, 3, 2)  # [T, E, K]
    rollout = _rollout(r, np.zeros((2, 3), bool), n_agents=4)
    vector = team_reward(rollout, 4)
    assert vector.shape == (2, 3, 4, 2) and (vector == r[:, :, None, :]).all()
    scalar = team_reward(rollout, 4, [1.0, 2.0])
    assert scalar.shape == (2, 3, 4) and (scalar == (r[..., 0] + 2 * r[..., 1])[:, :, None]).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), w=st.lists(st.floats(0, 4, allow_nan=False), min_size=3, max_size=3))
def test_gae_over_objectives_is_linear_in_the_preference(seed, w):
    """GAE is linear: the advantages of w . r with values w . V are w . (each objective's advantages)."""
    rng = np.random.default_rng(seed)
    T, E, A, K = 7, 3, 2, 3
    r = rng.normal(size=(T, E, K)).astype(np.float32)
    done = rng.random((T, E)) < 0.2
    values = rng.normal(size=(T, E, A, K)).astype(np.float32)
    bootstrap = rng.normal(size=(E, A, K)).astype(np.float32)
    rollout = _rollout(r, done, A)
    wv = np.asarray(w, np.float32)
    adv_k, ret_k = rollout_advantages(rollout, values, bootstrap, np.zeros((0, A, K), np.float32), 0.97, 0.9)
    assert adv_k.shape == (T, E, A, K)
    adv, ret = rollout_advantages(rollout, values @ wv, bootstrap @ wv, np.zeros((0, A), np.float32), 0.97, 0.9,
                                  preference=w)
    np.testing.assert_allclose(adv, adv_k @ wv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ret, ret_k @ wv, rtol=1e-4, atol=1e-4)
    for k in range(K):  # each objective's column is the scalar GAE of that objective alone
        one, _ = rollout_advantages(_rollout(r[..., k], done, A), values[..., k], bootstrap[..., k],
                                    np.zeros((0, A), np.float32), 0.97, 0.9)
        np.testing.assert_allclose(adv_k[..., k], one, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ linear scalarisation
def _config(*overrides: str, algo: str = "mappo") -> dict:
    return config_mod.load("gym", VECTOR_ID, algo, ["train.envs=2", "train.rollout=8", "train.steps=32",
                                                     "train.eval_interval=1", "train.eval_episodes=2",
                                                     "algo.ppo_epochs=1", *overrides])


@pytest.mark.parametrize("algo", ["mappo", "commformer"])
@pytest.mark.parametrize("preference, message", [
    (None, "{algo} learns one reward, but gym:marl-test/VectorReward-v0 has 2 objectives (objective_0, "
           "objective_1); give their weights with algo.preference, for example algo.preference=1,1"),
    ("0.5", "algo.preference: the preference has 1 value; give one per objective: 2 (objective_0, objective_1)"),
    ("0,0", "algo.preference: the preference (0, 0) is all zero; weights must be >= 0, not all 0"),
])
def test_a_vector_reward_needs_a_good_preference(vector_env, algo, preference, message):
    cfg = _config(*([f"algo.preference={preference}"] if preference else []), algo=algo)
    with pytest.raises(ConfigError) as err:
        config_mod.check_built(cfg, vector_env.spec)
    assert str(err.value) == message.format(algo=algo)


def test_a_negative_weight_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match=r"^algo.preference must be K numbers >= 0, not all 0, one per objective "
                                          r"\(0.3,0.7 or \[0.3,0.7\]\) or null, got \[0.5, -1\]$"):
        _config("algo.preference=0.5,-1")


def test_one_reward_takes_a_preference_of_one_weight(vector_env):
    spec = dataclasses.replace(vector_env.spec, reward_dim=1, reward_names=("reward",))
    config_mod.check_built(_config("algo.preference=2"), spec)
    with pytest.raises(ConfigError, match="has 2 values; give one per objective: 1 \\(reward\\)"):
        config_mod.check_built(_config("algo.preference=1,1"), spec)


def test_the_cli_stops_before_the_run_directory(vector_env, tmp_path, monkeypatch, capsys):
    from marl.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "gym", VECTOR_ID, "--algo", "mappo", "train.steps=16"]) == 2
    assert capsys.readouterr().err.startswith("marl: error: mappo learns one reward, but gym:marl-test/")
    assert not list(tmp_path.iterdir())


class TwoObjectives:
    """CountVecEnv (two agents) with a second objective, -1 per step: reward [luck + 0.1 * actions, -1]."""

    def __init__(self):
        self.inner = CountVecEnv(n_envs=2)
        self.n_envs = 2
        self.spec = dataclasses.replace(self.inner.spec, reward_dim=2, reward_names=("luck", "time"))

    def _vector(self, step):
        step.reward = np.stack([step.reward, -np.ones_like(step.reward)], -1)
        step.episode_return = np.stack([step.episode_return, -step.episode_length], -1).astype(np.float32)
        return step

    def reset(self, seed=None):
        """The inner reset, with a zero reward per objective."""
        step = self.inner.reset(seed)
        step.reward, step.episode_return = np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)
        return step

    def step(self, actions):
        """The inner step, with the second objective."""
        return self._vector(self.inner.step(actions))


@pytest.mark.parametrize("algo", ["mappo", "commformer"])
def test_learners_learn_the_scalarised_reward(algo, monkeypatch):
    """The update's GAE sees w . r: with w = (1, 0) the first objective, with (0, 2) twice the second."""
    import marl.agents.ppo as ppo

    env, seen, real = TwoObjectives(), [], ppo.team_reward
    monkeypatch.setattr(ppo, "team_reward", lambda rollout, n, preference=None: seen.append(
        real(rollout, n, preference)) or seen[-1])
    for w in ([1.0, 0.0], [0.0, 2.0]):
        cfg = config_mod.load("smac", "3m", algo, ["algo.ppo_epochs=1", f"algo.preference={w[0]},{w[1]}"])
        config_mod.check_built(cfg, env.spec)
        learner = make_learner(algo, env.spec, cfg["algo"], seed=0, device="cpu")
        rollout, _, _ = collect(env, learner, env.reset(seed=0), 6)
        seen.clear()
        learner.update(rollout)
        assert rollout.reward.shape == (6, 2, 2) and seen[0].shape == (6, 2, 2)  # [T, E, A]
        expected = w[0] * rollout.reward[..., 0] + w[1] * rollout.reward[..., 1]
        np.testing.assert_array_equal(seen[0], np.repeat(expected[:, :, None], 2, axis=2))


def test_training_on_a_vector_reward_logs_each_objective(vector_env, tmp_path):
    from marl.trainer import Trainer

    cfg = _config("algo.preference=0.3,0.7", f"train.runs_dir={tmp_path}")
    result = Trainer(cfg, tmp_path / "run", show_progress=False).run()
    assert result["eval"]["episode_return"] == [3.0, -6.0]
    tags = set(_scalars_of(tmp_path / "run"))
    assert {"train/return/objective_0", "train/return/objective_1", "eval/return/objective_0",
            "eval/return/objective_1"} <= tags and not {t for t in tags if t.endswith("episode_return")}


# ------------------------------------------------------------------------------------ lists on the command line
@pytest.mark.parametrize("text, value", [("0.3,0.7", [0.3, 0.7]), ("[0.3,0.7]", [0.3, 0.7]), ("[0.3, 0.7]", [0.3, 0.7]),
                                         (" 0.3 , 0.7 ", [0.3, 0.7]), ("1", [1]), ("2,1e-3", [2, 0.001]),
                                         ("null", None)])
def test_a_list_setting_reads_brackets_and_commas_alike(text, value):
    assert config_mod.load("smac", "3m", "mappo", [f"algo.preference={text}"])["algo"]["preference"] == value


def test_commas_stay_in_a_setting_that_is_not_a_list(tmp_path):
    assert config_mod.load("smac", "3m", "mappo", ["train.runs_dir=a,b"])["train"]["runs_dir"] == "a,b"
    assert config_mod.load("comm", None, "mappo", ["env.informants=1,2,0"])["env"]["informants"] == [1, 2, 0]
    assert config_mod.parse_list("combat,safety") == ["combat", "safety"]
    assert config_mod.parse_list("[combat]") == ["combat"]
