"""Combat kernels of the embedded SMAC simulator: weapons, damage, heals, regeneration, the built-in AI's
choice of targets, and one game loop of a battle.

In each game loop every living unit, in a random order, counts its weapon cooldown down by one loop and acts
on its order (move, attack, heal, attack-move, hunt, hold); then overlapping ground units are pushed apart;
then shields, zerg health and medivac energy regenerate. By default damage lands when a weapon fires; with the
env option weapon_delay, an attack first winds up for its weapon's damage point (the unit stands, busy), then the
shot leaves: instant weapons hit then, missiles fly to the target at their speed and hit on arrival (a target dead
by then is missed), and the zealot's second blade lands 0.28 s after its first unless the zealot died or left that
attack meanwhile, as in the game (docs/smac_rules.md section 18). With the option turning, every unit faces a
direction that turns at its turning rate (toward where it walks, toward the target it attacks), and a weapon fires
only once its target lies within the weapon's arc of that facing. The built-in AI picks threats first, then
the nearest (docs/smac_rules.md), not SC2's exact target-priority table.
"""

from __future__ import annotations

import math

from numba import njit

from .layout import (
    ALIVE,
    ATTACKER,
    CD,
    EN,
    FLIGHT,
    HP,
    HX,
    HY,
    MISSILE_AT,
    NODMG,
    ORD_AMOVE,
    ORD_ATTACK,
    ORD_HEAL,
    ORD_HOLD,
    ORD_HUNT,
    ORD_IDLE,
    ORD_MOVE,
    ORDER,
    SH,
    SHOT_AT,
    TARGET,
    TX,
    TY,
    VEL,
    WINDUP,
    X,
    Y,
)
from .navigation import collide, dist, move_toward
from .splitmix import rand_u01
from .units import (
    BIOLOGICAL,
    COLOSSUS_BEAM_HALF_LENGTH,
    COLOSSUS_BEAM_HALF_WIDTH,
    F_ACCEL,
    F_ARC_COS,
    F_ARMOR,
    F_ATTACKS,
    F_BONUS,
    F_BURST_PERIOD,
    F_COOLDOWN,
    F_DAMAGE,
    F_DAMAGE_POINT,
    F_DECAY,
    F_HP,
    F_MISSILE_SPEED,
    F_RADIUS,
    F_RANGE,
    F_REGEN,
    F_SHIELD,
    F_SIGHT,
    F_SPLASH,
    F_TURN,
    F_TURN_COS,
    F_TURN_SIN,
    HITS_AIR,
    HITS_GROUND,
    I_ATTR,
    I_BONUS_ATTR,
    I_FLYING,
    I_HITS,
    I_KIND,
    KIND_BANELING,
    KIND_COLOSSUS,
    KIND_MEDIVAC,
    LOOPS_PER_SECOND,
    MEDIVAC_ENERGY_MAX,
    MEDIVAC_ENERGY_REGEN_PER_S,
    MEDIVAC_HEAL_PER_ENERGY,
    MEDIVAC_HEAL_PER_S,
    SHIELD_REGEN_DELAY_S,
    SHIELD_REGEN_PER_S,
)

SHIELD_DELAY_LOOPS = SHIELD_REGEN_DELAY_S * LOOPS_PER_SECOND
SHIELD_REGEN_LOOP = SHIELD_REGEN_PER_S / LOOPS_PER_SECOND
ENERGY_REGEN_LOOP = MEDIVAC_ENERGY_REGEN_PER_S / LOOPS_PER_SECOND
HEAL_LOOP = MEDIVAC_HEAL_PER_S / LOOPS_PER_SECOND
ARRIVE_DIST = 0.1


@njit(cache=True, _nrt=False, inline="always")
def _can_hit(it, utype, e, u, v):
    mask = HITS_AIR if it[utype[e, v], I_FLYING] else HITS_GROUND
    return (it[utype[e, u], I_HITS] & mask) != 0


