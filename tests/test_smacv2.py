"""SMACv2's generator scenarios in the embedded simulator: shapes, per-episode draws, ranges, own position.

The expected numbers come from SMACv2 (oxwhirl/smacv2: starcraft2.py's size functions and unit range
tables, distributions.py's weighted_teams and surrounded_and_reflect, the README's scenario table), written
out here by hand rather than read from the simulator.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import freeze_enemies, stage
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test

from marl.envs.smac import SMACBatch, SMACEnv, SMACParallelEnv, SMACVecEnv, generator_names, layout, map_names
from marl.envs.smac.units import TYPE_NAMES, UNIT_TYPES

RACES = {  # SMACv2: race -> (unit pool in unit-type-bit order, shield bits, the type no team may be made of only)
    "protoss": (("stalker", "zealot", "colossus"), 1, None),
    "terran": (("marine", "marauder", "medivac"), 0, "medivac"),
    "zerg": (("zergling", "hydralisk", "baneling"), 0, "baneling"),
}
SIZES = [(5, 5), (10, 10), (20, 20), (10, 11), (20, 23)]  # SMACv2 README: n_units, n_enemies
WEIGHTS = (0.45, 0.45, 0.10)
SIGHT = {"stalker": 10, "zealot": 9, "colossus": 10, "zergling": 8, "baneling": 8, "hydralisk": 9, "marine": 9,
         "marauder": 10, "medivac": 11}  # StarCraft2Env.unit_sight_range
WEAPON_RANGE = {"stalker": 6, "zealot": 0.1, "colossus": 7, "zergling": 0.1, "baneling": 0.25, "hydralisk": 5,
                "marine": 5, "marauder": 6, "medivac": 4}  # StarCraft2Env.unit_shoot_range, before max(., 2)
SHOOT = {name: max(r, 2) for name, r in WEAPON_RANGE.items()}


def smacv2_sizes(race: str, n_units: int, n_enemies: int) -> tuple[int, int, int]:
    """(obs, state, n_actions) by SMACv2's get_obs_size / get_state_size with its scenario configs."""
    bits, shield = 3, RACES[race][1]
    enemy_feats = 4 + bits + 1 + shield
    ally_feats = 4 + 1 + shield + bits
    own_feats = bits + 1 + shield + 2  # type bits, health (+ shield), own position
    n_actions = 6 + n_enemies
    obs = 4 + n_enemies * enemy_feats + (n_units - 1) * ally_feats + own_feats
    state = n_units * (4 + shield + bits) + n_enemies * (3 + shield + bits) + n_units * n_actions
    return obs, state, n_actions


def test_the_15_scenarios_and_their_shapes_match_smacv2():
    names = [f"{race}_{a}_vs_{n}" for race in RACES for a, n in SIZES]
    assert generator_names() == names and not set(names) & set(map_names())
    assert smacv2_sizes("protoss", 5, 5) == (92, 130, 11)  # docs/smac_rules.md section 14
    for name in names:
        race, a, n = name.split("_")[0], int(name.split("_")[1]), int(name.split("_")[3])
        info = SMACEnv(name).get_env_info()
        obs, state, n_actions = smacv2_sizes(race, a, n)
        assert (info["obs_shape"], info["state_shape"], info["n_actions"], info["n_agents"],
                info["episode_limit"]) == (obs, state, n_actions, a, 200), name
        assert SMACEnv(name).n_enemies == n


def _draw(name: str, n_envs: int, resets: int, seed: int = 0) -> list[SMACBatch]:
    """Snapshots (as plain copies) of `resets` consecutive resets of n_envs battles."""
    b = SMACBatch(name, n_envs)
    b.seed(seed)
    out = []
    for _ in range(resets):
        b.reset()
        out.append({k: getattr(b, k).copy() for k in ("tid", "utype", "spawn", "sight", "shoot", "ei", "uf")})
    return out


