"""The env option turning (docs/smac_rules.md section 18): units turn at the game's rate and fire only when facing.

Values from the rules: SMAC's units turn 999.8437 deg per game-second (62.49 deg a loop), the colossus 720 (45 a
loop); a weapon fires when its target lies within Arc / 2 + ArcSlop of the facing: 11.25 deg, the colossus 56.25.
"""

from __future__ import annotations

import math

import conftest
import numpy as np
import pytest
from conftest import stage
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.envs.smac import SMACBatch, combat, layout
from marl.envs.smac.units import F_ARC_COS, F_TURN, TYPE_INDEX
from marl.testing import random_actions

RATE = math.radians(999.8437) / 16  # radians a loop


def duel(shooter: str, x: float, heading: float, turning: bool = True):
    """conftest's duel (agent 0 as `shooter` at (x, 16) onto an idle marine at (16, 16)), facing `heading` radians."""
    b = conftest.duel(shooter, x, turning=turning)
    face(b, 0, heading)
    return b


def loop(b, n=1):
    """n game loops straight from the kernel, with the batch's option flags."""
    for _ in range(n):
        combat.simulate_loop(b.uf, b.ui, b.utype, b.ft, b.it, b.walk, b.cliff, b.nav, b.rng, 0, b.n_agents,
                             b.n_units, b.order_buf[0], b.cfg_i[layout.C_WEAPON_DELAY], b.cfg_i[layout.C_TURNING])


def hp(b, u):
    return float(b.uf[0, u, layout.HP])


def face(b, u, angle):
    """Make unit u of battle 0 face `angle` radians from +x."""
    b.uf[0, u, layout.HX], b.uf[0, u, layout.HY] = math.cos(angle), math.sin(angle)


def heading(b, u, e=0):
    """The angle unit u faces, radians from +x, in (-pi, pi]."""
    return math.atan2(b.uf[e, u, layout.HY], b.uf[e, u, layout.HX])


def test_option_defaults_off_and_sets_the_kernel_flag():
    assert SMACBatch("3m", 1).cfg_i[layout.C_TURNING] == 0
    assert SMACBatch("3m", 1, turning=True).cfg_i[layout.C_TURNING] == 1


def test_off_a_unit_facing_away_fires_at_once():
    b = duel("stalker", 10.0, math.pi, turning=False)
    loop(b)
    assert hp(b, 3) == 45.0 - 13.0


def test_a_stalker_facing_away_turns_three_loops_then_fires():
    b = duel("stalker", 10.0, math.pi)
    loop(b)  # 180 deg to turn: 62.49 a loop
    assert hp(b, 3) == 45.0
    assert abs(heading(b, 0)) == pytest.approx(math.pi - RATE)
    loop(b)  # 55.0 deg left, more than the 11.25 of slop
    assert hp(b, 3) == 45.0 and b.uf[0, 0, layout.CD] <= 0.0
    loop(b)  # faces the marine exactly and fires in the same loop
    assert heading(b, 0) == 0.0 and hp(b, 3) == 45.0 - 13.0
    assert b.uf[0, 0, layout.HX] == 1.0 and b.uf[0, 0, layout.HY] == 0.0


def test_the_weapon_fires_within_its_arc_slop_without_a_full_turn():
    b = duel("marine", 11.0, math.radians(70.0))  # one loop of turning leaves 7.5 deg: inside 11.25
    loop(b)
    assert hp(b, 3) == 45.0 - 6.0
    assert heading(b, 0) == pytest.approx(math.radians(70.0) - RATE)


def test_the_colossus_turns_slower_but_its_90_deg_arc_fires_wider():
    marine = duel("marine", 11.0, math.radians(100.0))
    loop(marine)  # 37.5 deg left: no shot yet
    assert hp(marine, 3) == 45.0
    loop(marine)
    assert hp(marine, 3) == 45.0 - 6.0
    colossus = duel("colossus", 8.5, math.radians(100.0))
    loop(colossus)  # turns 45 deg: 55 deg left, inside 45 + 11.25
    assert hp(colossus, 3) == 45.0 - 2 * 15.0
    assert heading(colossus, 0) == pytest.approx(math.radians(55.0))


