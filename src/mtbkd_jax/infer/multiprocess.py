"""Several processes: one run over the devices of several processes (hosts), each process
holding only its own rows of the data.

JAX's multi-controller runtime runs the *same program* in every process; ``jax.distributed``
connects them, a :class:`jax.sharding.Mesh` spans all their devices, and a global
``jax.Array`` lives partly in each process. ``run_sgmcmc(..., mesh=mesh, shard_data=True)``
(:mod:`mtbkd_jax.infer.stratified`) runs on such a mesh: each device reads its own shard of
the data, each step's stratified minibatch costs one all-reduce of the gradient over the
``data`` axis, every process ends with the same posterior (the draws gathered to every host),
and only process 0 writes the checkpoint; every process reads it to resume.

Recipe (two processes on one machine with 2 CPU devices each; on a cluster start one process
per host, with the same script)::

    import jax
    jax.config.update("jax_num_cpu_devices", 2)         # CPU only, before JAX starts
    from mtbkd_jax.infer import multiprocess
    multiprocess.initialize("127.0.0.1:12345", num_processes=2, process_id=i)
    # under Slurm, Open MPI or Kubernetes (where JAX detects them): initialize()

    mesh = jax.make_mesh((1, 4), ("chains", "data"))    # all 4 devices of both processes
    rows = multiprocess.local_rows(num_examples, mesh)  # this process's rows, a slice
    x = multiprocess.shard_rows(x_local, mesh, num_examples)  # x_local = x[rows] only
    y = multiprocess.shard_rows(y_local, mesh, num_examples)
    posterior = mtbkd_jax.run_sgmcmc(
        key, model, x, y, mesh=mesh, shard_data=True, checkpoint_path="run.ckpt"
    )
    if multiprocess.is_main_process():
        posterior.save("posterior.nc")                   # Posterior.save does this check too

Run it with ``i = 0`` and ``i = 1`` in two shells (or ``mtbkd ... --coordinator
127.0.0.1:12345 --num-processes 2 --process-id i``). The result equals one process with 4
devices (``jax_num_cpu_devices = 4``, the same mesh shape and ``shard_data=True``) to float
rounding: the stratified minibatches depend on the number of data shards, not on the number
of processes (``tests/test_multiprocess.py``). A run killed in every process resumes exactly
when the same command is run again. Full-batch fits (``run_map``, ``run_svi``, ``run_nuts``)
take the same global arrays with ``mesh=``.

Every process must make the same calls in the same order (each ``jit`` call on global arrays
is a collective); keep file writes, prints and progress bars to process 0
(:func:`is_main_process`). On CPUs the collectives go through gloo, which
:func:`initialize` selects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mtbkd_jax.infer.mesh import DATA, auto_mesh

__all__ = [
    "from_main_process",
    "initialize",
    "is_main_process",
    "local_rows",
    "require_addressable",
    "shard_rows",
]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> None:
    """Connect this process to the others: :func:`jax.distributed.initialize`, with the CPU
    collectives over gloo. Call it before JAX computes anything (importing ``mtbkd_jax``
    first is fine: the package starts no JAX backend at import, and imports BlackJAX, whose
    import does, only where a kernel is built). Without arguments JAX detects the cluster
    (Slurm, Open MPI, Kubernetes and the cloud TPU environments it knows); elsewhere give all
    three. Where ``jax.distributed`` is already initialized (by the caller, or an earlier
    call), this does nothing but check that it matches the arguments.

    Args:
        coordinator_address: ``HOST:PORT`` of process 0, which every process can reach.
        num_processes: the number of processes.
        process_id: this process's number, ``0 .. num_processes - 1``.
        local_device_ids: the local devices this process uses (default all).

    Raises:
        ValueError: only some of the three are given, or ``jax.distributed`` is already
            initialized with another ``num_processes`` or ``process_id``.
        RuntimeError: JAX has already computed something in this process (its backend
            started unconnected), so it cannot be connected any more.
    """
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "give coordinator_address, num_processes and process_id together (or none, for "
            f"JAX's cluster detection); got coordinator_address={coordinator_address!r}, "
            f"num_processes={num_processes!r}, process_id={process_id!r}"
        )
    if jax.distributed.is_initialized():
        _check_connected(num_processes, process_id)
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address, num_processes, process_id, local_device_ids=local_device_ids
        )
    except RuntimeError as error:
        if "must be called before" not in str(error):
            raise
        raise RuntimeError(
            "multiprocess.initialize must run before JAX computes anything in this process "
            "(an array made, a jit called, jax.devices() asked): call it first thing, right "
            f"after the imports ({error})"
        ) from None


def _check_connected(num_processes: int | None, process_id: int | None) -> None:
    """Refuse arguments that contradict the ``jax.distributed`` connection already made."""
    have = (jax.process_count(), jax.process_index())
    if num_processes is not None and (num_processes, process_id) != have:
        raise ValueError(
            "jax.distributed is already initialized with num_processes="
            f"{have[0]}, process_id={have[1]}; got num_processes={num_processes}, "
            f"process_id={process_id}"
        )


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes files."""
    return jax.process_index() == 0


