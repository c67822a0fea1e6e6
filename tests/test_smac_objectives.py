"""The simulator's objectives (env.objectives): combat is SMAC's reward unchanged, safety the team's health and
shields kept (docs/smac_rules.md section 17), exact on a scripted battle and in range on random ones."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import actions_for, freeze_enemies, stage
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.envs.smac import SMACEnv, SMACVecEnv, layout
from marl.envs.smac.combat import SHIELD_REGEN_LOOP
from marl.envs.smac.env import OBJECTIVES, SMACError
from marl.envs.smac.units import STEP_MUL


def _apart(env):
    """Battle 0 of env with the enemies idle and every ally far from them, so nobody fights."""
    b = env.batch
    freeze_enemies(b)
    for a in range(b.n_agents):
        stage(b, a, x=2.0 + a, y=2.0)
    for j in range(b.n_enemies):
        stage(b, b.n_agents + j, x=28.0, y=28.0 + 0.5 * j)
    return b


def test_default_is_smacs_one_reward():
    env = SMACVecEnv("3m", 1)
    assert env.spec.reward_dim == 1 and env.spec.reward_names == ("combat",)
    step = env.step(np.ones((1, 3), np.int64)) if env.reset(seed=0) else None
    assert step.reward.shape == (1,) and step.episode_return.shape == (1,)
    assert OBJECTIVES == {"combat": 0.0, "safety": -20.0}


def test_safety_per_step_on_a_scripted_battle():
    """3m: full team hs 3 x 45 = 135. Losing 15 health gives -20 x 15/135; a death the dead's whole hs."""
    env = SMACVecEnv("3m", 1, objectives=["safety", "combat"])
    assert env.spec.reward_dim == 2 and env.spec.reward_names == ("safety", "combat")
    env.reset(seed=3)
    b = _apart(env)
    step = env.step(actions_for(b))
    np.testing.assert_array_equal(step.reward, [[0.0, 0.0]])  # nothing lost, nothing dealt
    b.uf[0, 0, layout.HP] = 30.0  # 15 health lost in the next step (PREV_HS keeps 45)
    step = env.step(actions_for(b))
    assert step.reward[0, 0] == np.float32(-20.0 * 15 / 135) and step.reward[0, 1] == 0.0
    assert step.episode_return[0, 0] == np.float32(-20.0 * 15 / 135)
    b.uf[0, 1, layout.HP] = 0.0  # agent 1 dies: its whole 45 is lost
    b.ui[0, 1, layout.ALIVE] = 0
    step = env.step(actions_for(b))
    assert step.reward[0, 0] == np.float32(-20.0 * 45 / 135)
    assert step.episode_return[0, 0] == np.float32(-20.0 * 60 / 135)
    step = env.step(actions_for(b))  # a dead ally counts once
    assert step.reward[0, 0] == 0.0 and step.episode_return[0, 0] == np.float32(-20.0 * 60 / 135)


def test_regained_shields_count_positive():
    """2s3z: a stalker (80 health, 80 shields) regains shields after the regeneration delay."""
    env = SMACVecEnv("2s3z", 1, objectives=["safety"])
    assert env.spec.reward_dim == 1 and env.spec.reward_names == ("safety",)
    env.reset(seed=0)
    b = _apart(env)
    full = float(sum(b.ft[t, 0] + b.ft[t, 1] for t in b.utype[0, :b.n_agents]))  # F_HP, F_SHIELD
    assert full == 2 * 160 + 3 * 150
    stage(b, 0, shield=10.0)  # 70 shields down, staged: no reward for the loss
    b.uf[0, 0, layout.NODMG] = 1e6  # long past the regeneration delay
    step = env.step(actions_for(b))
    assert step.reward.shape == (1,)
    assert step.reward[0] == np.float32(20.0 * STEP_MUL * SHIELD_REGEN_LOOP / full)


def test_combat_column_is_smacs_reward_bit_for_bit():
    one, two = SMACVecEnv("2s3z", 2), SMACVecEnv("2s3z", 2, objectives=["combat", "safety"])
    rng = np.random.default_rng(0)
    s1, s2 = one.reset(seed=5), two.reset(seed=5)
    for _ in range(120):
        acts = np.array([[rng.choice(np.flatnonzero(av)) for av in e] for e in s1.avail])
        s1, s2 = one.step(acts), two.step(acts)
        np.testing.assert_array_equal(s2.reward[:, 0], s1.reward)
        np.testing.assert_array_equal(s2.episode_return[:, 0], s1.episode_return)
        np.testing.assert_array_equal(s2.obs, s1.obs)


def _random_returns(map_name: str, seed: int, steps: int):
    env = SMACVecEnv(map_name, 2, objectives=["combat", "safety"])
    step = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    sums, out = np.zeros((2, 2)), []
    for _ in range(steps):
        acts = np.array([[rng.choice(np.flatnonzero(av)) for av in e] for e in step.avail])
        step = env.step(acts)
        sums += step.reward
        for e in np.flatnonzero(step.done):
            lost = not step.won[e] and not step.truncated[e]  # on 3m: every ally dead (no medivacs, no draw here)
            out.append((step.episode_return[e].copy(), sums[e].copy(), lost))
            sums[e] = 0
    return out


@settings(max_examples=8, deadline=None)
@given(map_name=st.sampled_from(["3m", "2s3z", "MMM", "protoss_5_vs_5"]), seed=st.integers(0, 2**32 - 1))
def test_episode_sums_stay_in_their_ranges(map_name, seed):
    for ret, summed, _ in _random_returns(map_name, seed, 120):
        np.testing.assert_allclose(ret, summed, rtol=1e-5, atol=1e-4)  # the return is the sum of the rewards
        assert ret[0] >= 0.0 and -20.0 - 1e-4 <= ret[1] <= 1e-4
        if map_name == "3m":  # nothing regenerates: SMAC's scale caps the combat return at 20
            assert ret[0] <= 20.0 + 1e-4


def test_a_team_wiped_out_scores_minus_20():
    lost = [r for r, _, lost in _random_returns("3m", 1, 200) if lost]
    assert len(lost) >= 5 and all(r[1] == np.float32(-20.0) for r in lost)


def test_bad_objectives_are_refused_in_one_line():
    with pytest.raises(SMACError, match=r"^SMAC option objectives must be a non-empty list of combat, safety, each at "
                                        r"most once, got \['combat', 'combat'\]$"):
        SMACVecEnv("3m", 1, objectives=["combat", "combat"])
    with pytest.raises(SMACError, match="got 'speed'"):
        SMACVecEnv("3m", 1, objectives="speed")
    with pytest.raises(SMACError, match=r"^objectives \['combat', 'safety'\] need the VecEnv face"):
        SMACEnv("3m", objectives=["combat", "safety"])
