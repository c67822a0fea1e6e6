"""MRA: one policy for teams of any size (relational encoder, latent modes, game-conditioned prior)."""

from .learner import MRA

__all__ = ["MRA"]
