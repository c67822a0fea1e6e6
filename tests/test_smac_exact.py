"""Exact values of the embedded SMAC simulator, from the SMAC rules in docs/smac_rules.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import actions_for, freeze_enemies, set_type, stage

from marl.envs.smac import SMACBatch, SMACEnv, SMACError, combat, layout, map_names
from marl.envs.smac.maps import get_map

# (obs, state, n_actions) of SMAC's StarCraft2Env with default options
SMAC_SHAPES = {
    "3m": (30, 48, 9), "8m": (80, 168, 14), "3s5z": (128, 216, 14), "2s3z": (80, 120, 11),
    "MMM": (160, 290, 16), "MMM2": (176, 322, 18), "27m_vs_30m": (285, 1170, 36), "corridor": (156, 282, 30),
    "6h_vs_8z": (78, 140, 14), "5m_vs_6m": (55, 98, 12), "2c_vs_64zg": (332, 342, 70), "1c3s5z": (162, 270, 15),
    "bane_vs_bane": (336, 984, 30), "3s_vs_5z": (48, 68, 11), "10m_vs_11m": (105, 243, 17),
}


def test_all_23_smac_maps_are_playable():
    assert len(map_names()) == 23
    for name in map_names():
        env = SMACEnv(name, seed=0)
        obs, state = env.reset()
        info = env.get_env_info()
        assert len(obs) == info["n_agents"] == get_map(name).n_agents
        assert obs[0].shape == (info["obs_shape"],) and state.shape == (info["state_shape"],)
        assert info["n_actions"] == 6 + get_map(name).n_enemies


@pytest.mark.parametrize("name", sorted(SMAC_SHAPES))
def test_env_info_matches_smac(name):
    info = SMACEnv(name).get_env_info()
    assert (info["obs_shape"], info["state_shape"], info["n_actions"]) == SMAC_SHAPES[name]


def test_3s5z_and_3m_env_info():
    info = SMACEnv("3s5z").get_env_info()
    assert {k: info[k] for k in ("state_shape", "obs_shape", "n_actions", "n_agents", "episode_limit")} == {
        "state_shape": 216, "obs_shape": 128, "n_actions": 14, "n_agents": 8, "episode_limit": 150}
    assert info["agent_features"] == ["health", "energy/cooldown", "rel_x", "rel_y", "shield", "type_0", "type_1"]
    assert info["enemy_features"] == ["health", "rel_x", "rel_y", "shield", "type_0", "type_1"]
    info = SMACEnv("3m").get_env_info()
    assert (info["state_shape"], info["obs_shape"], info["n_actions"], info["n_agents"], info["episode_limit"]) == (
        48, 30, 9, 3, 60)


def test_3m_observation_after_reset():
    env = SMACEnv("3m", seed=0)
    obs, state = env.reset()
    h = 0.8 * math.sqrt(3) / 2  # hexagonal spawn packing, 0.8 apart
    # SMAC numbers agents by (type, x, y): agent 0 at (8.6, 16 - h), 1 at the spawn point (9, 16), 2 at (9.4, 16 - h)
    expected = np.zeros(30, np.float32)
    expected[0:4] = 1  # N, S, E, W all walkable
    # enemies 14 away: not visible -> zeros at [4:19]
    expected[19:24] = [1, 0.8 / 9, -0.4 / 9, -h / 9, 1.0]
    expected[24:29] = [1, 0.8 / 9, 0.4 / 9, -h / 9, 1.0]
    expected[29] = 1.0
    np.testing.assert_allclose(obs[1], expected, atol=1e-6)
    # state: allies [health, cooldown, (x-16)/32, (y-16)/32], enemies [health, x, y], last actions zero
    np.testing.assert_allclose(state[4:8], [1, 0, (9 - 16) / 32, 0], atol=1e-6)
    np.testing.assert_allclose(state[12:15], [1, (23 - 16) / 32, 0], atol=1e-6)
    assert not state[21:].any()


def test_move_north_and_its_features():
    env = SMACEnv("3m", seed=0)
    env.reset()
    freeze_enemies(env.batch)
    env.step([1, 2, 1])  # agent 1 north; a marine walks 2.25/16 per loop, 8 loops = 1.125
    u = env.get_unit_by_id(1)
    assert u.pos.x == pytest.approx(9.0) and u.pos.y == pytest.approx(17.125)  # SMAC's field names
    assert (u.health, u.unit_type) == (45.0, "marine") and env.agents[1].pos.y == u.pos.y
    assert env.enemies[0].pos.x == pytest.approx(env.batch.units(0)["x"][3])
    h = 0.8 * math.sqrt(3) / 2
    o = env.get_obs_agent(1)
    np.testing.assert_allclose(o[19:24], [1, math.hypot(0.4, 1.125 + h) / 9, -0.4 / 9, -(1.125 + h) / 9, 1],
                               atol=1e-6)
    s = env.get_state()
    assert s[7] == pytest.approx((17.125 - 16) / 32)
    # last actions of all agents, one-hot, at the end of the state
    np.testing.assert_array_equal(s[21:], np.eye(9)[[1, 2, 1]].reshape(-1))


def test_visibility_is_strictly_inside_sight_range_and_attack_within_six():
    b = SMACBatch("3m", 1)
    b.seed(0)
    b.reset()
    stage(b, 0, x=10.0, y=16.0)
    stage(b, 3, x=19.0, y=16.0)  # exactly 9 away: hidden
    stage(b, 4, x=16.0, y=16.0)  # 6 away: attackable
    stage(b, 5, x=16.01, y=18.0)  # 6.01+ away: visible, not attackable
    b.observe()
    obs = b.obs[0, 0]
    assert not obs[4:9].any()
    np.testing.assert_allclose(obs[9:14], [1, 6 / 9, 6 / 9, 0, 1], atol=1e-6)
    d = math.hypot(6.01, 2.0)
    np.testing.assert_allclose(obs[14:19], [0, d / 9, 6.01 / 9, 2 / 9, 1], atol=1e-6)
    assert b.avail[0, 0].tolist() == [False, True, True, True, True, True, False, True, False]
    stage(b, 5, x=16.01, y=16.0)
    b.observe()
    assert not b.avail[0, 0, 8]
    stage(b, 5, x=16.0, y=16.0 + 1e-9)
    stage(b, 4, x=10.0, y=22.0)
    b.observe()
    assert b.avail[0, 0, 7] and b.avail[0, 0, 8]


def test_dead_units_read_as_zeros():
    env = SMACEnv("3m", seed=0)
    env.reset()
    stage(env.batch, 1, alive=False)
    stage(env.batch, 3, x=12.0, y=16.0)
    stage(env.batch, 4, x=12.0, y=17.0, alive=False)
    env.batch.observe()
    o0 = env.get_obs_agent(0)
    assert not o0[19:24].any()  # dead ally 1
    assert o0[24] == 1.0  # ally 2 still seen
    assert o0[4] == 1.0 and not o0[9:14].any()  # enemy 0 seen, dead enemy 1 zeros
    assert not env.get_obs_agent(1).any()
    assert env.get_avail_agent_actions(1) == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    s = env.get_state()
    assert not s[4:8].any() and not s[15:18].any()


def test_one_marine_volley_on_a_stalker_hits_shields_then_health_through_armor():
    env = SMACEnv("3m", seed=0)
    env.reset()
    b = env.batch
    freeze_enemies(b)
    set_type(b, 3, "stalker")
    stage(b, 3, x=13.0, y=16.0)
    b.observe()
    env.step([6, 1, 1])
    u = b.units(0)
    assert (u["shield"][3], u["health"][3]) == (74.0, 80.0)  # 6 damage, all on the shield
    b.uf[0, 0, layout.CD] = 0.0
    stage(b, 3, shield=2.0)
    env.step([6, 1, 1])
    u = b.units(0)
    assert (u["shield"][3], u["health"][3]) == (0.0, 77.0)  # 2 on the shield, (6 - 2) - 1 armor on health


def test_bonus_damage_double_hits_and_minimum_damage():
    b = SMACBatch("3m", 1)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    set_type(b, 0, "marauder")
    set_type(b, 3, "stalker")
    stage(b, 0, x=10.0, y=16.0)
    stage(b, 3, x=14.0, y=16.0)
    stage(b, 1, x=10.0, y=20.0)
    set_type(b, 1, "zealot")
    stage(b, 4, x=10.9, y=20.0)  # a marine within the zealot's melee reach (0.1 + 0.5 + 0.375)
    stage(b, 2, x=10.0, y=12.0)
    set_type(b, 2, "zealot")
    stage(b, 5, x=10.9, y=12.0)
    b.ft[b.utype[0, 5], 2] = 10.0  # give the marines 10 armor: each zealot blade still does 0.5
    b.observe()
    b.step(np.array([[6, 7, 8]]))
    u = b.units(0)
    assert u["shield"][3] == 80.0 - 20.0  # marauder 10 +10 vs armored, on shields
    assert u["health"][4] == 45.0 - 0.5 - 0.5  # armor 10 vs 8 twice: the 0.5 floor twice
    b.ft[b.utype[0, 5], 2] = 0.0
    b.uf[0, 1, layout.CD] = 0.0
    stage(b, 4, health=45.0)
    b.step(np.array([[1, 7, 1]]))
    assert b.units(0)["health"][4] == 45.0 - 16.0  # zealot: 8 twice per cooldown


def test_colossus_line_splash():
    b = SMACBatch("3m", 1)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    set_type(b, 0, "colossus")
    stage(b, 0, x=10.0, y=16.0)
    stage(b, 3, x=15.0, y=16.0)  # target
    stage(b, 4, x=15.0, y=16.8)  # on the beam's line across the target
    stage(b, 5, x=15.0, y=18.5)  # past the 1.4 half-length (+ radius + half-width)
    stage(b, 1, x=10.0, y=20.0)
    stage(b, 2, x=10.0, y=12.0)
    b.observe()
    b.step(np.array([[6, 1, 1]]))
    hp = b.units(0)["health"]
    assert (hp[3], hp[4], hp[5]) == (45.0 - 30.0, 45.0 - 30.0, 45.0)  # 2 x (10 + 5 vs light)


def test_baneling_explodes_on_contact_and_dies():
    b = SMACBatch("bane_vs_bane", 1)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    A = b.n_agents
    for u in range(b.n_units):
        stage(b, u, x=16.0 + (u % 6) * 0.8, y=2.5 + (u // 6) * 0.8 if u < A else 28.0 - ((u - A) // 6) * 0.8)
    assert b.map.pathing[16, 16] and b.map.pathing[20, 16]
    stage(b, 0, x=16.0, y=16.0)  # ally baneling
    stage(b, A + 0, x=16.9, y=16.0)  # enemy zergling: light, 35 hp
    stage(b, A + 20, x=16.0, y=17.5)  # enemy baneling 1.5 away: inside the 2.2 splash
    stage(b, A + 1, x=16.0, y=19.0)  # enemy zergling 3 away: outside
    stage(b, 4, x=15.5, y=16.6)  # ally zergling in the blast: no friendly fire
    b.observe()
    acts = actions_for(b, a0=6)
    b.step(acts)
    u = b.units(0)
    assert not u["alive"][0] and not u["alive"][A]
    assert u["health"][A + 20] == pytest.approx(30.0 - 16.0 + 8 * 0.2734 / 16)  # zerg regeneration goes on
    assert u["health"][A + 1] == 35.0 and u["health"][4] == 35.0  # full health does not regenerate past max


def test_medivac_heals_with_energy():
    b = SMACBatch("MMM", 1)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    medivac = 9
    assert b.units(0)["unit_type"][medivac] == "medivac"
    stage(b, 2, x=9.0, y=18.0, health=30.0)
    stage(b, medivac, x=9.0, y=19.0)
    b.observe()
    assert b.avail[0, medivac, 6 + 2] and not b.avail[0, medivac, 6 + medivac]
    b.step(actions_for(b, a9=6 + 2))
    u = b.units(0)
    assert u["health"][2] == pytest.approx(30.0 + 8 * 9 / 16)  # 9 HP per game-second
    assert u["energy"][medivac] == pytest.approx(50.0 - 8 * 9 / 16 / 3 + 8 * 0.5625 / 16)


def test_shield_and_zerg_regeneration():
    b = SMACBatch("3s5z", 1)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    stage(b, 0, shield=10.0)
    b.uf[0, 0, layout.NODMG] = 0.0  # just hit: no regeneration for 10 game-seconds (160 loops)
    stage(b, 1, shield=10.0)
    b.uf[0, 1, layout.NODMG] = 160.0
    b.step(actions_for(b))
    u = b.units(0)
    assert u["shield"][0] == 10.0 and u["shield"][1] == pytest.approx(10.0 + 8 * 2 / 16)
    z = SMACBatch("6h_vs_8z", 1)
    z.seed(0)
    z.reset()
    freeze_enemies(z)
    stage(z, 0, health=50.0)
    z.step(actions_for(z))
    assert z.units(0)["health"][0] == pytest.approx(50.0 + 8 * 0.2734 / 16)


def test_spine_crawler_decays_off_creep_and_dies_by_step_220():
    decay, regen = 1 / (0.3332 * 16), 0.2734 / 16  # 1 damage every 0.3332 game-seconds; zerg regeneration per loop
    env = SMACEnv("2s_vs_1sc", seed=0)
    env.reset()
    env.step([1, 1])  # both stalkers stop far out of the crawler's reach
    # regeneration first (capped at 300 in the first loop), then the decay, in each of the step's 8 loops
    assert env.batch.units(0)["health"][2] == pytest.approx(300 - 8 * decay + 7 * regen)
    per_loop = decay - regen
    steps = 1
    while True:
        r, done, info = env.step([1, 1])
        steps += 1
        if done:
            break
    assert steps == math.ceil(300 / per_loop / 8) == 220  # won, with nothing dealt by the team
    assert info["battle_won"] and info["dead_enemies"] == 1 and info["dead_allies"] == 0
    still = SMACEnv("2s_vs_1sc", seed=0, off_creep_decay=False)
    still.reset()
    for _ in range(5):
        still.step([1, 1])
    assert still.batch.units(0)["health"][2] == 300.0  # without the decay the crawler stays whole


def test_reward_of_a_kill_and_scale():
    assert SMACEnv("3s5z").max_reward == 1510.0  # 8 x 10 + 200 + 3 x 160 + 5 x 150
    env = SMACEnv("3m", seed=0)
    env.reset()
    assert env.max_reward == 3 * 10 + 200 + 3 * 45
    freeze_enemies(env.batch)
    stage(env.batch, 3, x=13.0, y=16.0, health=1.0)
    env.batch.observe()
    r, done, info = env.step([6, 1, 1])
    assert r == pytest.approx((1.0 + 10.0) / (365 / 20))
    assert not done and info == {"battle_won": False, "dead_allies": 0, "dead_enemies": 1}


def _last_enemy_at_one_hp(**options) -> SMACEnv:
    """3m with enemies 1 and 2 dead and enemy 0 at 1 HP in agent 0's range, enemies frozen."""
    env = SMACEnv("3m", seed=0, **options)
    env.reset()
    b = env.batch
    freeze_enemies(b)
    stage(b, 4, alive=False)
    stage(b, 5, alive=False)
    stage(b, 3, x=13.0, y=16.0, health=1.0)
    b.observe()
    return env


