"""The ``mtbkd`` command's devices and processes: ``--mesh`` and the ``jax.distributed`` flags
(:mod:`mtbkd_jax.cli`'s docstring says what they do)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = ["connected", "mesh_for", "mesh_shape", "processes_wanted"]


def mesh_shape(text: str) -> tuple[int, int]:
    """argparse type of ``--mesh``: ``CxD``, two positive integers."""
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(
        f"must be CHAINSxDATA, two integers >= 1 such as 1x4, got {text!r}"
    )


def mesh_for(shape: tuple[int, int] | None, processes: dict | None) -> Mesh | None:
    """The mesh ``--mesh`` asks for over every process's devices (with several processes and
    no ``--mesh``: ``1`` x all of them), or ``None``; a shape of another device count is an
    :class:`~mtbkd_jax._cli_platform.ArgumentRefused`."""
    import jax

    from mtbkd_jax._cli_platform import ArgumentRefused

    if shape is None and processes is None:
        return None
    chains, data = shape if shape is not None else (1, jax.device_count())
    if chains * data != jax.device_count():
        raise ArgumentRefused(
            f"--mesh {chains}x{data} needs {chains * data} devices, but the command has "
            f"{jax.device_count()} ({jax.process_count()} process(es) with "
            f"{jax.local_device_count()} each)"
        )
    return jax.make_mesh((chains, data), ("chains", "data"))


def processes_wanted(args: argparse.Namespace) -> dict | None:
    """The ``jax.distributed`` arguments the command asks for (``{}``: JAX's detection), or
    ``None`` for one process; refused unless all three flags or ``--distributed`` alone."""
    given = {
        "coordinator_address": args.coordinator,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    named = [v is not None for v in given.values()]
    if args.distributed and any(named):
        raise ValueError(
            "--distributed (JAX's cluster detection) cannot be combined with --coordinator, "
            "--num-processes or --process-id"
        )
    if args.distributed:
        return {}
    if not any(named):
        return None
    if not all(named):
        raise ValueError(
            "--coordinator, --num-processes and --process-id go together, got "
            f"--coordinator {args.coordinator}, --num-processes {args.num_processes}, "
            f"--process-id {args.process_id}"
        )
    if args.num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {args.num_processes}")
    if not 0 <= args.process_id < args.num_processes:
        raise ValueError(
            f"--process-id must lie in 0..{args.num_processes - 1} (--num-processes "
            f"{args.num_processes}), got {args.process_id}"
        )
    return given


@contextlib.contextmanager
def connected(args: argparse.Namespace, processes: dict | None) -> Iterator[None]:
    """Connect the processes (``processes`` not ``None``); on every process but 0, ``--out``
    becomes a temporary folder, removed afterwards, and the standard output is silenced (the
    log and the table are process 0's; errors still go to the standard error)."""
    if processes is None:
        yield
        return
    import shutil
    import tempfile

    import jax

    from mtbkd_jax.infer import multiprocess

    multiprocess.initialize(**processes)
    if jax.process_index() == 0 or getattr(args, "out", None) is None:
        yield
        return
    args.out = tempfile.mkdtemp(prefix=f"mtbkd-process-{jax.process_index()}-")
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            yield
    finally:
        shutil.rmtree(args.out, ignore_errors=True)
