"""Property tests of the embedded SMAC simulator: invariants that hold whatever valid actions the agents take.

Hypothesis draws the map, the battle seed and the seed of the action sampler; actions are drawn from each
agent's avail mask (uniformly, or leaning on attack actions so that units die and battles end), and every
step is checked against docs/smac_rules.md: unit health and shields within their type's bounds, the dead staying dead
within an episode, ground units on walkable cells, finite and [-1, 1] observations, the dead agents' zero
observation and no-op-only mask, the avail rules, SMAC's positive shaped reward and its scale, and
bit-identical replays under a seed (battle e of a VecEnv follows SeedSequence(seed, spawn_key=(e,)),
whatever the number of battles and threads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.envs.smac import SMACBatch, SMACEnv, SMACVecEnv
from marl.envs.smac.units import UNIT_TYPES

MAPS = ["3m", "3s5z", "MMM", "2c_vs_64zg", "bane_vs_bane", "corridor", "so_many_baneling", "6h_vs_8z",
        "2s_vs_1sc", "1c3s5z", "MMM2"]
SEEDS = st.integers(0, 2**32 - 1)
ATTACK_BIAS = st.sampled_from([0.0, 0.5, 0.9])  # chance that an agent picks among its attack actions
SHOOT_RANGE = 6.0
STEP_FIELDS = ("obs", "state", "avail", "reward", "done", "truncated", "won", "alive", "t", "episode_return",
               "episode_length", "final_obs", "final_state")


def sample_actions(rng: np.random.Generator, avail: np.ndarray, attack_bias: float) -> np.ndarray:
    """One available action per agent (int64[..., A]): uniform, or among the attacks with prob attack_bias."""
    score = rng.random(avail.shape)
    keen = rng.random(avail.shape[:-1]) < attack_bias
    score[..., 6:] += keen[..., None]
    score[~avail] = -1.0
    acts = score.argmax(-1).astype(np.int64)
    assert np.take_along_axis(avail, acts[..., None], -1).all()
    return acts


@dataclass
class Roster:
    """Per-unit facts of a map, in unit slot order (agents first), read from units() and UNIT_TYPES."""

    max_hp: np.ndarray
    max_sh: np.ndarray
    flying: np.ndarray
    cliff_walker: np.ndarray
    medivac: np.ndarray

    @classmethod
    def of(cls, batch: SMACBatch) -> Roster:
        names = batch.units(0)["unit_type"]
        types = [UNIT_TYPES[n] for n in names]  # units() strips the ally medivac's "_rl"
        assert all(n in UNIT_TYPES and not n.endswith("_rl") for n in names)
        return cls(max_hp=np.array([t.hp for t in types]), max_sh=np.array([t.shield for t in types]),
                   flying=np.array([t.flying for t in types]), cliff_walker=np.array([t.cliff_walker for t in types]),
                   medivac=np.array([t.name == "medivac" for t in types]))


def check_units(batch: SMACBatch, roster: Roster, e: int, prev_alive: np.ndarray | None) -> dict:
    """Unit invariants of battle e; prev_alive is None right after a reset (the dead may come back then)."""
    u = batch.units(e)
    hp, sh, alive, x, y = u["health"], u["shield"], u["alive"], u["x"], u["y"]
    m = batch.map
    assert np.isfinite(hp).all() and np.isfinite(sh).all() and np.isfinite(x).all() and np.isfinite(y).all()
    assert (hp >= 0).all() and (hp <= roster.max_hp).all(), (hp, roster.max_hp)
    assert (sh >= 0).all() and (sh <= roster.max_sh).all(), (sh, roster.max_sh)
    assert np.array_equal(alive, hp > 0), "a unit is alive exactly while its health is positive"
    assert not sh[~alive].any(), "the dead keep no shields"
    if prev_alive is not None:
        revived = alive & ~prev_alive
        assert not revived.any(), f"units {np.flatnonzero(revived)} came back to life within an episode"
    # every living unit (medivacs too) stays on the map
    assert ((x[alive] >= 0) & (x[alive] < m.map_x) & (y[alive] >= 0) & (y[alive] < m.map_y)).all()
    ground = alive & ~roster.flying
    ix, iy = x[ground].astype(int), y[ground].astype(int)
    ok = np.where(roster.cliff_walker[ground], m.cliff_pathing[ix, iy], m.pathing[ix, iy])
    bad = np.flatnonzero(ground)[~ok]
    assert not bad.size, f"ground units {bad} ({u['unit_type'][bad]}) stand on unwalkable cells {ix[~ok], iy[~ok]}"
    return u


def expected_avail(batch: SMACBatch, roster: Roster, u: dict) -> np.ndarray:
    """SMAC's avail mask of every agent, computed from the unit table (docs/smac_rules.md section 6)."""
    A, m = batch.n_agents, batch.map
    x, y, alive = u["x"], u["y"], u["alive"]
    out = np.zeros((A, batch.n_actions), bool)
    out[:, 0] = ~alive[:A]
    out[:, 1] = alive[:A]
    for k, (dx, dy) in enumerate([(0, 1), (0, -1), (1, 0), (-1, 0)]):
        cx, cy = (x[:A] + dx).astype(int), (y[:A] + dy).astype(int)  # truncation, as SMAC's int()
        inside = (cx >= 0) & (cx < m.map_x) & (cy >= 0) & (cy < m.map_y)
        walk = m.pathing[np.clip(cx, 0, m.map_x - 1), np.clip(cy, 0, m.map_y - 1)]
        out[:, 2 + k] = alive[:A] & inside & walk
    d = np.hypot(x[None, :] - x[:A, None], y[None, :] - y[:A, None])  # [agent, unit]
    fighter = alive[:A] & ~roster.medivac[:A]
    out[:, 6:] = fighter[:, None] & alive[None, A:] & (d[:, A:] <= SHOOT_RANGE)
    if m.map_type == "MMM":  # a medivac's actions 6 + j heal ally j (never a medivac)
        healer = alive[:A] & roster.medivac[:A]
        heal = healer[:, None] & alive[None, :A] & ~roster.medivac[None, :A] & (d[:, :A] <= SHOOT_RANGE)
        out[:, 6:6 + A] |= heal
    return out


