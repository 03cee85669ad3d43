"""A device mesh as an argument: the chains over one mesh axis, the data over the other.

``run_sgmcmc``, ``run_nuts``, ``run_svi`` and ``run_map`` take ``mesh=``, a
:class:`jax.sharding.Mesh` with exactly two axes named ``"chains"`` and ``"data"`` (either may
have size 1)::

    import jax
    jax.config.update("jax_num_cpu_devices", 4)  # on a CPU, before JAX is first used
    mesh = jax.make_mesh((2, 2), ("chains", "data"))
    posterior = mtbkd_jax.run_sgmcmc(key, model, x, y, num_chains=4, mesh=mesh)

Without a mesh every front-end behaves as before (chains sharded over the local devices by
:class:`~mtbkd_jax.infer._devices.ChainPlacement`, the data replicated).

**Minibatch potentials (SG-MCMC and its warm start).** The chunk program runs under
``jax.shard_map``: each device holds ``num_chains / |chains|`` chains (``vmap``-ped) and a full
copy of the data, and evaluates its ``1 / |data|`` slice of every plate's minibatch indices.
NumPyro scales each plate's sites by ``N / (|B| / |data|)`` on that slice (the plate's length
is the substituted indices'), counts the sites outside the plates once, and the mean over the
``data`` axis of these ``|data|`` unbiased estimates is exactly the one-device estimate on the
whole minibatch::

    (1/D) sum_d [ (D N / |B|) sum_{i in B_d} l_i + g ] = (N / |B|) sum_{i in B} l_i + g

so the sharded potential is ``lax.pmean`` of the local one, and its gradient is
``jax.grad`` of that: under ``shard_map``'s varying-manual-axes types the position is
invariant over ``data``, so the backward pass of ``pmean`` is the one all-reduce of the
gradient per step. (Do *not* add a ``psum`` of the gradient on top: ``jax.grad`` with respect
to a replicated parameter already all-reduces, and a second ``psum`` of an invariant value
multiplies it by ``|data|``; ``tests/test_mesh.py`` checks the gradient against the
one-device one and that the doubled version fails.) The Langevin and momentum noise comes
from each chain's key, sharded over ``chains`` and replicated over ``data``, so the
replicas of a chain on the ``data`` axis draw the same noise and stay identical. The data
stay replicated over ``data`` because each step's minibatch is a random subset: a device
holding only its shard would need the other shards' rows every step. (``shard_data=True``
shards them and draws *stratified* minibatches instead, each shard's part from its own rows:
:mod:`mtbkd_jax.infer.stratified`; several processes: :mod:`mtbkd_jax.infer.multiprocess`.)

**Full-batch potentials (NUTS, SVI, MAP).** The inputs, the labels and every array whose
leading axis is the data set's (or the transfer set's) length, the teacher bank's constants
among them, are placed with ``NamedSharding(mesh, P("data"))`` and the rest replicated; ``jit``
(GSPMD) partitions the potential's sums over the sharded axis and inserts the all-reduce.
The placement changes where the work is done, never what is computed.

**Tolerance.** A sharded run sums the same terms in another order, so its results equal the
one-device run's to float32 rounding carried through the run. ``tests/test_mesh.py`` asks, on
1, 2 and 4 CPU devices: SG-MCMC draws ``rtol=1e-5, atol=1e-6`` (measured at most 3e-7
absolute, every sampler); MAP and SVI ``rtol=1e-4, atol=1e-4`` (measured 8e-6 on losses near
60); NUTS ``atol=2e-3`` over 10 iterations (measured 3e-4: step-size adaptation and trajectory
lengths amplify last-bit differences, and a long NUTS run may take another, equally valid,
path).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mtbkd_jax.infer._devices import vmap_axes
from mtbkd_jax.infer.gradients import GradientEstimator

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = [
    "CHAINS",
    "DATA",
    "DataShardedEstimator",
    "MeshPlacement",
    "check_mesh",
    "auto_mesh",
    "local_indices",
    "full_batch_data",
    "mcmc_chain_method",
    "place_full_batch",
    "put",
]

CHAINS, DATA = "chains", "data"


# ---------------------------------------------------------------------------- validation
def check_mesh(
    mesh: object,
    *,
    num_chains: int | None = None,
    batch_sizes: Mapping[str, int] | None = None,
    data_sizes: Mapping[str, int] | None = None,
) -> Mesh:
    """``mesh`` checked at a front-end's boundary; returns it with its axes made ``Auto``.

    Args:
        mesh: the argument.
        num_chains: the chains, which the ``chains`` axis must divide.
        batch_sizes: minibatch sizes by what they are called in the message (e.g.
            ``{"the minibatch of plate 'data'": 64}``), which the ``data`` axis must divide.
        data_sizes: full-batch data sizes by name (e.g. ``{"inputs": 1000}``), which the
            ``data`` axis must divide (refused rather than padded: a padded row would need a
            mask in every model).

    Raises:
        TypeError: ``mesh`` is not a ``jax.sharding.Mesh``.
        ValueError: its axes are not ``("chains", "data")``, or a size is not divisible.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(
            "mesh must be a jax.sharding.Mesh with axes ('chains', 'data'), e.g. "
            f"jax.make_mesh((1, 2), ('chains', 'data')); got {type(mesh).__name__}"
        )
    if sorted(mesh.axis_names) != sorted((CHAINS, DATA)):
        raise ValueError(
            "mesh must have exactly the axes 'chains' and 'data' (either may have size 1), "
            f"got axes {tuple(mesh.axis_names)} of sizes {tuple(mesh.devices.shape)}"
        )
    chains, data = mesh.shape[CHAINS], mesh.shape[DATA]
    if num_chains is not None and num_chains % chains:
        raise ValueError(
            f"mesh's 'chains' axis (size {chains}) must divide num_chains ({num_chains}); pass "
            f"num_chains a multiple of {chains}, or a mesh whose 'chains' axis divides it"
        )
    for what, size in (batch_sizes or {}).items():
        if size % data:
            raise ValueError(
                f"mesh's 'data' axis (size {data}) must divide {what} ({size}), which every "
                "step splits over it; choose a batch size that is a multiple of "
                f"{data}, or a mesh whose 'data' axis divides {size}"
            )
    for what, size in (data_sizes or {}).items():
        if size % data:
            raise ValueError(
                f"mesh's 'data' axis (size {data}) must divide the length of {what} ({size}), "
                f"which is sharded over it; pass a multiple of {data} examples, or a mesh "
                f"whose 'data' axis divides {size}"
            )
    return auto_mesh(mesh)


def auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axes with every axis ``Auto``: ``jax.make_mesh`` makes
    ``Explicit`` axes by default, whose sharding-in-types would ask NumPyro's and the
    models' code for explicit output shardings; placements here are GSPMD's (``Auto``) and
    ``shard_map`` is manual over both axes either way."""
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


# ---------------------------------------------------------------------------- SG-MCMC
def local_indices(indices: jax.Array, axis_name: str, axis_size: int) -> jax.Array:
    """This device's ``1 / axis_size`` slice of a minibatch's indices (inside ``shard_map``):
    device ``d`` of the axis takes entries ``d |B| / D .. (d + 1) |B| / D - 1``."""
    size = indices.shape[0] // axis_size
    start = jax.lax.axis_index(axis_name) * size
    return jax.lax.dynamic_slice_in_dim(indices, start, size)


@jax.tree_util.register_pytree_node_class
class DataShardedEstimator(GradientEstimator):
    """A :class:`~mtbkd_jax.infer.gradients.GradientEstimator` whose minibatch is split over a
    ``shard_map`` axis: the local potential on this device's slice, averaged over the axis.

    Only meaningful inside ``shard_map`` over ``axis_name`` (``logdensity`` uses the axis);
    ``constrain``, ``first_batch`` and the other helpers are the estimator's own. See the
    module docstring for why the mean of the local estimates is the one-device estimate and
    why the gradient needs no further ``psum``.

    Args:
        estimator: the one-device estimator (its data, replicated over the axis).
        axis_name: the mesh axis the minibatch is split over (``"data"``).
        axis_size: its size, which divides every plate's minibatch size.
    """

    def __init__(self, estimator: GradientEstimator, axis_name: str, axis_size: int) -> None:
        super().__init__(
            estimator.model,
            estimator.model_args,
            estimator.model_kwargs,
            estimator.plates,
            estimator.array_keys,
        )
        self.axis_name = axis_name
        self.axis_size = int(axis_size)

    def tree_flatten(self) -> tuple[Any, Any]:
        children, aux = super().tree_flatten()
        return children, (aux, self.axis_name, self.axis_size)

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> DataShardedEstimator:
        inner, axis_name, axis_size = aux
        return cls(GradientEstimator.tree_unflatten(inner, children), axis_name, axis_size)

    def logdensity(self, position: dict, minibatch: dict) -> jax.Array:
        """The minibatch ``log p(z, D)``: ``pmean`` over the axis of the local estimates."""
        local = {
            name: local_indices(index, self.axis_name, self.axis_size)
            for name, index in minibatch.items()
        }
        with warnings.catch_warnings():  # the plate's declared size is the whole minibatch's
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            value = super().logdensity(position, local)
        return jax.lax.pmean(value, self.axis_name)


class MeshPlacement:
    """Where an SG-MCMC run lives on a mesh: the chain axis of every per-chain array sharded
    over ``chains`` (replicated over ``data``), the data replicated, and the chunk programs
    run under ``shard_map`` with the minibatch split over ``data``.

    It has :class:`~mtbkd_jax.infer._devices.ChainPlacement`'s interface (``chains``,
    ``replicated``, ``sharded``, ``orders``, ``to_host``, ``loop_plates``, ``data_parallel``,
    ``program``, ``num_devices``, ``data_devices``, ``num_strata``), so the driver and the
    warm start take either.

    Args:
        mesh: a mesh checked by :func:`check_mesh`.
    """

    num_strata = 1  # minibatches are drawn from all the data (``shard_data`` stratifies)

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = auto_mesh(mesh)
        self.num_devices = int(self.mesh.shape[CHAINS])  # devices along the chains
        self.data_devices = int(self.mesh.shape[DATA])

    def chains[T](self, tree: T) -> T:
        """Arrays with a leading chain axis, sharded along it over ``chains``."""
        return put(tree, NamedSharding(self.mesh, PartitionSpec(CHAINS)))

    def replicated[T](self, tree: T) -> T:
        """Arrays every chain reads (the data), one copy per device."""
        return put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def sharded[T](self, tree: T) -> T:
        """The data the programs read: replicated (:meth:`replicated`)."""
        return self.replicated(tree)

    def orders(self, tree: dict) -> dict:
        """A chunk's minibatch orders (chains, epochs, N): split like the chains."""
        return self.chains(tree)

    def data_parallel(self, estimator: GradientEstimator) -> GradientEstimator:
        """The estimator the programs use: the minibatch split over ``data`` (itself when the
        axis has size 1)."""
        if self.data_devices == 1:
            return estimator
        return DataShardedEstimator(estimator, DATA, self.data_devices)

    def to_host(self, tree: PyTree) -> PyTree:
        """Every array of ``tree`` as a NumPy array on this process, gathered from the other
        processes where it spans their devices (``process_allgather``: a collective, which
        every process must call; see :mod:`mtbkd_jax.infer.multiprocess`)."""
        from jax.experimental import multihost_utils

        def host(leaf: Any) -> Any:
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
            return np.asarray(leaf) if isinstance(leaf, jax.Array) else leaf

        return jax.tree.map(host, tree)

    def loop_plates(self, plates: tuple[PlateSpec, ...]) -> tuple[PlateSpec, ...]:
        """The plates as one device's epoch loop sees them: the whole data set's (every device
        holds all the rows and reads the whole minibatch's indices, then its part of them)."""
        return tuple(plates)

    def program(self, fn: Callable, in_axes: Sequence[int | str | None]) -> Callable:
        """``fn`` (one chain's program) ``vmap``-ped over the chains of each device and run
        under ``shard_map`` on the mesh, jitted: arguments with ``in_axes`` 0 (or ``ORDERS``)
        are split over ``chains``, the others (``None``, ``SHARDED``) replicated; every
        output has a leading chain axis and is invariant over ``data`` (``shard_map`` checks
        it)."""
        axes = vmap_axes(in_axes)
        in_specs = tuple(PartitionSpec(CHAINS) if a == 0 else PartitionSpec() for a in axes)
        mapped = jax.vmap(fn, in_axes=axes)
        return jax.jit(
            jax.shard_map(
                mapped, mesh=self.mesh, in_specs=in_specs, out_specs=PartitionSpec(CHAINS)
            )
        )


