"""The simulator's data layout, shared by the kernels and the Python side: array fields, codes, action numbers,
configuration slots, the observation sizes and the two bundles of arrays the batch kernels take.

Layout: per-unit floats `uf[E, U, NUF]`, per-unit ints `ui[E, U, NUI]`, per-env ints `ei[E, NEI]`, per-env
floats `ef[E, NEF]` and one splitmix64 state per env (`rng[E]`), so that each battle's randomness is its own:
the same seed gives the same battle whatever E is and whatever other battles run beside it. Units [0, A) are
the agents, [A, U) the enemies.

The batch kernels take `Tables` (read-only, shared by every battle) and `Battles` (the per-battle arrays,
first axis E) as plain tuples in these field orders: numba types a plain tuple of arrays as fast as separate
arguments, while a namedtuple costs about a microsecond more per call, 3% of a 3s5z step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# per-unit float fields
# WINDUP: loops left of the weapon's damage point before the shot; FLIGHT: loops left before the missile in flight
# hits (both 0 unless the option weapon_delay is on); HX, HY: the unit vector the unit faces (read only with the
# option turning; a vector rather than an angle, so that turning needs no trigonometry); VEL: the distance the unit
# walked in its last turn, from which it accelerates (read only with the option acceleration, for the medivac)
X, Y, HP, SH, EN, CD, TX, TY, NODMG, PREV_HS, WINDUP, FLIGHT, HX, HY, VEL = range(15)
NUF = 15
# per-unit int fields; SHOT_AT: the target of the attack winding up, MISSILE_AT: of the missile in flight (-1: none)
ALIVE, ORDER, TARGET, DEATH_SEEN, LAST_ACTION, ATTACKER, SHOT_AT, MISSILE_AT = range(8)
NUI = 8
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

# SMAC's actions: no-op (the dead's only action), stop, move north/south/east/west, then one per target:
# action N_NO_ATTACK_ACTIONS + j attacks enemy j (a medivac's heals ally j)
ACT_NO_OP, ACT_STOP, ACT_NORTH, ACT_SOUTH, ACT_EAST, ACT_WEST = range(6)
N_NO_ATTACK_ACTIONS = 6

# the safety objective's scale: an episode's safety return is -SAFETY_SCALE x the fraction of the team's health and
# shields lost (docs/smac_rules.md section 17), so it lies in [-20, 0] as the combat return lies in [0, ~20]
SAFETY_SCALE = 20.0

# SMAC's fixed ranges, unless unit ranges are on; the distance of a move order
SIGHT_RANGE = 9.0
SHOOT_RANGE = 6.0
MOVE_AMOUNT = 2.0

# integer configuration, cfg_i[...]
(C_N_AGENTS, C_N_ENEMIES, C_N_ACTIONS, C_LIMIT, C_SHIELD_A, C_SHIELD_E, C_TYPE_BITS, C_OBS_ALL_HEALTH,
 C_OBS_OWN_HEALTH, C_OBS_LAST_ACTION, C_OBS_PATHING, C_OBS_TERRAIN, C_OBS_TIMESTEP, C_STATE_LAST_ACTION,
 C_STATE_TIMESTEP, C_OBS_INSTEAD_OF_STATE, C_REWARD_SPARSE, C_REWARD_ONLY_POSITIVE, C_REWARD_SCALE,
 C_MMM, C_AUTORESET, C_MAP_X, C_MAP_Y, C_OBS_OWN_POS, C_GENERATOR, C_UNIT_RANGES) = range(26)
# the generator's unit pool, 3 entries each: ally and enemy unit type, "may not make a whole team", and the
# ally type's rank among SMAC's alphabetical *_RL type ids (agents are numbered by it)
C_POOL_ALLY, C_POOL_ENEMY, C_POOL_EXCEPTION, C_POOL_RANK = 26, 29, 32, 35
# the observation's and state's block sizes, written by write_obs_sizes (the ObsSizes fields, in order)
C_SIZES = 38
# float configuration, cfg_f[...]; C_POOL_CUM: cumulative pool weights (3)
C_DEATH_VALUE, C_WIN, C_DEFEAT, C_NEG_SCALE, C_SCALE_RATE, C_MAX_REWARD, C_MIN_ATTACK_RANGE, C_REFLECT_P = range(8)
C_POOL_CUM = 8
N_CFG_F = 11


class ObsSizes(NamedTuple):
    """Sizes of SMAC's observation blocks (per agent) and of its state, for one map and option set."""

    move: int  # available moves, then the pathing grid and terrain heights if on
    enemy: int  # per enemy
    ally: int  # per other ally
    own: int  # own health, shield, position (SMACv2) and unit type; not the timestep
    timestep: int  # 1 when the observation ends with the timestep
    obs: int  # the whole observation
    state_ally: int  # per ally in the state
    state_enemy: int  # per enemy in the state
    state: int  # the whole state


