"""C-MORL: a Pareto front of team policies (Stage 1 population, Stage 2 constrained extension)."""

from .learner import CMORL

__all__ = ["CMORL"]
