"""Numba kernels of the embedded SMAC simulator: E battles stepped in lockstep over flat arrays.

One environment step is 8 game loops. In each loop every living unit, in a random order, counts its
weapon cooldown down by one loop and acts on its order (move, attack, heal, attack-move, hunt,
hold); then overlapping ground units are pushed apart; then shields, zerg health and medivac energy
regenerate. Damage lands when a weapon fires.

What the real game does that this does not model: projectile travel time (damage is instant),
acceleration and turning, SC2's exact pathfinding (units walk straight and slide along walls) and
its exact target-priority table (threats first, then the nearest, as described in SPEC.md).

SMACv2's generator scenarios draw each episode's teams and start positions here too, at reset, from the
battle's own stream (`draw_generator_battle`); their idle enemies are ordered to attack the closest ally
at the start of every step (every 0.5 game-seconds). Units that SMACv2 spawns on one point (the
surrounded layout) stand on a sunflower spiral around it, since SC2 would not stack them either.

Layout: per-unit floats `uf[E, U, NUF]`, per-unit ints `ui[E, U, NUI]`, per-env ints `ei[E, NEI]`,
per-env floats `ef[E, NEF]` and one splitmix64 state per env (`rng[E]`), so that each battle's
randomness is its own: the same seed gives the same battle whatever E is and whatever other
battles run beside it. Units [0, A) are the agents, [A, U) the enemies.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .maps import EORDER_ATTACK_MOVE, EORDER_ATTACK_MOVE_SEGMENT, EORDER_HOLD, EORDER_HUNT, EORDER_IDLE_ATTACK
from .units import (
    BIOLOGICAL,
    COLOSSUS_BEAM_HALF_LENGTH,
    COLOSSUS_BEAM_HALF_WIDTH,
    F_ARMOR,
    F_ATTACKS,
    F_BONUS,
    F_COOLDOWN,
    F_DAMAGE,
    F_HP,
    F_MAX_COOLDOWN,
    F_RADIUS,
    F_RANGE,
    F_REGEN,
    F_SHIELD,
    F_SIGHT,
    F_SPEED,
    F_SPLASH,
    HITS_AIR,
    HITS_GROUND,
    I_ATTR,
    I_BONUS_ATTR,
    I_CLIFF_WALKER,
    I_FLYING,
    I_HITS,
    I_KIND,
    KIND_BANELING,
    KIND_COLOSSUS,
    KIND_MEDIVAC,
    KIND_STATIC,
    LOOPS_PER_SECOND,
    MEDIVAC_ENERGY_MAX,
    MEDIVAC_ENERGY_REGEN_PER_S,
    MEDIVAC_ENERGY_START,
    MEDIVAC_HEAL_PER_ENERGY,
    MEDIVAC_HEAL_PER_S,
    SHIELD_REGEN_DELAY_S,
    SHIELD_REGEN_PER_S,
    STEP_MUL,
)

# per-unit float fields
X, Y, HP, SH, EN, CD, TX, TY, NODMG, PREV_HS = range(10)
NUF = 10
# per-unit int fields
ALIVE, ORDER, TARGET, DEATH_SEEN, LAST_ACTION, ATTACKER = range(6)
NUI = 6
# per-env int fields
T, RESULT, DEAD_ALLIES, DEAD_ENEMIES, LAYOUT = range(5)
NEI = 5
# per-env float fields; MAX_REWARD: the reward scale's max_reward (SMACv2: fixed by a battle's first team)
EP_RETURN, MAX_REWARD = range(2)
NEF = 2
# start layouts (ei[:, LAYOUT]): the map's fixed spawns, or SMACv2's two drawn ones
LAYOUT_FIXED, LAYOUT_REFLECT, LAYOUT_SURROUNDED = 0, 1, 2

# orders
ORD_IDLE, ORD_MOVE, ORD_ATTACK, ORD_HEAL, ORD_AMOVE, ORD_HUNT, ORD_HOLD = range(7)

# game end codes (SMAC's): None -> RUNNING
RUNNING, LOST, DRAW, WON = 2, -1, 0, 1

# integer configuration, cfg_i[...]
(C_N_AGENTS, C_N_ENEMIES, C_N_ACTIONS, C_LIMIT, C_SHIELD_A, C_SHIELD_E, C_TYPE_BITS, C_OBS_ALL_HEALTH,
 C_OBS_OWN_HEALTH, C_OBS_LAST_ACTION, C_OBS_PATHING, C_OBS_TERRAIN, C_OBS_TIMESTEP, C_STATE_LAST_ACTION,
 C_STATE_TIMESTEP, C_OBS_INSTEAD_OF_STATE, C_REWARD_SPARSE, C_REWARD_ONLY_POSITIVE, C_REWARD_SCALE,
 C_MMM, C_AUTORESET, C_MAP_X, C_MAP_Y, C_OBS_OWN_POS, C_GENERATOR, C_UNIT_RANGES) = range(26)
# the generator's unit pool, 3 entries each: ally and enemy unit type, "may not make a whole team", and the
# ally type's rank among SMAC's alphabetical *_RL type ids (agents are numbered by it)
C_POOL_ALLY, C_POOL_ENEMY, C_POOL_EXCEPTION, C_POOL_RANK = 26, 29, 32, 35
N_CFG_I = 38
# float configuration, cfg_f[...]; C_POOL_CUM: cumulative pool weights (3)
C_DEATH_VALUE, C_WIN, C_DEFEAT, C_NEG_SCALE, C_SCALE_RATE, C_MAX_REWARD, C_MIN_ATTACK_RANGE, C_REFLECT_P = range(8)
C_POOL_CUM = 8
N_CFG_F = 11

MOVE_AMOUNT = 2.0
SHIELD_DELAY_LOOPS = SHIELD_REGEN_DELAY_S * LOOPS_PER_SECOND
SHIELD_REGEN_LOOP = SHIELD_REGEN_PER_S / LOOPS_PER_SECOND
ENERGY_REGEN_LOOP = MEDIVAC_ENERGY_REGEN_PER_S / LOOPS_PER_SECOND
HEAL_LOOP = MEDIVAC_HEAL_PER_S / LOOPS_PER_SECOND
ARRIVE_DIST = 0.1
NO_DAMAGE_YET = 1.0e9
SIGHT_RANGE = 9.0  # SMAC's fixed ranges, unless unit ranges are on
SHOOT_RANGE = 6.0
SURROUND_OFFSET = 2.0  # SMACv2's surrounded layout: the diagonals start this far from the centre
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
SPIRAL_MIN_GAP = 1.546  # nearest-neighbour distance of the spiral points sqrt(k + 0.5) at k * GOLDEN_ANGLE


# ---------------------------------------------------------------------------------- randomness
@njit(cache=True, _nrt=False, inline="always")
def rand_u01(rng, e):
    """splitmix64: next uniform double in [0, 1) from env e's own stream."""
    s = rng[e] + np.uint64(0x9E3779B97F4A7C15)
    rng[e] = s
    z = s
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


