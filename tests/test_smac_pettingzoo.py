"""The embedded SMAC simulator behind PettingZoo's ParallelEnv API (marl.envs.smac.SMACParallelEnv)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import freeze_enemies, stage
from pettingzoo.test import parallel_api_test, parallel_seed_test

from marl.envs.smac import SMACEnv, SMACError, SMACParallelEnv

NOOP_ONLY_3M = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0], np.int8)


def masked_actions(rng: np.random.Generator, obs: dict, agents: list[str]) -> dict[str, int]:
    """A uniformly drawn available action for each listed agent, read from its observation's mask."""
    return {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in agents}


def focus_fire(obs: dict, agents: list[str]) -> dict[str, int]:
    """Attack the first enemy in range, else stop (enemies come to the allies)."""
    out = {}
    for a in agents:
        attacks = np.flatnonzero(obs[a]["action_mask"][6:])
        out[a] = int(6 + attacks[0]) if attacks.size else 1
    return out


# ------------------------------------------------------------------------------------ PettingZoo's tests
@pytest.mark.parametrize("map_name", ["3m", "3s5z"])
def test_parallel_api_test_passes_without_warnings(map_name):
    env = SMACParallelEnv(map_name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(env, num_cycles=200)
    assert not [str(w.message) for w in caught if "pettingzoo" in w.filename]
    assert env.possible_agents == (["marine_0", "marine_1", "marine_2"] if map_name == "3m" else
                                   ["stalker_0", "stalker_1", "stalker_2"] + [f"zealot_{i}" for i in range(5)])


def test_parallel_seed_test_passes_with_invalid_actions_turned_into_stop():
    parallel_seed_test(lambda: SMACParallelEnv("3m", invalid_action="stop"))


def test_parallel_seed_test_samples_without_the_mask_so_the_default_raises():
    # the seed test draws from the whole Discrete(9): no-op for a living marine is never available
    with pytest.raises(SMACError, match="cannot take action"):
        parallel_seed_test(lambda: SMACParallelEnv("3m"))


def test_invalid_action_mode_is_checked():
    with pytest.raises(SMACError, match="invalid_action must be 'raise' or 'stop'"):
        SMACParallelEnv("3m", invalid_action="ignore")


# ------------------------------------------------------------------------------ observations and masks
def test_action_mask_lives_in_the_observation_dict():
    env = SMACParallelEnv("3m")
    obs, infos = env.reset(seed=3)
    assert set(obs) == set(infos) == set(env.agents) == set(env.possible_agents)
    space = env.observation_space("marine_0")
    for i, a in enumerate(env.agents):
        assert set(obs[a]) == {"observation", "action_mask"}
        assert obs[a]["observation"].dtype == np.float32 and obs[a]["observation"].shape == (30,)
        assert obs[a]["action_mask"].dtype == np.int8 and obs[a]["action_mask"].shape == (9,)
        # at spawn the enemies are 14 away: stop and the four moves, no attack, no no-op
        assert obs[a]["action_mask"].tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0]
        assert np.array_equal(obs[a]["action_mask"], env.batch.avail[0, i].astype(np.int8))
        assert env.observation_space(a) is space and space.contains(obs[a])
        assert env.action_space(a).n == 9 and env.action_space(a) is env.action_space(a)
        assert infos[a] == {"battle_won": False}
    assert env.state_space.contains(env.state())


@pytest.mark.parametrize("map_name", ["3m", "3s5z", "MMM"])
def test_observations_masks_rewards_and_state_match_smac_env(map_name):
    """Same seed, same actions: PettingZoo's face and SMAC's face show the same battle."""
    pz = SMACParallelEnv(map_name)
    smac = SMACEnv(map_name, seed=11)
    obs, _ = pz.reset(seed=11)
    smac_obs, smac_state = smac.reset()
    rng = np.random.default_rng(5)
    names = pz.possible_agents
    for _ in range(smac.episode_limit):
        assert np.array_equal(pz.state(), smac.get_state()) and np.array_equal(pz.state(), smac_state)
        for a in pz.agents:
            i = names.index(a)
            assert np.array_equal(obs[a]["observation"], smac.get_obs_agent(i))
            assert obs[a]["action_mask"].tolist() == smac.get_avail_agent_actions(i)
        for i, a in enumerate(names):
            if a not in pz.agents:
                assert smac.get_avail_agent_actions(i) == [1] + [0] * (smac.n_actions - 1)
        acts = masked_actions(rng, obs, pz.agents)
        acting = list(pz.agents)
        obs, rewards, terms, truncs, infos = pz.step(acts)
        r, terminated, info = smac.step([acts.get(a, 0) for a in names])
        smac_state = smac.get_state()
        assert set(rewards) == set(terms) == set(truncs) == set(infos) == set(obs) == set(acting)
        assert all(v == r for v in rewards.values())
        assert all(v["battle_won"] == info["battle_won"] for v in infos.values())
        dead = {a for a in acting if not obs[a]["action_mask"][1]}
        assert {a for a in acting if terms[a]} == (set(acting) if terminated and not truncs[acting[0]] else dead)
        if terminated:
            assert pz.agents == []
            assert all(truncs[a] == info.get("episode_limit", False) for a in acting)
            break
        assert pz.agents == [a for a in acting if a not in dead]
    else:
        pytest.fail("the episode did not end within its limit")
    assert np.array_equal(pz.state(), smac.get_state())