def check_outputs(batch: SMACBatch, obs, state, avail, alive) -> None:
    """Observation, state and mask invariants of one battle (or a stack of battles)."""
    assert np.isfinite(obs).all() and np.isfinite(state).all()
    assert obs.min(initial=0.0) >= -1.0 and obs.max(initial=0.0) <= 1.0
    assert obs.dtype == np.float32 and state.dtype == np.float32 and avail.dtype == np.bool_
    # SMAC's state is not all within [-1, 1]: cooldown ratios pass 1 (hydralisk 15.2 loops / 10), as
    # SMACParallelEnv.state_space = Box(-1, 2) declares
    assert state.min(initial=0.0) >= -1.0 and state.max(initial=0.0) <= 2.0
    dead = ~alive
    # all zeros, but for the timestep feature, which SMAC appends for the dead too
    body = obs[..., :-1] if batch.options["obs_timestep_number"] else obs
    assert not body[dead].any(), "a dead agent's observation is all zeros"
    noop_only = np.zeros(batch.n_actions, bool)
    noop_only[0] = True
    assert (avail[dead] == noop_only).all(), "a dead agent can only no-op"
    assert not avail[alive][:, 0].any() and avail[alive][:, 1].all(), "the living can stop and cannot no-op"


def check_avail_rules(batch: SMACBatch, roster: Roster, u: dict, avail: np.ndarray) -> None:
    want = expected_avail(batch, roster, u)
    diff = np.argwhere(want != avail)
    assert not diff.size, f"avail differs from SMAC's rules at (agent, action) {diff.tolist()}"