# ---------------------------------------------------------------------------------- geometry
@njit(cache=True, _nrt=False, inline="always")
def _dist(uf, e, u, v):
    return math.hypot(uf[e, v, X] - uf[e, u, X], uf[e, v, Y] - uf[e, u, Y])


@njit(cache=True, _nrt=False, inline="always")
def _walkable(x, y, ti, it, walk, cliff):
    nx, ny = walk.shape
    if x < 0.0 or y < 0.0 or x >= nx or y >= ny:
        return False
    if it[ti, I_FLYING]:
        return True
    if it[ti, I_CLIFF_WALKER]:
        return cliff[int(x), int(y)]
    return walk[int(x), int(y)]


@njit(cache=True, _nrt=False)
def _step_to(uf, e, u, ti, it, walk, cliff, x, y, sx, sy):
    """Take the step (sx, sy) if it lands on a walkable cell, else slide along the blocking wall."""
    if _walkable(x + sx, y + sy, ti, it, walk, cliff):
        uf[e, u, X] = x + sx
        uf[e, u, Y] = y + sy
        return True
    if sx != 0.0 and _walkable(x + sx, y, ti, it, walk, cliff):
        uf[e, u, X] = x + sx
    elif sy != 0.0 and _walkable(x, y + sy, ti, it, walk, cliff):
        uf[e, u, Y] = y + sy
    return False


@njit(cache=True, _nrt=False)
def _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, gx, gy, stop_dist):
    """Walk unit u one loop toward (gx, gy), stopping stop_dist short; True once arrived.

    Units walk straight while they can. When a wall blocks the straight step, they follow the
    map's precomputed shortest grid path (`nav`) around it, e.g. to the ramps of a cliff.
    """
    ti = utype[e, u]
    x = uf[e, u, X]
    y = uf[e, u, Y]
    dx = gx - x
    dy = gy - y
    d = math.hypot(dx, dy)
    if d <= stop_dist + 1e-9:
        return True
    speed = ft[ti, F_SPEED]
    if speed <= 0.0:
        return False
    step = min(speed, d - stop_dist)
    sx = dx / d * step
    sy = dy / d * step
    nx, ny = walk.shape
    layer = 1 if it[ti, I_CLIFF_WALKER] else 0
    cx, cy = int(x), int(y)
    goal = nav_goal(gx, gy, nx, ny)
    here = cx * ny + cy
    grid_d = nav[layer, goal, here] if not it[ti, I_FLYING] else -1
    # with nothing in the way the grid path is as long as the straight (Chebyshev) one; longer means a
    # wall stands between, so follow the path around it instead of pressing against the wall
    if grid_d < 0 or grid_d <= max(abs(goal // ny - cx), abs(goal % ny - cy)) + 1:
        if _step_to(uf, e, u, ti, it, walk, cliff, x, y, sx, sy):
            return step >= d - stop_dist - 1e-9
        return False
    best = -1
    best_d = 1 << 30
    best_e = 1e18
    for ox in range(-1, 2):
        for oy in range(-1, 2):
            px, py = cx + ox, cy + oy
            if (ox == 0 and oy == 0) or px < 0 or py < 0 or px >= nx or py >= ny:
                continue
            nd = nav[layer, goal, px * ny + py]
            if nd < 0:
                continue
            eu = math.hypot(px + 0.5 - gx, py + 0.5 - gy)
            if nd < best_d or (nd == best_d and eu < best_e):
                best, best_d, best_e = px * ny + py, nd, eu
    if best < 0:
        return False
    wx = best // ny + 0.5 - x
    wy = best % ny + 0.5 - y
    wd = math.hypot(wx, wy)
    if wd > 1e-9:
        _step_to(uf, e, u, ti, it, walk, cliff, x, y, wx / wd * min(speed, wd), wy / wd * min(speed, wd))
    return False


@njit(cache=True, _nrt=False)
def nav_goal(gx, gy, nx, ny):
    """The grid cell a path to (gx, gy) aims for: its own cell, clamped to the map."""
    ix = min(max(int(gx), 0), nx - 1)
    iy = min(max(int(gy), 0), ny - 1)
    return ix * ny + iy


@njit(cache=True)
def nav_distances(grid):
    """int16[C, C]: 8-connected grid steps from each cell to each goal cell, -1 where unreachable.

    Row g holds the distances to goal cell g = x * Y + y. A blocked goal cell takes the distances of
    the walkable cell nearest it, so units still head for the closest reachable spot. Diagonal steps
    may not cut a blocked corner.
    """
    nx, ny = grid.shape
    n = nx * ny
    out = np.full((n, n), -1, np.int16)
    queue = np.empty(n, np.int64)
    for g in range(n):
        gx, gy = g // ny, g % ny
        if not grid[gx, gy]:
            continue
        out[g, g] = 0
        head, tail = 0, 1
        queue[0] = g
        while head < tail:
            c = queue[head]
            head += 1
            cx, cy = c // ny, c % ny
            for ox in range(-1, 2):
                for oy in range(-1, 2):
                    px, py = cx + ox, cy + oy
                    if (ox == 0 and oy == 0) or px < 0 or py < 0 or px >= nx or py >= ny or not grid[px, py]:
                        continue
                    if ox != 0 and oy != 0 and not (grid[cx + ox, cy] and grid[cx, cy + oy]):
                        continue
                    m = px * ny + py
                    if out[g, m] < 0:
                        out[g, m] = out[g, c] + 1
                        queue[tail] = m
                        tail += 1
    for g in range(n):
        gx, gy = g // ny, g % ny
        if grid[gx, gy]:
            continue
        best, best_d = -1, 1e18
        for m in range(n):
            if grid[m // ny, m % ny]:
                dd = (m // ny - gx) ** 2 + (m % ny - gy) ** 2
                if dd < best_d:
                    best, best_d = m, dd
        if best >= 0:
            out[g, :] = out[best, :]
    return out


# ---------------------------------------------------------------------------------- combat
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
def _fire(uf, ui, utype, ft, it, rng, e, u, t, lo, hi):
    """Unit u fires its weapon at t (colossus beams splash, banelings explode and die)."""
    tu = utype[e, u]
    kind = it[tu, I_KIND]
    base = ft[tu, F_DAMAGE]
    if kind == KIND_BANELING:
        for v in range(lo, hi):
            if ui[e, v, ALIVE] and not it[utype[e, v], I_FLYING]:
                if _dist(uf, e, u, v) - ft[utype[e, v], F_RADIUS] <= ft[tu, F_SPLASH]:
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
    # the game adds a random -1..+2 loop delay to every weapon cooldown
    carry = uf[e, u, CD] if uf[e, u, CD] > -1.0 else 0.0
    uf[e, u, CD] = carry + ft[tu, F_COOLDOWN] + (3.0 * rand_u01(rng, e) - 1.0)


@njit(cache=True, _nrt=False)
def _engage(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, t, lo, hi, may_move):
    """Fire at t when in weapon range (edge to edge) and ready; otherwise close in."""
    tu = utype[e, u]
    reach = ft[tu, F_RANGE] + ft[tu, F_RADIUS] + ft[utype[e, t], F_RADIUS]
    if _dist(uf, e, u, t) <= reach + 1e-9:
        if uf[e, u, CD] <= 0.0:
            _fire(uf, ui, utype, ft, it, rng, e, u, t, lo, hi)
    elif may_move:
        _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, t, X], uf[e, t, Y], max(reach - 0.01, 0.0))


@njit(cache=True, _nrt=False)
def _heal(uf, ui, utype, ft, it, walk, cliff, nav, e, u, t):
    """Medivac u heals t when within heal range and t is hurt; otherwise flies closer."""
    tu = utype[e, u]
    reach = ft[tu, F_RANGE] + ft[tu, F_RADIUS] + ft[utype[e, t], F_RADIUS]
    if _dist(uf, e, u, t) <= reach + 1e-9:
        missing = ft[utype[e, t], F_HP] - uf[e, t, HP]
        amount = min(HEAL_LOOP, missing, uf[e, u, EN] * MEDIVAC_HEAL_PER_ENERGY)
        if amount > 0.0:
            uf[e, t, HP] += amount
            uf[e, u, EN] -= amount / MEDIVAC_HEAL_PER_ENERGY
    else:
        _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, t, X], uf[e, t, Y], max(reach - 0.01, 0.0))


