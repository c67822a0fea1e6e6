"""Learners marl trains (imported as marl.agents)."""

if __name__ != "marl.agents":
    # the same files under two module names would share (and poison) numba's on-disk cache
    raise ImportError(f"import this package as marl.agents, not {__name__}")