@njit(cache=True, _nrt=False, inline="always")
def _threatens(it, utype, e, v, u):
    """Whether unit v can attack unit u (target priority: threats first)."""
    return it[utype[e, v], I_KIND] != KIND_MEDIVAC and _can_hit(it, utype, e, v, u)


@njit(cache=True, _nrt=False)
def _kill(uf, ui, e, v):
    uf[e, v, HP] = 0.0
    uf[e, v, SH] = 0.0
    ui[e, v, ALIVE] = 0
    ui[e, v, ORDER] = ORD_IDLE
    ui[e, v, TARGET] = -1
    ui[e, v, SHOT_AT] = -1  # an attack still winding up dies with its unit (a missile in flight flies on)
    uf[e, v, WINDUP] = 0.0


@njit(cache=True, _nrt=False)
def _deal(uf, ui, utype, ft, it, e, attacker, v, base):
    """One hit of `base` damage (+bonus vs attributes) on v: shields first, armor on health."""
    ta = utype[e, attacker]
    tv = utype[e, v]
    dmg = base
    if it[tv, I_ATTR] & it[ta, I_BONUS_ATTR]:
        dmg += ft[ta, F_BONUS]
    sh = uf[e, v, SH]
    if sh >= dmg:
        uf[e, v, SH] = sh - dmg
    else:
        rest = dmg - sh
        uf[e, v, SH] = 0.0
        uf[e, v, HP] -= max(rest - ft[tv, F_ARMOR], 0.5)
    uf[e, v, NODMG] = 0.0
    ui[e, v, ATTACKER] = attacker
    if uf[e, v, HP] <= 0.0:
        _kill(uf, ui, e, v)


@njit(cache=True, _nrt=False)
def _hits(uf, ui, utype, ft, it, e, u, t, lo, hi):
    """The damage of one shot of u at t (colossus beams splash, banelings explode and die)."""
    tu = utype[e, u]
    kind = it[tu, I_KIND]
    base = ft[tu, F_DAMAGE]
    if kind == KIND_BANELING:
        for v in range(lo, hi):
            if ui[e, v, ALIVE] and not it[utype[e, v], I_FLYING]:
                if dist(uf, e, u, v) - ft[utype[e, v], F_RADIUS] <= ft[tu, F_SPLASH]:
                    _deal(uf, ui, utype, ft, it, e, u, v, base)
        _kill(uf, ui, e, u)
        return
    n_hits = int(ft[tu, F_ATTACKS])
    if kind == KIND_COLOSSUS:
        # the thermal lance sweeps a short line across the target, perpendicular to the shot
        dx = uf[e, t, X] - uf[e, u, X]
        dy = uf[e, t, Y] - uf[e, u, Y]
        d = math.hypot(dx, dy)
        px, py = (-dy / d, dx / d) if d > 0 else (0.0, 1.0)
        ax = uf[e, t, X] - px * COLOSSUS_BEAM_HALF_LENGTH
        ay = uf[e, t, Y] - py * COLOSSUS_BEAM_HALF_LENGTH
        seg = 2.0 * COLOSSUS_BEAM_HALF_LENGTH
        for v in range(lo, hi):
            if v == t or not ui[e, v, ALIVE] or it[utype[e, v], I_FLYING]:
                continue
            wx = uf[e, v, X] - ax
            wy = uf[e, v, Y] - ay
            s = min(max(wx * px + wy * py, 0.0), seg)
            off = math.hypot(wx - s * px, wy - s * py)
            if off <= COLOSSUS_BEAM_HALF_WIDTH + ft[utype[e, v], F_RADIUS]:
                for _ in range(n_hits):
                    if ui[e, v, ALIVE]:
                        _deal(uf, ui, utype, ft, it, e, u, v, base)
    for _ in range(n_hits):
        if ui[e, t, ALIVE]:
            _deal(uf, ui, utype, ft, it, e, u, t, base)


