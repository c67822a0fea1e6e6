"""The batch driver of the embedded SMAC simulator: E battles stepped in lockstep over flat arrays.

One environment step applies the agents' actions as orders, runs 8 game loops (combat.simulate_loop),
scores the step SMAC's way (and the safety objective beside it), observes (observation.observe) and,
when asked, resets a finished battle at once (spawn.reset_env). The phases live in their own modules;
layout.py names the arrays they share.

What the real game does that this does not model: the weapon's damage point and projectile travel (damage
is instant unless the option weapon_delay is on), turning (units face anything at once unless the option
turning is on), the medivac's acceleration (full speed at once unless the option acceleration is on), SC2's
exact pathfinding (units walk straight and slide along walls) and its exact target-priority table (threats first,
then the nearest, as described in docs/smac_rules.md).

Imports run one way: units, then layout and maps, then the phase kernels (splitmix, navigation, combat,
spawn, observation), then this driver, then env (tests/test_smac_layout.py checks it).
"""

from __future__ import annotations

import sys

from numba import njit

from . import combat, kernel_cache, layout, maps, navigation, observation, spawn, splitmix, units
from .combat import order_idle_enemies, simulate_loop
from .layout import (
    ACT_NO_OP,
    ACT_NORTH,
    ACT_STOP,
    ALIVE,
    C_AUTORESET,
    C_DEATH_VALUE,
    C_DEFEAT,
    C_LIMIT,
    C_MMM,
    C_N_AGENTS,
    C_N_ENEMIES,
    C_NEG_SCALE,
    C_REWARD_ONLY_POSITIVE,
    C_REWARD_SCALE,
    C_REWARD_SPARSE,
    C_SCALE_RATE,
    C_TURNING,
    C_WEAPON_DELAY,
    C_WIN,
    DEAD_ALLIES,
    DEAD_ENEMIES,
    DEATH_SEEN,
    DRAW,
    EP_RETURN,
    HP,
    LAST_ACTION,
    LOST,
    MAX_REWARD,
    MOVE_AMOUNT,
    N_NO_ATTACK_ACTIONS,
    ORD_ATTACK,
    ORD_HEAL,
    ORD_IDLE,
    ORD_MOVE,
    ORDER,
    PREV_HS,
    RESULT,
    RUNNING,
    SAFETY_SCALE,
    SH,
    TARGET,
    TX,
    TY,
    WON,
    T,
    X,
    Y,
)
from .maps import EORDER_IDLE_ATTACK
from .observation import observe
from .spawn import reset_env
from .units import F_HP, F_SHIELD, I_KIND, KIND_MEDIVAC, STEP_MUL


@njit(cache=True, _nrt=False)
def _only_medivacs(ui, utype, it, e, lo, hi):
    for u in range(lo, hi):
        if ui[e, u, ALIVE] and it[utype[e, u], I_KIND] != KIND_MEDIVAC:
            return False
    return True


@njit(cache=True, _nrt=False)
def _safety(uf, ui, utype, ft, e, n_agents):
    """The safety objective of the step just simulated, and its episode return so far (docs/smac_rules.md
    section 17): -20 x (team health and shields lost in the step) / (the team's full health and shields).

    Read before _reward_and_outcome moves PREV_HS and DEATH_SEEN on. An ally first seen dead loses its
    whole previous hs; regained hs (shield regeneration, heals) counts positive. The per-step values add
    up to -20 x (full - hs the living allies keep) / full, the return given here, in [-20, 0].
    """
    lost = 0.0
    kept = 0.0
    full = 0.0
    for u in range(n_agents):
        tu = utype[e, u]
        full += ft[tu, F_HP] + ft[tu, F_SHIELD]
        if ui[e, u, DEATH_SEEN]:
            continue
        if ui[e, u, ALIVE]:
            hs = uf[e, u, HP] + uf[e, u, SH]
            lost += uf[e, u, PREV_HS] - hs
            kept += hs
        else:
            lost += uf[e, u, PREV_HS]
    return -SAFETY_SCALE * lost / full, -SAFETY_SCALE * (full - kept) / full


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


def _reset_batch(tables, battles, obs, state, avail):
    """Reset every battle and write its first observation."""
    for e in range(battles[0].shape[0]):  # battles[0]: uf
        reset_env(tables, battles, e)
        observe(tables, battles, e, obs, state, avail)