@pytest.mark.parametrize("race", list(RACES))
def test_team_composition_frequencies_and_exceptions(race):
    pool, _, exception = RACES[race]
    draws = _draw(f"{race}_20_vs_23", 128, 4)
    allies = np.concatenate([d["tid"][:, :20].ravel() for d in draws])
    n = allies.size
    for k, p in enumerate(WEIGHTS):
        count = np.sum(allies == k)
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (pool[k], count / n)
    for d in draws:
        # the enemy team is the ally team (as a multiset: allies are renumbered by type and position)
        for e in range(d["tid"].shape[0]):
            assert sorted(d["tid"][e, :20]) == sorted(d["tid"][e, 20:40])
    # the extra enemy of 10_vs_11 is a team of one drawn on its own: never the exception type
    extra = np.concatenate([d["tid"][:, 20] for d in _draw(f"{race}_10_vs_11", 256, 4, seed=1)])
    if exception is None:
        assert abs(np.mean(extra == 2) - 0.10) < 0.04
    else:
        assert not np.any(extra == 2)
        assert abs(np.mean(extra == 0) - 0.5) < 0.06  # 0.45 / 0.90


def test_unit_types_follow_the_drawn_pool_index():
    for race, (pool, _, _) in RACES.items():
        assert list(SMACBatch(f"{race}_10_vs_11", 1).units(0)["unit_type"]) == [pool[0]] * 21  # before a reset
        d = _draw(f"{race}_10_vs_11", 16, 1)[0]
        for e in range(16):
            for u in range(21):
                drawn = pool[d["tid"][e, u]]
                # ally medivacs are SMAC's Medivac_RL (faster), enemy ones the game's own
                assert TYPE_NAMES[d["utype"][e, u]] == drawn + ("_rl" if drawn == "medivac" and u < 10 else "")
                assert d["sight"][e, u] == SIGHT[pool[d["tid"][e, u]]]


def test_agents_are_numbered_by_rl_type_id_then_position():
    rank = {name: i for i, name in enumerate(sorted(SIGHT))}  # SMAC's *_RL type ids are alphabetical
    for race, (pool, _, _) in RACES.items():
        d = _draw(f"{race}_20_vs_20", 32, 1)[0]
        for e in range(32):
            key = [(rank[pool[t]], x, y) for t, (x, y) in zip(d["tid"][e, :20], d["spawn"][e, :20])]
            assert key == sorted(key)


def test_reflect_and_surrounded_start_positions():
    draws = _draw("protoss_10_vs_11", 64, 6, seed=3)
    layouts = np.concatenate([d["ei"][:, layout.LAYOUT] for d in draws])
    assert set(layouts) == {layout.LAYOUT_REFLECT, layout.LAYOUT_SURROUNDED}
    assert abs(np.mean(layouts == layout.LAYOUT_REFLECT) - 0.5) < 0.12
    # units of one point stand on a spiral around it: how far the 11 farthest may be (colossi: radius 1)
    reach = (2 * 1.0 + 0.05) / 1.546 * math.sqrt(10.5) + 1e-9
    corners = {0: (0, 0), 1: (0, 32), 2: (32, 32), 3: (32, 0)}
    starts = {0: (14, 14), 1: (14, 18), 2: (18, 18), 3: (18, 14)}
    for d in draws:
        for e in range(64):
            pos, tid = d["spawn"][e], d["tid"][e]
            assert np.array_equal(pos, d["uf"][e, :, [layout.X, layout.Y]].T)  # units stand on their start
            assert ((pos >= 0) & (pos < 32)).all()
            if d["ei"][e, layout.LAYOUT] == layout.LAYOUT_REFLECT:
                allies, enemies = pos[:10], pos[10:]
                assert ((allies[:, 0] >= 0) & (allies[:, 0] < 15)).all()
                # each of the first 10 enemies is some ally of the same type mirrored at x = 32 - x
                for j in range(10):
                    match = (np.isclose(allies[:, 0], 32 - enemies[j, 0], atol=1e-9)
                             & (allies[:, 1] == enemies[j, 1]) & (tid[:10] == tid[10 + j]))
                    assert match.any(), (e, j)
                assert 16 <= enemies[10, 0] < 32  # the extra enemy: right half, anywhere in y
            else:
                assert (np.hypot(pos[:10, 0] - 16, pos[:10, 1] - 16) <= reach).all()
                # every enemy stands near a point between a diagonal's start (2 off the centre) and its corner
                segs = []
                for k in range(4):
                    (sx, sy), (cx, cy) = starts[k], corners[k]
                    t = np.clip(((pos[10:, 0] - cx) * (sx - cx) + (pos[10:, 1] - cy) * (sy - cy))
                                / ((sx - cx) ** 2 + (sy - cy) ** 2), 0, 1)
                    segs.append(np.hypot(pos[10:, 0] - (cx + t * (sx - cx)), pos[10:, 1] - (cy + t * (sy - cy))))
                assert (np.min(segs, axis=0) <= reach).all()


