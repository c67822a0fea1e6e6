"""SMAC map definitions: roster, spawn placement, enemy orders and pathing, read from packaged data.

The data files (`data/maps.json`, `data/pathing/<map>.txt`) are facts extracted from the SMAC map
files. Agent order follows SMAC: allies sorted by unit type (SMAC's `*_RL` type ids are alphabetical),
then by x and y of their spawn position; enemies in the order the map spawns them.

SMACv2's generator scenarios (`protoss_5_vs_5` ... `zerg_20_vs_23`) play on the flat 32x32 map; their
teams and start positions are drawn per episode by the kernels (spawn.draw_generator_battle), so their
SMACMap carries the unit pool and its weights instead of a fixed roster.

Generated marine battles `Nm` and `Nm_vs_Mm` (1 <= N, M <= 30, N != M in the second form) play on the
marine maps' layout (docs/smac_rules.md section 19): every SMAC v1 marine map is the same 32x32 grid
with the allies spawned at (9, 16), the enemies at (23, 16) attack-moving there. The v1 names (3m, 8m,
25m, 5m_vs_6m, 8m_vs_9m, 10m_vs_11m, 27m_vs_30m) keep SMAC's own definitions; the others are made from
3m's entry with the team sizes and the episode limit of `marine_limit`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

import numpy as np

from .units import MAP_UNIT_NAMES, TYPE_INDEX, TYPE_NAMES, UNIT_TYPES

# enemy order modes (kernel constants); IDLE_ATTACK: SMACv2's "idle enemies attack the closest ally"
EORDER_ATTACK_MOVE, EORDER_ATTACK_MOVE_SEGMENT, EORDER_HUNT, EORDER_HOLD, EORDER_IDLE_ATTACK = 0, 1, 2, 3, 4

# SMACv2 generator scenarios (its README's table): race -> (race code, unit pool in SMACv2's unit-type-bit
# order, the pool's types that may not make up a whole team)
GENERATOR_RACES: dict[str, tuple[str, tuple[str, str, str], tuple[str, ...]]] = {
    "protoss": ("P", ("stalker", "zealot", "colossus"), ()),
    "terran": ("T", ("marine", "marauder", "medivac"), ("medivac",)),
    "zerg": ("Z", ("zergling", "hydralisk", "baneling"), ("baneling",)),
}
GENERATOR_WEIGHTS = (0.45, 0.45, 0.10)  # per pool entry, in the order above
GENERATOR_SIZES = ((5, 5), (10, 10), (20, 20), (10, 11), (20, 23))
GENERATOR_LIMIT = 200
GENERATOR_PATHING = "pathing/32x32_flat.txt"
REFLECT_PROBABILITY = 0.5  # surrounded_and_reflect: reflect with p, surrounded otherwise

# generated marine battles: the team sizes allowed, the v1 map whose layout they copy, and ODIS's episode
# limits of its marine task sets (4m-12m); marine_limit says what happens beyond them
MARINE_MIN, MARINE_MAX = 1, 30
MARINE_TEMPLATE = "3m"
ODIS_MARINE_LIMITS = {4: 75, 5: 90, 6: 100, 7: 110, 9: 120, 10: 120, 11: 150, 12: 150}
_MARINE_NAME = re.compile(r"([0-9]+)m(?:_vs_([0-9]+)m)?")


class MapError(ValueError):
    """An unknown map name or unusable map data."""


@dataclass(frozen=True)
class SMACMap:
    """Everything the simulator needs to know about one SMAC map."""

    name: str
    n_agents: int
    n_enemies: int
    limit: int
    a_race: str
    b_race: str
    unit_type_bits: int
    map_type: str
    map_x: int
    map_y: int
    unit_type: np.ndarray  # int[U]: index into units.TYPE_NAMES, allies first
    type_id: np.ndarray  # int[U]: SMAC's one-hot index (ally and enemy rules differ)
    spawn: np.ndarray  # float[U, 2]
    enemy_order: np.ndarray  # float[5]: mode, x0, y0, x1, y1
    pathing: np.ndarray  # bool[X, Y]: walkable for ground units
    cliff_pathing: np.ndarray  # bool[X, Y]: walkable for cliff walkers (colossus)
    height: np.ndarray  # float[X, Y]: terrain height as SMAC normalises it (/255)
    generator: bool = False  # SMACv2: teams and start positions drawn per episode
    pool: tuple[str, ...] = ()  # generator unit pool, in unit-type-bit order
    pool_weights: tuple[float, ...] = ()
    pool_exceptions: tuple[str, ...] = ()  # pool types a team may not consist of only

    @property
    def n_units(self) -> int:
        """Allies plus enemies."""
        return self.n_agents + self.n_enemies

    def unit_names(self, team: str) -> list[str]:
        """Unit type names of the allies ("ally") or enemies ("enemy"), in slot order (generator maps: the
        roster before the first reset; the kernels draw each episode's own)."""

        sl = slice(0, self.n_agents) if team == "ally" else slice(self.n_agents, self.n_units)
        return [TYPE_NAMES[t].removesuffix("_rl") for t in self.unit_type[sl]]


def _data_text(relpath: str) -> str:
    return resources.files(__package__).joinpath("data", relpath).read_text()


@lru_cache(maxsize=1)
def _maps_json() -> dict:
    return json.loads(_data_text("maps.json"))


def map_names() -> list[str]:
    """The SMAC v1 maps the simulator plays, in alphabetical order."""
    return sorted(k for k, v in _maps_json().items() if "n_agents" in v)


def generator_names() -> list[str]:
    """The SMACv2 generator scenarios, race by race in SMACv2's table order (protoss_5_vs_5, ...)."""
    return [f"{race}_{a}_vs_{n}" for race in GENERATOR_RACES for a, n in GENERATOR_SIZES]


def scenario_names() -> list[str]:
    """Every named map the simulator plays: the SMAC v1 maps, then the SMACv2 generator scenarios (the
    generated marine battles, a pattern, are not listed: see marine_sizes)."""
    return map_names() + generator_names()


MARINE_PATTERN = f"Nm, Nm_vs_Mm ({MARINE_MIN} <= N, M <= {MARINE_MAX}, N != M)"


def marine_sizes(name: str) -> tuple[int, int] | None:
    """(allies, enemies) of a marine battle's name (`Nm`, `Nm_vs_Mm`), None for a name of another form.

    A name of the form with a size out of range, a leading zero or equal teams written `Nm_vs_Nm` raises
    MapError in one line.
    """
    match = _MARINE_NAME.fullmatch(name)
    if match is None:
        return None
    a, b = match.group(1), match.group(2) or match.group(1)
    if any(len(k) > 1 and k.startswith("0") for k in (a, b)):
        raise MapError(f"marine battle {name!r} has a leading zero; accepted: {MARINE_PATTERN}")
    n, m = int(a), int(b)
    if not (MARINE_MIN <= n <= MARINE_MAX and MARINE_MIN <= m <= MARINE_MAX):
        raise MapError(f"marine battle {name!r} is out of range; accepted: {MARINE_PATTERN}")
    if match.group(2) is not None and n == m:
        raise MapError(f"marine battle {name!r} has equal teams; write {n}m (accepted: {MARINE_PATTERN})")
    return n, m


def marine_limit(n_agents: int, n_enemies: int) -> int:
    """Episode limit of a generated marine battle (docs/smac_rules.md section 19).

    Nm: ODIS's limit where its marine sets define one (4m 75, 5m 90, 6m 100, 7m 110, 9m and 10m 120,
    11m and 12m 150); below them 60, as 3m; above them 150, as 11m, 12m and 25m (8m's 120 is SMAC's and
    fits). Nm_vs_Mm: the limit of the larger team's Km, K = max(N, M).
    """
    k = max(n_agents, n_enemies)
    if k in ODIS_MARINE_LIMITS:
        return ODIS_MARINE_LIMITS[k]
    return 60 if k < min(ODIS_MARINE_LIMITS) else 120 if k == 8 else 150


def is_scenario(name: str) -> bool:
    """Whether the simulator plays `name`: a named map or a generated marine battle (MapError: a bad size)."""
    return name in scenario_names() or marine_sizes(name) is not None


def parse_pathing(text: str, map_x: int, map_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Walkable grid bool[X, Y] and cliff levels int[X, Y] from a pathing file's text."""
    rows = [line for line in text.splitlines() if line and not line.startswith("# ")]
    walk_rows, level_rows = rows[:map_y], rows[map_y:2 * map_y]
    if len(level_rows) != map_y or any(len(r) != map_x for r in walk_rows + level_rows):
        raise MapError(f"pathing grid is not {map_x}x{map_y} plus its cliff grid")
    # the first printed row is y = map_y - 1
    walk = np.array([[c == "." for c in r] for r in walk_rows[::-1]]).T
    level = np.array([[int(c) for c in r] for r in level_rows[::-1]]).T
    return walk, level


def cliff_walkable(walk: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Cells a cliff walker may stand on: walkable ones, plus cliff faces between two levels.

    A blocked cell is a cliff face when the walkable cells within two cells of it stand on at
    least two different cliff levels; blocked cells elsewhere (map borders, walls) stay blocked.
    """
    out = walk.copy()
    nx, ny = walk.shape
    for x in range(nx):
        for y in range(ny):
            if walk[x, y]:
                continue
            x0, x1, y0, y1 = max(x - 2, 0), min(x + 3, nx), max(y - 2, 0), min(y + 3, ny)
            levels = np.unique(level[x0:x1, y0:y1][walk[x0:x1, y0:y1]])
            out[x, y] = len(levels) >= 2
    return out


def _lattice(n: int, spacing: float, cx: float, cy: float, ok) -> list[tuple[float, float]]:
    """The n hexagonal-lattice points nearest (cx, cy) that satisfy ok(x, y)."""
    pts = []
    reach = int(math.ceil(math.sqrt(n))) + 6
    for j in range(-reach, reach + 1):
        for i in range(-reach, reach + 1):
            x = cx + (i + 0.5 * (j % 2)) * spacing
            y = cy + j * spacing * math.sqrt(3) / 2
            pts.append((math.hypot(x - cx, y - cy), math.atan2(y - cy, x - cx), x, y))
    pts.sort()
    chosen = [(x, y) for _, _, x, y in pts if ok(x, y)]
    if len(chosen) < n:
        raise MapError(f"no room to place {n} units around ({cx}, {cy})")
    return chosen[:n]


def _enemy_type_id(map_type: str, name: str, ally_order: list[str]) -> int:
    # SMAC reads enemy types from SC2's own ids: zealot (73) before stalker (74), unlike the allies
    if map_type == "stalkers_and_zealots":
        return {"zealot": 0, "stalker": 1}[name]
    return ally_order.index(name) if name in ally_order else 0


@cache
def get_map(name: str) -> SMACMap:
    """The SMACMap called `name`; an unknown name raises MapError listing the known maps."""
    if name in generator_names():
        return _generator_map(name)
    names = map_names()
    if name in names:
        m = _maps_json()[name]
    elif marine_sizes(name) is not None:
        m = _marine_entry(*marine_sizes(name))
    else:
        raise MapError(f"unknown SMAC map {name!r}; known maps: {', '.join(scenario_names())} and the marine "
                       f"battles {MARINE_PATTERN}")
    map_x, map_y = m["map_size"]
    walk, level = parse_pathing(_data_text(m["pathing"]), map_x, map_y)
    cliff = cliff_walkable(walk, level)

    allies, enemies = [], []
    for group in m["spawns"]:
        base = MAP_UNIT_NAMES[group["unit"]]
        for _ in range(group["count"]):
            if group["team"] == "ally":
                allies.append((base, tuple(group["at"])))
            else:
                enemies.append((base, tuple(group["at"])))
    allies.sort(key=lambda u: u[0])  # by (RL) unit type; positions break ties below
    n_allies = len(allies)
    ally_order = sorted({b for b, _ in allies})

    def type_of(base: str, team: str) -> int:
        if team == "ally" and base == "medivac":
            return TYPE_INDEX["medivac_rl"]
        return TYPE_INDEX[base]

    roster = [(type_of(b, "ally"), at) for b, at in allies] + [(type_of(b, "enemy"), at) for b, at in enemies]
    unit_type = np.array([t for t, _ in roster], np.int64)
    type_id = np.array([ally_order.index(b) for b, _ in allies]
                       + [_enemy_type_id(m["map_type"], b, ally_order) for b, _ in enemies], np.int64)
    if m["unit_type_bits"] == 0:
        type_id[:] = 0

    spawn = np.zeros((len(roster), 2))
    points: dict[tuple[float, float], list[int]] = {}
    for slot, (_, at) in enumerate(roster):
        points.setdefault(at, []).append(slot)

    for (cx, cy), slots in points.items():
        kinds = [UNIT_TYPES[TYPE_NAMES[unit_type[s]]] for s in slots]
        spacing = 2 * max(k.radius for k in kinds) + 0.05
        grid = cliff if all(k.cliff_walker for k in kinds) else walk

        def ok(x, y, grid=grid):
            return 0 <= x < map_x and 0 <= y < map_y and bool(grid[int(x), int(y)])

        for s, (x, y) in zip(slots, _lattice(len(slots), spacing, cx, cy, ok)):
            spawn[s] = (x, y)

    # SMAC numbers the agents by (unit type, x, y) of where they stand at the start
    names = [TYPE_NAMES[t].removesuffix("_rl") for t in unit_type]
    order = sorted(range(n_allies), key=lambda s: (names[s], spawn[s, 0], spawn[s, 1]))
    order += list(range(n_allies, len(roster)))
    unit_type, type_id, spawn = unit_type[order], type_id[order], spawn[order]

    enemy_order = np.zeros(5)
    orders = m.get("enemy_orders_at_spawn", [])
    if not orders:
        enemy_order[0] = EORDER_HOLD
    elif not isinstance(orders[0]["target"], list):
        if "segment" in orders[0]["target"]:
            (ax0, ay0), (ax1, ay1) = allies_spawn_points(m)
            enemy_order[:] = (EORDER_ATTACK_MOVE_SEGMENT, ax0, ay0, ax1, ay1)
        else:
            enemy_order[0] = EORDER_HUNT
    else:
        enemy_order[:3] = (EORDER_ATTACK_MOVE, *orders[0]["target"])

    return SMACMap(
        name=name, n_agents=m["n_agents"], n_enemies=m["n_enemies"], limit=m["limit"],
        a_race=m["a_race"], b_race=m["b_race"], unit_type_bits=m["unit_type_bits"],
        map_type=m["map_type"], map_x=map_x, map_y=map_y, unit_type=unit_type, type_id=type_id,
        spawn=spawn, enemy_order=enemy_order, pathing=walk, cliff_pathing=cliff,
        height=level * 16.0 / 255.0,
    )


def _marine_entry(n_agents: int, n_enemies: int) -> dict:
    """A maps.json entry for N marines against M: 3m's layout (grid, spawn points, enemy order), these sizes."""
    m = json.loads(json.dumps(_maps_json()[MARINE_TEMPLATE]))  # a deep copy: the cached entry stays as it is
    m.update(n_agents=n_agents, n_enemies=n_enemies, limit=marine_limit(n_agents, n_enemies))
    for group in m["spawns"]:
        group["count"] = n_agents if group["team"] == "ally" else n_enemies
    return m


def _generator_map(name: str) -> SMACMap:
    """A SMACv2 scenario: sizes and unit pool; its pre-reset roster (the pool's first type at SMACv2's
    fixed start points) stands only until the first reset draws a battle."""
    race, sizes = name.split("_", 1)
    n_agents, n_enemies = (int(k) for k in sizes.split("_vs_"))
    code, pool, exceptions = GENERATOR_RACES[race]
    walk, level = parse_pathing(_data_text(GENERATOR_PATHING), 32, 32)
    first = pool[0]
    unit_type = np.array([TYPE_INDEX[first]] * (n_agents + n_enemies), np.int64)
    spawn = np.array([(8.0, 16.0)] * n_agents + [(24.0, 16.0)] * n_enemies)
    enemy_order = np.array([EORDER_IDLE_ATTACK, 0.0, 0.0, 0.0, 0.0])
    return SMACMap(
        name=name, n_agents=n_agents, n_enemies=n_enemies, limit=GENERATOR_LIMIT, a_race=code, b_race=code,
        unit_type_bits=3, map_type=f"{race}_gen", map_x=32, map_y=32, unit_type=unit_type,
        type_id=np.zeros(n_agents + n_enemies, np.int64), spawn=spawn, enemy_order=enemy_order, pathing=walk,
        cliff_pathing=walk.copy(), height=level * 16.0 / 255.0, generator=True, pool=pool,
        pool_weights=GENERATOR_WEIGHTS, pool_exceptions=exceptions,
    )


def allies_spawn_points(m: dict) -> list[tuple[float, float]]:
    """The distinct spawn points of the ally groups of a raw maps.json entry, in file order."""
    out: list[tuple[float, float]] = []
    for group in m["spawns"]:
        at = tuple(group["at"])
        if group["team"] == "ally" and at not in out:
            out.append(at)
    return out
