"""Compiled programs a long run releases before the process runs out of memory mappings.

Every compiled XLA CPU program holds a few memory mappings until its jitted function's cache
lets it go. A process that compiles many programs and keeps their functions alive (an
experiment's tuning search fits a model per setting: the synthetic nonlinear_2 experiment
reached 35,197 mappings, measured in session 31) approaches Linux's default
``vm.max_map_count`` (65,530), past which the next ``mmap`` inside XLA's compiler fails: a
segmentation fault, not an error, and the run is lost. ``jax.clear_caches()`` frees them; live
arrays stay valid, and later calls compile again. Every ``run_*`` of :mod:`mtbkd_jax.infer`
checks before it compiles (``prepare_data``), so a user's own loop of fits is kept under the
limit as the experiments are.
"""

from __future__ import annotations

import gc

import jax

__all__ = ["MAPPINGS_LIMIT", "memory_mappings", "release_if_crowded"]

MAPPINGS_LIMIT = 30_000  # about half of Linux's default vm.max_map_count


def memory_mappings() -> int:
    """The process's memory mappings (lines of ``/proc/self/maps``; 0 where there is none)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux: no such limit to keep under
        return 0


def release_compiled_programs() -> None:
    """Every jitted function's compiled programs released (``jax.clear_caches()``)."""
    jax.clear_caches()
    gc.collect()


def release_if_crowded(limit: int = MAPPINGS_LIMIT) -> bool:
    """Release the compiled programs once the process holds more than ``limit`` memory
    mappings; whether it did."""
    if memory_mappings() <= limit:
        return False
    release_compiled_programs()
    return True
