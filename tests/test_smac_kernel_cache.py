"""numba's on-disk cache of the SMAC kernels follows changes in any kernel module (envs/smac/kernel_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from marl.envs.smac import core, kernel_cache

CALLEE = "from numba import njit\n\n\n@njit(cache=True)\ndef value():\n    return {}\n"
CALLER = """
import sys

from numba import njit

from marl.envs.smac import kernel_cache

from . import callee


@njit(cache=True)
def twice():
    return 2 * callee.value()


if {guard}:
    kernel_cache.keep_in_step([callee, sys.modules[__name__]])
"""
RUN = ("from kc_pkg import guarded, unguarded\n"
       "print(guarded.twice(), unguarded.twice(), sum(guarded.twice.stats.cache_hits.values()))")


def _run(cwd) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}  # the cache beside the sources
    return subprocess.run([sys.executable, "-c", RUN], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_callee_changed_in_another_module_recompiles_its_cached_callers(tmp_path):
    pkg = tmp_path / "kc_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "callee.py").write_text(CALLEE.format(1))
    (pkg / "guarded.py").write_text(textwrap.dedent(CALLER.format(guard=True)))
    (pkg / "unguarded.py").write_text(textwrap.dedent(CALLER.format(guard=False)))
    assert _run(tmp_path) == "2 2 0"  # compiled and saved (the last number: the guarded caller's cache hits)
    assert _run(tmp_path) == "2 2 1"  # loaded from the cache
    (pkg / "callee.py").write_text(CALLEE.format(7))
    # numba alone keeps the caller's old machine code; the guard drops it
    assert _run(tmp_path) == "14 2 0"
    assert _run(tmp_path) == "14 2 1"
    assert len((pkg / "__pycache__" / kernel_cache.STAMP_NAME).read_text()) == 64


def test_every_kernel_module_is_guarded():
    names = {m.__name__.rsplit(".", 1)[1] for m in core.KERNEL_MODULES}
    assert names == {"units", "layout", "maps", "splitmix", "navigation", "combat", "spawn", "observation", "core"}
    kernels = kernel_cache.cached_kernels(core.KERNEL_MODULES)
    assert {k.py_func.__name__ for k in kernels} >= {"_step_batch", "simulate_loop", "reset_env", "compute_obs",
                                                      "move_toward", "rand_u01", "nav_distances"}
    assert len({k._cache.cache_path for k in kernels}) == 1  # one stamp covers them all
