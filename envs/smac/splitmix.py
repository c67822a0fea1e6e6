"""splitmix64: each battle's own stream of uniform doubles, one uint64 state per battle (`rng[E]`)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, _nrt=False, inline="always")
def rand_u01(rng, e):
    """splitmix64: next uniform double in [0, 1) from env e's own stream."""
    s = rng[e] + np.uint64(0x9E3779B97F4A7C15)
    rng[e] = s
    z = s
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
