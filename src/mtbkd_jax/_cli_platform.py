"""The CLI's ``--platform``: the JAX platform a command runs on.

The demo runs on the CPU unless told otherwise. Its student has 1,210 weights and its batches
are of 150 to 600 examples, so on a GPU every step waits on kernel launches rather than
arithmetic, and the demo's ~800 XLA programs compile more slowly there. On an H200 machine
the demo's first seven rows took 172 s on the GPU against 154 s on 2 of its CPU cores
(``docs/benchmarks.md``, "GPU check, 2026-12-04"). The digits and synthetic experiments, whose
students are as small (not measured on a GPU), run on the CPU too; DeepLoc and Fashion-MNIST
keep JAX's choice (a GPU if there is one). Each registry entry says which
(:class:`mtbkd_jax.experiments.Experiment`'s ``platform``). ``--platform auto`` leaves the
choice to JAX, and a ``JAX_PLATFORMS`` variable in the environment is obeyed as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

__all__ = ["PLATFORMS", "check_platform", "on_platform", "platform_wanted"]

# JAX's platform names ("gpu" is JAX's alias of "cuda" and "rocm"); "auto": JAX's own choice
PLATFORMS = ("auto", "cpu", "gpu", "cuda", "rocm", "tpu")


def platform_wanted(args: argparse.Namespace) -> str | None:
    """The platform the command should run on, or ``None`` for JAX's own choice: ``--platform``,
    else ``JAX_PLATFORMS``'s (``None``), else the experiment's (:class:`Experiment`'s
    ``platform``)."""
    from mtbkd_jax.experiments import EXPERIMENTS

    chosen = getattr(args, "platform", None)
    if chosen is not None:
        return None if chosen == "auto" else str(chosen)
    if "JAX_PLATFORMS" in os.environ:
        return None
    return EXPERIMENTS["demo" if args.command == "demo" else args.name].platform


@contextlib.contextmanager
def on_platform(platform: str | None) -> Iterator[None]:
    """Set JAX's ``jax_platforms`` for the command (before any backend starts, so before
    ``jax.distributed`` connects the processes), and restore it afterwards."""
    if platform is None:
        yield
        return
    import jax

    previous = jax.config.jax_platforms
    jax.config.update("jax_platforms", platform)
    try:
        yield
    finally:
        jax.config.update("jax_platforms", previous)


def check_platform(platform: str | None) -> None:
    """Refuse a platform JAX cannot run on here, naming ``--platform``."""
    if platform is None:
        return
    import jax

    try:
        jax.devices(platform)
    except RuntimeError as error:
        raise ValueError(
            f"--platform {platform!r}: JAX has no device of this platform here ({error}); "
            f"choose one of {', '.join(PLATFORMS)} that this machine has"
        ) from None