# ---------------------------------------------------------------------------------------- agents dying
def test_an_agent_that_dies_is_terminated_and_leaves_agents():
    env = SMACParallelEnv("3m")
    obs, _ = env.reset(seed=0)
    for _ in range(60):
        acting = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step(focus_fire(obs, acting))
        dead = [a for a in acting if terms[a]]
        if dead and env.agents:
            break
    else:
        pytest.fail("no agent died while the battle went on")
    survivors = [a for a in acting if a not in dead]
    assert env.agents == survivors and survivors
    for a in dead:
        assert set(obs[a]) == {"observation", "action_mask"} and a in rewards and a in infos
        assert not obs[a]["observation"].any() and np.array_equal(obs[a]["action_mask"], NOOP_ONLY_3M)
        assert not truncs[a] and infos[a] == {"battle_won": False}
    assert not any(terms[a] or truncs[a] for a in survivors)
    assert len(set(rewards.values())) == 1  # one team reward, given to every agent that acted

    # the dead take no further part: an action for them is refused, and they leave every returned dict
    state = env.state()
    with pytest.raises(SMACError, match=f"not alive: \\['{dead[0]}'\\]; live agents: {', '.join(survivors)}"):
        env.step({**focus_fire(obs, survivors), dead[0]: 0})
    assert np.array_equal(env.state(), state), "a refused step must not advance the battle"
    obs, rewards, terms, truncs, infos = env.step(focus_fire(obs, survivors))
    for d in (obs, rewards, terms, truncs, infos):
        assert set(d) == set(survivors)


def test_battle_won_info_on_a_won_battle():
    env = SMACParallelEnv("3m")
    obs, infos = env.reset(seed=0)
    assert all(v == {"battle_won": False} for v in infos.values())
    b = env.batch
    freeze_enemies(b)
    stage(b, 4, alive=False)
    stage(b, 5, alive=False)
    stage(b, 3, x=13.0, y=16.0, health=1.0)  # one enemy left, within 6 of marine_0 at (9, 16)
    b.observe()
    obs = {a: {"observation": b.obs[0, i].copy(), "action_mask": b.avail[0, i].astype(np.int8)}
           for i, a in enumerate(env.possible_agents)}
    assert obs["marine_0"]["action_mask"][6] == 1
    obs, rewards, terms, truncs, infos = env.step({"marine_0": 6, "marine_1": 1, "marine_2": 1})
    assert infos == {a: {"battle_won": True} for a in env.possible_agents}
    assert terms == {a: True for a in env.possible_agents} and truncs == {a: False for a in env.possible_agents}
    assert env.agents == []
    assert rewards["marine_0"] == pytest.approx((1.0 + 10.0 + 200.0) / (365 / 20))
    with pytest.raises(SMACError, match="finished battle; call reset"):
        env.step({})
    obs, infos = env.reset()
    assert env.agents == env.possible_agents and all(v == {"battle_won": False} for v in infos.values())


def test_battle_won_info_stays_false_on_a_lost_battle():
    env = SMACParallelEnv("3m")
    obs, _ = env.reset(seed=0)
    while env.agents:
        acting = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step({a: 1 for a in acting})  # stand and be shot
        assert all(infos[a] == {"battle_won": False} for a in acting)
    assert all(terms[a] and not truncs[a] for a in acting)
    assert env.batch.units(0)["alive"][:3].sum() == 0