def put[T](tree: T, sharding: NamedSharding) -> T:
    """``jax.device_put(tree, sharding)``, also where ``sharding`` spans other processes'
    devices (:mod:`mtbkd_jax.infer.multiprocess`): then every process gives the same values
    (the chains' state, keys, a checkpoint read by all) and each transfers its own devices'
    blocks; arrays already spread over the processes are resharded by JAX."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: _put_global(leaf, sharding), tree)


def _put_global(leaf: Any, sharding: NamedSharding) -> Any:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = _put_global(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if not isinstance(leaf, jax.Array | np.ndarray | np.generic):
        return leaf
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# ---------------------------------------------------------------------------- full batch
def place_full_batch(tree: PyTree, mesh: Mesh, lengths: Sequence[int]) -> PyTree:
    """Every array of ``tree`` whose leading axis has one of ``lengths`` (the data set's,
    the transfer set's) sharded over ``data``, the others replicated over the mesh; ``jit``
    then partitions the sums over those axes (GSPMD). Non-array leaves are left as they are.
    """
    mesh = auto_mesh(mesh)
    sharded = NamedSharding(mesh, PartitionSpec(DATA))
    replicated = NamedSharding(mesh, PartitionSpec())
    wanted = {int(n) for n in lengths}

    def place(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array | np.ndarray):
            return leaf
        split = np.ndim(leaf) >= 1 and np.shape(leaf)[0] in wanted
        return jax.device_put(leaf, sharded if split else replicated)

    return jax.tree.map(place, tree)


def full_batch_data(
    model: Callable,
    features: jax.Array,
    labels: jax.Array | None,
    kwargs: dict[str, Any],
    mesh: Mesh,
) -> tuple[jax.Array, jax.Array | None, dict[str, Any]]:
    """A full-batch front-end's data placed on ``mesh``: the model's array constants (the
    canonical model's teacher prior, :meth:`~mtbkd_jax.MTBKDModel.constant_kwargs`) passed as
    keyword arguments so that they are data, not constants compiled into the program, and
    everything with the length of ``inputs`` or of ``prior_inputs`` sharded over ``data``
    (:func:`place_full_batch`).

    Raises:
        ValueError: the ``data`` axis does not divide those lengths (naming ``mesh``).
    """
    kwargs = dict(kwargs)
    if kwargs.get("teacher_prior", True):
        for name, value in getattr(model, "constant_kwargs", dict)().items():
            kwargs.setdefault(name, value)
    lengths = {"inputs": int(features.shape[0])}
    prior_inputs = kwargs.get("prior_inputs")
    if prior_inputs is not None:
        lengths["prior_inputs"] = int(np.shape(prior_inputs)[0])
    check_mesh(mesh, data_sizes=lengths)
    placed = place_full_batch((features, labels, kwargs), mesh, list(lengths.values()))
    return placed[0], placed[1], placed[2]


def mcmc_chain_method(mesh: Mesh, chain_method: str) -> str | Callable:
    """NumPyro ``MCMC``'s ``chain_method`` on a mesh: with a ``chains`` axis of size 1, the
    method itself (``"sequential"`` or ``"vectorized"``); otherwise a transform (NumPyro
    takes "a callable jax transform like ``jax.vmap``") that splits the chains over
    ``chains`` with ``jax.shard_map``, manual over ``chains`` only, so that inside each shard
    ``jit`` still partitions the potential over ``data``; each shard runs its chains one
    after another (``lax.map``) or vectorised (``vmap``). ``check_vma=False``: NumPyro's own
    loops do not mark their carries as varying over ``chains``, and nothing is reduced over
    that axis (the chains are independent, the outputs concatenated)."""
    mesh = auto_mesh(mesh)
    if mesh.shape[CHAINS] == 1:
        return chain_method

    def transform(fn: Callable) -> Callable:
        if chain_method == "vectorized":
            per_shard = jax.vmap(fn)
        else:
            per_shard = lambda xs: jax.lax.map(fn, xs)  # noqa: E731
        return jax.shard_map(
            per_shard,
            mesh=mesh,
            in_specs=PartitionSpec(CHAINS),
            out_specs=PartitionSpec(CHAINS),
            axis_names=frozenset({CHAINS}),
            check_vma=False,
        )

    return transform