@njit(cache=True, _nrt=False)
def _turn_toward(uf, ft, e, u, tu, dx, dy):
    """turning: u turns at most its turning rate toward the direction (dx, dy), the shorter way (either way, by
    rounding, when facing exactly away); returns the cosine of the angle left between its facing and that
    direction."""
    d = math.sqrt(dx * dx + dy * dy)
    if d == 0.0:
        return 1.0
    dx /= d
    dy /= d
    hx, hy = uf[e, u, HX], uf[e, u, HY]
    c = ft[tu, F_TURN_COS]
    if hx * dx + hy * dy >= c:  # within one loop's turn: face it exactly
        uf[e, u, HX], uf[e, u, HY] = dx, dy
        return 1.0
    s = ft[tu, F_TURN_SIN] if hx * dy - hy * dx >= 0.0 else -ft[tu, F_TURN_SIN]
    nx, ny = hx * c - hy * s, hx * s + hy * c
    n = math.sqrt(nx * nx + ny * ny)  # against rounding drift over many turns
    nx /= n
    ny /= n
    uf[e, u, HX], uf[e, u, HY] = nx, ny
    return nx * dx + ny * dy


@njit(cache=True, _nrt=False, inline="always")
def _pay_cooldown(uf, ft, rng, e, u, tu):
    # the game adds a random -1..+2 loop delay to every weapon cooldown
    carry = uf[e, u, CD] if uf[e, u, CD] > -1.0 else 0.0
    uf[e, u, CD] = carry + ft[tu, F_COOLDOWN] + (3.0 * rand_u01(rng, e) - 1.0)


@njit(cache=True, _nrt=False)
def _fire(uf, ui, utype, ft, it, rng, e, u, t, lo, hi):
    """Unit u fires its weapon at t, damage landing at once (colossus beams splash, banelings explode and die)."""
    _hits(uf, ui, utype, ft, it, e, u, t, lo, hi)
    if it[utype[e, u], I_KIND] != KIND_BANELING:
        _pay_cooldown(uf, ft, rng, e, u, utype[e, u])


@njit(cache=True, _nrt=False)
def _launch(uf, ui, utype, ft, it, e, u, lo, hi):
    """weapon_delay: the damage point is over and u's shot leaves: an instant weapon hits now, a missile flies."""
    t = ui[e, u, SHOT_AT]
    ui[e, u, SHOT_AT] = -1
    uf[e, u, WINDUP] = 0.0
    if t < 0 or not ui[e, t, ALIVE]:
        return  # the target died during the damage point: the attack is lost (its cooldown was paid)
    tu = utype[e, u]
    if ft[tu, F_MISSILE_SPEED] <= 0.0:
        _hits(uf, ui, utype, ft, it, e, u, t, lo, hi)
        return
    if ui[e, u, MISSILE_AT] >= 0:  # cannot happen with SMAC's units (cooldown > windup + flight); land it first
        _land(uf, ui, utype, ft, it, e, u, lo, hi)
    ui[e, u, MISSILE_AT] = t
    # the missile homes on the target at its speed; its flight is timed on the centre distance at launch
    uf[e, u, FLIGHT] = dist(uf, e, u, t) / ft[tu, F_MISSILE_SPEED]


@njit(cache=True, _nrt=False)
def _land(uf, ui, utype, ft, it, e, u, lo, hi):
    """weapon_delay: u's missile arrives (its shooter may be dead by now), or the second hit of u's burst comes (lost
    if u died); a target already dead is missed."""
    t = ui[e, u, MISSILE_AT]
    ui[e, u, MISSILE_AT] = -1
    uf[e, u, FLIGHT] = 0.0
    if not ui[e, t, ALIVE]:
        return
    if ft[utype[e, u], F_BURST_PERIOD] > 0.0:  # a burst's last hit: channelled, lost with its striker
        if ui[e, u, ALIVE]:
            _deal(uf, ui, utype, ft, it, e, u, t, ft[utype[e, u], F_DAMAGE])
        return
    _hits(uf, ui, utype, ft, it, e, u, t, lo, hi)


