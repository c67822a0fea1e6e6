"""Observation kernels of the embedded SMAC simulator: SMAC's available actions, per-agent observation and
global state of a battle, laid out in the block sizes that layout.obs_sizes computed into cfg_i.
"""

from __future__ import annotations

import math

from numba import njit

from .layout import (
    ACT_EAST,
    ACT_NO_OP,
    ACT_NORTH,
    ACT_SOUTH,
    ACT_STOP,
    ACT_WEST,
    ALIVE,
    C_ALLY_DIM,
    C_ENEMY_DIM,
    C_LIMIT,
    C_MAP_X,
    C_MAP_Y,
    C_MMM,
    C_MOVE_DIM,
    C_N_ACTIONS,
    C_N_AGENTS,
    C_N_ENEMIES,
    C_OBS_ALL_HEALTH,
    C_OBS_INSTEAD_OF_STATE,
    C_OBS_LAST_ACTION,
    C_OBS_OWN_HEALTH,
    C_OBS_OWN_POS,
    C_OBS_PATHING,
    C_OBS_TERRAIN,
    C_OBS_TIMESTEP,
    C_SHIELD_A,
    C_SHIELD_E,
    C_STATE_ALLY_DIM,
    C_STATE_ENEMY_DIM,
    C_STATE_LAST_ACTION,
    C_STATE_TIMESTEP,
    C_TYPE_BITS,
    CD,
    EN,
    HP,
    LAST_ACTION,
    MOVE_AMOUNT,
    N_NO_ATTACK_ACTIONS,
    SH,
    T,
    X,
    Y,
)
from .navigation import dist
from .units import F_HP, F_MAX_COOLDOWN, F_SHIELD, I_KIND, KIND_MEDIVAC


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
            avail[e, a, ACT_NO_OP] = True
            continue
        avail[e, a, ACT_STOP] = True
        avail[e, a, ACT_NORTH] = _can_move(uf, walk, e, a, 0, 1)
        avail[e, a, ACT_SOUTH] = _can_move(uf, walk, e, a, 0, -1)
        avail[e, a, ACT_EAST] = _can_move(uf, walk, e, a, 1, 0)
        avail[e, a, ACT_WEST] = _can_move(uf, walk, e, a, -1, 0)
        if it[utype[e, a], I_KIND] == KIND_MEDIVAC:
            if cfg_i[C_MMM]:
                for j in range(n_agents):
                    if ui[e, j, ALIVE] and it[utype[e, j], I_KIND] != KIND_MEDIVAC:
                        if dist(uf, e, a, j) <= shoot[e, a]:
                            avail[e, a, N_NO_ATTACK_ACTIONS + j] = True
        else:
            for j in range(n_enemies):
                v = n_agents + j
                if ui[e, v, ALIVE] and dist(uf, e, a, v) <= shoot[e, a]:
                    avail[e, a, N_NO_ATTACK_ACTIONS + j] = True


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
    bits = cfg_i[C_TYPE_BITS]
    sh_a = cfg_i[C_SHIELD_A]
    sh_e = cfg_i[C_SHIELD_E]
    all_health = cfg_i[C_OBS_ALL_HEALTH]
    move_dim = cfg_i[C_MOVE_DIM]
    enemy_dim = cfg_i[C_ENEMY_DIM]
    ally_dim = cfg_i[C_ALLY_DIM]
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
            obs[e, a, m] = 1.0 if avail[e, a, ACT_NORTH + m] else 0.0
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
                    seen = 1.0 if avail[e, a, N_NO_ATTACK_ACTIONS + j] else 0.0  # SMAC's "attackable" flag
                    _entity_features(obs, uf, ft, utype, tid, e, a, v, off + j * enemy_dim, seen, d, dx, dy, sr,
                                     all_health, sh_e, bits)
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
    al_dim = cfg_i[C_STATE_ALLY_DIM]
    en_dim = cfg_i[C_STATE_ENEMY_DIM]
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
def observe(tables, battles, e, obs, state, avail):
    """Battle e's available actions, observations and state, in that order (the obs reads the avail).

    `tables` and `battles` are the layout.Tables and layout.Battles tuples the batch kernels take.
    """
    ft, it, walk, cliff, nav, height, enemy_order, cfg_i, cfg_f = tables
    uf, ui, ei, ef, utype, spawn, tid, sight, shoot, rng, order_buf = battles
    compute_avail(uf, ui, utype, it, walk, shoot, cfg_i, e, avail)
    compute_obs(uf, ui, ei, utype, ft, tid, walk, height, sight, cfg_i, e, avail, obs)
    compute_state(uf, ui, ei, utype, ft, it, tid, cfg_i, e, obs, state)
