"""Unit types of the embedded SMAC simulator: SC2 engine stats packed into arrays for the kernels.

Values are the engine's (LotV data, normal game speed, 16 game loops per game-second) with SMAC's own
map overrides for the ally copies (`*_RL` units): the ally medivac flies at 2.75, and both hydralisk
copies have 80 HP. Times are converted to game loops and speeds to distance per loop here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOOPS_PER_SECOND = 16.0
STEP_MUL = 8

# attribute bits
LIGHT, ARMORED, BIOLOGICAL, MECHANICAL, MASSIVE, STRUCTURE = 1, 2, 4, 8, 16, 32

# what a unit's weapon can hit
HITS_GROUND, HITS_AIR = 1, 2

# behaviour families the kernels branch on
KIND_NORMAL, KIND_MEDIVAC, KIND_BANELING, KIND_COLOSSUS, KIND_STATIC = 0, 1, 2, 3, 4

# columns of the float table
(F_HP, F_SHIELD, F_ARMOR, F_RADIUS, F_SPEED, F_SIGHT, F_DAMAGE, F_ATTACKS, F_BONUS, F_RANGE,
 F_COOLDOWN, F_MAX_COOLDOWN, F_REGEN, F_SPLASH, F_DAMAGE_POINT, F_MISSILE_SPEED, F_DECAY, F_TURN,
 F_TURN_COS, F_TURN_SIN, F_ARC_COS, F_BURST_PERIOD, F_ACCEL) = range(23)
N_FLOAT_COLS = 23
# columns of the int table
I_ATTR, I_BONUS_ATTR, I_HITS, I_KIND, I_FLYING, I_CLIFF_WALKER, I_RACE = range(7)
N_INT_COLS = 7

ZERG_REGEN_PER_S = 0.2734
# a zerg structure off creep (behaviour ZergBuildingNotOnCreep) takes 1 damage every 0.3332 game-seconds, through
# armor; SMAC's 2s_vs_1sc spine crawler stands on a map without creep (docs/smac_rules.md section 18)
OFF_CREEP_DAMAGE_PERIOD_S = 0.3332
SHIELD_REGEN_PER_S = 2.0
SHIELD_REGEN_DELAY_S = 10.0
# the medivac's acceleration, per normal game-second: the engine's (unitdata.xml `Acceleration`, 2.3125 in liberty,
# overridden to 2.25 in swarm, unchanged later) and SMAC's ally copy's (its map's Medivac_RL sets 2.3125 with its
# speed 2.75; ../shared/reference/smac/unit_stats.csv)
MEDIVAC_ACCELERATION = 2.25
MEDIVAC_RL_ACCELERATION = 2.3125
# turning (unitdata.xml `TurningRate`, degrees per normal game-second; weapondata.xml `ArcSlop`, `Arc`): SMAC's
# units all turn at the engine's 999.8437 but the colossus (the CUnit default, 720); a weapon fires when its
# target lies within Arc / 2 + ArcSlop of the unit's facing (Arc 0 but the colossus's 90)
TURNING_RATE_DEG_S = 999.8437
ARC_SLOP_DEG = 11.25
MEDIVAC_ENERGY_START = 50.0
MEDIVAC_ENERGY_MAX = 200.0
MEDIVAC_ENERGY_REGEN_PER_S = 0.5625
MEDIVAC_HEAL_PER_S = 9.0  # 12.6 HP/s at "Faster" = 9 HP per normal game-second
MEDIVAC_HEAL_PER_ENERGY = 3.0
MEDIVAC_HEAL_RANGE = 4.0
BANELING_SPLASH_RADIUS = 2.2
COLOSSUS_BEAM_HALF_LENGTH = 1.4  # the thermal lance sweeps a 2.8 long, 0.3 wide line at its target
COLOSSUS_BEAM_HALF_WIDTH = 0.15


@dataclass(frozen=True)
class UnitType:
    """One SC2 unit type as the simulator models it."""

    name: str
    sc2_id: int
    race: str  # "P", "T" or "Z"
    hp: float
    shield: float
    armor: float
    attributes: int
    radius: float
    speed: float  # per normal game-second
    sight: float
    damage: float
    attacks: int
    bonus: float
    bonus_attr: int
    weapon_range: float
    cooldown: float  # normal game-seconds
    hits: int
    kind: int
    smac_max_cooldown: float  # SMAC's constant for the state's cooldown feature
    flying: bool = False
    cliff_walker: bool = False
    splash: float = 0.0
    # the weapon's damage point (normal game-seconds from the start of an attack to the shot) and its missile's
    # speed (per normal game-second; 0: the hit is instant), used with the env option weapon_delay
    damage_point: float = 0.0
    missile_speed: float = 0.0
    off_creep: bool = False  # a zerg structure placed off creep: it decays (OFF_CREEP_DAMAGE_PERIOD_S)
    # a channelled burst (normal game-seconds between its two hits; 0: all hits land at once), used with the env
    # option weapon_delay: the zealot's PsiBladesBurst (effectdata.xml: PeriodCount 2, periods 0 and 0.28, Channeled)
    burst_period: float = 0.0
    # with the env option turning: degrees per normal game-second (0: the unit faces anything at once and its
    # weapon never waits to face its target) and the weapon's firing arc (degrees, besides ARC_SLOP_DEG)
    turning_rate: float = TURNING_RATE_DEG_S
    weapon_arc: float = 0.0
    # with the env option acceleration: speed gained per normal game-second (0: full speed at once; the game's
    # ground units accelerate at 1000, full speed within 0.04 loops, so only the medivac's is kept)
    acceleration: float = 0.0


UNIT_TYPES: dict[str, UnitType] = {
    u.name: u
    for u in [
        UnitType("marine", 48, "T", 45, 0, 0, LIGHT | BIOLOGICAL, 0.375, 2.25, 9, 6, 1, 0, 0, 5,
                 0.8608, HITS_GROUND | HITS_AIR, KIND_NORMAL, 15, damage_point=0.05),
        UnitType("marauder", 51, "T", 125, 0, 1, ARMORED | BIOLOGICAL, 0.5625, 2.25, 10, 10, 1, 10,
                 ARMORED, 6, 1.5, HITS_GROUND, KIND_NORMAL, 25, missile_speed=20.0),
        UnitType("medivac", 54, "T", 150, 0, 1, ARMORED | MECHANICAL, 0.75, 2.5, 11, 0, 0, 0, 0,
                 MEDIVAC_HEAL_RANGE, 0, 0, KIND_MEDIVAC, 200, flying=True, turning_rate=0.0,
                 acceleration=MEDIVAC_ACCELERATION),
        UnitType("medivac_rl", 54, "T", 150, 0, 1, ARMORED | MECHANICAL, 0.75, 2.75, 11, 0, 0, 0, 0,
                 MEDIVAC_HEAL_RANGE, 0, 0, KIND_MEDIVAC, 200, flying=True, turning_rate=0.0,
                 acceleration=MEDIVAC_RL_ACCELERATION),
        UnitType("stalker", 74, "P", 80, 80, 1, ARMORED | MECHANICAL, 0.625, 2.953125, 10, 13, 1, 5,
                 ARMORED, 6, 1.8701, HITS_GROUND | HITS_AIR, KIND_NORMAL, 35, damage_point=0.167,
                 missile_speed=18.75),
        UnitType("zealot", 73, "P", 100, 50, 1, LIGHT | BIOLOGICAL, 0.5, 2.25, 9, 8, 2, 0, 0, 0.1,
                 1.2, HITS_GROUND, KIND_NORMAL, 22, burst_period=0.28),
        UnitType("colossus", 4, "P", 200, 150, 1, ARMORED | MECHANICAL | MASSIVE, 1.0, 2.25, 10, 10, 2,
                 5, LIGHT, 7, 1.5, HITS_GROUND, KIND_COLOSSUS, 24, cliff_walker=True, damage_point=0.0832,
                 turning_rate=720.0, weapon_arc=90.0),
        UnitType("hydralisk", 107, "Z", 80, 0, 0, LIGHT | BIOLOGICAL, 0.625, 2.25, 9, 12, 1, 0, 0, 5,
                 0.825, HITS_GROUND | HITS_AIR, KIND_NORMAL, 10, damage_point=0.14, missile_speed=40.0),
        UnitType("zergling", 105, "Z", 35, 0, 0, LIGHT | BIOLOGICAL, 0.375, 2.953125, 8, 5, 1, 0, 0,
                 0.1, 0.696, HITS_GROUND, KIND_NORMAL, 11, damage_point=0.167),
        UnitType("baneling", 9, "Z", 30, 0, 0, BIOLOGICAL, 0.375, 2.5, 8, 16, 1, 19, LIGHT, 0.25, 0,
                 HITS_GROUND, KIND_BANELING, 1, splash=BANELING_SPLASH_RADIUS, turning_rate=0.0),
        UnitType("spine_crawler", 98, "Z", 300, 0, 2, ARMORED | BIOLOGICAL | STRUCTURE, 1.125, 0, 11,
                 25, 1, 5, ARMORED, 7, 1.85, HITS_GROUND, KIND_STATIC, 15, damage_point=0.3332,
                 off_creep=True, turning_rate=0.0),
    ]
}

# maps.json names units the SC2 way; the ally copies are SMAC's *_RL units
MAP_UNIT_NAMES = {
    "Marine": "marine", "Marauder": "marauder", "Medivac": "medivac", "Stalker": "stalker",
    "Zealot": "zealot", "Colossus": "colossus", "Hydralisk": "hydralisk", "Zergling": "zergling",
    "Baneling": "baneling", "SpineCrawler": "spine_crawler",
}

TYPE_NAMES: list[str] = list(UNIT_TYPES)
TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(TYPE_NAMES)}
_RACE_CODE = {"P": 0, "T": 1, "Z": 2}


def unit_tables() -> tuple[np.ndarray, np.ndarray]:
    """Float and int tables, one row per unit type in TYPE_NAMES order, in kernel units (loops)."""
    ft = np.zeros((len(TYPE_NAMES), N_FLOAT_COLS), np.float64)
    it = np.zeros((len(TYPE_NAMES), N_INT_COLS), np.int64)
    for i, name in enumerate(TYPE_NAMES):
        u = UNIT_TYPES[name]
        ft[i, F_HP] = u.hp
        ft[i, F_SHIELD] = u.shield
        ft[i, F_ARMOR] = u.armor
        ft[i, F_RADIUS] = u.radius
        ft[i, F_SPEED] = u.speed / LOOPS_PER_SECOND
        ft[i, F_SIGHT] = u.sight
        ft[i, F_DAMAGE] = u.damage
        ft[i, F_ATTACKS] = u.attacks
        ft[i, F_BONUS] = u.bonus
        ft[i, F_RANGE] = u.weapon_range
        ft[i, F_COOLDOWN] = u.cooldown * LOOPS_PER_SECOND
        ft[i, F_MAX_COOLDOWN] = u.smac_max_cooldown
        ft[i, F_REGEN] = ZERG_REGEN_PER_S / LOOPS_PER_SECOND if u.race == "Z" else 0.0
        ft[i, F_SPLASH] = u.splash
        ft[i, F_DAMAGE_POINT] = u.damage_point * LOOPS_PER_SECOND
        ft[i, F_MISSILE_SPEED] = u.missile_speed / LOOPS_PER_SECOND
        ft[i, F_DECAY] = 1.0 / (OFF_CREEP_DAMAGE_PERIOD_S * LOOPS_PER_SECOND) if u.off_creep else 0.0
        # turning: radians a loop (0: no turning), that angle's cosine and sine, and the cosine of the firing arc
        ft[i, F_TURN] = np.radians(u.turning_rate) / LOOPS_PER_SECOND
        ft[i, F_TURN_COS], ft[i, F_TURN_SIN] = np.cos(ft[i, F_TURN]), np.sin(ft[i, F_TURN])
        ft[i, F_ARC_COS] = np.cos(np.radians(u.weapon_arc / 2.0 + ARC_SLOP_DEG))
        if u.burst_period > 0.0 and (u.attacks != 2 or u.damage_point > 0.0 or u.missile_speed > 0.0
                                     or u.kind != KIND_NORMAL):
            raise ValueError(f"unit type {name!r}: a burst (burst_period > 0) is two instant hits of a normal "
                             f"weapon without a damage point; got attacks={u.attacks}, damage_point={u.damage_point}, "
                             f"missile_speed={u.missile_speed}, kind={u.kind}")
        ft[i, F_BURST_PERIOD] = u.burst_period * LOOPS_PER_SECOND
        ft[i, F_ACCEL] = u.acceleration / LOOPS_PER_SECOND ** 2  # distance per loop gained each loop
        it[i, I_ATTR] = u.attributes
        it[i, I_BONUS_ATTR] = u.bonus_attr
        it[i, I_HITS] = u.hits
        it[i, I_KIND] = u.kind
        it[i, I_FLYING] = int(u.flying)
        it[i, I_CLIFF_WALKER] = int(u.cliff_walker)
        it[i, I_RACE] = _RACE_CODE[u.race]
    return ft, it