def test_surrounded_groups_are_contiguous_spirals_on_distinct_diagonals():
    b = SMACBatch("zerg_20_vs_23", 64)
    b.seed(5)
    b.reset()
    seen = 0
    for e in np.flatnonzero(b.ei[:, layout.LAYOUT] == layout.LAYOUT_SURROUNDED):
        pos = b.spawn[e, 20:]
        # far from the centre a spiral (radius <= 4.1 here) cannot leave its diagonal's quadrant
        far = np.hypot(pos[:, 0] - 16, pos[:, 1] - 16) > 14
        quadrant = ((pos[:, 0] >= 16).astype(int) * 2 + (pos[:, 1] >= 16))[far]
        if quadrant.size == 0:
            continue
        # enemies come in runs, one run per group, and no two runs share a diagonal
        runs = [quadrant[0]] + [q for p, q in zip(quadrant[:-1], quadrant[1:]) if p != q]
        assert 1 <= len(runs) <= 4 and len(set(runs)) == len(runs), runs
        seen += 1
    assert seen > 10


def test_same_seed_same_episodes_and_battles_of_a_batch_differ():
    def play(n_envs):
        env = SMACVecEnv("terran_10_vs_11", n_envs)
        s = env.reset(seed=11)
        rngs = [np.random.default_rng(e) for e in range(n_envs)]  # battle e's actions do not depend on E
        out = [(env.batch.tid.copy(), s.obs.copy())]
        for _ in range(80):
            score = np.stack([r.random(s.avail.shape[1:]) for r in rngs])
            score[..., 6:] += 0.7
            score[~s.avail] = -1
            s = env.step(score.argmax(-1))
            out.append((env.batch.tid.copy(), s.obs.copy()))
        return out

    one, three, again = play(1), play(3), play(3)
    for (t1, o1), (t3, o3), (ta, oa) in zip(one, three, again):
        assert np.array_equal(t3, ta) and np.array_equal(o3, oa)
        assert np.array_equal(t1[0], t3[0]) and np.array_equal(o1[0], o3[0])  # battle 0 whatever E is
    tid = three[0][0]
    assert not np.array_equal(tid[0], tid[1]) or not np.array_equal(tid[1], tid[2])
    b = SMACBatch("protoss_5_vs_5", 8)
    b.seed(0)
    b.reset()
    assert len({b.spawn[e].tobytes() for e in range(8)}) == 8
    # SMACEnv plays battle 0 of a VecEnv with the same seed
    env = SMACEnv("terran_10_vs_11", seed=11)
    obs, _ = env.reset()
    assert np.array_equal(np.stack(obs), one[0][1][0])


def test_smac_env_reflects_each_episodes_units():
    env = SMACEnv("terran_10_vs_10", seed=2)
    rosters = set()
    for _ in range(6):
        env.reset()
        types = tuple(u.unit_type for u in env.agents.values())
        assert types == tuple(env.batch.units(0)["unit_type"][:10])
        assert set(types) <= {"marine", "marauder", "medivac"}
        for a, t in enumerate(types):
            assert env.unit_sight_range(a) == SIGHT[t] and env.unit_shoot_range(a) == SHOOT[t]
            assert env.is_medivac(a) == (t == "medivac")
        assert [u.unit_type for u in env.enemies.values()] != []
        rosters.add(types)
    assert len(rosters) > 1
    # SMACv2 sums the enemies' health into max_reward in its first episode only
    first = SMACEnv("protoss_5_vs_5", seed=4)
    first.reset()
    enemies = [u.unit_type for u in first.enemies.values()]
    want = 5 * 10 + 200 + sum(UNIT_TYPES[t].hp + UNIT_TYPES[t].shield for t in enemies)
    assert first.max_reward == want
    for _ in range(3):
        first.reset()
        assert first.max_reward == want


def _battle_with(race: str, unit: str) -> tuple[SMACBatch, int, int]:
    """A reset batch of the race's 10_vs_10 scenario and (battle, agent) of the given unit type."""
    b = SMACBatch(f"{race}_10_vs_10", 16, autoreset=False)
    for seed in range(20):
        b.seed(seed)
        b.reset()
        for e in range(16):
            names = b.units(e)["unit_type"][:10]
            if unit in names:
                return b, e, int(np.flatnonzero(names == unit)[0])
    raise AssertionError(f"no {unit} drawn")


