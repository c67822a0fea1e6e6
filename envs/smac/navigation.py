"""Navigation kernels of the embedded SMAC simulator: distances, walkable cells, a unit's walk toward a point
and the push that keeps ground units apart, plus the grid path lengths a walk follows around walls.

Units walk straight while they can and slide along walls; where a wall stands between a unit and its goal
it follows the map's precomputed shortest grid path (`nav_tables`) instead, e.g. to the ramps of a cliff.
With the env option acceleration a medivac starts from rest and gains its acceleration each loop up to full speed
(ground units reach theirs within 0.04 loops in the game, so they walk at full speed at once). SC2's own
pathfinding is not modelled; turning lives in combat.py.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit

from .layout import ALIVE, VEL, X, Y
from .maps import get_map
from .units import F_ACCEL, F_RADIUS, F_SPEED, I_CLIFF_WALKER, I_FLYING, I_KIND, KIND_STATIC


@njit(cache=True, _nrt=False, inline="always")
def dist(uf, e, u, v):
    """Centre-to-centre distance of units u and v of battle e."""
    return math.hypot(uf[e, v, X] - uf[e, u, X], uf[e, v, Y] - uf[e, u, Y])


@njit(cache=True, _nrt=False, inline="always")
def walkable(x, y, ti, it, walk, cliff):
    """Whether a unit of type ti may stand at (x, y): flyers anywhere on the map, cliff walkers on cliffs too."""
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
    if walkable(x + sx, y + sy, ti, it, walk, cliff):
        uf[e, u, X] = x + sx
        uf[e, u, Y] = y + sy
        return True
    if sx != 0.0 and walkable(x + sx, y, ti, it, walk, cliff):
        uf[e, u, X] = x + sx
    elif sy != 0.0 and walkable(x, y + sy, ti, it, walk, cliff):
        uf[e, u, Y] = y + sy
    return False


@njit(cache=True, _nrt=False)
def move_toward(uf, utype, ft, it, walk, cliff, nav, e, u, gx, gy, stop_dist):
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
    if ft[ti, F_ACCEL] > 0.0:  # the option acceleration (the medivac): from its last loop's walk, up to full speed
        speed = min(uf[e, u, VEL] + ft[ti, F_ACCEL], speed)
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


@njit(cache=True, _nrt=False)
def collide(uf, ui, utype, ft, it, walk, cliff, e, n_units):
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
            if pu > 0.0 and walkable(ux, uy, tu, it, walk, cliff):
                uf[e, u, X] = ux
                uf[e, u, Y] = uy
            if pv > 0.0 and walkable(vx, vy, tv, it, walk, cliff):
                uf[e, v, X] = vx
                uf[e, v, Y] = vy


@lru_cache(maxsize=8)
def nav_tables(map_name: str) -> np.ndarray:
    """int16[2, C, C]: grid path lengths of a map for ground units and for cliff walkers (cached per map)."""
    m = get_map(map_name)
    cliff = nav_distances(m.cliff_pathing) if (m.cliff_pathing != m.pathing).any() else None
    ground = nav_distances(m.pathing)
    return np.stack([ground, ground if cliff is None else cliff])
