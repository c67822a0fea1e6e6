"""The embedded SMAC-compatible simulator: SMAC v1 maps without StarCraft II."""

from .env import DEFAULTS, SMACBatch, SMACEnv, SMACError, SMACVecEnv
from .maps import get_map, map_names
from .pz import SMACParallelEnv

__all__ = ["DEFAULTS", "SMACBatch", "SMACEnv", "SMACError", "SMACParallelEnv", "SMACVecEnv", "get_map", "map_names"]
