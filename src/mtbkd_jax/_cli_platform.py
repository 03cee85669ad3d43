"""The CLI's ``--platform``: the JAX platform a command runs on.

The demo runs on the CPU unless told otherwise. Its student has 1,210 weights and its batches
are of 150 to 600 examples: on an H200 machine, compiled from scratch, its first seven rows took
172 s on the GPU against 154 s on 2 of the machine's CPU cores, most of the difference being
the ~800 programs of those rows compiling more slowly for the GPU (``docs/benchmarks.md``, "GPU
check, 2026-12-04"). The digits and synthetic experiments, whose students are as small (not
measured on a GPU), run on the CPU too; DeepLoc and Fashion-MNIST keep JAX's choice (a GPU if
there is one). Each registry entry says which (:class:`mtbkd_jax.experiments.Experiment`'s
``platform``). JAX's choice is kept too where the command asks for several devices or
processes (``--mesh``, ``--coordinator``, ``--distributed``), where ``JAX_PLATFORMS`` is set in
the environment, and with ``--platform auto``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

__all__ = [
    "PLATFORMS",
    "ArgumentRefused",
    "platform_config",
    "platform_device",
    "platform_wanted",
]

# JAX's platform names ("gpu": whichever GPU plugin JAX has); "auto": JAX's own choice
PLATFORMS = ("auto", "cpu", "gpu", "cuda", "rocm", "tpu")


class ArgumentRefused(ValueError):
    """An argument refused once JAX has started (``--platform`` without such a device,
    ``--mesh`` of more devices than the command has): before any compute, so the command
    exits with status 2, as for the arguments refused before JAX starts."""


def platform_wanted(args: argparse.Namespace, processes: dict | None = None) -> str | None:
    """The platform the command should run on, or ``None`` for JAX's own choice: ``--platform``,
    else JAX's where ``JAX_PLATFORMS`` is set or several devices or processes are asked for,
    else the experiment's (:class:`Experiment`'s ``platform``)."""
    from mtbkd_jax.experiments import EXPERIMENTS

    chosen = getattr(args, "platform", None)
    if chosen is not None:
        return None if chosen == "auto" else str(chosen)
    if "JAX_PLATFORMS" in os.environ or processes is not None or args.mesh is not None:
        return None
    return EXPERIMENTS["demo" if args.command == "demo" else args.name].platform


@contextlib.contextmanager
def platform_config(platform: str | None) -> Iterator[None]:
    """Tell JAX to start only ``platform``'s backend (``jax_platforms``), so that a CPU run does
    not take the GPU's memory; enter it before any backend starts, so before
    ``jax.distributed`` connects the processes. ``"gpu"`` is left to JAX's choice, since JAX
    expands it to every GPU plugin and fails on those not installed. Restored afterwards."""
    if platform is None or platform == "gpu":
        yield
        return
    import jax

    previous = jax.config.jax_platforms
    jax.config.update("jax_platforms", platform)
    try:
        yield
    finally:
        jax.config.update("jax_platforms", previous)


@contextlib.contextmanager
def platform_device(platform: str | None) -> Iterator[None]:
    """Place the command's computations on ``platform``'s first device
    (``jax.default_device``): this also holds, on the command's own thread, where the
    backends had started before the command (``main`` called in a process that already used
    JAX), when ``jax_platforms`` no longer acts. A platform JAX cannot run on here is refused
    with an :class:`ArgumentRefused` (a ``ValueError``) that names ``--platform``. Enter it
    after the processes are connected."""
    if platform is None:
        yield
        return
    import jax

    with jax.default_device(_first_device(platform)):
        yield


def _first_device(platform: str) -> object:
    import jax

    try:
        return jax.devices(platform)[0]
    except Exception as error:  # RuntimeError, or AssertionError where no backend started
        raise ArgumentRefused(
            f"--platform {platform!r}: JAX has no device of this platform here "
            f"({type(error).__name__}: {error}); choose one this machine has, or --platform auto"
        ) from None