def test_time_limit_truncates_every_agent_without_terminating():
    env = SMACParallelEnv("3m")
    env.reset(seed=0)
    freeze_enemies(env.batch)
    for t in range(60):
        acting = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step({a: 1 for a in acting})
        assert acting == env.possible_agents
        assert truncs == {a: t == 59 for a in acting} and terms == {a: False for a in acting}
        assert rewards == {a: 0.0 for a in acting} and infos == {a: {"battle_won": False} for a in acting}
    assert env.agents == []


# ---------------------------------------------------------------------------------------------- errors
def test_unavailable_action_raises_and_names_the_accepted_actions():
    env = SMACParallelEnv("3m")
    obs, _ = env.reset(seed=0)
    state = env.state()
    for bad in (0, 6, 8, 9, -1, 99):  # no-op while alive, attacks out of range, indices outside 0..8
        acts = {"marine_0": 1, "marine_1": bad, "marine_2": 1}
        with pytest.raises(SMACError) as err:
            env.step(acts)
        msg = str(err.value)
        assert msg == f"agent 1 cannot take action {bad}; available actions: [1, 2, 3, 4, 5]"
        assert "\n" not in msg
        assert np.array_equal(env.state(), state) and env.agents == env.possible_agents
    obs, *_ = env.step({"marine_0": 1, "marine_1": 1, "marine_2": 1})  # still playable afterwards
    assert set(obs) == set(env.possible_agents)


def test_invalid_actions_become_stop_in_stop_mode():
    """invalid_action="stop": any unavailable action plays exactly as the stop action would."""
    loose, strict = SMACParallelEnv("3m", invalid_action="stop"), SMACParallelEnv("3m")
    obs_l, _ = loose.reset(seed=7)
    obs_s, _ = strict.reset(seed=7)
    rng = np.random.default_rng(0)
    n_replaced = 0
    while loose.agents:
        raw = {a: int(rng.integers(-2, 12)) for a in loose.agents}  # mostly without the mask
        fixed = {a: v if 0 <= v < 9 and obs_s[a]["action_mask"][v] else 1 for a, v in raw.items()}
        n_replaced += sum(raw[a] != fixed[a] for a in raw)
        out_l, out_s = loose.step(raw), strict.step(fixed)
        obs_l, obs_s = out_l[0], out_s[0]
        assert loose.agents == strict.agents and np.array_equal(loose.state(), strict.state())
        for a in obs_s:
            assert np.array_equal(obs_l[a]["observation"], obs_s[a]["observation"])
            assert np.array_equal(obs_l[a]["action_mask"], obs_s[a]["action_mask"])
        assert out_l[1:] == out_s[1:]
    assert n_replaced > 0


def test_unknown_or_missing_agents_raise():
    env = SMACParallelEnv("3m")
    env.reset(seed=0)
    state = env.state()
    with pytest.raises(SMACError, match=r"not alive: \['zergling_0'\]; live agents: marine_0, marine_1, marine_2"):
        env.step({"marine_0": 1, "marine_1": 1, "marine_2": 1, "zergling_0": 1})
    with pytest.raises(SMACError, match=r"not alive: \[0\]"):
        env.step({"marine_0": 1, "marine_1": 1, "marine_2": 1, 0: 1})
    with pytest.raises(SMACError, match="no action for live agent 'marine_2'; live agents: marine_0, marine_1, "
                                        "marine_2"):
        env.step({"marine_0": 1, "marine_1": 1})
    assert np.array_equal(env.state(), state) and env.agents == env.possible_agents


def test_step_before_reset_raises():
    with pytest.raises(SMACError, match="finished battle; call reset"):
        SMACParallelEnv("3m").step({"marine_0": 1})


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_episode_and_state_is_a_copy():
    a, b = SMACParallelEnv("3s5z"), SMACParallelEnv("3s5z")
    obs_a, _ = a.reset(seed=123)
    obs_b, _ = b.reset(seed=123)
    rng = np.random.default_rng(9)
    steps = 0
    while a.agents:
        acts = masked_actions(rng, obs_a, a.agents)
        out_a, out_b = a.step(acts), b.step(dict(acts))
        obs_a, obs_b = out_a[0], out_b[0]
        assert set(obs_a) == set(obs_b)
        for k in obs_a:
            assert obs_a[k]["observation"].tobytes() == obs_b[k]["observation"].tobytes()
            assert np.array_equal(obs_a[k]["action_mask"], obs_b[k]["action_mask"])
        assert out_a[1:] == out_b[1:] and a.agents == b.agents
        assert a.state().tobytes() == b.state().tobytes()
        steps += 1
    assert 0 < steps <= 150
    s = a.state()
    s[:] = 5.0
    assert not np.array_equal(a.state(), s), "state() hands out a copy"