# ------------------------------------------------------------------------------------------------ VecEnv
@pytest.mark.parametrize("map_name", MAPS)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, action_seed=SEEDS, attack_bias=ATTACK_BIAS)
def test_vec_env_invariants_under_random_valid_actions(map_name, seed, action_seed, attack_bias):
    E, steps = 3, 70
    env = SMACVecEnv(map_name, E)
    b = env.batch
    roster = Roster.of(b)
    rng = np.random.default_rng(action_seed)
    s = env.reset(seed=seed)
    check_outputs(b, s.obs, s.state, s.avail, s.alive)
    prev = [check_units(b, roster, e, None)["alive"] for e in range(E)]
    returns = np.zeros(E, np.float64)
    lengths = np.zeros(E, np.int64)
    for _ in range(steps):
        acts = sample_actions(rng, s.avail, attack_bias)
        s = env.step(acts)
        for f in STEP_FIELDS:
            assert getattr(s, f).shape[0] == E
        assert np.isfinite(s.reward).all() and (s.reward >= 0).all(), s.reward
        returns += s.reward
        lengths += 1
        check_outputs(b, s.obs, s.state, s.avail, s.alive)
        # final_obs / final_state are defined where done is set (see test_final_obs_of_running_battles_equal_obs)
        assert np.isfinite(s.final_obs[s.done]).all() and np.abs(s.final_obs[s.done]).max(initial=0.0) <= 1.0
        assert np.isfinite(s.final_state[s.done]).all()
        assert not (s.truncated & ~s.done).any() and not (s.won & ~s.done).any() and not (s.won & s.truncated).any()
        for e in range(E):
            u = check_units(b, roster, e, None if s.done[e] else prev[e])
            prev[e] = u["alive"]
            assert np.array_equal(s.alive[e], u["alive"][:b.n_agents])
            check_avail_rules(b, roster, u, s.avail[e])
            if s.done[e]:
                assert s.episode_length[e] == lengths[e] <= b.map.limit
                assert not s.truncated[e] or lengths[e] == b.map.limit
                assert s.episode_return[e] == pytest.approx(returns[e], rel=1e-5, abs=1e-5)
                # the battle restarted at once: full roster, step counter at 0
                assert s.t[e] == 0 and u["alive"].all()
                assert np.array_equal(u["health"], roster.max_hp) and np.array_equal(u["shield"], roster.max_sh)
                returns[e], lengths[e] = 0.0, 0
            else:
                assert s.t[e] == s.episode_length[e] == lengths[e] < b.map.limit
                assert s.episode_return[e] == pytest.approx(returns[e], rel=1e-5, abs=1e-5)


FLAGS = ["obs_all_health", "obs_own_health", "obs_last_action", "obs_pathing_grid", "obs_terrain_height",
         "obs_timestep_number", "obs_instead_of_state", "state_last_action", "state_timestep_number"]


@settings(max_examples=20, deadline=None)
@given(map_name=st.sampled_from(MAPS), flags=st.fixed_dictionaries({k: st.booleans() for k in FLAGS}),
       seed=SEEDS, action_seed=SEEDS, attack_bias=ATTACK_BIAS)