def test_win_adds_reward_win():
    env = _last_enemy_at_one_hp()
    r, done, info = env.step([6, 1, 1])
    assert done and info["battle_won"] and info["dead_enemies"] == 1
    assert r == pytest.approx((1.0 + 10.0 + 200.0) / 18.25)
    assert env.get_stats()["battles_won"] == 1
    with pytest.raises(SMACError, match="finished episode"):
        env.step([1, 1, 1])


def test_loss_gives_zero_reward_by_default_and_negative_when_asked():
    for only_positive, expected in [(True, 0.0), (False, -(1.0 * 0.5 + 10 * 0.5) / 18.25)]:
        env = SMACEnv("3m", seed=0, reward_only_positive=only_positive)
        env.reset()
        b = env.batch
        stage(b, 1, alive=False)
        stage(b, 2, alive=False)
        stage(b, 0, health=1.0)
        stage(b, 3, x=13.0, y=16.0)  # attack-moving enemy in range: fires in the first loop
        b.observe()
        r, done, info = env.step([1, 0, 0])
        assert done and not info["battle_won"] and info["dead_allies"] == 1
        assert r == pytest.approx(expected)


def test_time_limit_ends_the_episode_not_won():
    env = SMACEnv("3m", seed=0)
    env.reset()
    freeze_enemies(env.batch)
    for t in range(60):
        r, done, info = env.step([1, 1, 1])
        assert done == (t == 59)
    assert info == {"battle_won": False, "dead_allies": 0, "dead_enemies": 0, "episode_limit": True}
    assert env.get_stats()["timeouts"] == 1 and env.get_stats()["battles_draw"] == 1  # SMAC's draw count