@pytest.mark.parametrize("unit", list(SIGHT))
def test_sight_and_shoot_range_per_unit_type(unit):
    race = next(r for r, (pool, _, _) in RACES.items() if unit in pool)
    b, e, a = _battle_with(race, unit)
    freeze_enemies(b, e)
    for u in range(20):  # everybody far away, in the left bottom corner
        stage(b, u, x=1.0 + 0.1 * u, y=1.0, e=e)
    enemy = 10
    enemy_dim = b.enemy_dim
    for d, visible in [(SIGHT[unit] - 0.01, True), (SIGHT[unit] + 0.01, False)]:
        stage(b, a, x=5.0, y=16.0, e=e)
        stage(b, enemy, x=5.0 + d, y=16.0, e=e)
        b.observe()
        block = b.obs[e, a, 4:4 + enemy_dim]
        assert bool(block.any()) == visible, (unit, d)
        if visible:
            assert block[1] == pytest.approx(d / SIGHT[unit], abs=1e-6)  # normalised by the agent's own sight
            assert block[2] == pytest.approx(d / SIGHT[unit], abs=1e-6) and block[3] == 0.0
    if unit != "medivac":  # a medivac's attack actions heal allies instead
        for d, can in [(SHOOT[unit] - 0.01, True), (SHOOT[unit] + 0.01, False)]:
            stage(b, enemy, x=5.0 + d, y=16.0, e=e)
            b.observe()
            assert bool(b.avail[e, a, 6]) == can
            assert b.obs[e, a, 4] == float(can)


def test_obs_own_pos_is_x_and_y_over_32_before_the_unit_type():
    b = SMACBatch("protoss_5_vs_5", 4)
    b.seed(0)
    b.reset()
    own = b.obs_dim - 7  # health, shield, x, y, 3 type bits
    for e in range(4):
        u = b.units(e)
        for a in range(5):
            assert b.obs[e, a, own] == np.float32(u["health"][a] / UNIT_TYPES[u["unit_type"][a]].hp)
            assert b.obs[e, a, own + 2] == np.float32(u["x"][a] / 32) and b.obs[e, a, own + 3] == np.float32(
                u["y"][a] / 32)
            bits = b.obs[e, a, own + 4:]
            assert bits.sum() == 1 and bits[RACES["protoss"][0].index(u["unit_type"][a])] == 1
    # the option works on v1 maps too, and can be turned off on v2 ones
    assert SMACEnv("3m", obs_own_pos=True).get_obs_size() == 32
    assert SMACEnv("protoss_5_vs_5", obs_own_pos=False).get_obs_size() == 90
    assert SMACEnv("protoss_5_vs_5", use_unit_ranges=False).unit_sight_range(0) == 9


def test_idle_enemies_attack_the_closest_ally_they_can_hit():
    b = SMACBatch("protoss_10_vs_10", 8, autoreset=False)
    b.seed(7)
    b.reset()
    assert (b.ui[:, 10:, layout.ORDER] == layout.ORD_IDLE).all()
    x, y = b.uf[:, :, layout.X].copy(), b.uf[:, :, layout.Y].copy()
    b.step(np.ones((8, 10), np.int64))  # everybody stops
    for e in range(8):
        d = np.hypot(x[e, 10:, None] - x[e, None, :10], y[e, 10:, None] - y[e, None, :10])
        alive = b.ui[e, 10:, layout.ALIVE] == 1
        assert (b.ui[e, 10:, layout.ORDER][alive] == layout.ORD_ATTACK).all()
        assert (b.ui[e, 10:, layout.TARGET][alive] == d.argmin(1)[alive]).all()