def test_optional_features_keep_observations_bounded(map_name, flags, seed, action_seed, attack_bias):
    """SMAC's optional observation and state features keep every invariant, with the sizes SMAC gives."""
    env = SMACVecEnv(map_name, 2, **flags)
    b = env.batch
    roster = Roster.of(b)
    A, N, bits = b.n_agents, b.n_enemies, b.map.unit_type_bits
    sh_a, sh_e = int(b.map.a_race == "P"), int(b.map.b_race == "P")
    own_health = flags["obs_own_health"] or flags["obs_all_health"]  # SMAC forces own health with all health
    ally_dim = 4 + bits + (1 + sh_a) * flags["obs_all_health"] + b.n_actions * flags["obs_last_action"]
    obs_dim = (4 + 8 * flags["obs_pathing_grid"] + 9 * flags["obs_terrain_height"]
               + N * (4 + bits + (1 + sh_e) * flags["obs_all_health"]) + (A - 1) * ally_dim
               + bits + (1 + sh_a) * own_health + flags["obs_timestep_number"])
    state_dim = (A * obs_dim if flags["obs_instead_of_state"] else
                 A * (4 + sh_a + bits) + N * (3 + sh_e + bits) + A * b.n_actions * flags["state_last_action"]
                 + flags["state_timestep_number"])
    assert (b.obs_dim, b.state_dim) == (obs_dim, state_dim)
    assert env.spec.obs_dim == obs_dim and sum(blk.size for blk in env.spec.obs_layout) == obs_dim
    state_layout = [(blk.name, blk.count, blk.width) for blk in env.spec.state_layout]
    if flags["obs_instead_of_state"]:
        assert state_layout == [("agent_obs", A, obs_dim)]
    else:
        assert state_layout == ([("ally", A, 4 + sh_a + bits), ("enemy", N, 3 + sh_e + bits)]
                                + [("last_action", A, b.n_actions)] * flags["state_last_action"]
                                + [("timestep", 1, 1)] * flags["state_timestep_number"])
    rng = np.random.default_rng(action_seed)
    s = env.reset(seed=seed)
    assert s.obs.shape == (2, A, obs_dim) and s.state.shape == (2, state_dim)
    check_outputs(b, s.obs, s.state, s.avail, s.alive)
    for _ in range(40):
        s = env.step(sample_actions(rng, s.avail, attack_bias))
        assert (s.reward >= 0).all()
        check_outputs(b, s.obs, s.state, s.avail, s.alive)
        done = s.done
        assert np.abs(s.final_obs[done]).max(initial=0.0) <= 1.0 and np.isfinite(s.final_state[done]).all()
        for e in range(2):
            check_units(b, roster, e, None)
        if flags["obs_timestep_number"]:  # t / limit for every agent, the dead included
            expected = (s.t / b.map.limit).astype(np.float32)[:, None]
            assert np.array_equal(s.obs[:, :, -1], np.broadcast_to(expected, (2, A)))


# ------------------------------------------------------------------------------- reward and episode end
def smac_outcome(u: dict, roster: Roster, n_agents: int, mmm: bool) -> str:
    """SMAC's game end check from the unit table: "won", "lost", "draw" or "running"."""
    alive = u["alive"]
    allies, enemies = alive[:n_agents], alive[n_agents:]
    fighters_a = allies & ~roster.medivac[:n_agents]
    fighters_e = enemies & ~roster.medivac[n_agents:]
    if (not allies.any() and enemies.any()) or (mmm and not fighters_a.any()):
        return "lost"
    if (allies.any() and not enemies.any()) or (mmm and not fighters_e.any()):
        return "won"
    if not allies.any() and not enemies.any():
        return "draw"
    return "running"


def check_health_features(batch: SMACBatch, roster: Roster, u: dict, obs: np.ndarray, state: np.ndarray) -> None:
    """Default layout: the state's unit blocks (zeros for the dead) and the own-health feature agree with units()."""
    A, N, bits = batch.n_agents, batch.n_enemies, batch.map.unit_type_bits
    sh_a, sh_e = int(batch.map.a_race == "P"), int(batch.map.b_race == "P")
    al, en = 4 + sh_a + bits, 3 + sh_e + bits
    blocks = [state[a * al:(a + 1) * al] for a in range(A)] + [state[A * al + j * en:A * al + (j + 1) * en]
                                                               for j in range(N)]
    health = (u["health"] / roster.max_hp).astype(np.float32)
    own = batch.obs_dim - (1 + sh_a + bits)  # own block: health, shield (Protoss), unit type one-hot
    for v, block in enumerate(blocks):
        if not u["alive"][v]:
            assert not block.any(), f"dead unit {v} is not zeros in the state"
            continue
        assert block[0] == health[v], f"unit {v}: state health {block[0]} != {health[v]}"
        if v < A:
            assert obs[v, own] == health[v], f"agent {v}: own health {obs[v, own]} != {health[v]}"
            if sh_a:
                assert obs[v, own + 1] == np.float32(u["shield"][v] / roster.max_sh[v])