def test_mmm_only_medivacs_left_is_a_loss():
    env = SMACEnv("MMM", seed=0)
    env.reset()
    freeze_enemies(env.batch)
    for a in range(9):
        stage(env.batch, a, alive=False)
    env.batch.observe()
    r, done, info = env.step([0] * 9 + [1])
    assert done and not info["battle_won"]


def test_enemy_unit_type_bits_keep_smacs_stalker_zealot_swap():
    env = SMACEnv("3s5z", seed=0)
    _, s = env.reset()
    # allies [health, cooldown, x, y, shield, stalker, zealot]: agent 0 is a stalker
    np.testing.assert_array_equal(s[5:7], [1, 0])
    np.testing.assert_array_equal(s[7 * 3 + 5:7 * 3 + 7], [0, 1])  # agent 3 is a zealot
    # enemies [health, x, y, shield, zealot, stalker]: enemy 0 is a stalker
    base = 8 * 7
    np.testing.assert_array_equal(s[base + 4:base + 6], [0, 1])
    np.testing.assert_array_equal(s[base + 6 * 3 + 4:base + 6 * 3 + 6], [1, 0])


def test_optional_flags_change_shapes_as_in_smac():
    def shapes(**kw):
        info = SMACEnv("3m", **kw).get_env_info()
        return info["obs_shape"], info["state_shape"]

    assert shapes(obs_last_action=True) == (30 + 2 * 9, 48)
    assert shapes(obs_pathing_grid=True) == (38, 48)
    assert shapes(obs_terrain_height=True) == (39, 48)
    assert shapes(obs_timestep_number=True) == (31, 48)
    assert shapes(state_last_action=False) == (30, 21)
    assert shapes(state_timestep_number=True) == (30, 49)
    assert shapes(obs_instead_of_state=True) == (30, 90)
    assert shapes(obs_all_health=False) == (30 - 3 - 2, 48)
    assert shapes(obs_own_health=False) == (30, 48)  # SMAC turns it back on while obs_all_health is on
    assert shapes(obs_own_health=False, obs_all_health=False) == (24, 48)


