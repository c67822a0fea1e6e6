"""The env option weapon_delay (docs/smac_rules.md section 18): damage point and missile flight, loop by loop."""

from __future__ import annotations

import conftest
import numpy as np
import pytest
from conftest import stage

from marl.envs.smac import SMACBatch, combat, layout

STALKER_FLIGHT = 6.0 / (18.75 / 16)  # 5.12 loops for a missile launched 6 away


def duel(shooter: str, x: float, delay: bool = True):
    """conftest's duel (agent 0 as `shooter` at (x, 16) onto an idle marine at (16, 16)), weapon_delay on or off."""
    return conftest.duel(shooter, x, weapon_delay=delay)


def loop(b, n=1):
    """n game loops straight from the kernel, with the batch's weapon_delay flag."""
    for _ in range(n):
        combat.simulate_loop(b.uf, b.ui, b.utype, b.ft, b.it, b.walk, b.cliff, b.nav, b.rng, 0, b.n_agents,
                             b.n_units, b.order_buf[0], b.cfg_i[layout.C_WEAPON_DELAY])


def hp(b, u):
    return float(b.uf[0, u, layout.HP])


def test_option_defaults_off_and_sets_the_kernel_flag():
    assert SMACBatch("3m", 1).cfg_i[layout.C_WEAPON_DELAY] == 0
    assert SMACBatch("3m", 1, weapon_delay=True).cfg_i[layout.C_WEAPON_DELAY] == 1


def test_off_the_stalker_hits_in_the_loop_it_fires():
    b = duel("stalker", 10.0, delay=False)
    loop(b)
    assert hp(b, 3) == 45.0 - 13.0


def test_stalker_winds_up_for_its_damage_point_then_its_missile_flies():
    b = duel("stalker", 10.0)
    loop(b)  # the attack starts: cooldown paid, 2.672 loops of damage point
    assert b.ui[0, 0, layout.SHOT_AT] == 3 and b.uf[0, 0, layout.WINDUP] == pytest.approx(0.167 * 16)
    assert b.uf[0, 0, layout.CD] > 27.0
    loop(b, 2)
    assert b.ui[0, 0, layout.MISSILE_AT] == -1 and b.ui[0, 0, layout.SHOT_AT] == 3
    loop(b)  # loop 4: the damage point is over, the missile leaves 6 away at 18.75 per game-second
    assert b.ui[0, 0, layout.SHOT_AT] == -1 and b.ui[0, 0, layout.MISSILE_AT] == 3
    assert b.uf[0, 0, layout.FLIGHT] == pytest.approx(STALKER_FLIGHT)
    loop(b, 5)  # loops 5-9: 0.12 loops of flight left
    assert hp(b, 3) == 45.0
    loop(b)  # loop 10: it hits, 13 on a light marine
    assert hp(b, 3) == 45.0 - 13.0 and b.ui[0, 0, layout.MISSILE_AT] == -1


def test_marine_hits_one_loop_late_instant_shot_after_its_damage_point():
    b = duel("marine", 11.0)
    loop(b)
    assert hp(b, 3) == 45.0 and b.uf[0, 0, layout.WINDUP] == pytest.approx(0.8)
    loop(b)
    assert hp(b, 3) == 45.0 - 6.0 and b.ui[0, 0, layout.SHOT_AT] == -1 and b.ui[0, 0, layout.MISSILE_AT] == -1


ZEALOT_BURST = 0.28 * 16  # 4.48 loops between the blades (effectdata.xml PsiBladesBurst)


def test_off_the_zealot_lands_both_blades_at_once():
    b = duel("zealot", 15.1, delay=False)
    loop(b)
    assert hp(b, 3) == 45.0 - 16.0 and b.ui[0, 0, layout.MISSILE_AT] == -1


