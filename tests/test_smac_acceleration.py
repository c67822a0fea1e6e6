"""The env option acceleration (docs/smac_rules.md section 18): the medivac starts from rest and speeds up.

Values from the game's data: the engine's medivac (SMAC's enemy copy) flies at 2.5 per game-second and accelerates
at 2.25 per game-second squared (unitdata.xml, swarm); SMAC's ally copy Medivac_RL flies at 2.75 and accelerates at
2.3125 (its map's data). In loops: each loop the medivac walks its last loop's distance plus a / 256, up to v / 16.
Ground units accelerate at 1000 in the game, full speed within 0.04 loops, so they stay at full speed at once.
"""

from __future__ import annotations

import conftest
import numpy as np
import pytest
from conftest import stage
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.envs.smac import SMACBatch, combat, layout
from marl.envs.smac.units import F_ACCEL, F_SPEED, TYPE_INDEX
from marl.testing import random_actions

ALLY_STEP, ALLY_TOP = 2.3125 / 256, 2.75 / 16  # the ally medivac's gain a loop and full speed, distance per loop
ENEMY_STEP, ENEMY_TOP = 2.25 / 256, 2.5 / 16


def flyer(type_name: str = "medivac_rl", **options):
    """3m with agent 0 turned into a medivac at (4, 16) ordered to fly to (28, 16); every other unit dead."""
    b = conftest.duel("marine", 4.0, **options)
    conftest.set_type(b, 0, type_name)
    stage(b, 3, alive=False)
    b.ui[0, 0, layout.ORDER], b.ui[0, 0, layout.TARGET] = layout.ORD_MOVE, -1
    b.uf[0, 0, layout.TX], b.uf[0, 0, layout.TY] = 28.0, 16.0
    return b


def loop(b, n=1):
    for _ in range(n):
        combat.simulate_loop(b.uf, b.ui, b.utype, b.ft, b.it, b.walk, b.cliff, b.nav, b.rng, 0, b.n_agents,
                             b.n_units, b.order_buf[0])


def x(b, u=0):
    return float(b.uf[0, u, layout.X])


def test_option_defaults_off_and_sets_only_the_medivacs_acceleration():
    off, on = SMACBatch("MMM2", 1), SMACBatch("MMM2", 1, acceleration=True)
    assert not off.ft[:, F_ACCEL].any()
    assert on.ft[TYPE_INDEX["medivac"], F_ACCEL] == pytest.approx(ENEMY_STEP)
    assert on.ft[TYPE_INDEX["medivac_rl"], F_ACCEL] == pytest.approx(ALLY_STEP)
    others = [i for name, i in TYPE_INDEX.items() if not name.startswith("medivac")]
    assert not on.ft[others, F_ACCEL].any()


def test_off_the_medivac_flies_at_full_speed_at_once():
    b = flyer()
    loop(b)
    assert x(b) == pytest.approx(4.0 + ALLY_TOP)


@pytest.mark.parametrize("type_name, gain, top", [("medivac_rl", ALLY_STEP, ALLY_TOP),
                                                   ("medivac", ENEMY_STEP, ENEMY_TOP)])
def test_the_medivac_gains_its_acceleration_each_loop_up_to_full_speed(type_name, gain, top):
    b = flyer(type_name, acceleration=True)
    walked = []
    for _ in range(25):
        before = x(b)
        loop(b)
        walked.append(x(b) - before)
    expected = [min(k * gain, top) for k in range(1, 26)]
    np.testing.assert_allclose(walked, expected, rtol=1e-12)
    first_full = 1 + next(k for k, w in enumerate(expected) if w == top)
    assert first_full == (20 if type_name == "medivac_rl" else 18)  # about 1.2 and 1.1 game-seconds
    assert b.uf[0, 0, layout.VEL] == pytest.approx(top)


def test_a_medivac_that_stops_starts_again_from_rest():
    b = flyer(acceleration=True)
    loop(b, 30)
    b.ui[0, 0, layout.ORDER] = layout.ORD_IDLE  # a stop order: it stands a loop
    loop(b)
    assert b.uf[0, 0, layout.VEL] == 0.0
    b.ui[0, 0, layout.ORDER] = layout.ORD_MOVE
    before = x(b)
    loop(b)
    assert x(b) - before == pytest.approx(ALLY_STEP)