@njit(cache=True, _nrt=False)
def _attack(uf, ui, utype, ft, it, rng, e, u, t, lo, hi, weapon_delay):
    """Unit u's weapon is ready and t in reach: fire at once, or (weapon_delay) begin the attack's damage point."""
    tu = utype[e, u]
    if weapon_delay and ft[tu, F_BURST_PERIOD] > 0.0:
        # a channelled burst (the zealot's blades): the first hit lands now, the second after the burst's period,
        # carried like a missile in flight (simulate_loop drops it if u leaves the attack, _land if u dies)
        _deal(uf, ui, utype, ft, it, e, u, t, ft[tu, F_DAMAGE])
        _pay_cooldown(uf, ft, rng, e, u, tu)
        if ui[e, t, ALIVE]:
            ui[e, u, MISSILE_AT] = t
            uf[e, u, FLIGHT] = ft[tu, F_BURST_PERIOD]
        return
    if not weapon_delay or (ft[tu, F_DAMAGE_POINT] <= 0.0 and ft[tu, F_MISSILE_SPEED] <= 0.0):
        _fire(uf, ui, utype, ft, it, rng, e, u, t, lo, hi)
        return
    _pay_cooldown(uf, ft, rng, e, u, tu)  # the weapon's cooldown runs from the start of the attack
    ui[e, u, SHOT_AT] = t
    uf[e, u, WINDUP] = ft[tu, F_DAMAGE_POINT]
    if uf[e, u, WINDUP] <= 0.0:
        _launch(uf, ui, utype, ft, it, e, u, lo, hi)


@njit(cache=True, _nrt=False)
def _engage(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, t, lo, hi, may_move, weapon_delay, turning):
    """Attack t when in weapon range (edge to edge) and ready; otherwise close in.

    turning: in range, the unit turns toward t (whether or not its weapon is ready) and fires only once t lies
    within its weapon's arc."""
    tu = utype[e, u]
    reach = ft[tu, F_RANGE] + ft[tu, F_RADIUS] + ft[utype[e, t], F_RADIUS]
    if dist(uf, e, u, t) <= reach + 1e-9:
        facing = True
        if turning and ft[tu, F_TURN] > 0.0:
            facing = _turn_toward(uf, ft, e, u, tu, uf[e, t, X] - uf[e, u, X],
                                  uf[e, t, Y] - uf[e, u, Y]) >= ft[tu, F_ARC_COS]
        if uf[e, u, CD] <= 0.0 and facing:
            _attack(uf, ui, utype, ft, it, rng, e, u, t, lo, hi, weapon_delay)
    elif may_move:
        move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, t, X], uf[e, t, Y], max(reach - 0.01, 0.0))


@njit(cache=True, _nrt=False)
def _heal(uf, ui, utype, ft, it, walk, cliff, nav, e, u, t):
    """Medivac u heals t when within heal range and t is hurt; otherwise flies closer."""
    tu = utype[e, u]
    reach = ft[tu, F_RANGE] + ft[tu, F_RADIUS] + ft[utype[e, t], F_RADIUS]
    if dist(uf, e, u, t) <= reach + 1e-9:
        missing = ft[utype[e, t], F_HP] - uf[e, t, HP]
        amount = min(HEAL_LOOP, missing, uf[e, u, EN] * MEDIVAC_HEAL_PER_ENERGY)
        if amount > 0.0:
            uf[e, t, HP] += amount
            uf[e, u, EN] -= amount / MEDIVAC_HEAL_PER_ENERGY
    else:
        move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, t, X], uf[e, t, Y], max(reach - 0.01, 0.0))