@njit(cache=True, _nrt=False)
def apply_actions(uf, ui, utype, it, actions, e, n_agents):
    """Turn battle e's agent actions into unit orders (no-op keeps the current order)."""
    for a in range(n_agents):
        act = actions[e, a]
        ui[e, a, LAST_ACTION] = act
        if act == ACT_NO_OP:
            continue
        if act == ACT_STOP:
            ui[e, a, ORDER] = ORD_IDLE
            ui[e, a, TARGET] = -1
        elif act < N_NO_ATTACK_ACTIONS:
            dx = (0.0, 0.0, 1.0, -1.0)[act - ACT_NORTH]  # north, south, east, west
            dy = (1.0, -1.0, 0.0, 0.0)[act - ACT_NORTH]
            ui[e, a, ORDER] = ORD_MOVE
            ui[e, a, TARGET] = -1
            uf[e, a, TX] = uf[e, a, X] + dx * MOVE_AMOUNT
            uf[e, a, TY] = uf[e, a, Y] + dy * MOVE_AMOUNT
        elif it[utype[e, a], I_KIND] == KIND_MEDIVAC:
            ui[e, a, ORDER] = ORD_HEAL
            ui[e, a, TARGET] = act - N_NO_ATTACK_ACTIONS
        else:
            ui[e, a, ORDER] = ORD_ATTACK
            ui[e, a, TARGET] = n_agents + act - N_NO_ATTACK_ACTIONS


def _step_batch(tables, battles, actions, out):
    """Apply the agents' actions, simulate 8 loops, score, observe, and auto-reset if asked.

    `tables` and `battles` are layout.Tables and layout.Battles as plain tuples, `out` a layout.StepOut
    tuple. The actions must have passed `first_invalid_action`. Everything but `tables` is per battle
    (first axis E), so a caller may run disjoint slices of battles on separate threads.
    """
    ft, it, walk, cliff, nav, height, enemy_order, cfg_i, cfg_f = tables
    uf, ui, ei, ef, utype, spawn, tid, sight, shoot, rng, order_buf = battles
    (obs, state, avail, reward, done, truncated, won, alive, ep_return, ep_length, final_obs, final_state, safety,
     safety_return) = out
    n_envs = uf.shape[0]
    n_agents = cfg_i[C_N_AGENTS]
    n_units = n_agents + cfg_i[C_N_ENEMIES]
    idle_attack = int(enemy_order[0]) == EORDER_IDLE_ATTACK
    weapon_delay = cfg_i[C_WEAPON_DELAY]
    turning = cfg_i[C_TURNING]
    for e in range(n_envs):
        apply_actions(uf, ui, utype, it, actions, e, n_agents)
        if idle_attack:
            order_idle_enemies(uf, ui, utype, it, e, n_agents, n_units)
        for _ in range(STEP_MUL):
            simulate_loop(uf, ui, utype, ft, it, walk, cliff, nav, rng, e, n_agents, n_units, order_buf[e],
                          weapon_delay, turning)
        safety[e], safety_return[e] = _safety(uf, ui, utype, ft, e, n_agents)
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
        observe(tables, battles, e, obs, state, avail)
        ep_return[e] = ef[e, EP_RETURN]
        ep_length[e] = ei[e, T]
        final_obs[e] = obs[e]
        final_state[e] = state[e]
        if done[e] and cfg_i[C_AUTORESET]:
            reset_env(tables, battles, e)
            observe(tables, battles, e, obs, state, avail)
        for a in range(n_agents):
            alive[e, a] = ui[e, a, ALIVE] != 0


def _observe_batch(tables, battles, obs, state, avail):
    """Recompute every battle's observation, state and avail from the unit arrays."""
    for e in range(battles[0].shape[0]):  # battles[0]: uf
        observe(tables, battles, e, obs, state, avail)


# numba's parallel=True loses its threads when loaded from the cache, so the batch kernels are
# cached serial nogil functions, and the Python side runs slices of battles on a thread pool
reset_batch = njit(cache=True, nogil=True)(_reset_batch)
step_batch = njit(cache=True, nogil=True)(_step_batch)
observe_batch = njit(cache=True, nogil=True)(_observe_batch)

# numba checks a cached kernel against its own file only, so every kernel's cache goes when any of these changes
KERNEL_MODULES = [units, layout, maps, splitmix, navigation, combat, spawn, observation, sys.modules[__name__]]
kernel_cache.keep_in_step(KERNEL_MODULES)
