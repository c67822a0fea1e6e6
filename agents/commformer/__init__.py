"""CommFormer: a learned sparse communication graph with temporal gates, trained bi-level with PPO."""

from .graph import CommGraph, Gates, apply_gates, k_of
from .learner import CommFormer

__all__ = ["CommFormer", "CommGraph", "Gates", "apply_gates", "k_of"]