@njit(cache=True, _nrt=False)
def _acquire(uf, ui, utype, ft, it, e, u, lo, hi, scan, anywhere):
    """SC2-like target choice among hostiles in [lo, hi): threats first, then the nearest."""
    best = -1
    best_threat = -1
    best_d = 1e18
    for v in range(lo, hi):
        if not ui[e, v, ALIVE] or not _can_hit(it, utype, e, u, v):
            continue
        d = dist(uf, e, u, v)
        if not anywhere and d - ft[utype[e, v], F_RADIUS] > scan:
            continue
        threat = 1 if _threatens(it, utype, e, v, u) else 0
        if threat > best_threat or (threat == best_threat and d < best_d):
            best, best_threat, best_d = v, threat, d
    return best


@njit(cache=True, _nrt=False)
def _nearest_friend(uf, ui, utype, ft, it, e, u, lo, hi, hurt_bio_only):
    best = -1
    best_d = 1e18
    for v in range(lo, hi):
        if v == u or not ui[e, v, ALIVE] or it[utype[e, v], I_KIND] == KIND_MEDIVAC:
            continue
        if hurt_bio_only:
            if not (it[utype[e, v], I_ATTR] & BIOLOGICAL) or uf[e, v, HP] >= ft[utype[e, v], F_HP]:
                continue
        d = dist(uf, e, u, v)
        if hurt_bio_only and d > ft[utype[e, u], F_SIGHT]:
            continue
        if d < best_d:
            best, best_d = v, d
    return best


@njit(cache=True, _nrt=False)
def _ai_medivac(uf, ui, utype, ft, it, walk, cliff, nav, e, u, flo, fhi):
    """An attack-moving medivac heals the nearest hurt bio friend in sight, else follows the army."""
    t = ui[e, u, TARGET]
    if t < 0 or not ui[e, t, ALIVE] or uf[e, t, HP] >= ft[utype[e, t], F_HP]:
        t = _nearest_friend(uf, ui, utype, ft, it, e, u, flo, fhi, True)
        ui[e, u, TARGET] = t
    if t >= 0:
        _heal(uf, ui, utype, ft, it, walk, cliff, nav, e, u, t)
        return
    f = _nearest_friend(uf, ui, utype, ft, it, e, u, flo, fhi, False)
    if f >= 0:
        move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, f, X], uf[e, f, Y], 1.5)
    elif ui[e, u, ORDER] == ORD_AMOVE:
        move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, u, TX], uf[e, u, TY], ARRIVE_DIST)


@njit(cache=True, _nrt=False)
def _ai_fighter(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, lo, hi, weapon_delay, turning):
    """Attack-move / hunt / hold for a unit with a weapon, fighting hostiles in [lo, hi)."""
    tu = utype[e, u]
    order = ui[e, u, ORDER]
    scan = ft[tu, F_SIGHT] if order != ORD_HOLD else ft[tu, F_RANGE] + ft[tu, F_RADIUS]
    t = ui[e, u, TARGET]
    reacquire = t < 0 or not ui[e, t, ALIVE]
    if not reacquire:
        reach = ft[tu, F_RANGE] + ft[tu, F_RADIUS] + ft[utype[e, t], F_RADIUS]
        if dist(uf, e, u, t) > reach:
            reacquire = True  # chasing: switch if something better is in reach of the scan
        else:
            a = ui[e, u, ATTACKER]
            # respond to an attacker when the current target cannot fight back
            if (a >= lo and a < hi and ui[e, a, ALIVE] and not _threatens(it, utype, e, t, u)
                    and _threatens(it, utype, e, a, u) and _can_hit(it, utype, e, u, a)):
                t = a
    if reacquire:
        t = _acquire(uf, ui, utype, ft, it, e, u, lo, hi, scan, False)
        if t < 0 and order == ORD_HUNT:
            t = _acquire(uf, ui, utype, ft, it, e, u, lo, hi, scan, True)
    ui[e, u, TARGET] = t
    if t >= 0:
        _engage(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, t, lo, hi, order != ORD_HOLD, weapon_delay,
                turning)
    elif order == ORD_AMOVE:
        if move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, u, TX], uf[e, u, TY], ARRIVE_DIST):
            ui[e, u, ORDER] = ORD_HUNT  # point reached: from now on go for the closest ally


