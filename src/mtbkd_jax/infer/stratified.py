"""Data sharded over a mesh's ``data`` axis: each device reads only its own rows, and every
step's minibatch is *stratified* over the shards.

``run_sgmcmc(..., mesh=mesh, shard_data=True)``. Without ``shard_data`` a mesh splits each
minibatch over the ``data`` axis but every device holds all the data
(:mod:`mtbkd_jax.infer.mesh`): a uniformly random minibatch of all N rows needs rows from
every shard at every step. With ``shard_data`` the inputs, the labels and every array whose
leading axis is a subsampled plate's length (the transfer inputs, the teacher prior's
constants) are sharded over ``data`` (``NamedSharding(mesh, P("data"))``), so a device, and a
process in a multi-process run (:mod:`mtbkd_jax.infer.multiprocess`), holds ``N / D`` rows of
each; and the minibatch of ``|B|`` rows is drawn as D strata of ``|B| / D`` rows, stratum ``d``
from shard ``d``'s own rows only, in shard ``d``'s own random order per epoch
(:class:`~mtbkd_jax.infer._orders.EpochOrders` with ``num_strata = D``).

**Why it is unbiased.** Shard ``d`` holds rows ``S_d``, ``|S_d| = N / D``; its part of the
minibatch, ``B_d``, is a uniformly random ``|B| / D`` of them, so
``E[sum_{i in B_d} l_i] = (|B| / N) sum_{i in S_d} l_i``. The estimate

    (N / |B|) sum_d sum_{i in B_d} l_i + g

therefore has expectation ``sum_d sum_{i in S_d} l_i + g``: the full potential (``g`` is the
part outside the plates, the base prior). Each device computes its local potential with the
model's plate of ``N / D`` local rows and ``|B| / D`` indices, which NumPyro scales by
``(N / D) / (|B| / D) = N / |B|``; :class:`PlateScale` multiplies that by D (a plate declared
with the whole data set's size, ``numpyro.plate("data", N, ...)``, NumPyro already scales by
``N / (|B| / D)``: left as it is), and the mean over the ``data`` axis (``lax.pmean``, the
one all-reduce of the gradient per step, as on the replicated path) gives exactly the
estimate above. Inside ``shard_map`` a device's epoch loop therefore runs on the *local*
plates (:meth:`ShardedDataPlacement.loop_plates`: ``N / D`` rows, ``|B| / D`` a step), since
its slice of each epoch's order holds only its own ``N / D`` local row numbers. Since every
epoch visits every row once, ``(|B| / N)`` times the sum of an epoch's estimates is exactly
the full-batch value; ``tests/test_multiprocess.py`` checks that identity through the real
warm-start and sampling programs on the canonical model with a transfer set, and that the
loop on the whole data set's plates fails it. Before the first step
:func:`~mtbkd_jax.infer._layout.check_data_layout` checks the placement of every array the
same way (all local rows against the full batch), and sites inside two subsampled plates are
refused (:class:`PlateScale`).

**Other draws than the replicated path.** Stratified minibatches are another, equally valid,
minibatch scheme: every epoch still visits every row once, but a minibatch holds exactly
``|B| / D`` rows of each shard. So a run with ``shard_data=True`` does not reproduce the
draws of a run without it (nor of a run on another number of data shards); it reproduces,
to float tolerance, any run with the same number of data shards D, whatever the number of
processes (``tests/test_multiprocess.py``: 2 processes x 2 devices against 1 process x 4
devices). With ``D = 1`` the stratified draws are the unstratified ones.

Requirements: D divides every subsampled plate's size and minibatch size (the data are not
padded); ``partial_last_batch`` is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from numpyro.infer.util import potential_energy
from numpyro.primitives import Messenger

from mtbkd_jax.infer._devices import ORDERS, SHARDED, vmap_axes
from mtbkd_jax.infer.gradients import GradientEstimator
from mtbkd_jax.infer.mesh import CHAINS, DATA, MeshPlacement, check_mesh, put
from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = [
    "ORDERS",
    "SHARDED",
    "PlateScale",
    "StratifiedEstimator",
    "ShardedDataPlacement",
    "check_sharded_plates",
    "data_on_mesh",
]


class PlateScale(Messenger):
    """Multiply the scale of every sample site inside one of the plates ``sizes`` names by
    ``factor`` (a site inside two is refused): a device's local minibatch estimate, made an
    estimate of the whole data set's potential by the number of data shards D.

    That is for a plate the model declares with its local data's length (``x.shape[0]``,
    ``N / D`` on a device), which NumPyro scales by ``(N / D) / (|B| / D)``. A plate declared
    with the whole data set's size ``sizes[name]`` (``numpyro.plate("data", N, ...)``) is
    already scaled by ``N / (|B| / D)``, D times more, so its sites get ``factor / D``.

    Args:
        fn: the model.
        sizes: the subsampled plates' names and whole data set sizes ``N``.
        factor: the scale of a plate declared with the local length (D).
        axis_size: the number of data shards D.
    """

    def __init__(
        self, fn: Callable | None, sizes: Mapping[str, int], factor: float, axis_size: int
    ) -> None:
        self.sizes = dict(sizes)
        self.factor = float(factor)
        self.axis_size = int(axis_size)
        self.factors: dict[str, float] = {}  # by plate, as declared
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate" and msg["name"] in self.sizes:
            whole = int(msg["args"][0]) == self.sizes[msg["name"]]
            self.factors[msg["name"]] = self.factor / self.axis_size if whole else self.factor
        if msg["type"] != "sample":
            return
        inside = [frame.name for frame in msg["cond_indep_stack"] if frame.name in self.sizes]
        if len(inside) > 1:
            raise ValueError(
                f"shard_data=True: sample site {msg['name']!r} lies inside {len(inside)} "
                f"subsampled plates ({', '.join(inside)}); only one subsampled plate per site "
                "can be sharded over the mesh's 'data' axis (the rows of a nested plate are not "
                "split, and its minibatch would be mis-scaled): pass shard_data=False"
            )
        if inside:
            scale = 1.0 if msg["scale"] is None else msg["scale"]
            msg["scale"] = scale * self.factors.get(inside[0], self.factor)


@jax.tree_util.register_pytree_node_class
class StratifiedEstimator(GradientEstimator):
    """The gradient estimator of one data shard inside ``shard_map`` over ``axis_name``: the
    model on this device's rows, its plates' sites scaled by the axis size, the local
    potentials averaged over the axis (see the module docstring). The minibatch indices are
    local row numbers (``0 .. N / D - 1``).

    Args:
        estimator: the estimator on the whole data set (its plates' sizes are the global ones).
        axis_name: the mesh axis the data are sharded over (``"data"``).
        axis_size: its size D.
        factor: the scale of the plated sites (default ``axis_size``; anything else is wrong,
            and exists for the test that must catch it).
    """

    def __init__(
        self,
        estimator: GradientEstimator,
        axis_name: str,
        axis_size: int,
        factor: float | None = None,
    ) -> None:
        super().__init__(
            estimator.model,
            estimator.model_args,
            estimator.model_kwargs,
            estimator.plates,
            estimator.array_keys,
        )
        self.axis_name = axis_name
        self.axis_size = int(axis_size)
        self.factor = float(axis_size if factor is None else factor)

    def tree_flatten(self) -> tuple[Any, Any]:
        children, aux = super().tree_flatten()
        return children, (aux, self.axis_name, self.axis_size, self.factor)

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> StratifiedEstimator:
        inner, axis_name, axis_size, factor = aux
        estimator = GradientEstimator.tree_unflatten(inner, children)
        return cls(estimator, axis_name, axis_size, factor)

    def logdensity(self, position: dict, minibatch: dict) -> jax.Array:
        """``pmean`` over the axis of the local estimates of ``log p(z, D)``."""
        sizes = {p.name: p.size for p in self.plates}
        model = PlateScale(self._substituted(minibatch), sizes, self.factor, self.axis_size)
        with warnings.catch_warnings():  # a plate's declared size is the whole minibatch's
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            value = -potential_energy(model, self.model_args, self.model_kwargs, position)
        return jax.lax.pmean(value, self.axis_name)

    def first_batch(self) -> dict:
        """The first ``|B| / D`` local rows of every plate (used for shapes)."""
        return {p.name: jax.numpy.arange(p.batch_size // self.axis_size) for p in self.plates}


class ShardedDataPlacement(MeshPlacement):
    """Where a ``shard_data=True`` SG-MCMC run lives: the chains over ``chains``, the data and
    each epoch's orders over ``data`` (:class:`MeshPlacement` otherwise). Works with one
    process or several (:mod:`mtbkd_jax.infer.multiprocess`): the data may be global arrays
    of which this process holds only its rows; the orders are built, on every process, for
    the devices it holds only (``jax.make_array_from_callback``); results come back to every
    process's host with ``process_allgather`` (``to_host``).

    Args:
        mesh: a mesh checked by :func:`~mtbkd_jax.infer.mesh.check_mesh`.
        lengths: the subsampled plates' sizes; an array whose leading axis has one of them is
            data, sharded over ``data``.
    """

    def __init__(self, mesh: jax.sharding.Mesh, lengths: Sequence[int]) -> None:
        super().__init__(mesh)
        self.num_strata = self.data_devices  # each data shard draws its own rows
        self.lengths = frozenset(int(n) for n in lengths)

    def _spec(self, leaf: Any) -> PartitionSpec:
        split = np.ndim(leaf) >= 1 and np.shape(leaf)[0] in self.lengths
        return PartitionSpec(DATA) if split else PartitionSpec()

    def sharded[T](self, tree: T) -> T:
        """Every array of ``tree`` with a plate's length split over ``data``, the others
        replicated (a global array already so placed is not moved). Leaves that are not
        arrays (a ``subsample_size`` of 64 in ``model_kwargs``) stay as they are: placed, they
        would become traced values in the model."""

        def place(leaf: Any) -> Any:
            if not isinstance(leaf, jax.Array | np.ndarray):
                return leaf
            return put(leaf, NamedSharding(self.mesh, self._spec(leaf)))

        return jax.tree.map(place, tree)

    def loop_plates(self, plates: tuple[PlateSpec, ...]) -> tuple[PlateSpec, ...]:
        """The plates as one device's epoch loop sees them under ``shard_map``: its own
        ``N / D`` rows, ``|B| / D`` of them a step (its slice of an epoch's order holds local
        row numbers of its own stratum, :meth:`orders`). With the whole data set's plates the
        loop would read past the device's ``N / D`` entries from the second step on."""
        size = self.data_devices
        return tuple(PlateSpec(p.name, p.size // size, p.batch_size // size) for p in plates)

    def orders(self, host: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A chunk's orders (chains, epochs, N) from the host, split over ``chains`` and over
        ``data`` along N; each process transfers the blocks of its own devices only."""
        sharding = NamedSharding(self.mesh, PartitionSpec(CHAINS, None, DATA))
        return {
            name: jax.make_array_from_callback(array.shape, sharding, partial(_block, array))
            for name, array in host.items()
        }

    def data_parallel(self, estimator: GradientEstimator) -> GradientEstimator:
        """The estimator the programs use: each device on its own shard."""
        return StratifiedEstimator(estimator, DATA, self.data_devices)

    def program(self, fn: Callable, in_axes: Sequence[int | str | None]) -> Callable:
        """``fn`` (one chain's program) ``vmap``-ped over each device's chains under
        ``shard_map``: arguments with ``in_axes`` 0 split over ``chains``, ``ORDERS`` over
        ``chains`` and along N over ``data``, ``SHARDED`` by :meth:`sharded`'s rule, ``None``
        replicated. The specs of a ``SHARDED`` argument are read from the argument itself,
        so the program is built at its first call."""
        mapped = jax.vmap(fn, in_axes=vmap_axes(in_axes))
        compiled: dict[Any, Callable] = {}

        def spec(kind: int | str | None, argument: Any) -> Any:
            if kind == 0:
                return PartitionSpec(CHAINS)
            if kind == ORDERS:
                return PartitionSpec(CHAINS, None, DATA)
            if kind == SHARDED:
                return jax.tree.map(self._spec, argument)
            return PartitionSpec()

        def run(*args: Any) -> Any:
            specs = tuple(spec(k, a) for k, a in zip(in_axes, args, strict=True))
            key = jax.tree.structure(specs), tuple(jax.tree.leaves(specs))
            if key not in compiled:
                compiled[key] = jax.jit(
                    jax.shard_map(
                        mapped, mesh=self.mesh, in_specs=specs, out_specs=PartitionSpec(CHAINS)
                    )
                )
            return compiled[key](*args)

        return run


def _block(array: np.ndarray, index: tuple[slice, ...]) -> np.ndarray:
    return array[index]


def check_sharded_plates(
    plates: Sequence[Any], data_devices: int, partial_last_batch: bool
) -> None:
    """Refuse plates the ``data`` axis does not divide (sizes; batch sizes are checked with
    the mesh) and ``partial_last_batch``, naming ``shard_data``."""
    if partial_last_batch:
        raise ValueError(
            "shard_data=True cannot be combined with partial_last_batch: each data shard "
            "draws its own equal share of every minibatch"
        )
    for plate in plates:
        if plate.size % data_devices:
            raise ValueError(
                f"shard_data=True: mesh's 'data' axis (size {data_devices}) must divide the "
                f"length of plate {plate.name!r} ({plate.size}), which is sharded over it; "
                f"pass a multiple of {data_devices} examples"
            )


def data_on_mesh(
    inputs: Any, labels: Any, model_kwargs: dict | None, mesh: object
) -> tuple[Any, Any, dict | None]:
    """``run_sgmcmc``'s data for ``shard_data=True``, before anything reads them: the inputs,
    the labels and every keyword array with the inputs' (or ``prior_inputs``') length split
    over the ``data`` axis of ``mesh`` (global arrays already so split stay where they are;
    their mesh's axes become ``Auto``, so that eager operations on them need no explicit
    output shardings).

    Raises:
        ValueError: ``mesh`` is missing.
    """
    if mesh is None:
        raise ValueError(
            "shard_data=True needs mesh=, a jax.sharding.Mesh with axes ('chains', 'data') "
            "over whose 'data' axis the data are sharded"
        )
    mesh = check_mesh(mesh)
    sizes = {"inputs": int(np.shape(inputs)[0])}
    prior_inputs = (model_kwargs or {}).get("prior_inputs")
    if prior_inputs is not None:
        sizes["prior_inputs"] = int(np.shape(prior_inputs)[0])
    check_mesh(mesh, data_sizes=sizes)
    placement = ShardedDataPlacement(mesh, list(sizes.values()))
    placed = placement.sharded((inputs, labels, model_kwargs))
    return placed[0], placed[1], placed[2]