@njit(cache=True, _nrt=False)
def _acquire(uf, ui, utype, ft, it, e, u, lo, hi, scan, anywhere):
    """SC2-like target choice among hostiles in [lo, hi): threats first, then the nearest."""
    best = -1
    best_threat = -1
    best_d = 1e18
    for v in range(lo, hi):
        if not ui[e, v, ALIVE] or not _can_hit(it, utype, e, u, v):
            continue
        d = _dist(uf, e, u, v)
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
        d = _dist(uf, e, u, v)
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
        _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, f, X], uf[e, f, Y], 1.5)
    elif ui[e, u, ORDER] == ORD_AMOVE:
        _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, u, TX], uf[e, u, TY], ARRIVE_DIST)


@njit(cache=True, _nrt=False)
def _ai_fighter(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, lo, hi):
    """Attack-move / hunt / hold for a unit with a weapon, fighting hostiles in [lo, hi)."""
    tu = utype[e, u]
    order = ui[e, u, ORDER]
    scan = ft[tu, F_SIGHT] if order != ORD_HOLD else ft[tu, F_RANGE] + ft[tu, F_RADIUS]
    t = ui[e, u, TARGET]
    reacquire = t < 0 or not ui[e, t, ALIVE]
    if not reacquire:
        reach = ft[tu, F_RANGE] + ft[tu, F_RADIUS] + ft[utype[e, t], F_RADIUS]
        if _dist(uf, e, u, t) > reach:
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
        _engage(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, t, lo, hi, order != ORD_HOLD)
    elif order == ORD_AMOVE:
        if _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, u, TX], uf[e, u, TY], ARRIVE_DIST):
            ui[e, u, ORDER] = ORD_HUNT  # point reached: from now on go for the closest ally


@njit(cache=True, _nrt=False)
def _act(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, n_agents, n_units):
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
        if _move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, uf[e, u, TX], uf[e, u, TY], 0.0):
            ui[e, u, ORDER] = ORD_IDLE
        return
    if order == ORD_ATTACK:
        t = ui[e, u, TARGET]
        if not ui[e, t, ALIVE] or not _can_hit(it, utype, e, u, t):
            ui[e, u, ORDER] = ORD_IDLE  # target gone (or out of this weapon's reach): stand
            ui[e, u, TARGET] = -1
            return
        _engage(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, t, hlo, hhi, True)
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
        _ai_fighter(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, hlo, hhi)


@njit(cache=True, _nrt=False)
def _collide(uf, ui, utype, ft, it, walk, cliff, e, n_units):
    """Push overlapping ground units apart (massive units only collide with massive ones)."""
    for u in range(n_units):
        if not ui[e, u, ALIVE]:
            continue
        tu = utype[e, u]
        if it[tu, I_FLYING]:
            continue
        for v in range(u + 1, n_units):
            if not ui[e, v, ALIVE]:
                continue
            tv = utype[e, v]
            if it[tv, I_FLYING] or (it[tu, I_CLIFF_WALKER] != it[tv, I_CLIFF_WALKER]):
                continue
            dx = uf[e, v, X] - uf[e, u, X]
            dy = uf[e, v, Y] - uf[e, u, Y]
            reach = ft[tu, F_RADIUS] + ft[tv, F_RADIUS]
            if dx * dx + dy * dy >= reach * reach:
                continue
            d = math.hypot(dx, dy)
            overlap = reach - d
            if d < 1e-9:
                dx, dy, d = 1.0, 0.0, 1.0  # exactly stacked: split along x, lower index west
            nx, ny = dx / d, dy / d
            su = 0.0 if it[tu, I_KIND] == KIND_STATIC else 1.0
            sv = 0.0 if it[tv, I_KIND] == KIND_STATIC else 1.0
            if su + sv == 0.0:
                continue
            pu = overlap * su / (su + sv)
            pv = overlap * sv / (su + sv)
            ux, uy = uf[e, u, X] - nx * pu, uf[e, u, Y] - ny * pu
            vx, vy = uf[e, v, X] + nx * pv, uf[e, v, Y] + ny * pv
            if pu > 0.0 and _walkable(ux, uy, tu, it, walk, cliff):
                uf[e, u, X] = ux
                uf[e, u, Y] = uy
            if pv > 0.0 and _walkable(vx, vy, tv, it, walk, cliff):
                uf[e, v, X] = vx
                uf[e, v, Y] = vy


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
        if it[tu, I_KIND] == KIND_MEDIVAC:
            uf[e, u, EN] = min(uf[e, u, EN] + ENERGY_REGEN_LOOP, MEDIVAC_ENERGY_MAX)