@pytest.mark.parametrize("map_name", MAPS)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, action_seed=SEEDS, attack_bias=ATTACK_BIAS)
def test_shaped_reward_matches_smac_formula_and_return_is_bounded(map_name, seed, action_seed, attack_bias):
    """r = |enemy (health+shield) lost + 10 per enemy death| (+200 on a win) / (max_reward / 20), each step.

    SMAC takes abs() of the enemy delta, so enemy regeneration (zerg health, protoss shields, an enemy
    medivac's heals) also pays: the return is at most 20 + 2 x (enemy health+shield regained) / scale,
    and exactly at most 20 when the enemies regain nothing.
    """
    b = SMACBatch(map_name, 1, autoreset=False)
    roster = Roster.of(b)
    A, N = b.n_agents, b.n_enemies
    mmm = b.map.map_type == "MMM"
    enemy_types = [UNIT_TYPES[n] for n in b.units(0)["unit_type"][A:]]
    max_reward = 10.0 * N + 200.0 + sum(t.hp + t.shield for t in enemy_types)
    assert b.max_reward == max_reward
    scale = max_reward / 20.0
    rng = np.random.default_rng(action_seed)
    b.seed(seed)
    b.reset()
    u = check_units(b, roster, 0, None)
    ep_return, regained, t = 0.0, 0.0, 0
    for _ in range(80):
        acts = sample_actions(rng, b.avail, attack_bias)
        out = b.step(acts)
        t += 1
        prev_u, u = u, check_units(b, roster, 0, u["alive"])
        hs_prev = (prev_u["health"] + prev_u["shield"])[A:]
        hs_now = (u["health"] + u["shield"])[A:]
        was_alive = prev_u["alive"][A:]
        died = was_alive & ~u["alive"][A:]
        delta = float(np.sum((hs_prev - hs_now)[was_alive]))
        regained += float(np.sum(np.maximum(hs_now - hs_prev, 0.0)[was_alive]))
        outcome = smac_outcome(u, roster, A, mmm)
        expected = abs(delta + 10.0 * died.sum()) + (200.0 if outcome == "won" else 0.0)
        r = float(out["reward"][0])
        assert r >= 0.0
        assert r == pytest.approx(expected / scale, rel=1e-5, abs=1e-6), (outcome, delta, died)
        ep_return += r
        assert out["episode_return"][0] == pytest.approx(ep_return, rel=1e-5, abs=1e-5)
        assert out["episode_length"][0] == t
        assert bool(out["won"][0]) == (outcome == "won")
        assert bool(out["done"][0]) == (outcome != "running" or t == b.map.limit)
        assert bool(out["truncated"][0]) == (outcome == "running" and t == b.map.limit)
        check_outputs(b, out["obs"][0], out["state"][0], out["avail"][0], out["alive"][0])
        check_avail_rules(b, roster, u, out["avail"][0])
        check_health_features(b, roster, u, out["obs"][0], out["state"][0])
        assert ep_return <= 20.0 + 2.0 * regained / scale + 1e-4
        if regained == 0.0:
            assert ep_return <= 20.0 + 1e-4
        if out["done"][0]:
            b.reset()
            u = check_units(b, roster, 0, None)
            ep_return, regained, t = 0.0, 0.0, 0


def test_max_reward_of_3s5z_is_1510():
    assert SMACEnv("3s5z").max_reward == 1510.0  # docs/smac_rules.md section 10: divisor 75.5, return <= 20


def test_final_obs_of_running_battles_equal_obs():
    env = SMACVecEnv("3m", 2)
    s = env.reset(seed=0)
    assert np.array_equal(s.final_obs, s.obs) and np.array_equal(s.final_state, s.state)  # as reset() does
    for _ in range(3):
        s = env.step(np.ones((2, 3), np.int64))  # stop: nobody dies, no battle ends in 3 steps
        assert not s.done.any()
        assert np.array_equal(s.final_obs, s.obs) and np.array_equal(s.final_state, s.state)


# ---------------------------------------------------------------------------------------- determinism
def _stream_state(seed: int, e: int) -> np.uint64:
    return np.random.SeedSequence(seed, spawn_key=(e,)).generate_state(1, np.uint64)[0]


def _assert_same_battle(s1, e1, s2, e2, where=""):
    assert s1.done[e1] == s2.done[e2], f"{where}done differs"
    for f in STEP_FIELDS:
        if f.startswith("final_") and not s1.done[e1]:
            continue  # only defined where done is set (see test_final_obs_of_running_battles_equal_obs)
        a, b = getattr(s1, f)[e1], getattr(s2, f)[e2]
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{where}{f} differs"
        if a.dtype.kind == "f":
            assert a.tobytes() == b.tobytes(), f"{where}{f} is not bit-identical"


