"""The environment adapters: PettingZoo (in-process and in workers), Gymnasium, SC2's API, and the registry."""

from __future__ import annotations

import time

import gymnasium
import numpy as np
import pytest
from toy_envs import CrashEnv, LeaveEnv, VectorRewardEnv

from marl import config as config_mod
from marl import registry
from marl.envs.gym import make_gym
from marl.envs.pettingzoo import EnvMaker, PettingZooError, PettingZooVecEnv, make_mpe, make_pettingzoo
from marl.envs.sc2 import SC2VecEnv
from marl.envs.smac import SMACEnv, SMACParallelEnv, SMACVecEnv
from marl.rollout import collect


def _random_policy(rng):
    def act(step):
        return np.array([[rng.choice(np.flatnonzero(av)) for av in env_avail] for env_avail in step.avail])
    return act


def _stop_policy(step):
    """Stop (action 1) where it is available: 2s_vs_1sc's battles, with a crawler that does not decay, run into the
    time limit."""
    return np.where(step.avail[..., 1], 1, np.argmax(step.avail, -1))


def assert_same_battles(vec, natives, seed: int, steps: int, policy) -> tuple[int, int]:
    """vec (E copies) and E one-battle SMACVecEnvs seeded seed + e play identical battles; (episodes, cut)."""
    ours = vec.reset(seed=seed)
    theirs = [n.reset(seed=seed + e) for e, n in enumerate(natives)]
    episodes = cut = 0
    for _ in range(steps):
        for key in ("obs", "state", "avail", "alive", "t"):
            np.testing.assert_array_equal(getattr(ours, key), np.concatenate([getattr(s, key) for s in theirs]))
        actions = policy(ours)
        ours = vec.step(actions)
        theirs = [n.step(actions[e:e + 1]) for e, n in enumerate(natives)]
        for key in ("reward", "done", "truncated"):
            np.testing.assert_array_equal(getattr(ours, key), np.concatenate([getattr(s, key) for s in theirs]))
        for e in np.flatnonzero(ours.done):
            episodes += 1
            cut += int(ours.truncated[e])
            for key in ("won", "episode_length", "final_obs", "final_state"):
                np.testing.assert_array_equal(getattr(ours, key)[e], getattr(theirs[e], key)[0])
            # the faces hand out float32 rewards while the simulator sums float64 ones: equal to float32 precision
            np.testing.assert_allclose(ours.episode_return[e], theirs[e].episode_return[0], rtol=1e-6)
    return episodes, cut


def _same_shapes(a, b) -> None:
    assert (a.n_agents, a.obs_dim, a.state_dim, a.n_actions) == (b.n_agents, b.obs_dim, b.state_dim, b.n_actions)


# ------------------------------------------------------------------------------ PettingZoo adapter
@pytest.mark.parametrize("workers", [0, 1])
def test_smac_parallel_env_through_the_adapter_plays_the_native_battles(workers):
    vec = PettingZooVecEnv(EnvMaker(SMACParallelEnv, {"map_name": "3m"}), 2, workers=workers, win_info="battle_won")
    try:
        natives = [SMACVecEnv("3m", 1) for _ in range(2)]
        _same_shapes(vec.spec, natives[0].spec)
        assert vec.spec.can_win
        episodes, _ = assert_same_battles(vec, natives, 5, 120, _random_policy(np.random.default_rng(0)))
        assert episodes >= 8
    finally:
        vec.close()


def test_time_limit_cuts_through_the_adapter_match_the_native_ones():
    vec = PettingZooVecEnv(EnvMaker(SMACParallelEnv, {"map_name": "2s_vs_1sc", "off_creep_decay": False}), 1,
                           win_info="battle_won")
    episodes, cut = assert_same_battles(vec, [SMACVecEnv("2s_vs_1sc", 1, off_creep_decay=False)], 3, 305, _stop_policy)
    assert episodes == cut == 1