@njit(cache=True, _nrt=False)
def simulate_loop(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, n_agents, n_units, order_buf):
    """One game loop of battle e: units act in a random order, then collide, then regenerate."""
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
        _act(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, u, n_agents, n_units)
    _collide(uf, ui, utype, ft, it, walk, cliff, e, n_units)
    _regenerate(uf, ui, utype, ft, it, e, n_units)


# ---------------------------------------------------------------------------------- episodes
@njit(cache=True, _nrt=False)
def _draw_pool_entry(rng, e, cfg_f):
    """One generator unit: its pool index 0..2, drawn with the pool's weights."""
    r = rand_u01(rng, e)
    k = 0
    while k < 2 and r >= cfg_f[C_POOL_CUM + k]:
        k += 1
    return k


@njit(cache=True, _nrt=False)
def _draw_team(tid, rng, cfg_i, cfg_f, e, lo, hi):
    """Pool indices of slots [lo, hi) into tid[e], i.i.d.; redrawn whole while it holds only exceptions."""
    while True:
        only_exceptions = True
        for u in range(lo, hi):
            k = _draw_pool_entry(rng, e, cfg_f)
            tid[e, u] = k
            if not cfg_i[C_POOL_EXCEPTION + k]:
                only_exceptions = False
        if not only_exceptions:
            return


@njit(cache=True, _nrt=False, inline="always")
def _fold_inside(v, size):
    """A coordinate reflected back into [0, size) (spiral points past a map edge)."""
    if v < 0.0:
        v = -v
    if v >= size:
        v = 2.0 * size - v
    return min(max(v, 0.0), size - 1e-6)


@njit(cache=True, _nrt=False)
def _spread(spawn, ft, utype, e, lo, hi, px, py, size_x, size_y):
    """Stand units [lo, hi), all started on (px, py), on a sunflower spiral around it, far enough apart."""
    radius = 0.0
    for u in range(lo, hi):
        radius = max(radius, ft[utype[e, u], F_RADIUS])
    scale = (2.0 * radius + 0.05) / SPIRAL_MIN_GAP
    for k in range(hi - lo):
        r = scale * math.sqrt(k + 0.5)
        spawn[e, lo + k, 0] = _fold_inside(px + r * math.cos(k * GOLDEN_ANGLE), size_x)
        spawn[e, lo + k, 1] = _fold_inside(py + r * math.sin(k * GOLDEN_ANGLE), size_y)


@njit(cache=True, _nrt=False)
def draw_generator_battle(utype, tid, spawn, sight, shoot, ft, cfg_i, cfg_f, rng, ei, ef, e, n_agents, n_units):
    """SMACv2's episode draw for battle e: teams (weighted_teams) and start positions (surrounded_and_reflect).

    The enemy team copies the allies' draw slot by slot, extra enemies are a team drawn on their own; agents
    are then numbered the SMAC way, by unit type and position. Writes utype, tid, spawn, sight and shoot.
    """
    n_enemies = n_units - n_agents
    n_same = min(n_agents, n_enemies)
    _draw_team(tid, rng, cfg_i, cfg_f, e, 0, n_agents)
    for j in range(n_same):
        tid[e, n_agents + j] = tid[e, j]
    if n_enemies > n_agents:
        _draw_team(tid, rng, cfg_i, cfg_f, e, n_agents + n_agents, n_units)
    for u in range(n_units):
        utype[e, u] = cfg_i[(C_POOL_ALLY if u < n_agents else C_POOL_ENEMY) + tid[e, u]]
    size_x = float(cfg_i[C_MAP_X])
    size_y = float(cfg_i[C_MAP_Y])
    if rand_u01(rng, e) > cfg_f[C_REFLECT_P]:
        ei[e, LAYOUT] = LAYOUT_SURROUNDED
        cx, cy = size_x / 2.0, size_y / 2.0
        _spread(spawn, ft, utype, e, 0, n_agents, cx, cy, size_x, size_y)
        n_groups = 1 + int(rand_u01(rng, e) * 4.0)
        # which diagonal each group takes (distinct), and how many enemies it gets (multinomial, equal odds)
        diagonals = (0, 1, 2, 3)
        for g in range(n_groups):
            pick = g + int(rand_u01(rng, e) * (4 - g))
            d_g, d_pick = diagonals[g], diagonals[pick]
            diagonals = _tuple4_set(_tuple4_set(diagonals, g, d_pick), pick, d_g)
        counts = (0, 0, 0, 0)
        for _ in range(n_enemies):
            g = int(rand_u01(rng, e) * n_groups)
            counts = _tuple4_set(counts, g, counts[g] + 1)
        lo = n_agents
        for g in range(n_groups):
            d = diagonals[g]
            t = rand_u01(rng, e)
            ox = cx - SURROUND_OFFSET if d < 2 else cx + SURROUND_OFFSET
            oy = cy - SURROUND_OFFSET if d == 0 or d == 3 else cy + SURROUND_OFFSET
            corner_x = 0.0 if d < 2 else size_x
            corner_y = 0.0 if d == 0 or d == 3 else size_y
            _spread(spawn, ft, utype, e, lo, lo + counts[g], ox * t + corner_x * (1.0 - t),
                    oy * t + corner_y * (1.0 - t), size_x, size_y)
            lo += counts[g]
    else:
        ei[e, LAYOUT] = LAYOUT_REFLECT
        for a in range(n_agents):
            spawn[e, a, 0] = rand_u01(rng, e) * (size_x / 2.0 - 1.0)
            spawn[e, a, 1] = rand_u01(rng, e) * size_y
        for j in range(n_same):
            spawn[e, n_agents + j, 0] = min(size_x - spawn[e, j, 0], size_x - 1e-6)
            spawn[e, n_agents + j, 1] = spawn[e, j, 1]
        for v in range(n_agents + n_same, n_units):
            spawn[e, v, 0] = size_x / 2.0 + rand_u01(rng, e) * (size_x / 2.0 - 1e-6)
            spawn[e, v, 1] = rand_u01(rng, e) * size_y
    # SMAC numbers the agents by (type id, x, y); its *_RL type ids are alphabetical (insertion sort: A <= 20s)
    for a in range(1, n_agents):
        b = a
        while b > 0 and _ally_before(tid, spawn, cfg_i, e, b, b - 1):
            _swap_slots(utype, tid, spawn, e, b, b - 1)
            b -= 1
    for u in range(n_units):
        ut = utype[e, u]
        if cfg_i[C_UNIT_RANGES]:
            sight[e, u] = ft[ut, F_SIGHT]
            shoot[e, u] = max(ft[ut, F_RANGE], cfg_f[C_MIN_ATTACK_RANGE])
        else:
            sight[e, u] = SIGHT_RANGE
            shoot[e, u] = SHOOT_RANGE
    if ef[e, MAX_REWARD] <= 0.0:
        # SMACv2 adds up the enemies' health and shields once, in its first episode, and keeps that scale
        total = n_enemies * cfg_f[C_DEATH_VALUE] + cfg_f[C_WIN]
        for v in range(n_agents, n_units):
            total += ft[utype[e, v], F_HP] + ft[utype[e, v], F_SHIELD]
        ef[e, MAX_REWARD] = total


