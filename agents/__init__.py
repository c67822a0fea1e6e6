"""Learners marl trains (imported as marl.agents)."""
