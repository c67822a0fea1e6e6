"""The embedded SMAC-compatible simulator: SMAC v1 maps and SMACv2 scenarios without StarCraft II."""

from .env import DEFAULTS, SMACBatch, SMACEnv, SMACError, SMACVecEnv
from .maps import generator_names, get_map, map_names, scenario_names
from .pz import SMACParallelEnv

__all__ = ["DEFAULTS", "SMACBatch", "SMACEnv", "SMACError", "SMACParallelEnv", "SMACVecEnv", "generator_names",
           "get_map", "map_names", "scenario_names"]