@njit(cache=True, _nrt=False, inline="always")
def _tuple4_set(t, i, value):
    """Tuple t of four ints with entry i replaced (small scratch without heap arrays)."""
    return (value if i == 0 else t[0], value if i == 1 else t[1], value if i == 2 else t[2],
            value if i == 3 else t[3])


@njit(cache=True, _nrt=False, inline="always")
def _ally_before(tid, spawn, cfg_i, e, a, b):
    ra = cfg_i[C_POOL_RANK + tid[e, a]]
    rb = cfg_i[C_POOL_RANK + tid[e, b]]
    if ra != rb:
        return ra < rb
    if spawn[e, a, 0] != spawn[e, b, 0]:
        return spawn[e, a, 0] < spawn[e, b, 0]
    return spawn[e, a, 1] < spawn[e, b, 1]


@njit(cache=True, _nrt=False, inline="always")
def _swap_slots(utype, tid, spawn, e, a, b):
    utype[e, a], utype[e, b] = utype[e, b], utype[e, a]
    tid[e, a], tid[e, b] = tid[e, b], tid[e, a]
    for k in range(2):
        spawn[e, a, k], spawn[e, b, k] = spawn[e, b, k], spawn[e, a, k]


@njit(cache=True, _nrt=False)
def reset_env(uf, ui, ei, ef, utype, spawn, tid, sight, shoot, ft, it, enemy_order, cfg_i, cfg_f, rng, e,
              n_agents, n_units):
    """Put battle e back at its spawn state (generator maps: a freshly drawn one) and give the enemies orders."""
    for k in range(NEI):
        ei[e, k] = 0
    if cfg_i[C_GENERATOR]:
        draw_generator_battle(utype, tid, spawn, sight, shoot, ft, cfg_i, cfg_f, rng, ei, ef, e, n_agents, n_units)
    else:
        ef[e, MAX_REWARD] = cfg_f[C_MAX_REWARD]
    for u in range(n_units):
        tu = utype[e, u]
        uf[e, u, X] = spawn[e, u, 0]
        uf[e, u, Y] = spawn[e, u, 1]
        uf[e, u, HP] = ft[tu, F_HP]
        uf[e, u, SH] = ft[tu, F_SHIELD]
        uf[e, u, EN] = MEDIVAC_ENERGY_START if it[tu, I_KIND] == KIND_MEDIVAC else 0.0
        uf[e, u, CD] = 0.0
        uf[e, u, TX] = 0.0
        uf[e, u, TY] = 0.0
        uf[e, u, NODMG] = NO_DAMAGE_YET
        uf[e, u, PREV_HS] = ft[tu, F_HP] + ft[tu, F_SHIELD]
        ui[e, u, ALIVE] = 1
        ui[e, u, ORDER] = ORD_IDLE
        ui[e, u, TARGET] = -1
        ui[e, u, DEATH_SEEN] = 0
        ui[e, u, LAST_ACTION] = -1
        ui[e, u, ATTACKER] = -1
    mode = int(enemy_order[0])
    tx, ty = enemy_order[1], enemy_order[2]
    if mode == EORDER_ATTACK_MOVE_SEGMENT:
        w = rand_u01(rng, e)
        tx = enemy_order[1] + w * (enemy_order[3] - enemy_order[1])
        ty = enemy_order[2] + w * (enemy_order[4] - enemy_order[2])
    for u in range(n_agents, n_units):
        if mode == EORDER_ATTACK_MOVE or mode == EORDER_ATTACK_MOVE_SEGMENT:
            ui[e, u, ORDER] = ORD_AMOVE
            uf[e, u, TX] = tx
            uf[e, u, TY] = ty
        elif mode == EORDER_HUNT:
            ui[e, u, ORDER] = ORD_HUNT
        elif mode == EORDER_HOLD:
            ui[e, u, ORDER] = ORD_HOLD
    ei[e, RESULT] = RUNNING
    ef[e, EP_RETURN] = 0.0


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
                d = _dist(uf, e, v, a)
                if d < best_d:
                    best, best_d = a, d
        if best >= 0:
            ui[e, v, ORDER] = ORD_ATTACK
            ui[e, v, TARGET] = best


@njit(cache=True, _nrt=False)
def _can_move(uf, walk, e, u, dx, dy):
    # SMAC checks the cell one half move-amount away with the pathing grid, whatever the unit
    m = MOVE_AMOUNT / 2.0
    x = int(uf[e, u, X] + dx * m)
    y = int(uf[e, u, Y] + dy * m)
    nx, ny = walk.shape
    return 0 <= x < nx and 0 <= y < ny and walk[x, y]


