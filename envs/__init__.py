"""Environments marl trains on (imported as marl.envs)."""

if __name__ != "marl.envs":
    # the same files under two module names would share (and poison) numba's on-disk cache
    raise ImportError(f"import this package as marl.envs, not {__name__}")