def test_terran_medivacs_heal_and_pettingzoo_face_works():
    env = SMACParallelEnv("terran_5_vs_5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(env, num_cycles=100)
    assert not [str(w.message) for w in caught if "pettingzoo" in w.filename]
    assert env.possible_agents == [f"terran_{i}" for i in range(5)]
    b, e, a = _battle_with("terran", "medivac")
    assert b.cfg_i[layout.C_MMM] == 1  # heal targets and the only-medivacs-left rule, as on MMM
    others = [j for j in range(10) if b.units(e)["unit_type"][j] != "medivac"]
    stage(b, others[0], x=b.uf[e, a, layout.X] + 1.0, y=b.uf[e, a, layout.Y], e=e)
    b.observe()
    assert b.avail[e, a, 6 + others[0]]


# --------------------------------------------------------------------------------------- invariants
@settings(max_examples=6, deadline=None)
@given(map_name=st.sampled_from(["protoss_5_vs_5", "terran_10_vs_11", "zerg_10_vs_10", "protoss_20_vs_23"]),
       seed=st.integers(0, 2**32 - 1), action_seed=st.integers(0, 2**32 - 1), attack_bias=st.sampled_from([0.0, 0.9]))
def test_invariants_under_random_valid_actions(map_name, seed, action_seed, attack_bias):
    E = 3
    env = SMACVecEnv(map_name, E)
    b = env.batch
    A = b.n_agents
    rng = np.random.default_rng(action_seed)
    s = env.reset(seed=seed)
    for _ in range(60):
        score = rng.random(s.avail.shape)
        score[..., 6:] += rng.random(s.avail.shape[:-1])[..., None] < attack_bias
        score[~s.avail] = -1
        acts = score.argmax(-1)
        s = env.step(acts)
        assert np.isfinite(s.obs).all() and np.abs(s.obs).max() <= 1.0 and (s.reward >= 0).all()
        for e in range(E):
            u = b.units(e)
            types = [UNIT_TYPES[t] for t in u["unit_type"]]
            alive = u["alive"]
            assert np.array_equal(alive[:A], s.alive[e]) and np.array_equal(alive, u["health"] > 0)
            assert (u["health"] <= [t.hp for t in types]).all() and (u["shield"] <= [t.shield for t in types]).all()
            assert ((u["x"] >= 0) & (u["x"] < 32) & (u["y"] >= 0) & (u["y"] < 32))[alive].all()
            if s.done[e]:
                assert s.t[e] == 0 and alive.all()
            dead = ~alive[:A]
            assert not s.obs[e][dead].any() and (s.avail[e][dead, 0]).all() and not s.avail[e][dead, 1:].any()
            # the avail rule with each agent's own shoot range (medivacs heal non-medivac allies)
            d = np.hypot(u["x"][None] - u["x"][:A, None], u["y"][None] - u["y"][:A, None])
            shoot = np.array([SHOOT[t] for t in u["unit_type"][:A]])
            medivac = u["unit_type"] == "medivac"
            want = np.zeros((A, b.n_actions), bool)
            fighter = alive[:A] & ~medivac[:A]
            want[:, 6:] = fighter[:, None] & alive[None, A:] & (d[:, A:] <= shoot[:, None])
            healer = alive[:A] & medivac[:A]
            want[:, 6:6 + A] |= healer[:, None] & alive[None, :A] & ~medivac[None, :A] & (d[:, :A] <= shoot[:, None])
            assert np.array_equal(s.avail[e, :, 6:], want[:, 6:])
            # an enemy block is filled exactly when the enemy is alive and inside the agent's own sight
            sight = np.array([SIGHT[t] for t in u["unit_type"][:A]])
            seen = alive[:A, None] & alive[None, A:] & (d[:, A:] < sight[:, None])
            blocks = s.obs[e, :, 4:4 + b.n_enemies * b.enemy_dim].reshape(A, b.n_enemies, b.enemy_dim)
            assert np.array_equal(blocks.any(-1), seen)


def test_snapshot_restore_continues_a_v2_battle_exactly_and_old_v1_snapshots_still_load():
    def run(env, s, rng, steps):
        obs = []
        for _ in range(steps):
            score = rng.random(s.avail.shape)
            score[~s.avail] = -1
            s = env.step(score.argmax(-1))
            obs.append(s.obs.copy())
        return s, obs

    env = SMACVecEnv("zerg_10_vs_11", 4)
    s, _ = run(env, env.reset(seed=3), np.random.default_rng(0), 30)
    saved = env.get_state()
    _, want = run(env, s, np.random.default_rng(1), 60)  # crosses episode ends: new draws after the restore too
    other = SMACVecEnv("zerg_10_vs_11", 4)
    _, got = run(other, other.set_state(saved), np.random.default_rng(1), 60)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    # a 3m snapshot written before this change: 4 env ints, 1 env float, no ranges
    env = SMACVecEnv("3m", 2)
    s = env.reset(seed=0)
    old = env.get_state()
    old["ei"], old["ef"] = old["ei"][:, :4], old["ef"][:, :1]
    del old["sight"], old["shoot"]
    _, want = run(env, s, np.random.default_rng(2), 40)
    other = SMACVecEnv("3m", 2)
    _, got = run(other, other.set_state(old), np.random.default_rng(2), 40)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