def test_a_unit_turns_toward_its_target_while_its_weapon_cools_down():
    b = duel("stalker", 10.0, 0.0)
    loop(b)  # fires at once: facing east already
    assert hp(b, 3) == 45.0 - 13.0
    stage(b, 3, x=10.0, y=15.0)  # the marine now stands due south, the weapon cooling down
    loop(b)
    assert heading(b, 0) == pytest.approx(-RATE)
    loop(b)
    assert heading(b, 0) == pytest.approx(-math.pi / 2)


def test_a_walking_unit_turns_toward_where_it_walks_at_full_speed():
    b = duel("stalker", 10.0, 0.0)
    b.ui[0, 0, layout.ORDER], b.ui[0, 0, layout.TARGET] = layout.ORD_MOVE, -1
    b.uf[0, 0, layout.TX], b.uf[0, 0, layout.TY] = 4.0, 16.0  # walk west, facing east
    loop(b)
    assert b.uf[0, 0, layout.X] == pytest.approx(10.0 - 2.953125 / 16)  # the walk does not wait for the turn
    assert abs(heading(b, 0)) == pytest.approx(RATE)
    loop(b, 2)
    assert abs(heading(b, 0)) == pytest.approx(math.pi)


def test_medivacs_banelings_and_the_spine_crawler_have_no_turning():
    b = SMACBatch("3m", 1)
    for name in ("medivac", "medivac_rl", "baneling", "spine_crawler"):
        assert b.ft[TYPE_INDEX[name], F_TURN] == 0.0
    assert b.ft[TYPE_INDEX["zealot"], F_TURN] == pytest.approx(RATE)
    assert b.ft[TYPE_INDEX["colossus"], F_TURN] == pytest.approx(math.radians(45.0))
    assert b.ft[TYPE_INDEX["stalker"], F_ARC_COS] == pytest.approx(math.cos(math.radians(11.25)))
    assert b.ft[TYPE_INDEX["colossus"], F_ARC_COS] == pytest.approx(math.cos(math.radians(56.25)))


def test_units_start_facing_the_centre_of_the_other_side():
    b = SMACBatch("3s5z", 2, turning=True)
    b.seed(3)
    b.reset()
    xy = b.uf[..., [layout.X, layout.Y]]
    A = b.n_agents
    for e in range(2):
        centre_b, centre_a = xy[e, A:].mean(0), xy[e, :A].mean(0)
        for u in range(b.n_units):
            dx, dy = (centre_b if u < A else centre_a) - xy[e, u]
            assert heading(b, u, e) == pytest.approx(math.atan2(dy, dx))


def test_a_snapshot_from_before_the_option_restores_facing_east():
    b = SMACBatch("3m", 2, turning=True)
    b.seed(0)
    b.reset()
    snap = b.snapshot()
    old = dict(snap, uf=snap["uf"][..., :layout.HX])
    b.restore(old)
    assert (b.uf[..., layout.HX] == 1.0).all() and (b.uf[..., layout.HY] == 0.0).all()
    np.testing.assert_array_equal(b.uf[..., :layout.HX], snap["uf"][..., :layout.HX])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), map_name=st.sampled_from(["3s5z", "MMM2", "2c_vs_64zg"]))
def test_facings_stay_unit_vectors_and_off_leaves_them_at_the_start(seed, map_name):
    on, off = SMACBatch(map_name, 2, turning=True), SMACBatch(map_name, 2)
    rng = np.random.default_rng(seed)
    for b in (on, off):
        b.seed(seed)
        b.reset()
    start = off.uf[..., [layout.HX, layout.HY]].copy()
    for _ in range(20):
        for b in (on, off):
            b.step(random_actions(b, rng))
    norm = np.hypot(on.uf[..., layout.HX], on.uf[..., layout.HY])
    np.testing.assert_allclose(norm, 1.0, atol=1e-12)  # the facing stays a unit vector through every turn
    # off, nothing turns: the facing is only the start's (battles that ended were reset to the same start)
    np.testing.assert_array_equal(off.uf[..., [layout.HX, layout.HY]], start)
