"""numba's on-disk cache of the simulator's kernels, kept in step with all of their sources.

numba checks a cached function against its own source file only. A kernel whose callee lives in another
module (the batch step calls into combat, navigation, spawn and observation; every kernel reads constants
from units and layout) would load its old machine code, with the old callee compiled in, after that other
module changed. So the cached kernels are dropped together whenever any kernel module's source changes:
a fingerprint of the sources they were built from is kept in a stamp file beside the cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

import numba
from numba.core.dispatcher import Dispatcher

STAMP_NAME = "kernel_sources.sha256"


def sources_fingerprint(modules: list[ModuleType]) -> str:
    """sha256 of numba's version and of every module's name and source bytes."""
    h = hashlib.sha256(numba.__version__.encode())
    for m in modules:
        h.update(m.__name__.encode())
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


def cached_kernels(modules: list[ModuleType]) -> list[Dispatcher]:
    """The numba functions defined in `modules` whose compiled code numba keeps on disk (cache=True)."""
    out = []
    for m in modules:
        for obj in vars(m).values():
            # Dispatcher._cache is numba's per-function cache; its cache_path and flush() are its interface
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == m.__name__ and obj._cache.cache_path:
                out.append(obj)
    return out


def keep_in_step(modules: list[ModuleType]) -> bool:
    """Drop every cached kernel of `modules` if their sources changed since the cache was built; True if so.

    The cache is flushed before the new stamp is written, so a process that starts in between flushes too
    rather than loading old code. A cache directory that cannot be written leaves numba's own behaviour.
    """
    kernels = cached_kernels(modules)
    if not kernels:
        return False
    fingerprint = sources_fingerprint(modules)
    stamp = Path(kernels[0]._cache.cache_path) / STAMP_NAME
    try:
        if stamp.read_text() == fingerprint:
            return False
    except OSError:
        pass  # no stamp yet: a fresh cache, or one built before this check existed
    for k in kernels:
        k._cache.flush()
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f"{STAMP_NAME}.{os.getpid()}")
        tmp.write_text(fingerprint)
        os.replace(tmp, stamp)  # atomic: a reader sees the old stamp or the new one
    except OSError:
        pass
    return True