def test_a_medivac_arriving_short_of_a_full_step_keeps_only_that_distance():
    b = flyer(acceleration=True)
    b.uf[0, 0, layout.TX] = 4.0 + 3 * ALLY_STEP + 0.5 * ALLY_STEP  # 1 + 2 + 3 steps would pass it
    loop(b, 3)
    assert x(b) == pytest.approx(4.0 + 3.5 * ALLY_STEP)
    assert b.uf[0, 0, layout.VEL] == pytest.approx(0.5 * ALLY_STEP)


def test_ground_units_walk_at_full_speed_at_once_with_the_option():
    b = flyer("marine", acceleration=True)
    loop(b)
    assert x(b) == pytest.approx(4.0 + 2.25 / 16)
    assert b.uf[0, 0, layout.VEL] == 0.0  # never tracked for a unit without an acceleration


def test_units_start_at_rest_after_a_reset():
    b = SMACBatch("MMM2", 1, acceleration=True)
    b.seed(0)
    b.reset()
    for _ in range(5):
        b.step(conftest.actions_for(b))
    b.uf[..., layout.VEL] = 1.0
    b.reset()
    assert (b.uf[..., layout.VEL] == 0.0).all()


def test_a_snapshot_from_before_the_option_restores_at_rest():
    b = SMACBatch("MMM2", 2, acceleration=True)
    b.seed(0)
    b.reset()
    snap = b.snapshot()
    b.uf[..., layout.VEL] = 1.0
    b.restore(dict(snap, uf=snap["uf"][..., :layout.VEL]))
    assert (b.uf[..., layout.VEL] == 0.0).all()
    np.testing.assert_array_equal(b.uf[..., :layout.VEL], snap["uf"][..., :layout.VEL])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_medivacs_never_fly_faster_than_full_speed_and_the_option_changes_only_them(seed):
    """Random actions on MMM2: a medivac's last walk lies within [0, full speed]; nobody else's is tracked; and
    with the option off every unit's walk is the same as before the option existed (VEL never written)."""
    on, off = SMACBatch("MMM2", 2, acceleration=True), SMACBatch("MMM2", 2)
    rng = np.random.default_rng(seed)
    for b in (on, off):
        b.seed(seed)
        b.reset()
    medivac = np.isin(on.utype, [TYPE_INDEX["medivac"], TYPE_INDEX["medivac_rl"]])
    top = on.ft[on.utype, F_SPEED]
    for _ in range(15):
        for b in (on, off):
            b.step(random_actions(b, rng))
        vel = on.uf[..., layout.VEL]
        assert (vel >= 0.0).all() and (vel <= top + 1e-12).all()
        assert (vel[~medivac] == 0.0).all()
        assert (off.uf[..., layout.VEL] == 0.0).all()


def test_steps_through_the_env_slow_the_medivacs_start():
    """One env step (8 loops) of MMM2 with every agent moving east: the ally medivac covers 1 + ... + 8 gains,
    the marines their full 8 loops."""
    runs = {}
    for accel in (False, True):
        b = SMACBatch("MMM2", 1, acceleration=accel)
        b.seed(0)
        b.reset()
        conftest.freeze_enemies(b)
        start = b.uf[0, :b.n_agents, layout.X].copy()
        b.step(np.where(b.avail[0, :, layout.ACT_EAST], layout.ACT_EAST, 1)[None].astype(np.int64))
        runs[accel] = b.uf[0, :b.n_agents, layout.X] - start
    med = int(np.flatnonzero(b.utype[0, :b.n_agents] == TYPE_INDEX["medivac_rl"])[0])
    assert runs[False][med] == pytest.approx(8 * ALLY_TOP)
    assert runs[True][med] == pytest.approx(36 * ALLY_STEP)
    ground = [a for a in range(b.n_agents) if a != med]
    np.testing.assert_array_equal(runs[True][ground], runs[False][ground])