@njit(cache=True, _nrt=False)
def compute_avail(uf, ui, utype, it, walk, shoot, cfg_i, e, avail):
    """SMAC's available actions of every agent of battle e into avail[e]."""
    n_agents = cfg_i[C_N_AGENTS]
    n_enemies = cfg_i[C_N_ENEMIES]
    for a in range(n_agents):
        for k in range(cfg_i[C_N_ACTIONS]):
            avail[e, a, k] = False
        if not ui[e, a, ALIVE]:
            avail[e, a, 0] = True
            continue
        avail[e, a, 1] = True
        avail[e, a, 2] = _can_move(uf, walk, e, a, 0, 1)
        avail[e, a, 3] = _can_move(uf, walk, e, a, 0, -1)
        avail[e, a, 4] = _can_move(uf, walk, e, a, 1, 0)
        avail[e, a, 5] = _can_move(uf, walk, e, a, -1, 0)
        if it[utype[e, a], I_KIND] == KIND_MEDIVAC:
            if cfg_i[C_MMM]:
                for j in range(n_agents):
                    if ui[e, j, ALIVE] and it[utype[e, j], I_KIND] != KIND_MEDIVAC:
                        if _dist(uf, e, a, j) <= shoot[e, a]:
                            avail[e, a, 6 + j] = True
        else:
            for j in range(n_enemies):
                v = n_agents + j
                if ui[e, v, ALIVE] and _dist(uf, e, a, v) <= shoot[e, a]:
                    avail[e, a, 6 + j] = True


@njit(cache=True, _nrt=False, inline="always")
def _entity_features(obs, uf, ft, utype, tid, e, a, v, o, first, d, dx, dy, sr, all_health, shield, bits):
    """Write one seen unit's block [first, dist, dx, dy, health, shield, type one-hot]; returns its end."""
    tv = utype[e, v]
    obs[e, a, o] = first
    obs[e, a, o + 1] = d / sr
    obs[e, a, o + 2] = dx / sr
    obs[e, a, o + 3] = dy / sr
    k = o + 4
    if all_health:
        obs[e, a, k] = uf[e, v, HP] / ft[tv, F_HP]
        k += 1
        if shield:
            obs[e, a, k] = uf[e, v, SH] / ft[tv, F_SHIELD]
            k += 1
    if bits > 0:
        obs[e, a, k + tid[e, v]] = 1.0
        k += bits
    return k


@njit(cache=True, _nrt=False)
def compute_obs(uf, ui, ei, utype, ft, tid, walk, height, sight, cfg_i, e, avail, obs):
    """SMAC's observation of every agent of battle e into obs[e] (all zeros for the dead)."""
    n_agents = cfg_i[C_N_AGENTS]
    n_enemies = cfg_i[C_N_ENEMIES]
    n_actions = cfg_i[C_N_ACTIONS]
    bits = cfg_i[C_TYPE_BITS]
    sh_a = cfg_i[C_SHIELD_A]
    sh_e = cfg_i[C_SHIELD_E]
    all_health = cfg_i[C_OBS_ALL_HEALTH]
    move_dim = 4 + 8 * cfg_i[C_OBS_PATHING] + 9 * cfg_i[C_OBS_TERRAIN]
    enemy_dim = 4 + bits + (1 + sh_e) * all_health
    ally_dim = 4 + bits + (1 + sh_a) * all_health + n_actions * cfg_i[C_OBS_LAST_ACTION]
    nx, ny = walk.shape
    obs[e] = 0.0
    for a in range(n_agents):
        if not ui[e, a, ALIVE]:
            if cfg_i[C_OBS_TIMESTEP]:
                obs[e, a, obs.shape[2] - 1] = ei[e, T] / cfg_i[C_LIMIT]  # SMAC appends it for the dead too
            continue
        x = uf[e, a, X]
        y = uf[e, a, Y]
        sr = sight[e, a]
        for m in range(4):
            obs[e, a, m] = 1.0 if avail[e, a, 2 + m] else 0.0
        if cfg_i[C_OBS_PATHING] or cfg_i[C_OBS_TERRAIN]:
            ix = int(x)
            iy = int(y)
            mv = int(MOVE_AMOUNT)
            px = (ix, ix, ix + 2 * mv, ix - 2 * mv, ix + mv, ix - mv, ix + mv, ix - mv, ix)
            py = (iy + 2 * mv, iy - 2 * mv, iy, iy, iy + mv, iy - mv, iy - mv, iy + mv, iy)
            base = 4
            if cfg_i[C_OBS_PATHING]:
                for k in range(8):
                    cx, cy = int(px[k]), int(py[k])
                    inb = 0 <= cx < nx and 0 <= cy < ny
                    obs[e, a, base + k] = (1.0 if walk[cx, cy] else 0.0) if inb else 1.0
                base += 8
            if cfg_i[C_OBS_TERRAIN]:
                for k in range(9):
                    cx, cy = int(px[k]), int(py[k])
                    inb = 0 <= cx < nx and 0 <= cy < ny
                    obs[e, a, base + k] = height[cx, cy] if inb else 1.0
        off = move_dim
        for j in range(n_enemies):
            v = n_agents + j
            if ui[e, v, ALIVE]:
                dx = uf[e, v, X] - x
                dy = uf[e, v, Y] - y
                d = math.hypot(dx, dy)
                if d < sr:
                    _entity_features(obs, uf, ft, utype, tid, e, a, v, off + j * enemy_dim,
                                     1.0 if avail[e, a, 6 + j] else 0.0, d, dx, dy, sr, all_health, sh_e, bits)
        off += n_enemies * enemy_dim
        i = 0
        for v in range(n_agents):
            if v == a:
                continue
            if ui[e, v, ALIVE]:
                dx = uf[e, v, X] - x
                dy = uf[e, v, Y] - y
                d = math.hypot(dx, dy)
                if d < sr:
                    k = _entity_features(obs, uf, ft, utype, tid, e, a, v, off + i * ally_dim, 1.0, d, dx, dy, sr,
                                         all_health, sh_a, bits)
                    if cfg_i[C_OBS_LAST_ACTION] and ui[e, v, LAST_ACTION] >= 0:
                        obs[e, a, k + ui[e, v, LAST_ACTION]] = 1.0
            i += 1
        off += (n_agents - 1) * ally_dim
        ta = utype[e, a]
        if cfg_i[C_OBS_OWN_HEALTH]:
            obs[e, a, off] = uf[e, a, HP] / ft[ta, F_HP]
            off += 1
            if sh_a:
                obs[e, a, off] = uf[e, a, SH] / ft[ta, F_SHIELD]
                off += 1
        if cfg_i[C_OBS_OWN_POS]:  # SMACv2 puts it between the health and the unit type
            obs[e, a, off] = x / cfg_i[C_MAP_X]
            obs[e, a, off + 1] = y / cfg_i[C_MAP_Y]
            off += 2
        if bits > 0:
            obs[e, a, off + tid[e, a]] = 1.0
            off += bits
        if cfg_i[C_OBS_TIMESTEP]:
            obs[e, a, off] = ei[e, T] / cfg_i[C_LIMIT]