def test_obs_last_action_and_timestep_values():
    env = SMACEnv("3m", seed=0, obs_last_action=True, obs_timestep_number=True)
    env.reset()
    freeze_enemies(env.batch)
    env.step([1, 3, 1])
    o = env.get_obs_agent(0)
    ally_block = o[4 + 15:4 + 15 + 14]  # ally 1: visible, dist, dx, dy, health, then its last action
    np.testing.assert_array_equal(ally_block[5:], np.eye(9)[3])
    assert o[-1] == pytest.approx(1 / 60)


def test_sparse_reward():
    env = _last_enemy_at_one_hp(reward_sparse=True)
    r, done, _ = env.step([6, 1, 1])
    assert done and r == pytest.approx(1.0 / 18.25)


def test_moves_blocked_by_unwalkable_cells():
    env = SMACEnv("3s5z", seed=0)
    env.reset()
    stage(env.batch, 0, x=12.0, y=23.5)  # row y = 24 is unwalkable on 3s5z
    env.batch.observe()
    assert env.get_avail_agent_actions(0)[2:6] == [0, 1, 1, 1]
    assert env.get_obs_agent(0)[0:4].tolist() == [0, 1, 1, 1]


def test_colossus_crosses_cliffs_zerglings_take_the_ramp():
    b = SMACBatch("2c_vs_64zg", 1)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    A = b.n_agents
    for u in range(A, b.n_units - 1):
        stage(b, u, alive=False)
    stage(b, 1, alive=False)
    stage(b, 0, x=16.0, y=16.0)
    zergling = b.n_units - 1
    stage(b, zergling, x=20.0, y=9.0)
    b.ui[0, 0, layout.ORDER] = layout.ORD_MOVE
    b.uf[0, 0, layout.TX], b.uf[0, 0, layout.TY] = 16.0, 9.0
    b.ui[0, zergling, layout.ORDER] = layout.ORD_MOVE
    b.uf[0, zergling, layout.TX], b.uf[0, zergling, layout.TY] = 20.0, 17.0
    colossus_x, zergling_at_bar = [], []
    for _ in range(8 * 60):  # game loops straight from the kernel: every agent action would replace the order
        combat.simulate_loop(b.uf, b.ui, b.utype, b.ft, b.it, b.walk, b.cliff, b.nav, b.rng, 0, A, b.n_units,
                           b.order_buf[0])
        u = b.units(0)
        colossus_x.append(u["x"][0])
        if 12.0 <= u["y"][zergling] < 14.0:
            zergling_at_bar.append(u["x"][zergling])
        assert b.map.pathing[int(u["x"][zergling]), int(u["y"][zergling])]
    u = b.units(0)
    assert u["y"][0] == pytest.approx(9.0) and set(colossus_x) == {16.0}  # straight over the cliff bar (y 12-13)
    assert (u["x"][zergling], u["y"][zergling]) == (pytest.approx(20.0), pytest.approx(17.0))
    assert zergling_at_bar and all(x < 4.0 or x >= 28.0 for x in zergling_at_bar)  # around it, by a side ramp


