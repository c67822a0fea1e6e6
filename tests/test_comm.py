"""The probe game `comm`: its rules, known returns, structures, errors, scripted communicators and exact resume."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from conftest import whole_and_resumed
from hypothesis import given, settings
from hypothesis import strategies as st

from marl import checkpoint
from marl import config as config_mod
from marl.cli import main
from marl.envs.comm import (
    CommError,
    CommVecEnv,
    _rng_from_words,
    chance_return,
    graph_return,
    held_fraction,
    make_informants,
    optimal_return,
    random_graph_return,
    step_value,
)
from marl.registry import env_plugins, make_env
from marl.spec import PlantedGraph, Resumable, VecEnv


def symbols_of(env: CommVecEnv, obs: np.ndarray) -> np.ndarray:
    """Every agent's symbol, int[E, N], read from the `symbol` block of the observations."""
    return obs[..., env.spec.block_slices()["symbol"]].argmax(-1)


def scripted(env: CommVecEnv, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A communicator that reads only its own observation and those of the senders in its mask row.

    Receiver i names its informant's symbol when its mask row holds the informant, else guesses 0; in
    `intermittent` it plays action 0 whenever its own needed flag is down.
    """
    E, N, _ = obs.shape
    heard = mask | np.eye(N, dtype=bool)
    # what each receiver sees: [E, receiver, sender, obs_dim], zeros for the senders it does not hear
    seen = obs[:, None, :, :] * heard[None, :, :, None]
    sl = env.spec.block_slices()
    informant_obs = seen[:, np.arange(N), env.informants]  # [E, N, obs_dim]; zeros when not heard
    sym = informant_obs[..., sl["symbol"]]
    actions = np.where(sym.any(-1), sym.argmax(-1), 0)
    if env.intermittent:
        own_need = seen[:, np.arange(N), np.arange(N), sl["need"].start] > 0.5
        actions = np.where(own_need, actions, 0)
    return actions


def play(env: CommVecEnv, policy, episodes_per_game: int, seed: int) -> np.ndarray:
    """The returns of episodes_per_game whole episodes of every game under policy(obs)."""
    step = env.reset(seed=seed)
    returns = []
    for _ in range(episodes_per_game * env.episode_limit):
        step = env.step(policy(step.obs))
        returns.extend(step.episode_return[step.done].tolist())
    return np.asarray(returns)


# ------------------------------------------------------------------------------------ the rules
def test_exact_rewards_for_scripted_actions():
    env = CommVecEnv("informants", 2, n_agents=3, symbols=3, structure="ring", episode_limit=5)
    step = env.reset(seed=4)
    sym = symbols_of(env, step.obs)
    right = sym[:, [1, 2, 0]]  # ring: agent i's informant is i + 1
    wrong = (right + 1) % 3
    actions = right.copy()
    actions[0, 1] = wrong[0, 1]  # game 0: agent 1 wrong; game 1: all wrong
    actions[1] = wrong[1]
    step = env.step(actions)
    assert step.reward.dtype == np.float32
    assert step.reward.tolist() == [np.float32(2 / 3), 0.0]
    step = env.step(symbols_of(env, step.obs)[:, [1, 2, 0]])
    assert step.reward.tolist() == [1.0, 1.0]
    assert step.episode_return.tolist() == [np.float32(2 / 3 + 1), 1.0]
    assert step.t.tolist() == [2, 2]


def test_the_own_symbol_does_not_pay():
    env = CommVecEnv("informants", 1, n_agents=2, symbols=5, episode_limit=50)
    step = env.reset(seed=0)
    total = np.zeros(2)
    for _ in range(50):
        sym = symbols_of(env, step.obs)[0]
        step = env.step(sym[None])
        total += sym == sym[::-1]  # paid only when the two symbols happen to agree
    assert float(step.episode_return[0]) == pytest.approx(total.sum() / 2)


@pytest.mark.parametrize("need_prob", [0.0, 0.3, 1.0])
def test_intermittent_pays_the_informant_when_needed_else_action_zero(need_prob):
    env = CommVecEnv("intermittent", 3, n_agents=4, symbols=3, structure="ring", need_prob=need_prob)
    sl = env.spec.block_slices()
    assert sl == {"symbol": slice(0, 3), "id": slice(3, 7), "need": slice(7, 8)}
    step = env.reset(seed=1)
    flags = []
    for _ in range(40):
        sym, need = symbols_of(env, step.obs), step.obs[..., 7] > 0.5
        flags.append(need)
        informant = sym[:, [1, 2, 3, 0]]
        saved = env.get_state()
        step = env.step(informant)
        expected = np.mean(np.where(need, True, informant == 0), axis=1)
        assert np.array_equal(step.reward, expected.astype(np.float32))
        env.set_state(saved)  # the same step again, every agent playing action 0
        step = env.step(np.zeros_like(informant))  # action 0 pays when the flag is down
        expected = np.mean(np.where(need, informant == 0, True), axis=1)
        assert np.array_equal(step.reward, expected.astype(np.float32))
    rate = np.mean(flags)
    if need_prob in (0.0, 1.0):
        assert rate == need_prob
    else:
        assert abs(rate - need_prob) < 4 * math.sqrt(need_prob * (1 - need_prob) / np.size(flags))


def test_observation_state_and_spec():
    env = CommVecEnv("informants", 2, n_agents=3, symbols=4, structure="ring")
    spec = env.spec
    assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions, spec.episode_limit) == (3, 7, 12, 4, 20)
    assert [(b.name, b.count, b.width) for b in spec.obs_layout] == [("symbol", 1, 4), ("id", 1, 3)]
    assert spec.name == "comm:informants" and not spec.can_win
    assert spec.agent_names == ("agent_0", "agent_1", "agent_2")
    step = env.reset(seed=0)
    assert np.array_equal(step.obs[..., 4:], np.broadcast_to(np.eye(3), (2, 3, 3)))
    # the state is every agent's symbol block, agent by agent
    assert np.array_equal(step.state, step.obs[..., :4].reshape(2, 12))
    inter = CommVecEnv("intermittent", 1, n_agents=3, symbols=4)
    assert (inter.spec.obs_dim, inter.spec.state_dim) == (8, 15)
    s = inter.reset(seed=0)
    assert np.array_equal(s.state[0, 12:], s.obs[0, :, 7])
    assert isinstance(env, VecEnv) and isinstance(env, Resumable) and isinstance(env, PlantedGraph)


def test_episodes_are_cut_at_the_limit_with_the_final_observation():
    env = CommVecEnv("informants", 2, n_agents=3, symbols=2, episode_limit=3)
    step = env.reset(seed=5)
    for t in range(1, 7):
        before = env.get_state()
        step = env.step(np.zeros((2, 3), np.int64))
        ended = t % 3 == 0
        assert step.done.tolist() == [ended] * 2 and step.truncated.tolist() == [ended] * 2
        assert step.t.tolist() == [0 if ended else t % 3] * 2
        assert not step.won.any() and step.alive.all() and step.avail.all()
        if ended:
            assert step.episode_length.tolist() == [3, 3]
            # the final observation is drawn after the last step, the new episode's one apart from it
            rng = _rng_from_words(before["rng"])
            final_sym = rng.integers(0, 2, size=(2, 3))
            assert np.array_equal(symbols_of(env, step.final_obs), final_sym)
            assert np.array_equal(symbols_of(env, step.obs), rng.integers(0, 2, size=(2, 3)))


def test_the_same_seed_gives_the_same_games_and_another_differs():
    def run(seed):
        env = CommVecEnv("intermittent", 2, n_agents=4)
        obs = [env.reset(seed=seed).obs]
        obs += [env.step(np.ones((2, 4), np.int64)).obs for _ in range(25)]
        return np.stack(obs)

    assert np.array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
    a, b = CommVecEnv("informants", 2, seed=9), CommVecEnv("informants", 2, seed=9)
    assert np.array_equal(a.reset().obs, b.reset().obs)  # env.seed when reset has none


# ------------------------------------------------------------------------------------ known returns
def test_optimum_and_chance_returns():
    assert optimal_return(20) == 20.0
    assert chance_return(8, 4, 20) == 5.0
    assert chance_return(8, 4, 20, "intermittent", 0.25) == pytest.approx(20 * (0.25 / 4 + 0.75))
    assert random_graph_return(1, 8, 4, 20) == pytest.approx(20 * (1 / 7 + 6 / 7 / 4))
    assert random_graph_return(7, 8, 4, 20) == pytest.approx(20.0)
    assert random_graph_return(3, 8, 4, 20, "intermittent", 0.5) == pytest.approx(
        20 * (0.5 * (3 / 7 + 4 / 7 / 4) + 0.5))
    assert step_value(0.5, 2) == 0.75
    inf = make_informants(4, "ring")
    planted = np.zeros((4, 4), bool)
    planted[np.arange(4), inf] = True
    assert held_fraction(planted, inf) == 1.0 and held_fraction(~planted & ~np.eye(4, dtype=bool), inf) == 0.0
    half = planted.copy()
    half[:2] = False
    assert graph_return(half, inf, 4, 10) == pytest.approx(10 * (0.5 + 0.5 / 4))
    env = CommVecEnv("intermittent", 1, n_agents=4, symbols=4, structure="ring", episode_limit=10, need_prob=0.2)
    assert env.optimal_return() == 10.0
    assert env.graph_return(half) == pytest.approx(10 * (0.2 * (0.5 + 0.5 / 4) + 0.8))
    assert env.chance_return() == pytest.approx(10 * (0.2 / 4 + 0.8))
    assert env.random_graph_return(3) == 10.0


@pytest.mark.parametrize("scenario", ["informants", "intermittent"])
def test_a_scripted_communicator_with_every_planted_edge_earns_the_optimum(scenario):
    env = CommVecEnv(scenario, 16, n_agents=8, symbols=4, episode_limit=10)
    returns = play(env, lambda obs: scripted(env, obs, env.planted_graph()), 3, seed=2)
    assert returns.shape == (48,) and np.all(returns == env.optimal_return())


@pytest.mark.parametrize("scenario", ["informants", "intermittent"])
def test_a_scripted_communicator_holding_a_fraction_earns_the_formula(scenario):
    N, m, T = 8, 4, 10
    env = CommVecEnv(scenario, 64, n_agents=N, symbols=m, episode_limit=T, structure_seed=3, need_prob=0.4)
    rng = np.random.default_rng(0)
    mask = rng.random((N, N)) < 0.5  # other senders besides: they carry nothing about inf(i)
    np.fill_diagonal(mask, False)
    mask[np.arange(N), env.informants] = False
    mask[[0, 2, 5], env.informants[[0, 2, 5]]] = True  # f = 3/8
    assert held_fraction(mask, env.informants) == 3 / 8
    returns = play(env, lambda obs: scripted(env, obs, mask), 8, seed=7)
    expected = env.graph_return(mask)
    # the 5 guessing receivers' hits are Bernoulli(1/m) (times p, in intermittent) per step, each worth 1/N
    q = 1 / m if scenario == "informants" else 0.4 / m
    std = math.sqrt(5 * T * q * (1 - q)) / N / math.sqrt(len(returns))
    assert abs(returns.mean() - expected) < 4 * std
    assert abs(returns.mean() - env.optimal_return()) > 20 * std  # the gap is real, not within noise


# ------------------------------------------------------------------------------------ structures
def is_derangement(inf: np.ndarray) -> bool:
    """Every agent informs exactly one other, and none itself."""
    return sorted(inf.tolist()) == list(range(len(inf))) and not np.any(inf == np.arange(len(inf)))


def test_random_structure_is_a_derangement_reproducible_from_its_seed():
    draws = [make_informants(8, "random", s) for s in range(20)]
    assert all(is_derangement(d) for d in draws)
    assert len({tuple(d) for d in draws}) > 10  # the seed picks the graph
    assert np.array_equal(make_informants(8, "random", 5), make_informants(8, "random", 5))
    a = CommVecEnv("informants", 2, structure_seed=5, seed=1)
    b = CommVecEnv("informants", 3, structure_seed=5, seed=2)  # the symbols' seed leaves the graph alone
    assert np.array_equal(a.informants, b.informants) and np.array_equal(a.informants, draws[5])
    assert is_derangement(make_informants(2, "random", 0)) and make_informants(2, "random", 0).tolist() == [1, 0]


def test_ring_hub_and_explicit_structures():
    assert make_informants(5, "ring").tolist() == [1, 2, 3, 4, 0]
    assert make_informants(5, "hub").tolist() == [1, 0, 0, 0, 0]
    env = CommVecEnv("informants", 1, n_agents=4, structure="hub", informants=[2, 3, 1, 0])
    assert env.informants.tolist() == [2, 3, 1, 0]  # the list overrides the structure
    g = env.planted_graph()
    assert g.dtype == bool and g.shape == (4, 4)
    assert [tuple(x) for x in np.argwhere(g)] == [(0, 2), (1, 3), (2, 1), (3, 0)]
    assert not g.diagonal().any()
    hub = CommVecEnv("informants", 1, n_agents=4, structure="hub").planted_graph()
    assert hub.sum(0).tolist() == [3, 1, 0, 0] and hub.sum(1).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(structure="star"), "unknown env.structure 'star'; structures: random, ring, hub (or an explicit "
     "env.informants=[...] list)"),
    (dict(n_agents=3, structure="rign", informants=[1, 2, 0]), "unknown env.structure 'rign'; structures: random, "
     "ring, hub (or an explicit env.informants=[...] list)"),
    (dict(structure_seed=-1), "env.structure_seed must be an integer of at least 0, got -1"),
    (dict(n_agents=3, informants=[1, 0]), "env.informants has 2 entries for env.n_agents=3; give one informant "
     "per agent (a derangement of 0..2)"),
    (dict(n_agents=3, informants=[1, 1, 0]), "env.informants[1] names agent 1 itself; an agent's informant is "
     "another agent"),
    (dict(n_agents=3, informants=[2, 0, 0]), "env.informants names agent 0 twice (for agents 1 and 2); each agent "
     "informs exactly one other (a derangement of 0..2; use env.structure=hub for a shared informant)"),
    (dict(n_agents=3, informants=[1, 2, 3]), "env.informants[2] is 3; informants are agent indices 0..2"),
    (dict(n_agents=3, informants="1,2,0"), "env.informants must be a list of 3 agent indices (a derangement of "
     "0..2), got '1,2,0'"),
    (dict(symbols=1), "env.symbols must be an integer of at least 2, got 1"),
    (dict(n_agents=1), "env.n_agents must be an integer of at least 2, got 1"),
    (dict(episode_limit=0), "env.episode_limit must be an integer of at least 1, got 0"),
    (dict(need_prob=1.5), "env.need_prob must be a probability between 0 and 1, got 1.5"),
    (dict(size=3), "unknown comm option 'size'; options: n_agents, symbols, episode_limit, structure, "
     "structure_seed, informants, need_prob, seed"),
])
def test_invalid_options_are_one_line_errors(kwargs, message):
    with pytest.raises(CommError, match=f"^{re.escape(message)}$"):
        CommVecEnv("informants", 1, **kwargs)


def test_bad_scenarios_and_actions_are_one_line_errors(capsys):
    with pytest.raises(CommError, match=re.escape("unknown comm scenario 'inform'; scenarios: informants, "
                                                  "intermittent (e.g. `marl train comm informants`)")):
        make_env("comm", "inform", 1, {})
    with pytest.raises(CommError, match=re.escape("comm needs a scenario, e.g. `marl train comm informants`; "
                                                  "scenarios: informants, intermittent")):
        make_env("comm", None, 1, {})
    env = CommVecEnv("informants", 2, n_agents=3, symbols=4)
    env.reset(seed=0)
    with pytest.raises(CommError, match=re.escape("actions must be int[2, 3] (games, agents), got shape (3,)")):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(CommError, match=re.escape("actions are symbols 0..3, got values from 0 to 4")):
        env.step(np.array([[0, 4, 1], [0, 0, 0]]))
    # through the command line: one line, exit status 2, before any training
    assert main(["train", "comm", "informants", "env.n_agents=3", "env.informants=[0,1,2]"]) == 2
    err = capsys.readouterr().err
    assert err == "marl: error: env.informants[0] names agent 0 itself; an agent's informant is another agent\n"


def test_config_defaults_are_typed_and_reach_the_env():
    cfg = config_mod.load("comm", "intermittent", "mappo", ["env.n_agents=4", "env.informants=[3,2,1,0]",
                                                            "env.need_prob=1"])
    assert cfg["env"] == dict(n_agents=4, symbols=4, episode_limit=20, structure="random", structure_seed=0,
                              informants=[3, 2, 1, 0], need_prob=1.0, seed=None)
    env = make_env("comm", "intermittent", 2, dict(cfg["env"]))
    assert env.informants.tolist() == [3, 2, 1, 0] and env.need_prob == 1.0
    with pytest.raises(config_mod.ConfigError, match=re.escape("env.symbols expects an integer, got 'many'")):
        config_mod.load("comm", "informants", "mappo", ["env.symbols=many"])
    with pytest.raises(config_mod.ConfigError, match="^unknown config key 'env.agents'"):
        config_mod.load("comm", "informants", "mappo", ["env.agents=4"])
    plugin = env_plugins()["comm"]
    assert plugin.scenario_names() == ["informants", "intermittent"] and "marl train comm" in plugin.description


# ------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("scenario", ["informants", "intermittent"])
def test_get_state_set_state_continues_exactly(scenario):
    opts = dict(n_agents=5, symbols=3, episode_limit=4)
    a = CommVecEnv(scenario, 3, **opts)
    step = a.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(6):  # stop mid-episode, with returns under way
        step = a.step(rng.integers(0, 3, (3, 5)))
    saved = checkpoint.to_numpy(checkpoint.to_tensors(a.get_state()))  # as a checkpoint carries it
    b = CommVecEnv(scenario, 3, **opts)
    b.reset(seed=99)
    resumed = b.set_state(saved)
    for k in ("obs", "state", "avail", "alive", "t"):
        assert np.array_equal(getattr(resumed, k), getattr(step, k)), k
    ended = 0
    for _ in range(10):
        actions = rng.integers(0, 3, (3, 5))
        x, y = a.step(actions), b.step(actions)
        for k in ("obs", "state", "reward", "done", "truncated", "t", "episode_return", "episode_length",
                  "final_obs", "final_state"):
            assert np.array_equal(getattr(x, k), getattr(y, k)), k
        ended += int(x.done.sum())
    assert ended == 9  # 3 games ended inside the compared stretch, at steps 8, 12 and 16 of 4-step episodes
    other = CommVecEnv(scenario, 3, n_agents=5, symbols=3, structure="ring")
    with pytest.raises(CommError, match=re.escape("saved games have informants")):
        other.set_state(saved)
    with pytest.raises(CommError, match=re.escape("saved games do not match these (symbols: expected int64 (2, 5))")):
        CommVecEnv(scenario, 2, **opts).set_state(saved)


def test_trainer_resumes_a_comm_run_exactly(tmp_path):
    cfg = config_mod.load("comm", "intermittent", "mappo", [
        "train.envs=2", "train.rollout=8", "algo.ppo_epochs=1", "train.eval_interval=0", "train.torch_threads=1",
        "train.update_threads=1", "train.checkpoint_interval=1", f"train.runs_dir={tmp_path}", "env.n_agents=3",
        "env.episode_limit=5"])
    whole, second = whole_and_resumed(cfg, tmp_path, 1)
    for k, v in whole.env.get_state().items():
        assert np.array_equal(v, second.env.get_state()[k]), k
    assert whole.episodes == second.episodes > 0


# ------------------------------------------------------------------------------------ invariants
@settings(max_examples=25, deadline=None)
@given(n_agents=st.integers(2, 9), symbols=st.integers(2, 6), limit=st.integers(1, 5), n_envs=st.integers(1, 4),
       structure=st.sampled_from(["random", "ring", "hub"]), scenario=st.sampled_from(["informants", "intermittent"]),
       seed=st.integers(0, 2**31))
def test_step_invariants(n_agents, symbols, limit, n_envs, structure, scenario, seed):
    env = CommVecEnv(scenario, n_envs, n_agents=n_agents, symbols=symbols, episode_limit=limit, structure=structure,
                     structure_seed=seed % 7)
    spec, E, N = env.spec, n_envs, n_agents
    sl = spec.block_slices()
    rng = np.random.default_rng(seed)
    step = env.reset(seed=seed)
    running = np.zeros(E)
    for k in range(1, 2 * limit + 2):
        step = env.step(rng.integers(0, symbols, (E, N)))
        assert step.obs.shape == (E, N, spec.obs_dim) and step.obs.dtype == np.float32
        assert step.state.shape == (E, spec.state_dim) and step.state.dtype == np.float32
        assert step.final_obs.shape == step.obs.shape and step.final_state.shape == step.state.shape
        assert step.avail.shape == (E, N, symbols) and step.avail.all() and step.alive.all()
        assert step.reward.shape == (E,) and step.reward.dtype == np.float32
        assert np.all((step.reward >= 0) & (step.reward <= 1))
        assert np.allclose(step.reward * N, np.round(step.reward * N), atol=1e-5)  # k of N agents paid
        for obs in (step.obs, step.final_obs):
            assert np.all(obs[..., sl["symbol"]].sum(-1) == 1)
            assert np.array_equal(obs[..., sl["id"]], np.broadcast_to(np.eye(N), (E, N, N)))
        ended = k % limit == 0
        assert step.done.tolist() == [ended] * E and np.array_equal(step.truncated, step.done)
        assert step.t.tolist() == [0 if ended else k % limit] * E and not step.won.any()
        running += step.reward
        if ended:
            assert step.episode_length.tolist() == [limit] * E
            assert np.allclose(step.episode_return, running, atol=1e-5)
            running[:] = 0
    g = env.planted_graph()
    assert g.shape == (N, N) and not g.diagonal().any() and g.sum(1).tolist() == [1] * N