def test_an_agent_that_leaves_is_masked_and_its_actions_are_not_passed_on():
    vec = PettingZooVecEnv(EnvMaker(LeaveEnv, {"leave_at": 2, "limit": 5}), 1)
    spec = vec.spec
    assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions, spec.can_win) == (3, 2, 6, 3, False)
    step = vec.reset(seed=0)
    # agent_0's mask from its dict observation, agent_1 has none, agent_2's from infos
    np.testing.assert_array_equal(step.avail[0], [[1, 1, 0], [1, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(step.obs[0], [[1, 0], [2, 0], [3, 0]])
    np.testing.assert_array_equal(step.state[0], [1, 0, 2, 0, 3, 0])  # no state(): the observations joined
    step = vec.step(np.array([[1, 2, 2]]))
    assert step.alive[0].tolist() == [True, True, True]
    step = vec.step(np.array([[1, 2, 2]]))  # agent_1 leaves on this step
    assert step.alive[0].tolist() == [True, False, True]
    np.testing.assert_array_equal(step.obs[0], [[1, 2], [0, 0], [3, 2]])
    np.testing.assert_array_equal(step.avail[0, 1], [1, 0, 0])
    assert step.reward[0] == pytest.approx((1 + 2 + 3) / 3)
    step = vec.step(np.array([[0, 2, 0]]))  # agent_1's action is dropped, not sent (LeaveEnv would raise)
    assert step.reward[0] == pytest.approx((1 + 3) / 2)
    assert vec._local.envs[0].received[-1] == {"agent_0": 0, "agent_2": 0}
    vec.step(np.array([[0, 0, 0]]))
    step = vec.step(np.array([[0, 0, 0]]))  # step 5: the time limit
    assert step.done[0] and step.truncated[0] and not step.won[0]
    assert step.episode_length[0] == 5 and step.episode_return[0] == pytest.approx(2 + 2 + 2 + 2 + 2)
    np.testing.assert_array_equal(step.final_obs[0], [[1, 5], [0, 0], [3, 5]])
    assert step.alive[0].all() and step.t[0] == 0  # the next episode already began
    np.testing.assert_array_equal(step.obs[0], [[1, 0], [2, 0], [3, 0]])


def test_team_reward_sum():
    vec = PettingZooVecEnv(EnvMaker(LeaveEnv), 1, team_reward="sum")
    vec.reset(seed=0)
    assert vec.step(np.zeros((1, 3), np.int64)).reward[0] == 6


def test_a_crashed_worker_is_restarted_and_its_episode_counted_as_lost(tmp_path):
    marker = tmp_path / "crashed"
    vec = PettingZooVecEnv(EnvMaker(CrashEnv, {"marker": str(marker), "crash_at": 3}), 2, workers=2)
    try:
        step = vec.reset(seed=0)
        step = vec.step(np.zeros((2, 2), np.int64))
        before = vec.step(np.zeros((2, 2), np.int64))
        assert before.t.tolist() == [2, 2] and not before.done.any()
        # both workers reach the crash; the first to write the marker dies, the other plays on
        with pytest.warns(RuntimeWarning, match=r"pettingzoo worker for envs (0-0|1-1) died \(exit code 3\); "
                                                r"restarted it, 1 episode\(s\) in progress lost \(1 so far\)"):
            step = vec.step(np.zeros((2, 2), np.int64))
        assert marker.exists()
        lost = step.info["lost"]
        assert lost.sum() == 1 and step.info["lost_episodes"] == vec.lost_episodes == 1
        e, other = int(np.flatnonzero(lost)[0]), int(np.flatnonzero(~lost)[0])
        assert step.done[e] and step.truncated[e] and step.t[e] == 0 and step.episode_length[e] == 0
        np.testing.assert_array_equal(step.final_obs[e], before.obs[e])  # ends on the last observation seen
        assert not step.done[other] and step.t[other] == 3
        step = vec.step(np.zeros((2, 2), np.int64))
        assert step.t.tolist() == [1 if i == e else 0 for i in range(2)]
        assert step.done[other] and step.episode_length[other] == 4 and not step.info["lost"].any()
    finally:
        vec.close()


def test_a_hung_worker_is_killed_restarted_and_its_episode_counted_as_lost(tmp_path):
    marker = tmp_path / "hung"
    vec = PettingZooVecEnv(EnvMaker(CrashEnv, {"marker": str(marker), "crash_at": 3, "hang": True}), 2, workers=2,
                           worker_timeout=1.0)
    try:
        vec.reset(seed=0)
        vec.step(np.zeros((2, 2), np.int64))
        before = vec.step(np.zeros((2, 2), np.int64))
        processes = [w.process for w in vec._workers]
        start = time.monotonic()
        # both workers reach the hang; the first to write the marker sleeps for an hour, the other plays on
        with pytest.warns(RuntimeWarning, match=r"^pettingzoo worker for envs (0-0|1-1) hung \(no answer within 1 s\) "
                                                r"and was killed; restarted it, 1 episode\(s\) in progress lost "
                                                r"\(1 so far\)$"):
            step = vec.step(np.zeros((2, 2), np.int64))
        waited = time.monotonic() - start
        assert marker.exists()
        assert 1.0 <= waited < 30  # the timeout, then a fresh worker's start: not the hour the step sleeps
        lost = step.info["lost"]
        assert lost.sum() == 1 and step.info["lost_episodes"] == vec.lost_episodes == 1
        e, other = int(np.flatnonzero(lost)[0]), int(np.flatnonzero(~lost)[0])
        assert not processes[e].is_alive() and vec._workers[e].process.is_alive()  # killed, and replaced
        assert vec._workers[e].process is not processes[e] and vec._workers[other].process is processes[other]
        assert step.done[e] and step.truncated[e] and step.t[e] == 0 and step.episode_length[e] == 0
        np.testing.assert_array_equal(step.final_obs[e], before.obs[e])
        assert not step.done[other] and step.t[other] == 3
        step = vec.step(np.zeros((2, 2), np.int64))  # the run goes on, with the new worker
        assert step.t.tolist() == [1 if i == e else 0 for i in range(2)]
        assert step.done[other] and step.episode_length[other] == 4 and not step.info["lost"].any()
    finally:
        vec.close()


@pytest.mark.parametrize("value", [0, -1.5, float("inf"), float("nan"), True, "60"])
def test_worker_timeout_must_be_a_positive_number_of_seconds(value):
    with pytest.raises(PettingZooError) as err:
        PettingZooVecEnv(EnvMaker(LeaveEnv), 1, worker_timeout=value)
    assert str(err.value) == f"worker_timeout must be a positive number of seconds, got {value!r}"


def test_worker_timeout_is_an_adapter_option_of_every_pass_through_kind():
    assert make_mpe("simple_spread", 1, {"N": 2, "worker_timeout": 2.5}).worker_timeout == 2.5
    assert make_pettingzoo("mpe2:simple_spread_v3", 1, {}).worker_timeout == 60.0
    assert make_gym("CartPole-v1", 1, {"worker_timeout": 5.0}).worker_timeout == 5.0  # not a gymnasium.make kwarg
    with pytest.raises(PettingZooError, match=r"^worker_timeout must be a positive number of seconds, got 0$"):
        make_gym("CartPole-v1", 1, {"worker_timeout": 0})
    for kind, scenario in (("pettingzoo", "mpe2:simple_spread_v3"), ("mpe", "simple_spread"), ("gym", "CartPole-v1")):
        cfg = config_mod.load(kind, scenario, "mappo", ["env.worker_timeout=3"])
        assert cfg["env"]["worker_timeout"] == 3.0


def test_lost_episodes_are_not_reported_as_finished(tmp_path):
    class Uniform:
        def act(self, step, deterministic=False):
            return np.zeros(step.alive.shape, np.int64), {}

    vec = PettingZooVecEnv(EnvMaker(CrashEnv, {"marker": str(tmp_path / "m"), "crash_at": 3}), 1, workers=1)
    try:
        with pytest.warns(RuntimeWarning):
            rollout, step, episodes = collect(vec, Uniform(), vec.reset(seed=0), 8)
        # steps 1-2, crash on 3 (lost), then a 4-step episode on steps 4-7, one step into the next
        assert [e["length"] for e in episodes] == [4]
        assert rollout.done[:, 0].tolist() == [False, False, True, False, False, False, True, False]
    finally:
        vec.close()


def test_box_actions_are_refused_in_one_line():
    with pytest.raises(PettingZooError) as err:
        PettingZooVecEnv(EnvMaker(LeaveEnv, {"box_actions": True}), 1)
    assert str(err.value) == ("agent 'agent_0' has a Box action space; marl's learners take discrete actions only "
                              "(spaces.Discrete)")


def test_factory_paths_and_their_errors():
    vec = make_pettingzoo("mpe2:simple_spread_v3", 2, {"N": 2, "max_cycles": 7})
    assert (vec.spec.n_agents, vec.spec.n_actions, vec.spec.episode_limit) == (2, 5, 7)
    assert make_pettingzoo("mpe2.simple_spread_v3", 1, {}).spec.n_agents == 3
    with pytest.raises(PettingZooError, match=r"^cannot import 'nosuchmodule' for 'nosuchmodule:f': No module named"):
        make_pettingzoo("nosuchmodule:f", 1, {})
    with pytest.raises(PettingZooError, match=r"^module 'json' has no parallel_env function; give module:factory$"):
        make_pettingzoo("json", 1, {})
    with pytest.raises(PettingZooError, match=r"^mpe2:simple_spread_v3\(Q=1\) failed: TypeError: .*'Q'"):
        make_pettingzoo("mpe2:simple_spread_v3", 1, {"Q": 1})


def test_mpe_short_names_and_typos():
    vec = make_mpe("simple_spread", 1, {"N": 3, "max_cycles": 25})
    assert vec.spec.name == "mpe:simple_spread_v3" and vec.spec.n_agents == 3 and vec.spec.episode_limit == 25
    step = vec.reset(seed=1)
    for _ in range(25):
        step = vec.step(np.zeros((1, 3), np.int64))
    assert step.done[0] and step.truncated[0] and step.episode_length[0] == 25
    with pytest.raises(PettingZooError, match=r"^unknown mpe game 'simple_sprad' \(did you mean simple_spread"):
        make_mpe("simple_sprad", 1, {})


def test_pettingzoo_options_pass_through_the_config_but_smac_options_do_not():
    cfg = config_mod.load("mpe", "simple_spread", "mappo", ["env.N=3", "env.max_cycles=25", "env.workers=2"])
    assert cfg["env"] == {"workers": 2, "worker_timeout": 60.0, "team_reward": "mean", "win_info": "", "seed": None,
                          "N": 3, "max_cycles": 25}
    with pytest.raises(config_mod.ConfigError, match=r"^unknown config key 'env.N'"):
        config_mod.load("smac", "3m", "mappo", ["env.N=3"])
    with pytest.raises(config_mod.ConfigError, match=r"^env.workers expects an integer, got 'two'"):
        config_mod.load("pettingzoo", "mpe2:simple_spread_v3", "mappo", ["env.workers=two"])


# ------------------------------------------------------------------------------ Gymnasium
def test_gym_env_as_a_one_agent_team():
    vec = make_gym("CartPole-v1", 2, {"max_episode_steps": 10})
    spec = vec.spec
    assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions, spec.reward_dim, spec.can_win) == \
        (1, 4, 4, 2, 1, False)
    assert spec.episode_limit == 10
    step = vec.reset(seed=0)
    lengths = []
    for _ in range(30):
        step = vec.step(np.array([[0], [1]]) if step.t[0] % 2 else np.array([[1], [0]]))
        lengths += step.episode_length[step.done].tolist()
        np.testing.assert_array_equal(step.state, step.obs[:, 0])
    assert lengths and all(1 <= n <= 10 for n in lengths)


@pytest.mark.filterwarnings("ignore:.*The reward returned by `step\\(\\)` must be a float")
def test_gym_vector_rewards_are_kept_as_objectives():
    gymnasium.register("marl-test/VectorReward-v0", entry_point=VectorRewardEnv)
    try:
        vec = make_gym("marl-test/VectorReward-v0", 2, {})
        assert vec.spec.reward_dim == 2 and vec.spec.reward_names == ("objective_0", "objective_1")
        step = vec.reset(seed=0)
        assert step.reward.shape == (2, 2)
        for t in (1, 2, 3):
            step = vec.step(np.zeros((2, 1), np.int64))
            np.testing.assert_array_equal(step.reward, [[1, -t], [1, -t]])
        assert step.done.all() and not step.truncated.any()
        np.testing.assert_array_equal(step.episode_return, [[3, -6], [3, -6]])
    finally:
        gymnasium.registry.pop("marl-test/VectorReward-v0", None)


def test_gym_errors_are_one_line():
    with pytest.raises(PettingZooError, match=r"^agent 'agent_0' has a Box action space"):
        make_gym("Pendulum-v1", 1, {})
    with pytest.raises(PettingZooError, match=r"^gymnasium cannot make 'CartPolx-v1': "):
        make_gym("CartPolx-v1", 1, {})


MO_INSTALL = "pip install --no-deps mo-gymnasium==1.3.2 momaland==0.2.0 (README, Set up)"


def test_mo_gymnasium_vector_reward():
    pytest.importorskip("mo_gymnasium", reason=MO_INSTALL)
    vec = make_gym("mo-mountaincar-v0", 1, {})
    assert vec.spec.reward_dim == 3
    vec.reset(seed=0)
    assert vec.step(np.zeros((1, 1), np.int64)).reward.shape == (1, 3)


@pytest.mark.parametrize("env_id, first, second", [("deep-sea-treasure-v0", 0.7, 8.2),
                                                   ("deep-sea-treasure-concave-v0", 1.0, 2.0)])
def test_deep_sea_treasure_gives_its_first_two_treasures(env_id, first, second):
    """Down from the start: the first treasure in 1 step; right, down, down: the second in 3 (LEARNERS.md's front)."""
    pytest.importorskip("mo_gymnasium", reason=MO_INSTALL)
    vec = make_gym(env_id, 2, {})  # not an mo-* id: marl imports mo_gymnasium to find it
    assert (vec.spec.reward_dim, vec.spec.n_actions, vec.spec.episode_limit) == (2, 4, 100)
    vec.reset(seed=0)
    step = vec.step(np.array([[1], [3]]))
    np.testing.assert_array_equal(step.reward, np.array([[first, -1], [0, -1]], np.float32))
    assert step.done.tolist() == [True, False]
    np.testing.assert_array_equal(step.episode_return[0], np.array([first, -1], np.float32))
    for _ in range(2):
        step = vec.step(np.array([[0], [1]]))
    assert step.done.tolist() == [False, True] and step.episode_length[1] == 3
    np.testing.assert_array_equal(step.episode_return[1], np.array([second, -3], np.float32))


def test_momaland_beach_team_reward_is_the_agents_sum():
    """mo-beach-v0 (discrete actions, 2 objectives) through the PettingZoo adapter: the team's vector reward is the
    sum over agents of the rewards the game itself gives for the same actions."""
    mobeach = pytest.importorskip("momaland.envs.beach.mobeach_v0", reason=MO_INSTALL)
    kwargs = {"num_agents": 6, "num_timesteps": 3}
    vec = make_pettingzoo("momaland.envs.beach.mobeach_v0", 2, {"team_reward": "sum", "seed": 4, **kwargs})
    assert (vec.spec.n_agents, vec.spec.n_actions, vec.spec.reward_dim) == (6, 3, 2)
    twins = [mobeach.parallel_env(**kwargs) for _ in range(2)]
    step = vec.reset(seed=4)
    for e, twin in enumerate(twins):
        obs, _ = twin.reset(seed=4 + e)
        np.testing.assert_array_equal(step.obs[e], np.stack([obs[a] for a in twin.possible_agents]))
    rng, total = np.random.default_rng(0), np.zeros((2, 2))
    for _ in range(3):
        acts = rng.integers(0, 3, (2, 6))
        step = vec.step(acts)
        for e, twin in enumerate(twins):
            _, rewards, *_ = twin.step({a: int(acts[e, i]) for i, a in enumerate(twin.possible_agents)})
            expected = np.sum([np.asarray(r, np.float32) for r in rewards.values()], 0, dtype=np.float32)
            np.testing.assert_allclose(step.reward[e], expected, rtol=1e-6)
            total[e] += step.reward[e]
    # momaland 0.2.0's beach returns (obs, rewards, truncations, terminations, infos), the flags swapped, so the
    # adapter reads its ends as time-limit cuts (README, Other environments)
    assert step.done.all() and step.truncated.all() and (step.episode_length == 3).all()
    np.testing.assert_allclose(step.episode_return, total, rtol=1e-6)
    assert (step.final_state == 0).all()  # beach's state() is empty once its agents have left


# ------------------------------------------------------------------------------ SC2 (SMAC's API)
def test_sc2_wrapper_on_the_embedded_smac_env_plays_the_native_battles():
    vec = SC2VecEnv("3m", 2, env_class=SMACEnv)
    natives = [SMACVecEnv("3m", 1) for _ in range(2)]
    _same_shapes(vec.spec, natives[0].spec)
    assert vec.spec.obs_layout == natives[0].spec.obs_layout
    episodes, _ = assert_same_battles(vec, natives, 7, 120, _random_policy(np.random.default_rng(1)))
    assert episodes >= 8
    vec = SC2VecEnv("2s_vs_1sc", 1, env_class=SMACEnv)
    # standing off, the team wins when the spine crawler has decayed off creep (step 220): one episode, no cut
    assert assert_same_battles(vec, [SMACVecEnv("2s_vs_1sc", 1)], 3, 305, _stop_policy) == (1, 0)


# ------------------------------------------------------------------------------ registry
@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed marl.envs entry points with the given ones (and forget what was found)."""
    from importlib.metadata import EntryPoint

    def install(*pairs, group="marl.envs"):
        eps = [EntryPoint(name=name, value=value, group=group) for name, value in pairs]
        monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in eps if e.group == group])
        monkeypatch.setattr(registry, "_discovered", {})
        monkeypatch.setattr(registry, "PLUGIN_ERRORS", {})
    return install


def test_discovered_plugins_build_list_and_suggest(entry_points, capsys):
    entry_points(("relay", "toy_envs:relay_factory"))
    vec = registry.make_env("relay", "short", 2, {})
    assert vec.spec.n_agents == 3 and vec.n_envs == 2
    assert registry.env_plugins()["relay"].scenario_names() == ["short", "long"]
    with pytest.raises(registry.RegistryError, match=r"^unknown environment 'rely' \(did you mean relay\?\); known "
                                                     r"environments: comm, gym, mpe, pettingzoo, relay, sc2, smac$"):
        registry.make_env("rely", None, 1, {})
    from marl.cli import main

    assert main(["envs", "relay"]) == 0
    out = capsys.readouterr().out
    assert out == ("Environments\n  relay  three agents, one leaves\n\nrelay scenarios\n  short, long\n")


def test_a_broken_plugin_is_one_warning_line_not_a_crash(entry_points, capsys):
    entry_points(("broken", "no_such_plugin_module:plugin"), ("relay", "toy_envs:relay_factory"))
    from marl.cli import main

    assert main(["envs"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("marl: warning: marl.envs plug-in 'broken' (no_such_plugin_module:plugin) failed to load "
                            "and is skipped: ModuleNotFoundError: No module named 'no_such_plugin_module'\n")
    assert "  relay " in captured.out and "SMAC maps (smac)" in captured.out
    with pytest.raises(registry.RegistryError, match=r"^environment plug-in 'broken' failed to load: "
                                                     r"ModuleNotFoundError"):
        registry.make_env("broken", None, 1, {})


def test_a_plugin_learner_gets_its_defaults_as_the_algo_section(entry_points):
    entry_points(("echo", "toy_envs:EchoLearner"), group="marl.agents")
    cfg = config_mod.load("smac", "3m", "echo", ["algo.lr=0.5"])
    assert cfg["algo"] == {"lr": 0.5, "hidden": 8}
    learner = registry.make_learner("echo", SMACVecEnv("3m", 1).spec, cfg["algo"], seed=0, device="cpu")
    assert learner.cfg["lr"] == 0.5
    known = r"cmorl, commformer, echo, mappo, mra, stepmix"
    with pytest.raises(config_mod.ConfigError, match=rf"^unknown learner 'ech'; available: {known}$"):
        config_mod.load("smac", "3m", "ech")


def test_sc2_without_the_game_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_smac(name, *args, **kwargs):
        if name.split(".")[0] in ("smacv2", "smac"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_smac)
    with pytest.raises(ValueError) as err:
        registry.make_env("sc2", "3s5z", 1, {})
    assert str(err.value) == (
        "marl train sc2 needs the smacv2 package and StarCraft II: pip install git+https://github.com/oxwhirl/smacv2 "
        "and set SC2PATH; the embedded simulator runs the same maps without them: marl train smac 3s5z")


# ------------------------------------------------------------------------------ trainer
def test_trainer_runs_and_resumes_an_adapter_env_without_win_rates(tmp_path):
    from marl.trainer import Trainer

    cfg = config_mod.load("mpe", "simple_spread", "mappo", [
        "train.envs=2", "train.rollout=8", "train.steps=32", "algo.ppo_epochs=1", "train.eval_interval=1",
        "train.eval_episodes=2", "env.max_cycles=5", "env.N=2"])
    result = Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=1)
    assert result["env_steps"] == 16 and set(result["eval"]) == {"episodes", "episode_return", "episode_length"}
    resumed = Trainer(config_mod.load_file(tmp_path / "run" / "config.yaml"), tmp_path / "run", resume=True,
                      show_progress=False)
    assert resumed.env_steps == 16 and resumed.spec.n_agents == 2  # env.N came back from config.yaml
    assert resumed.run()["env_steps"] == 32