@njit(cache=True, _nrt=False)
def _act(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, n_agents, n_units, weapon_delay, turning):
    """One game loop of unit u's order."""
    if u < n_agents:
        flo, fhi, hlo, hhi = 0, n_agents, n_agents, n_units
    else:
        flo, fhi, hlo, hhi = n_agents, n_units, 0, n_agents
    order = ui[e, u, ORDER]
    kind = it[utype[e, u], I_KIND]
    if order == ORD_IDLE:
        return
    if order == ORD_MOVE:
        if move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, u, TX], uf[e, u, TY], 0.0):
            ui[e, u, ORDER] = ORD_IDLE
        return
    if order == ORD_ATTACK:
        t = ui[e, u, TARGET]
        if not ui[e, t, ALIVE] or not _can_hit(it, utype, e, u, t):
            ui[e, u, ORDER] = ORD_IDLE  # target gone (or out of this weapon's reach): stand
            ui[e, u, TARGET] = -1
            return
        _engage(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, t, hlo, hhi, True, weapon_delay, turning)
        return
    if order == ORD_HEAL:
        t = ui[e, u, TARGET]
        if not ui[e, t, ALIVE]:
            ui[e, u, ORDER] = ORD_IDLE
            ui[e, u, TARGET] = -1
            return
        _heal(uf, ui, utype, ft, it, walk, cliff, nav, e, u, t)
        return
    if kind == KIND_MEDIVAC:
        _ai_medivac(uf, ui, utype, ft, it, walk, cliff, nav, e, u, flo, fhi)
    else:
        _ai_fighter(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, hlo, hhi, weapon_delay, turning)


@njit(cache=True, _nrt=False)
def _regenerate(uf, ui, utype, ft, it, e, n_units):
    for u in range(n_units):
        if not ui[e, u, ALIVE]:
            continue
        tu = utype[e, u]
        uf[e, u, NODMG] += 1.0
        if ft[tu, F_SHIELD] > 0.0 and uf[e, u, NODMG] >= SHIELD_DELAY_LOOPS:
            uf[e, u, SH] = min(uf[e, u, SH] + SHIELD_REGEN_LOOP, ft[tu, F_SHIELD])
        if ft[tu, F_REGEN] > 0.0:
            uf[e, u, HP] = min(uf[e, u, HP] + ft[tu, F_REGEN], ft[tu, F_HP])
        if ft[tu, F_DECAY] > 0.0:  # a zerg structure off creep: its decay, spread evenly over the loops
            uf[e, u, HP] -= ft[tu, F_DECAY]
            if uf[e, u, HP] <= 0.0:
                _kill(uf, ui, e, u)
        if it[tu, I_KIND] == KIND_MEDIVAC:
            uf[e, u, EN] = min(uf[e, u, EN] + ENERGY_REGEN_LOOP, MEDIVAC_ENERGY_MAX)


@njit(cache=True, _nrt=False)
def _hostiles(u, n_agents, n_units):
    """The index range of u's enemies."""
    return (n_agents, n_units) if u < n_agents else (0, n_agents)


