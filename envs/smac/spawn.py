"""Spawn kernels of the embedded SMAC simulator: a battle put back at its start, and SMACv2's per-episode draw
of teams and start positions.

SMACv2's generator scenarios draw each episode's teams and start positions at reset, from the battle's own
stream (`draw_generator_battle`). Units that SMACv2 spawns on one point (the surrounded layout) stand on a
sunflower spiral around it, since SC2 would not stack them either.
"""

from __future__ import annotations

import math

from numba import njit

from .layout import (
    ALIVE,
    ATTACKER,
    C_DEATH_VALUE,
    C_GENERATOR,
    C_MAP_X,
    C_MAP_Y,
    C_MAX_REWARD,
    C_MIN_ATTACK_RANGE,
    C_N_AGENTS,
    C_N_ENEMIES,
    C_POOL_ALLY,
    C_POOL_CUM,
    C_POOL_ENEMY,
    C_POOL_EXCEPTION,
    C_POOL_RANK,
    C_REFLECT_P,
    C_UNIT_RANGES,
    C_WIN,
    CD,
    DEATH_SEEN,
    EN,
    EP_RETURN,
    FLIGHT,
    HP,
    HX,
    HY,
    LAST_ACTION,
    LAYOUT,
    LAYOUT_REFLECT,
    LAYOUT_SURROUNDED,
    MAX_REWARD,
    MISSILE_AT,
    NEI,
    NODMG,
    ORD_AMOVE,
    ORD_HOLD,
    ORD_HUNT,
    ORD_IDLE,
    ORDER,
    PREV_HS,
    RESULT,
    RUNNING,
    SH,
    SHOOT_RANGE,
    SHOT_AT,
    SIGHT_RANGE,
    TARGET,
    TX,
    TY,
    VEL,
    WINDUP,
    X,
    Y,
)
from .maps import EORDER_ATTACK_MOVE, EORDER_ATTACK_MOVE_SEGMENT, EORDER_HOLD, EORDER_HUNT
from .splitmix import rand_u01
from .units import F_HP, F_RADIUS, F_RANGE, F_SHIELD, F_SIGHT, I_KIND, KIND_MEDIVAC, MEDIVAC_ENERGY_START

NO_DAMAGE_YET = 1.0e9
SURROUND_OFFSET = 2.0  # SMACv2's surrounded layout: the diagonals start this far from the centre
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
SPIRAL_MIN_GAP = 1.546  # nearest-neighbour distance of the spiral points sqrt(k + 0.5) at k * GOLDEN_ANGLE


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
def _face_opponents(uf, e, n_agents, n_units):
    """Each unit starts facing the centre of the other side's start positions (read only with the option turning;
    the game's facing at creation is not in SMAC's code or data, so this is a choice: units first meet facing
    each other, as they do after walking toward each other)."""
    ax = ay = bx = by = 0.0
    for u in range(n_agents):
        ax += uf[e, u, X]
        ay += uf[e, u, Y]
    for u in range(n_agents, n_units):
        bx += uf[e, u, X]
        by += uf[e, u, Y]
    ax, ay = ax / n_agents, ay / n_agents
    bx, by = bx / (n_units - n_agents), by / (n_units - n_agents)
    for u in range(n_units):
        ox, oy = (bx, by) if u < n_agents else (ax, ay)
        dx, dy = ox - uf[e, u, X], oy - uf[e, u, Y]
        d = math.sqrt(dx * dx + dy * dy)
        uf[e, u, HX], uf[e, u, HY] = (dx / d, dy / d) if d > 0.0 else (1.0, 0.0)


@njit(cache=True, _nrt=False)
def reset_env(tables, battles, e):
    """Put battle e back at its spawn state (generator maps: a freshly drawn one) and give the enemies orders.

    `tables` and `battles` are the layout.Tables and layout.Battles tuples the batch kernels take.
    """
    ft, it, walk, cliff, nav, height, enemy_order, cfg_i, cfg_f = tables
    uf, ui, ei, ef, utype, spawn, tid, sight, shoot, rng, order_buf = battles
    n_agents = cfg_i[C_N_AGENTS]
    n_units = n_agents + cfg_i[C_N_ENEMIES]
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
        uf[e, u, WINDUP] = 0.0
        uf[e, u, FLIGHT] = 0.0
        uf[e, u, VEL] = 0.0  # every unit starts at rest
        ui[e, u, SHOT_AT] = -1
        ui[e, u, MISSILE_AT] = -1
    _face_opponents(uf, e, n_agents, n_units)
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
