"""Environments marl trains on (imported as marl.envs)."""