# where the kernels read each size: cfg_i[C_SIZES + k] for ObsSizes field k
(C_MOVE_DIM, C_ENEMY_DIM, C_ALLY_DIM, C_OWN_DIM, C_TIMESTEP_DIM, C_OBS_DIM, C_STATE_ALLY_DIM, C_STATE_ENEMY_DIM,
 C_STATE_DIM) = range(C_SIZES, C_SIZES + len(ObsSizes._fields))
# 1: damage lands after the weapon's damage point and its missile's flight (env option weapon_delay)
C_WEAPON_DELAY = C_SIZES + len(ObsSizes._fields)
# 1: units turn at their turning rate and fire only when facing their target (env option turning)
C_TURNING = C_WEAPON_DELAY + 1
N_CFG_I = C_TURNING + 1


def obs_sizes(cfg_i: np.ndarray) -> ObsSizes:
    """The observation and state sizes that the flags and counts in cfg_i give (SMAC's get_obs_size etc.)."""
    n_agents, n_enemies, n_actions = int(cfg_i[C_N_AGENTS]), int(cfg_i[C_N_ENEMIES]), int(cfg_i[C_N_ACTIONS])
    bits, sh_a, sh_e = int(cfg_i[C_TYPE_BITS]), int(cfg_i[C_SHIELD_A]), int(cfg_i[C_SHIELD_E])
    all_health, own_health = int(cfg_i[C_OBS_ALL_HEALTH]), int(cfg_i[C_OBS_OWN_HEALTH])
    move = 4 + 8 * int(cfg_i[C_OBS_PATHING]) + 9 * int(cfg_i[C_OBS_TERRAIN])
    enemy = 4 + bits + (1 + sh_e) * all_health
    ally = 4 + bits + (1 + sh_a) * all_health + n_actions * int(cfg_i[C_OBS_LAST_ACTION])
    own = bits + (1 + sh_a) * own_health + 2 * int(cfg_i[C_OBS_OWN_POS])
    timestep = int(cfg_i[C_OBS_TIMESTEP])
    obs = move + n_enemies * enemy + (n_agents - 1) * ally + own + timestep
    state_ally, state_enemy = 4 + sh_a + bits, 3 + sh_e + bits
    if cfg_i[C_OBS_INSTEAD_OF_STATE]:
        state = n_agents * obs
    else:
        state = (n_agents * state_ally + n_enemies * state_enemy
                 + n_agents * n_actions * int(cfg_i[C_STATE_LAST_ACTION]) + int(cfg_i[C_STATE_TIMESTEP]))
    return ObsSizes(move, enemy, ally, own, timestep, obs, state_ally, state_enemy, state)


def write_obs_sizes(cfg_i: np.ndarray) -> ObsSizes:
    """Compute obs_sizes(cfg_i) once and store it in cfg_i's size slots, where the kernels read it."""
    sizes = obs_sizes(cfg_i)
    cfg_i[C_SIZES:C_SIZES + len(sizes)] = sizes
    return sizes


class Tables(NamedTuple):
    """The read-only arrays every battle of a batch shares (passed to the batch kernels as one tuple)."""

    ft: np.ndarray  # float[types, N_FLOAT_COLS]: unit type stats (units.unit_tables)
    it: np.ndarray  # int[types, N_INT_COLS]
    walk: np.ndarray  # bool[X, Y]: walkable for ground units
    cliff: np.ndarray  # bool[X, Y]: walkable for cliff walkers
    nav: np.ndarray  # int16[2, C, C]: grid path lengths, ground and cliff walkers (navigation.nav_tables)
    height: np.ndarray  # float[X, Y]: terrain height
    enemy_order: np.ndarray  # float[5]: the enemies' order mode and its points (maps.EORDER_*)
    cfg_i: np.ndarray  # int[N_CFG_I]: counts, option flags, generator pool, observation sizes
    cfg_f: np.ndarray  # float[N_CFG_F]: reward settings, min attack range, generator weights


class Battles(NamedTuple):
    """The arrays of E battles, first axis E (passed to the batch kernels as one tuple; slices run apart)."""

    uf: np.ndarray  # float[E, U, NUF]
    ui: np.ndarray  # int[E, U, NUI]
    ei: np.ndarray  # int[E, NEI]
    ef: np.ndarray  # float[E, NEF]
    utype: np.ndarray  # int[E, U]: unit type (SMACv2: drawn per episode)
    spawn: np.ndarray  # float[E, U, 2]: start positions
    tid: np.ndarray  # int[E, U]: SMAC's unit-type one-hot index
    sight: np.ndarray  # float[E, U]
    shoot: np.ndarray  # float[E, U]
    rng: np.ndarray  # uint64[E]: splitmix64 states
    order_buf: np.ndarray  # int[E, U]: scratch for the units' random acting order


class StepOut(NamedTuple):
    """The arrays a batch step writes, first axis E (passed to the step kernel as one tuple)."""

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    truncated: np.ndarray
    won: np.ndarray
    alive: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    final_obs: np.ndarray
    final_state: np.ndarray
    safety: np.ndarray  # the safety objective's reward of the step (section 17)
    safety_return: np.ndarray  # and of the episode so far