@njit(cache=True, _nrt=False)
def compute_state(uf, ui, ei, utype, ft, it, tid, cfg_i, e, obs, state):
    """SMAC's global state of battle e into state[e] (dead units are zeros)."""
    n_agents = cfg_i[C_N_AGENTS]
    n_enemies = cfg_i[C_N_ENEMIES]
    n_actions = cfg_i[C_N_ACTIONS]
    state[e] = 0.0
    if cfg_i[C_OBS_INSTEAD_OF_STATE]:
        od = obs.shape[2]
        for a in range(n_agents):
            for k in range(od):
                state[e, a * od + k] = obs[e, a, k]
        return
    bits = cfg_i[C_TYPE_BITS]
    sh_a = cfg_i[C_SHIELD_A]
    sh_e = cfg_i[C_SHIELD_E]
    cx = cfg_i[C_MAP_X] / 2.0
    cy = cfg_i[C_MAP_Y] / 2.0
    al_dim = 4 + sh_a + bits
    en_dim = 3 + sh_e + bits
    for a in range(n_agents):
        if not ui[e, a, ALIVE]:
            continue
        ta = utype[e, a]
        o = a * al_dim
        state[e, o] = uf[e, a, HP] / ft[ta, F_HP]
        if it[ta, I_KIND] == KIND_MEDIVAC:
            state[e, o + 1] = uf[e, a, EN] / ft[ta, F_MAX_COOLDOWN]
        else:
            state[e, o + 1] = max(uf[e, a, CD], 0.0) / ft[ta, F_MAX_COOLDOWN]
        state[e, o + 2] = (uf[e, a, X] - cx) / cfg_i[C_MAP_X]
        state[e, o + 3] = (uf[e, a, Y] - cy) / cfg_i[C_MAP_Y]
        k = o + 4
        if sh_a:
            state[e, k] = uf[e, a, SH] / ft[ta, F_SHIELD]
            k += 1
        if bits > 0:
            state[e, k + tid[e, a]] = 1.0
    base = n_agents * al_dim
    for j in range(n_enemies):
        v = n_agents + j
        if not ui[e, v, ALIVE]:
            continue
        tv = utype[e, v]
        o = base + j * en_dim
        state[e, o] = uf[e, v, HP] / ft[tv, F_HP]
        state[e, o + 1] = (uf[e, v, X] - cx) / cfg_i[C_MAP_X]
        state[e, o + 2] = (uf[e, v, Y] - cy) / cfg_i[C_MAP_Y]
        k = o + 3
        if sh_e:
            state[e, k] = uf[e, v, SH] / ft[tv, F_SHIELD]
            k += 1
        if bits > 0:
            state[e, k + tid[e, v]] = 1.0
    base += n_enemies * en_dim
    if cfg_i[C_STATE_LAST_ACTION]:
        for a in range(n_agents):
            if ui[e, a, LAST_ACTION] >= 0:
                state[e, base + a * n_actions + ui[e, a, LAST_ACTION]] = 1.0
        base += n_agents * n_actions
    if cfg_i[C_STATE_TIMESTEP]:
        state[e, base] = ei[e, T] / cfg_i[C_LIMIT]


@njit(cache=True, _nrt=False)
def _only_medivacs(ui, utype, it, e, lo, hi):
    for u in range(lo, hi):
        if ui[e, u, ALIVE] and it[utype[e, u], I_KIND] != KIND_MEDIVAC:
            return False
    return True


@njit(cache=True, _nrt=False)
def _reward_and_outcome(uf, ui, ei, utype, ft, it, cfg_i, cfg_f, e):
    """SMAC's shaped reward of the step just simulated, and the game end code."""
    n_agents = cfg_i[C_N_AGENTS]
    n_units = n_agents + cfg_i[C_N_ENEMIES]
    neg = cfg_f[C_NEG_SCALE]
    death_value = cfg_f[C_DEATH_VALUE]
    only_pos = cfg_i[C_REWARD_ONLY_POSITIVE]
    delta_deaths = 0.0
    delta_ally = 0.0
    delta_enemy = 0.0
    n_ally_alive = 0
    n_enemy_alive = 0
    for u in range(n_units):
        hs = uf[e, u, HP] + uf[e, u, SH]
        if ui[e, u, ALIVE]:
            if u < n_agents:
                n_ally_alive += 1
            else:
                n_enemy_alive += 1
        if not ui[e, u, DEATH_SEEN]:
            prev = uf[e, u, PREV_HS]
            if not ui[e, u, ALIVE]:
                ui[e, u, DEATH_SEEN] = 1
                if u < n_agents:
                    ei[e, DEAD_ALLIES] += 1
                    if not only_pos:
                        delta_deaths -= death_value * neg
                    delta_ally += prev * neg
                else:
                    ei[e, DEAD_ENEMIES] += 1
                    delta_deaths += death_value
                    delta_enemy += prev
            else:
                if u < n_agents:
                    delta_ally += neg * (prev - hs)
                else:
                    delta_enemy += prev - hs
        uf[e, u, PREV_HS] = hs
    if cfg_i[C_REWARD_SPARSE]:
        reward = 0.0
    elif only_pos:
        reward = abs(delta_enemy + delta_deaths)
    else:
        reward = delta_enemy + delta_deaths - delta_ally
    mmm = cfg_i[C_MMM]
    code = RUNNING
    if (n_ally_alive == 0 and n_enemy_alive > 0) or (mmm and _only_medivacs(ui, utype, it, e, 0, n_agents)):
        code = LOST
    elif (n_ally_alive > 0 and n_enemy_alive == 0) or (mmm and _only_medivacs(ui, utype, it, e, n_agents, n_units)):
        code = WON
    elif n_ally_alive == 0 and n_enemy_alive == 0:
        code = DRAW
    return reward, code