def from_main_process(compute: Callable[[], Any], like: Any) -> Any:
    """``compute()`` on process 0 only, its result (a tree of arrays) sent to every process.

    For data that every process must hold bit for bit (teachers trained for the run, say):
    computed in each process it could differ in the last bits from one host to another (another
    CPU, another BLAS), and processes that disagree on the data give no error, only a wrong
    posterior. ``like`` is a tree of the result's shapes and dtypes
    (:class:`jax.ShapeDtypeStruct` leaves, or arrays), which the other processes need to
    receive it. Every process returns the bytes process 0 computed (sent as bytes, so that no
    arithmetic touches them). With one process this is ``compute()``.

    The processes first meet in a small collective (so that the others may wait for process 0
    as long as ``compute`` takes: CPU collectives give up on a first meeting after 30 s), then
    process 0 computes and tells the others whether it succeeded.

    Raises:
        ValueError: process 0's result does not have the shapes and dtypes of ``like`` (in
            every process).
        RuntimeError: ``compute`` failed in process 0 (in the other processes; process 0
            raises the error itself).
    """
    if jax.process_count() == 1:
        return compute()
    from jax.experimental import multihost_utils

    leaves, tree = jax.tree.flatten(like)
    specs = [(tuple(leaf.shape), np.dtype(leaf.dtype)) for leaf in leaves]
    multihost_utils.broadcast_one_to_all(np.zeros((), np.int32))  # meet before the wait
    error: BaseException | None = None
    payload = [np.zeros(int(np.prod(shape)) * dtype.itemsize, np.uint8) for shape, dtype in specs]
    status = 0  # 0: done, 1: compute raised, 2: wrong shapes or dtypes
    if is_main_process():
        try:
            result = jax.tree.leaves(compute())
            got = [(tuple(np.shape(a)), np.asarray(a).dtype) for a in result]
            if got != specs:
                status, error = 2, ValueError(f"compute() returned {got}, but like says {specs}")
            else:
                payload = [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in result]
        except Exception as failure:  # told to the others, then raised here
            status, error = 1, failure
    status = int(multihost_utils.broadcast_one_to_all(np.asarray(status, np.int32)))
    if status == 1:
        assert error is not None or not is_main_process()
        if error is not None:
            raise error
        raise RuntimeError("process 0 failed to compute the data it sends (see its error)")
    if status == 2:
        raise error or ValueError("process 0's result does not have the shapes of like")
    received = multihost_utils.broadcast_one_to_all(payload)
    arrays = [
        np.asarray(raw).astype(np.uint8).view(dtype).reshape(shape)
        for raw, (shape, dtype) in zip(received, specs, strict=True)
    ]
    return jax.tree.unflatten(tree, arrays)


def require_addressable(arguments: Mapping[str, Any], remedy: str) -> None:
    """Refuse arrays spread over several processes (of which this process holds only some
    rows) where a function needs every row in every process: without a mesh, or on a mesh
    that replicates the data.

    Args:
        arguments: argument name -> its value (array trees are searched).
        remedy: what to pass instead, appended to the message.

    Raises:
        ValueError: naming the first such argument.
    """
    for name, value in arguments.items():
        for leaf in jax.tree.leaves(value):
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                raise ValueError(
                    f"{name} is a global array spread over {jax.process_count()} processes "
                    f"(shape {tuple(leaf.shape)}; this process holds only part of it), which "
                    f"this call cannot read whole; {remedy}"
                )


def local_rows(num_rows: int, mesh: Mesh) -> slice:
    """The rows of an array of ``num_rows`` rows split over ``mesh``'s ``data`` axis that this
    process holds: the slice of the data it must supply to :func:`shard_rows`.

    Raises:
        ValueError: the ``data`` axis does not divide ``num_rows``, or this process's devices
            do not hold one run of consecutive rows.
    """
    size = int(mesh.shape[DATA])
    if num_rows % size:
        raise ValueError(
            f"mesh's 'data' axis (size {size}) must divide num_rows ({num_rows}); pass a "
            f"multiple of {size} rows"
        )
    sharding = NamedSharding(auto_mesh(mesh), PartitionSpec(DATA))
    blocks = set()
    for index in sharding.addressable_devices_indices_map((num_rows,)).values():
        assert index is not None  # a sharded array: every device holds an index
        block = index[0]
        blocks.add((block.start or 0, num_rows if block.stop is None else block.stop))
    start, stop = min(b[0] for b in blocks), max(b[1] for b in blocks)
    if sum(b[1] - b[0] for b in blocks) != stop - start:
        raise ValueError(
            "this process's devices hold rows that are not consecutive on this mesh; build the "
            "mesh with jax.make_mesh, which keeps each process's devices together"
        )
    return slice(start, stop)


def shard_rows(local: np.ndarray | jax.Array, mesh: Mesh, num_rows: int) -> jax.Array:
    """A global array of ``num_rows`` rows split over ``mesh``'s ``data`` axis, from this
    process's rows only (``local``: the rows :func:`local_rows` names), with
    :func:`jax.make_array_from_process_local_data`.

    Raises:
        ValueError: ``local`` does not hold this process's number of rows.
    """
    rows = local_rows(num_rows, mesh)
    expected = rows.stop - rows.start
    if np.shape(local)[0] != expected:
        raise ValueError(
            f"this process holds rows {rows.start}..{rows.stop - 1} of {num_rows}; local must "
            f"have {expected} rows, got {np.shape(local)[0]}"
        )
    sharding = NamedSharding(auto_mesh(mesh), PartitionSpec(DATA))
    return jax.make_array_from_process_local_data(
        sharding, np.asarray(local), (num_rows, *np.shape(local)[1:])
    )
