"""The simulator's modules and shared layout: one-way imports, sizes computed once, the bundles' field orders."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from marl.envs.smac import SMACBatch, SMACEnv, core, layout

SMAC_DIR = Path(core.__file__).parent
# a module may import only modules before it: units, then layout and maps, then the phases, the driver, env
IMPORT_ORDER = ["units", "layout", "maps", "kernel_cache", "splitmix", "navigation", "combat", "spawn", "observation",
                "core", "env", "mixture", "pz", "__init__"]


def _smac_imports(path: Path) -> set[str]:
    """The sibling modules a module of envs/smac imports (relative or through marl.envs.smac)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1 or node.module == "marl.envs.smac":
                out.update(a.name for a in node.names if (SMAC_DIR / f"{a.name}.py").exists())
            elif node.module and node.module.startswith("marl.envs.smac."):
                out.add(node.module.split(".")[3])
    return out


def test_every_module_is_placed_in_the_import_order():
    assert sorted(p.stem for p in SMAC_DIR.glob("*.py")) == sorted(IMPORT_ORDER)


@pytest.mark.parametrize("name", IMPORT_ORDER)
def test_imports_run_one_way(name):
    earlier = set(IMPORT_ORDER[:IMPORT_ORDER.index(name)])
    later = _smac_imports(SMAC_DIR / f"{name}.py") - earlier
    assert not later, f"{name} imports {sorted(later)}, which come after it"


@pytest.mark.parametrize("map_name, options", [
    ("3s5z", {}), ("MMM2", {"obs_last_action": True, "state_timestep_number": True}),
    ("2c_vs_64zg", {"obs_pathing_grid": True, "obs_terrain_height": True, "obs_timestep_number": True}),
    ("protoss_5_vs_5", {"obs_all_health": False, "obs_own_health": False, "state_last_action": False}),
    ("zerg_10_vs_11", {"obs_instead_of_state": True}),
])
def test_sizes_are_computed_once_for_python_and_kernels(map_name, options):
    b = SMACBatch(map_name, 2, **options)
    sizes = layout.obs_sizes(b.cfg_i)
    assert b.sizes == sizes
    assert tuple(b.cfg_i[layout.C_SIZES:layout.C_SIZES + len(sizes)]) == sizes  # where the kernels read them
    b.seed(0)
    b.reset()
    assert b.obs.shape == (2, b.n_agents, sizes.obs) and b.state.shape == (2, sizes.state)
    assert sizes.obs == (sizes.move + b.n_enemies * sizes.enemy + (b.n_agents - 1) * sizes.ally + sizes.own
                         + sizes.timestep)
    env = SMACEnv(map_name, **options)
    assert (env.get_obs_move_feats_size(), env.get_obs_enemy_feats_size(), env.get_obs_ally_feats_size(),
            env.get_obs_own_feats_size()) == (sizes.move, (b.n_enemies, sizes.enemy), (b.n_agents - 1, sizes.ally),
                                              sizes.own)
    if not options.get("obs_instead_of_state"):
        assert (env.get_ally_num_attributes(), env.get_enemy_num_attributes()) == (sizes.state_ally,
                                                                                   sizes.state_enemy)


def test_the_attack_actions_start_after_the_six_others():
    assert layout.N_NO_ATTACK_ACTIONS == 6  # SMAC: no-op, stop, north, south, east, west
    assert (layout.ACT_NO_OP, layout.ACT_STOP, layout.ACT_NORTH, layout.ACT_SOUTH, layout.ACT_EAST,
            layout.ACT_WEST) == tuple(range(6))
    assert SMACBatch("3m").n_actions == layout.N_NO_ATTACK_ACTIONS + 3


def test_the_bundles_reach_the_kernels_in_their_field_order():
    b = SMACBatch("3m", 2)
    assert all(x is y for x, y in zip(b._kernel_tables, b.tables)) and len(b._kernel_tables) == len(b.tables)
    assert [id(x) for x in b._kernel_battles] == [id(getattr(b, f)) for f in layout.Battles._fields]
    assert [id(x) for x in b._kernel_tables] == [id(getattr(b, f)) for f in layout.Tables._fields]
    b.seed(0)
    b.reset()
    out = b.step(np.ones((2, 3), np.int64))
    assert list(out) == list(layout.StepOut._fields)  # the step kernel unpacks the outputs in this order