@njit(cache=True, _nrt=False)
def _observe(uf, ui, ei, utype, ft, it, tid, walk, height, sight, shoot, cfg_i, e, obs, state, avail):
    compute_avail(uf, ui, utype, it, walk, shoot, cfg_i, e, avail)
    compute_obs(uf, ui, ei, utype, ft, tid, walk, height, sight, cfg_i, e, avail, obs)
    compute_state(uf, ui, ei, utype, ft, it, tid, cfg_i, e, obs, state)


def _reset_batch(ft, it, walk, cliff, nav, height, enemy_order, cfg_i, cfg_f,
                 uf, ui, ei, ef, utype, spawn, tid, sight, shoot, rng, order_buf, obs, state, avail):
    """Reset every battle and write its first observation."""
    n_agents = cfg_i[C_N_AGENTS]
    n_units = n_agents + cfg_i[C_N_ENEMIES]
    for e in range(uf.shape[0]):
        reset_env(uf, ui, ei, ef, utype, spawn, tid, sight, shoot, ft, it, enemy_order, cfg_i, cfg_f, rng, e,
                  n_agents, n_units)
        _observe(uf, ui, ei, utype, ft, it, tid, walk, height, sight, shoot, cfg_i, e, obs, state, avail)


@njit(cache=True)
def first_invalid_action(actions, avail):
    """-1 when every action is available, else e * A + a of the first agent whose action is not."""
    n_envs, n_agents, n_actions = avail.shape
    for e in range(n_envs):
        for a in range(n_agents):
            act = actions[e, a]
            if act < 0 or act >= n_actions or not avail[e, a, act]:
                return e * n_agents + a
    return -1


def _step_batch(ft, it, walk, cliff, nav, height, enemy_order, cfg_i, cfg_f,
                uf, ui, ei, ef, utype, spawn, tid, sight, shoot, rng, order_buf, actions,
                obs, state, avail, reward, done, truncated, won, alive, ep_return, ep_length, final_obs,
                final_state):
    """Apply the agents' actions, simulate 8 loops, score, observe, and auto-reset if asked.

    The actions must have passed `first_invalid_action`. Arguments from `uf` on are per battle
    (first axis E), so a caller may run disjoint slices of battles on separate threads.
    """
    n_envs = uf.shape[0]
    n_agents = cfg_i[C_N_AGENTS]
    n_units = n_agents + cfg_i[C_N_ENEMIES]
    idle_attack = int(enemy_order[0]) == EORDER_IDLE_ATTACK
    for e in range(n_envs):
        for a in range(n_agents):
            act = actions[e, a]
            ui[e, a, LAST_ACTION] = act
            if act == 0:
                continue
            if act == 1:
                ui[e, a, ORDER] = ORD_IDLE
                ui[e, a, TARGET] = -1
            elif act < 6:
                dx = (0.0, 0.0, 1.0, -1.0)[act - 2]
                dy = (1.0, -1.0, 0.0, 0.0)[act - 2]
                ui[e, a, ORDER] = ORD_MOVE
                ui[e, a, TARGET] = -1
                uf[e, a, TX] = uf[e, a, X] + dx * MOVE_AMOUNT
                uf[e, a, TY] = uf[e, a, Y] + dy * MOVE_AMOUNT
            elif it[utype[e, a], I_KIND] == KIND_MEDIVAC:
                ui[e, a, ORDER] = ORD_HEAL
                ui[e, a, TARGET] = act - 6
            else:
                ui[e, a, ORDER] = ORD_ATTACK
                ui[e, a, TARGET] = n_agents + act - 6
        if idle_attack:
            order_idle_enemies(uf, ui, utype, it, e, n_agents, n_units)
        for _ in range(STEP_MUL):
            simulate_loop(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, n_agents, n_units, order_buf[e])
        r, code = _reward_and_outcome(uf, ui, ei, utype, ft, it, cfg_i, cfg_f, e)
        ei[e, T] += 1
        ei[e, RESULT] = code
        is_won = code == WON
        if code != RUNNING:
            if cfg_i[C_REWARD_SPARSE]:
                r = 1.0 if code == WON else (-1.0 if code == LOST else 0.0)
            elif code == WON:
                r += cfg_f[C_WIN]
            elif code == LOST:
                r += cfg_f[C_DEFEAT]
        if cfg_i[C_REWARD_SCALE]:
            r /= ef[e, MAX_REWARD] / cfg_f[C_SCALE_RATE]
        ef[e, EP_RETURN] += r
        reward[e] = r
        won[e] = is_won
        terminated = code != RUNNING
        done[e] = terminated or ei[e, T] >= cfg_i[C_LIMIT]
        truncated[e] = done[e] and not terminated
        _observe(uf, ui, ei, utype, ft, it, tid, walk, height, sight, shoot, cfg_i, e, obs, state, avail)
        ep_return[e] = ef[e, EP_RETURN]
        ep_length[e] = ei[e, T]
        final_obs[e] = obs[e]
        final_state[e] = state[e]
        if done[e] and cfg_i[C_AUTORESET]:
            reset_env(uf, ui, ei, ef, utype, spawn, tid, sight, shoot, ft, it, enemy_order, cfg_i, cfg_f, rng, e,
                      n_agents, n_units)
            _observe(uf, ui, ei, utype, ft, it, tid, walk, height, sight, shoot, cfg_i, e, obs, state, avail)
        for a in range(n_agents):
            alive[e, a] = ui[e, a, ALIVE] != 0


def _observe_batch(ft, it, walk, cliff, nav, height, enemy_order, cfg_i, cfg_f,
                   uf, ui, ei, ef, utype, spawn, tid, sight, shoot, rng, order_buf, obs, state, avail):
    """Recompute every battle's observation, state and avail from the unit arrays."""
    for e in range(uf.shape[0]):
        _observe(uf, ui, ei, utype, ft, it, tid, walk, height, sight, shoot, cfg_i, e, obs, state, avail)


# numba's parallel=True loses its threads when loaded from the cache, so the batch kernels are
# cached serial nogil functions, and the Python side runs slices of battles on a thread pool
reset_batch = njit(cache=True, nogil=True)(_reset_batch)
step_batch = njit(cache=True, nogil=True)(_step_batch)
observe_batch = njit(cache=True, nogil=True)(_observe_batch)