@njit(cache=True, _nrt=False)
def simulate_loop(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, n_agents, n_units, order_buf, weapon_delay=0,
                  turning=0):
    """One game loop of battle e: missiles fly, units act in a random order, then collide, then regenerate.

    weapon_delay: a zealot whose order in its turn no longer attacks the target of its first blade (a move or stop
    order, another target) loses its second blade still to come.
    turning: a unit that walked in its turn turns toward the way it walked (it walks at full speed meanwhile).
    A unit with an acceleration (the medivac, with the option acceleration; else the column is 0) keeps the
    distance it walked in its turn: its next walk starts from that speed (0 if it did not walk)."""
    if weapon_delay:
        for u in range(n_units):  # missiles in flight, whether or not their shooters still live
            if ui[e, u, MISSILE_AT] >= 0:
                uf[e, u, FLIGHT] -= 1.0
                if uf[e, u, FLIGHT] <= 0.0:
                    lo, hi = _hostiles(u, n_agents, n_units)
                    _land(uf, ui, utype, ft, it, e, u, lo, hi)
    n = 0
    for u in range(n_units):
        if ui[e, u, ALIVE]:
            order_buf[n] = u
            n += 1
    for i in range(n - 1, 0, -1):  # Fisher-Yates on the living units
        j = int(rand_u01(rng, e) * (i + 1))
        order_buf[i], order_buf[j] = order_buf[j], order_buf[i]
    for i in range(n):
        u = order_buf[i]
        if not ui[e, u, ALIVE]:
            continue  # killed earlier in this loop
        if uf[e, u, CD] > -1.0:
            # counts below zero by less than a loop, so a 13.77-loop cooldown keeps its fraction
            uf[e, u, CD] = max(uf[e, u, CD] - 1.0, -1.0)
        if ui[e, u, SHOT_AT] >= 0:  # winding up (weapon_delay): busy until the shot leaves, whatever its order
            uf[e, u, WINDUP] -= 1.0
            if uf[e, u, WINDUP] > 0.0:
                continue
            lo, hi = _hostiles(u, n_agents, n_units)
            _launch(uf, ui, utype, ft, it, e, u, lo, hi)
        tu = utype[e, u]
        turns = turning and ft[tu, F_TURN] > 0.0
        accelerates = ft[tu, F_ACCEL] > 0.0  # the option acceleration (else the column is 0)
        if turns or accelerates:  # the unit's walk in this turn matters to the next
            x0, y0 = uf[e, u, X], uf[e, u, Y]
            _act(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, n_agents, n_units, weapon_delay, turning)
            dx, dy = uf[e, u, X] - x0, uf[e, u, Y] - y0
            if turns and (dx != 0.0 or dy != 0.0):
                _turn_toward(uf, ft, e, u, tu, dx, dy)
            if accelerates:  # the next loop starts from this one's walk
                uf[e, u, VEL] = math.hypot(dx, dy)
        else:
            _act(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, n_agents, n_units, weapon_delay, turning)
        t = ui[e, u, MISSILE_AT]
        if t >= 0 and ui[e, u, TARGET] != t and ft[utype[e, u], F_BURST_PERIOD] > 0.0:
            # weapon_delay: a burst's second hit still to come is channelled: its striker's attack on that target
            # ended (a move or stop order, another target), so it is lost
            ui[e, u, MISSILE_AT] = -1
            uf[e, u, FLIGHT] = 0.0
    collide(uf, ui, utype, ft, it, walk, cliff, e, n_units)
    _regenerate(uf, ui, utype, ft, it, e, n_units)


@njit(cache=True, _nrt=False)
def order_idle_enemies(uf, ui, utype, it, e, n_agents, n_units):
    """SMACv2's map trigger: each enemy without orders attacks the closest ally it can hit (medivacs go heal).

    The map orders an attack on the closest ally whatever it is; the game refuses an order a unit cannot
    carry out (a marauder on a medivac), which would leave it idle, so here it takes the closest it can hit.
    """
    for v in range(n_agents, n_units):
        if not ui[e, v, ALIVE] or ui[e, v, ORDER] != ORD_IDLE:
            continue
        if it[utype[e, v], I_KIND] == KIND_MEDIVAC:
            ui[e, v, ORDER] = ORD_HUNT  # no weapon: heal the nearest hurt friend, else follow the army
            continue
        best = -1
        best_d = 1e18
        for a in range(n_agents):
            if ui[e, a, ALIVE] and _can_hit(it, utype, e, v, a):
                d = dist(uf, e, v, a)
                if d < best_d:
                    best, best_d = a, d
        if best >= 0:
            ui[e, v, ORDER] = ORD_ATTACK
            ui[e, v, TARGET] = best