@pytest.mark.parametrize("map_name", ["3m", "3s5z", "MMM", "2c_vs_64zg", "bane_vs_bane", "corridor",
                                      "so_many_baneling", "6h_vs_8z", "2s_vs_1sc"])
@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, action_seed=SEEDS, attack_bias=ATTACK_BIAS)
def test_same_seed_same_battles_whatever_the_batch_size(map_name, seed, action_seed, attack_bias):
    """Two VecEnvs seeded alike replay bit for bit; battle e follows its own stream, whatever E is."""
    E = 4
    twin_a, twin_b = SMACVecEnv(map_name, E), SMACVecEnv(map_name, E)
    wide = SMACVecEnv(map_name, 2 * E)  # battles 0..E-1 must equal twin_a's, given the same actions
    single = SMACVecEnv(map_name, 1)  # reproduces battle 0 only
    # battle e (e >= 1) alone: an E=1 batch put on battle e's stream SeedSequence(seed, spawn_key=(e,))
    alone = [SMACBatch(map_name, 1) for _ in range(E)]
    sa, sb, sw, s1 = twin_a.reset(seed=seed), twin_b.reset(seed=seed), wide.reset(seed=seed), single.reset(seed=seed)
    for e in range(E):
        assert twin_a.batch.rng[e] == _stream_state(seed, e)
        alone[e].rng[0] = _stream_state(seed, e)
        alone[e].reset()
    for e in range(E):
        _assert_same_battle(sa, e, sb, e, "reset: ")
        _assert_same_battle(sa, e, sw, e, "reset (E=8): ")
        assert np.array_equal(alone[e].obs[0], sa.obs[e]) and np.array_equal(alone[e].state[0], sa.state[e])
    _assert_same_battle(sa, 0, s1, 0, "reset (E=1): ")
    rng = np.random.default_rng(action_seed)
    history = [(None, sa)]
    for t in range(60):
        acts = sample_actions(rng, sa.avail, attack_bias)
        acts_wide = np.concatenate([acts, sample_actions(rng, sw.avail[E:], attack_bias)])
        sa, sb, sw, s1 = twin_a.step(acts), twin_b.step(acts.copy()), wide.step(acts_wide), single.step(acts[:1])
        history.append((acts, sa))
        outs = [alone[e].step(acts[e:e + 1]) for e in range(E)]
        for e in range(E):
            _assert_same_battle(sa, e, sb, e, f"step {t}, battle {e}: ")
            _assert_same_battle(sa, e, sw, e, f"step {t}, battle {e} of E=8: ")
            for f in ("obs", "state", "avail", "reward", "done", "truncated", "won", "alive", "episode_return",
                      "episode_length") + (("final_obs", "final_state") if sa.done[e] else ()):
                assert np.array_equal(outs[e][f][0], getattr(sa, f)[e]), f"step {t}: battle {e} alone: {f} differs"
        _assert_same_battle(sa, 0, s1, 0, f"step {t}, E=1: ")
    # reset(seed) re-seeds: the same actions replay the same battles from the start
    replay = twin_a.reset(seed=seed)
    for t, (acts, recorded) in enumerate(history[:20]):
        if acts is not None:
            replay = twin_a.step(acts)
        for e in range(E):
            _assert_same_battle(recorded, e, replay, e, f"replay step {t}, battle {e}: ")


