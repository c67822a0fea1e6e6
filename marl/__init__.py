"""marl: multi-agent reinforcement learning with learned communication."""

__version__ = "0.1.0"