# Rule changed (2026-11-30): with weapon_delay the zealot's second blade no longer lands with the first; it comes
# 0.28 s later, channelled (this test asserted 16 damage in the first loop before).
def test_zealot_has_no_damage_point_and_its_second_blade_comes_4_48_loops_later():
    b = duel("zealot", 15.1)
    loop(b)  # no damage point: the first blade lands in the loop the attack starts
    assert hp(b, 3) == 45.0 - 8.0 and b.ui[0, 0, layout.SHOT_AT] == -1
    assert b.ui[0, 0, layout.MISSILE_AT] == 3 and b.uf[0, 0, layout.FLIGHT] == pytest.approx(ZEALOT_BURST)
    assert b.uf[0, 0, layout.CD] > 18.0  # the cooldown (1.2 s = 19.2 loops, jittered) is paid once for both
    loop(b, 4)  # loops 2-5: 0.48 loops left
    assert hp(b, 3) == 45.0 - 8.0 and b.uf[0, 0, layout.FLIGHT] == pytest.approx(ZEALOT_BURST - 4)
    loop(b)  # loop 6: the second blade
    assert hp(b, 3) == 45.0 - 16.0 and b.ui[0, 0, layout.MISSILE_AT] == -1
    loop(b, 10)
    assert hp(b, 3) == 45.0 - 16.0  # nothing more before the cooldown is over


def order(b, kind, target=-1, to=None):
    b.ui[0, 0, layout.ORDER], b.ui[0, 0, layout.TARGET] = kind, target
    if to is not None:
        b.uf[0, 0, layout.TX], b.uf[0, 0, layout.TY] = to


@pytest.mark.parametrize("kind, target", [(layout.ORD_MOVE, -1), (layout.ORD_IDLE, -1), (layout.ORD_ATTACK, 4)])
def test_a_zealot_that_leaves_the_attack_loses_its_second_blade(kind, target):
    """A move order, a stop, or an attack on another unit ends the channel."""
    b = duel("zealot", 15.1)
    stage(b, 4, x=15.1, y=17.0, health=45.0, alive=True)  # another enemy marine in reach, for the new target
    loop(b)
    assert b.ui[0, 0, layout.MISSILE_AT] == 3
    order(b, kind, target, to=(5.0, 16.0))
    loop(b)
    assert b.ui[0, 0, layout.MISSILE_AT] == -1 and b.uf[0, 0, layout.FLIGHT] == 0.0
    loop(b, 10)
    assert hp(b, 3) == 45.0 - 8.0 and hp(b, 4) == 45.0


def test_a_zealot_standing_on_its_attack_order_keeps_its_second_blade():
    b = duel("zealot", 15.1)
    loop(b)
    order(b, layout.ORD_ATTACK, 3)  # ordered again, as SMAC repeats an agent's attack every step
    loop(b, 5)
    assert b.uf[0, 0, layout.X] == 15.1 and hp(b, 3) == 45.0 - 16.0


def test_a_zealot_chasing_the_same_target_keeps_its_second_blade():
    b = duel("zealot", 15.1)
    loop(b)
    stage(b, 3, x=17.0)  # the target steps out of reach: the zealot walks after it on the same order
    loop(b, 5)
    assert b.uf[0, 0, layout.X] > 15.1 and hp(b, 3) == 45.0 - 16.0


def test_a_zealot_killed_before_its_second_blade_deals_only_the_first():
    b = duel("zealot", 15.1)
    loop(b, 2)
    combat._kill(b.uf, b.ui, 0, 0)
    loop(b, 10)
    assert hp(b, 3) == 45.0 - 8.0 and b.ui[0, 0, layout.MISSILE_AT] == -1


def test_a_second_blade_on_a_dead_target_is_dropped():
    b = duel("zealot", 15.1)
    loop(b)
    stage(b, 3, alive=False)
    loop(b, 5)
    assert b.ui[0, 0, layout.MISSILE_AT] == -1 and not b.ui[0, 3, layout.ALIVE]


def test_a_first_blade_that_kills_leaves_nothing_to_come():
    b = duel("zealot", 15.1)
    stage(b, 3, health=8.0)
    loop(b)
    assert not b.ui[0, 3, layout.ALIVE] and b.ui[0, 0, layout.MISSILE_AT] == -1