@settings(max_examples=5, deadline=None)
@given(map_name=st.sampled_from(["3m", "3s5z", "MMM"]), seed=SEEDS, action_seed=SEEDS)
def test_threaded_batch_plays_each_battle_as_alone(map_name, seed, action_seed):
    """With 32 battles the batch runs slices on two threads; battles 0 and 31 still play as when alone."""
    E = 32
    wide = SMACBatch(map_name, E, threads=2)
    assert wide._threads == 2  # the sliced, threaded path is the one under test
    first, last = SMACBatch(map_name, 1), SMACBatch(map_name, 1)
    wide.seed(seed)
    wide.reset()
    first.seed(seed)
    first.reset()
    last.rng[0] = _stream_state(seed, E - 1)
    last.reset()
    rng = np.random.default_rng(action_seed)
    for t in range(50):
        acts = sample_actions(rng, wide.avail, 0.5)
        out = wide.step(acts)
        o0, o31 = first.step(acts[:1]), last.step(acts[-1:])
        for f in ("obs", "state", "avail", "reward", "done", "alive", "final_obs", "final_state"):
            if not f.startswith("final_") or out["done"][0]:
                assert np.array_equal(out[f][0], o0[f][0]), f"step {t}: battle 0: {f} differs"
            if not f.startswith("final_") or out["done"][E - 1]:
                assert np.array_equal(out[f][E - 1], o31[f][0]), f"step {t}: battle {E - 1}: {f} differs"


@settings(max_examples=5, deadline=None)
@given(map_name=st.sampled_from(["3m", "3s5z", "MMM", "so_many_baneling", "2s_vs_1sc"]), seed=SEEDS,
       action_seed=SEEDS, attack_bias=ATTACK_BIAS)
def test_smac_env_plays_battle_0_of_a_vec_env(map_name, seed, action_seed, attack_bias):
    """The docstring's promise: SMACEnv seeded with s plays as battle 0 of a VecEnv seeded with s."""
    vec = SMACVecEnv(map_name, 3)
    env = SMACEnv(map_name, seed=seed)
    s = vec.reset(seed=seed)
    obs, state = env.reset()
    assert np.array_equal(np.stack(obs), s.obs[0]) and np.array_equal(state, s.state[0])
    rng = np.random.default_rng(action_seed)
    ret = 0.0
    for _ in range(80):
        acts = sample_actions(rng, s.avail, attack_bias)
        assert np.array_equal(np.array(env.get_avail_actions(), bool), s.avail[0])
        s = vec.step(acts)
        r, terminated, info = env.step(acts[0].tolist())
        ret += r
        assert r == float(s.reward[0]) and terminated == bool(s.done[0])
        assert info["battle_won"] == bool(s.won[0])
        if not terminated:
            assert info["dead_allies"] == int((~s.alive[0]).sum())
        if terminated:
            assert np.array_equal(np.stack(env.get_obs()), s.final_obs[0])
            assert np.array_equal(env.get_state(), s.final_state[0])
            assert info.get("episode_limit", False) == bool(s.truncated[0])
            assert ret == pytest.approx(float(s.episode_return[0]), rel=1e-5, abs=1e-5)
            break
        assert np.array_equal(np.stack(env.get_obs()), s.obs[0]) and np.array_equal(env.get_state(), s.state[0])


def test_state_layout_places_each_unit_where_smac_puts_it():
    """3s5z's state: 8 allies of 7, 8 enemies of 6, 8 last actions of 14 (SMAC's 216), each row where SMAC puts it."""
    env = SMACVecEnv("3s5z", 1)
    spec = env.spec
    assert [(b.name, b.count, b.width) for b in spec.state_layout] == [("ally", 8, 7), ("enemy", 8, 6),
                                                                      ("last_action", 8, 14)]
    assert spec.state_dim == 216
    step = env.reset(seed=0)
    blocks = spec.block_slices(spec.state_layout)
    allies = step.state[0, blocks["ally"]].reshape(8, 7)
    enemies = step.state[0, blocks["enemy"]].reshape(8, 6)
    # at the start every unit is whole (health and shield fractions 1) and nothing has acted yet
    assert (allies[:, 0] == 1).all() and (allies[:, 4] == 1).all()  # health, then shield after cooldown, x, y
    assert (enemies[:, 0] == 1).all() and (enemies[:, 3] == 1).all()  # health, x, y, shield
    assert (step.state[0, blocks["last_action"]] == 0).all()
    # the type one-hots end each row: 3 stalkers then 5 zealots
    assert allies[:, 5:].tolist() == [[1, 0]] * 3 + [[0, 1]] * 5