def test_errors_are_one_line_and_name_what_is_accepted():
    with pytest.raises(SMACError) as err:
        SMACEnv("3x")
    assert str(err.value).startswith("unknown SMAC map '3x'; known maps: 10m_vs_11m, 1c3s5z,")
    with pytest.raises(SMACError) as err:
        SMACEnv("3m", obs_lastaction=True)
    assert str(err.value).startswith("unknown SMAC option 'obs_lastaction'; accepted options: step_mul, move_amount,")
    with pytest.raises(SMACError) as err:
        SMACEnv("3m", obs_last_action="yes")
    assert str(err.value) == "SMAC option obs_last_action must be True or False, got 'yes'"
    with pytest.raises(SMACError) as err:
        SMACEnv("3m", step_mul=4)
    assert str(err.value) == "step_mul=4 is not supported by the embedded simulator; accepted: 8"
    env = SMACEnv("3m", seed=0)
    env.reset()
    with pytest.raises(SMACError) as err:
        env.step([6, 1, 1])
    assert str(err.value) == "agent 0 cannot take action 6; available actions: [1, 2, 3, 4, 5]"
    stage(env.batch, 1, alive=False)
    env.batch.observe()
    with pytest.raises(SMACError) as err:
        env.step([1, 1, 1])
    assert str(err.value) == "agent 1 cannot take action 1; available actions: [0]"
    for e in (err,):
        assert "\n" not in str(e.value)


def test_agents_numbered_by_type_then_position_like_smac():
    m = get_map("3s5z")
    names = m.unit_names("ally")
    assert names == ["stalker"] * 3 + ["zealot"] * 5
    for lo, hi in [(0, 3), (3, 8)]:
        keys = [tuple(p) for p in m.spawn[lo:hi]]
        assert keys == sorted(keys)
    assert m.unit_names("enemy") == ["stalker"] * 3 + ["zealot"] * 5  # enemies in spawn order


def test_timestep_feature_is_kept_for_dead_agents():
    env = SMACEnv("3m", seed=0, obs_timestep_number=True)
    env.reset()
    freeze_enemies(env.batch)
    stage(env.batch, 2, alive=False)
    env.batch.observe()
    env.step([1, 1, 0])
    o = env.get_obs_agent(2)
    assert o[-1] == pytest.approx(1 / 60) and not o[:-1].any()


def test_returned_observations_are_copies():
    env = SMACEnv("3m", seed=0)
    obs, state = env.reset()
    before = obs[0].copy(), state.copy()
    env.step([4, 4, 4])
    env.reset()
    np.testing.assert_array_equal(obs[0], before[0])
    np.testing.assert_array_equal(state, before[1])