def test_only_the_zealot_has_a_burst_and_a_burst_must_be_two_instant_hits(monkeypatch):
    from dataclasses import replace

    from marl.envs.smac import units

    ft, _ = units.unit_tables()
    bursts = {n: ft[i, units.F_BURST_PERIOD] for i, n in enumerate(units.TYPE_NAMES) if ft[i, units.F_BURST_PERIOD]}
    assert bursts == {"zealot": pytest.approx(ZEALOT_BURST)}
    monkeypatch.setitem(units.UNIT_TYPES, "zealot", replace(units.UNIT_TYPES["zealot"], attacks=3))
    with pytest.raises(ValueError, match="unit type 'zealot': a burst .* two instant hits .* got attacks=3"):
        units.unit_tables()


def test_a_unit_winding_up_stands_whatever_its_new_order():
    b = duel("stalker", 10.0)
    loop(b)
    b.ui[0, 0, layout.ORDER], b.ui[0, 0, layout.TARGET] = layout.ORD_MOVE, -1
    b.uf[0, 0, layout.TX], b.uf[0, 0, layout.TY] = 5.0, 16.0
    loop(b, 2)
    assert b.uf[0, 0, layout.X] == 10.0
    loop(b)  # the shot leaves, then the move order runs in the same loop
    assert b.uf[0, 0, layout.X] == pytest.approx(10.0 - 2.953125 / 16)
    assert b.ui[0, 0, layout.MISSILE_AT] == 3


def test_a_shooter_killed_during_its_damage_point_deals_nothing():
    b = duel("stalker", 10.0)
    loop(b)
    combat._kill(b.uf, b.ui, 0, 0)
    assert b.ui[0, 0, layout.SHOT_AT] == -1
    loop(b, 12)
    assert hp(b, 3) == 45.0


def test_a_missile_in_flight_hits_after_its_shooter_died_and_misses_a_dead_target():
    b = duel("stalker", 10.0)
    loop(b, 4)
    combat._kill(b.uf, b.ui, 0, 0)
    loop(b, 6)
    assert hp(b, 3) == 45.0 - 13.0
    b = duel("stalker", 10.0)
    loop(b, 4)
    stage(b, 3, alive=False)
    loop(b, 6)
    assert b.ui[0, 0, layout.MISSILE_AT] == -1 and not b.ui[0, 3, layout.ALIVE]


def test_steps_through_the_env_carry_the_delay():
    b = duel("stalker", 10.0)
    b.observe()
    act = np.array([[6, 0, 0]])  # agent 0 attacks enemy 0 (unit 3); the dead agents no-op
    b.step(act)  # 8 loops: launched at loop 4, 1.12 loops of flight left
    assert hp(b, 3) == 45.0 and b.uf[0, 0, layout.FLIGHT] == pytest.approx(STALKER_FLIGHT - 4)
    b.step(act)
    assert hp(b, 3) == 45.0 - 13.0


def test_a_snapshot_from_before_the_option_restores_with_nothing_in_flight():
    b = SMACBatch("3m", 2, weapon_delay=True)
    b.seed(0)
    b.reset()
    snap = b.snapshot()
    # the unit floats before weapon_delay end before WINDUP (the option turning's HX, HY came after them)
    old = dict(snap, uf=snap["uf"][..., :layout.WINDUP], ui=snap["ui"][..., :layout.NUI - 2])
    b.ui[..., layout.SHOT_AT] = 7
    b.restore(old)
    assert (b.ui[..., layout.SHOT_AT] == -1).all() and (b.ui[..., layout.MISSILE_AT] == -1).all()
    assert not b.uf[..., layout.WINDUP].any() and not b.uf[..., layout.FLIGHT].any()
    np.testing.assert_array_equal(b.uf[..., :layout.HX], snap["uf"][..., :layout.HX])
