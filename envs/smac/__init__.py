"""The embedded SMAC-compatible simulator: SMAC v1 maps, generated marine battles and SMACv2 scenarios without
StarCraft II; several of them in one VecEnv (SMACMixture)."""

from .env import DEFAULTS, SMACBatch, SMACEnv, SMACError, SMACVecEnv
from .maps import generator_names, get_map, is_scenario, map_names, marine_sizes, scenario_names
from .mixture import SMACMixture
from .pz import SMACParallelEnv

__all__ = ["DEFAULTS", "SMACBatch", "SMACEnv", "SMACError", "SMACMixture", "SMACParallelEnv", "SMACVecEnv",
           "generator_names", "get_map", "is_scenario", "map_names", "marine_sizes", "scenario_names"]
