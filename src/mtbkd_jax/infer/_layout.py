"""The one-off check of a ``shard_data`` run's data layout, before any step.

:class:`~mtbkd_jax.infer.stratified.ShardedDataPlacement` decides which arrays are data by a
rule: an array whose leading axis has a subsampled plate's length is split over the mesh's
``data`` axis, any other is replicated. A model can break the rule (a per-example array
stored transposed, or an array of that length that the model reads whole), and the run would
then sample from another posterior, silently. So before the first step,
:func:`check_data_layout` evaluates the stratified estimator on *all* of every device's rows
(the local plates' full index ranges, each device's plated sites scaled by D, ``pmean`` over
``data``), which must equal the full-batch log density on the global arrays: exactly, up to
float rounding, when the layout is right (``sum_d D * (1 / D) * sum_{i in S_d} l_i = sum_i l_i``;
the sites outside the plates are the same on every device). On a mismatch it retries with
each leaf placed the other way, to name the leaves whose placement is wrong, and raises a
``ValueError`` naming them (or listing every leaf's placement when no single flip helps).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from mtbkd_jax.infer.mesh import DATA

if TYPE_CHECKING:
    from mtbkd_jax.infer.gradients import GradientEstimator
    from mtbkd_jax.infer.stratified import ShardedDataPlacement

__all__ = ["LAYOUT_RTOL", "check_data_layout"]

LAYOUT_RTOL = 1e-4  # relative to max(|full|, 1): float32 sums of N terms in another order


def check_data_layout(
    placement: ShardedDataPlacement, estimator: GradientEstimator, position: dict
) -> None:
    """Refuse a data layout on which the stratified estimate is not the model's (module
    docstring). Every process must call it (its programs are collectives).

    Args:
        placement: the run's placement.
        estimator: the estimator on the whole data set, its arrays placed by ``placement``.
        position: one chain's unconstrained position (the same on every process).

    Raises:
        ValueError: the full local batches do not give the full-batch log density; the
            message names the argument or leaf whose placement is wrong.
    """
    position = placement.replicated(position)
    with warnings.catch_warnings():  # the plates' declared sizes are the minibatches'
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        exact = float(jax.jit(lambda e, z: e.logdensity(z, e.full_batch()))(estimator, position))
    if not math.isfinite(exact):
        return  # nothing to compare: the run reports the non-finite start itself
    arrays = jax.tree.leaves(estimator)
    leaves = [placement._spec(x) for x in arrays]
    stratified = _stratified_value(placement, estimator, position, leaves)
    if _close(stratified, exact):
        return
    names = _leaf_names(estimator)
    fixes = []
    for index, spec in enumerate(leaves):
        flipped = _flip(spec, arrays[index], placement.data_devices)
        if flipped is None:
            continue
        trial = [*leaves[:index], flipped, *leaves[index + 1 :]]
        if _close(_stratified_value(placement, estimator, position, trial), exact):
            fixes.append(f"{names[index]} ({_where(spec)}, should be {_where(flipped)})")
    table = ", ".join(
        f"{n} {tuple(np.shape(x))}: {_where(s)}"
        for n, x, s in zip(names, arrays, leaves, strict=True)
    )
    culprit = (
        "the placement of " + "; ".join(fixes) + " is wrong"
        if fixes
        else f"no single argument placed the other way fixes it; the layout was: {table}"
    )
    raise ValueError(
        f"shard_data=True: the data layout does not fit the model: the stratified estimate on "
        f"all rows gives log density {stratified:.6g}, the full batch {exact:.6g}. An array "
        f"is split over the mesh's 'data' axis when its leading axis has a subsampled plate's "
        f"length ({sorted(placement.lengths)}), and replicated otherwise; {culprit}. Give "
        "every per-example array with the examples on its leading axis, or pass "
        "shard_data=False"
    )


def _stratified_value(
    placement: ShardedDataPlacement,
    estimator: GradientEstimator,
    position: dict,
    leaf_specs: list[PartitionSpec],
) -> float:
    """The ``pmean`` over ``data`` of each device's stratified estimate on all its rows, the
    estimator's leaves placed by ``leaf_specs``."""
    local = placement.data_parallel(estimator)
    specs = jax.tree.unflatten(jax.tree.structure(local), leaf_specs)
    size = placement.data_devices
    batch = {p.name: jnp.arange(p.size // size) for p in estimator.plates}

    def value(est: GradientEstimator, z: dict) -> jax.Array:
        return est.logdensity(z, batch)

    mapped = jax.shard_map(
        value, mesh=placement.mesh, in_specs=(specs, PartitionSpec()), out_specs=PartitionSpec()
    )
    return float(jax.jit(mapped)(local, position))


def _flip(spec: PartitionSpec, leaf: Any, size: int) -> PartitionSpec | None:
    """The other placement of a leaf, where it has one (split needs a divisible axis)."""
    if spec != PartitionSpec():
        return PartitionSpec()
    shape = np.shape(leaf)
    return PartitionSpec(DATA) if len(shape) >= 1 and shape[0] % size == 0 else None


def _where(spec: PartitionSpec) -> str:
    return "replicated" if spec == PartitionSpec() else "split over 'data'"


def _leaf_names(estimator: GradientEstimator) -> list[str]:
    """The estimator's leaves by argument: ``inputs``, ``labels``, ``model_kwargs['name']...``."""
    paths = jax.tree_util.tree_flatten_with_path(estimator)[0]
    names = []
    for path, _ in paths:  # (which child: 0 the positional arguments, 1 the keywords, ...)
        child, key, rest = path[0], path[1], jax.tree_util.keystr(tuple(path[2:]))
        if getattr(child, "key", None) == 0:
            position = getattr(key, "idx", 0)
            names.append(
                (("inputs", "labels")[position] if position < 2 else f"args[{position}]") + rest
            )
        else:
            names.append(f"model_kwargs[{getattr(key, 'key', key)!r}]{rest}")
    return names


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= LAYOUT_RTOL * max(abs(b), 1.0)
