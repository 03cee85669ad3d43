"""Chains across devices: the chain axis sharded over the local devices, the data replicated.

The samplers vectorise chains with ``vmap``. On one device (JAX's default on a CPU: one device
for all cores) the chains share that device. With several local devices the chain axis is
sharded over them and each device runs its share of the chains; the program is the same and
``jit`` partitions it along the chain axis. On a CPU, ask for several devices at the start of
the program, before JAX is first used::

    import numpyro
    numpyro.set_host_device_count(2)  # or jax.config.update("jax_num_cpu_devices", 2)

Each CPU device runs on its own thread, so the chains then use more than one core. Every device
holds its own copy of the data (on a CPU, in the same host memory). To split the minibatches
over devices too, pass ``mesh=`` (:class:`~mtbkd_jax.infer.mesh.MeshPlacement`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.gradients import GradientEstimator
    from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = ["ChainPlacement", "ORDERS", "SHARDED", "vmap_axes"]

# program argument kinds beyond 0 (split over the chains) and None (replicated), which only
# a placement with data sharded over devices tells apart: the orders (chains x epochs x N,
# split like 0 elsewhere) and the estimator that carries the data (replicated elsewhere)
ORDERS, SHARDED = "orders", "sharded"


def vmap_axes(in_axes: Sequence[int | str | None]) -> tuple[int | None, ...]:
    """``vmap``'s ``in_axes`` of a program's argument kinds: ``ORDERS`` is 0, ``SHARDED``
    is ``None``."""
    return tuple(0 if a in (0, ORDERS) else None for a in in_axes)


class ChainPlacement:
    """Where a run's chains live: the largest number of local devices that divides the chains.

    Args:
        num_chains: the number of chains (the leading axis of the chain state).
        devices: the devices to use (default ``jax.local_devices()``).
    """

    data_devices = 1  # the data are replicated, never split (a mesh's "data" axis does that)
    num_strata = 1  # minibatches are drawn from all the data (not stratified)

    def __init__(self, num_chains: int, devices: Sequence[jax.Device] | None = None) -> None:
        devices = list(jax.local_devices() if devices is None else devices)
        usable = [d for d in range(1, len(devices) + 1) if num_chains % d == 0]
        self.num_devices = max(usable)
        self.mesh = (
            Mesh(np.asarray(devices[: self.num_devices]), ("chain",))
            if self.num_devices > 1
            else None
        )

    def chains[T](self, tree: T) -> T:
        """Arrays with a leading chain axis, sharded along it (unchanged on one device)."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec("chain")))

    def replicated[T](self, tree: T) -> T:
        """Arrays every chain reads (the data), one copy per device (unchanged on one device)."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def sharded[T](self, tree: T) -> T:
        """The data the programs read: replicated (:meth:`replicated`)."""
        return self.replicated(tree)

    def orders(self, tree: dict) -> dict:
        """A chunk's minibatch orders (chains, epochs, N): split like the chains."""
        return self.chains(tree)

    def to_host(self, tree: PyTree) -> PyTree:
        """Results as they are (every array is addressable by this process)."""
        return tree

    def loop_plates(self, plates: tuple[PlateSpec, ...]) -> tuple[PlateSpec, ...]:
        """The plates as one chain's program sees them: the whole data set's (each device
        reads every row)."""
        return tuple(plates)

    def data_parallel(self, estimator: GradientEstimator) -> GradientEstimator:
        """The estimator the programs use: the one given (the minibatch is not split)."""
        return estimator

    def program(self, fn: Callable, in_axes: Sequence[int | str | None]) -> Callable:
        """``fn`` (one chain's program) vectorised over chains and jitted; ``jit`` partitions
        it along the chain axis of sharded arguments (``in_axes``: 0 or ``ORDERS`` for
        arguments with a chain axis, ``None`` or ``SHARDED`` for the others)."""
        return jax.jit(jax.vmap(fn, in_axes=vmap_axes(in_axes)))
