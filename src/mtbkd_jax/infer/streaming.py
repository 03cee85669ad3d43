"""Streaming: SG-MCMC on data larger than device memory (``run_sgmcmc(..., stream=True)``).

The inputs, the labels and the model's per-example arrays (a teacher prior's constants, a
transfer set) stay on the host, as NumPy arrays or memory maps (``np.load(path,
mmap_mode="r")``). The host draws every epoch's minibatch orders ahead of the device anyway
(:mod:`mtbkd_jax.infer._orders`), so for each chunk of steps it gathers the rows every step will
visit, (chains, S, |B|, ...) per array (:mod:`mtbkd_jax.infer._host_rows`), and transfers them
while the device runs the previous chunk. The device holds two chunks' rows, never the N rows.
A chunk may be shorter than an epoch (``chunk_steps``), which an epoch of millions of rows
needs; the steps keep their noise keys, kept positions and global step numbers
(:meth:`~mtbkd_jax.infer._loop.EpochLoop.run_steps`), so the draws are the device-resident
run's.

Inside a step the model sees a minibatch of ``|B|`` rows. The handler :class:`StreamedPlates`
gives each subsampled plate the indices ``0 .. |B| - 1`` of those rows and keeps the
likelihood's scale at ``N / |B|``: a model that declares its plate from its data,
``numpyro.plate("data", x.shape[0], subsample_size=B)``, now sees ``x.shape[0] == |B|``, and
the handler scales the plate's sites by ``N / |B|`` itself; a model that declares ``N`` by
number is scaled by NumPyro as usual. A model must use its data's length for nothing but its
plates' sizes. ``numpyro.subsample(x, event_dim=...)`` works too: ``x`` is the minibatch's rows
already, and the handler tells the plates so. A ``numpyro.param(..., event_dim=...)`` or a
``numpyro.subsample`` of an array holding the N rows of a streamed plate is refused (the plate
would take the wrong rows of it; with ``N == |B|`` such an array cannot be told from a
streamed one). What no handler can see: a per-example array the model
closes over, or a ``numpyro.param`` without ``event_dim``, indexed by hand (``p[idx]``) gets
rows ``0 .. |B| - 1``; per-example arrays belong in the model's arguments. What it does can
be seen: ``run_sgmcmc`` refuses a streamed model whose per-example terms change when the rows
of its first minibatch are reordered together (:mod:`mtbkd_jax.infer._stream_pairing`).

Which plate indexes an array: the inputs and labels, the first subsampled plate; an array
keyword argument, the plate of its leading length (a leaf of another length, a 0-d
temperature, stays on the device whole). Where two plates have that length, the model says
(``model.row_plates(model_kwargs) -> {keyword: plate name}``, as
:class:`~mtbkd_jax.MTBKDModel` does for ``prior_inputs`` and its teacher prior) or the array is
refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import as_input_batch, checked_labels
from mtbkd_jax.infer._common import label_classes, require_labels
from mtbkd_jax.infer._host_rows import HostRows, check_finite_rows
from mtbkd_jax.infer._start import (
    chain_start_log_densities,
    prediction_probe,
    site_log_densities,
)
from mtbkd_jax.infer._streamed_estimator import StreamedEstimator, StreamedPlates
from mtbkd_jax.infer.gradients import GradientEstimator, MinibatchPlan, minibatch_plan
from mtbkd_jax.students import Student

if TYPE_CHECKING:
    pass

__all__ = [
    "StreamedPlates",
    "StreamedEstimator",
    "streamed_data",
    "streamed_probe",
    "check_stream_arguments",
]

#: minibatches spread over the rows on which a streamed checkpoint's probe reads the density
SPREAD_BATCHES = 16


def check_stream_arguments(**arguments: Any) -> None:
    """Refuse what ``stream=True`` does not support (and ``chunk_steps`` without it), naming
    the argument."""
    if not arguments["stream"]:
        if arguments["chunk_steps"] is not None:
            raise ValueError("chunk_steps applies to stream=True; pass chunk_epochs instead")
        return
    refused = {
        "mesh": (arguments["mesh"] is not None, "None"),
        "shard_data": (arguments["shard_data"], "False"),
        "warm_start_epochs": (arguments["warm_start_epochs"] != 0, "0 (warm-start first)"),
        "partial_last_batch": (arguments["partial_last_batch"], "False"),
        "step_size": (isinstance(arguments["step_size"], str), "a number or a schedule"),
    }
    for name, (bad, expected) in refused.items():
        if bad:
            raise ValueError(
                f"stream=True does not support {name}={arguments[name]!r}; pass {name}={expected}"
            )


def _host_inputs(model: Callable, inputs: Any, name: str) -> Any:
    """Inputs checked without a device copy: shape, dtype, finiteness, the student."""
    if isinstance(inputs, jax.Array):
        raise TypeError(
            f"stream=True streams host arrays; {name} is already a device array (pass a NumPy "
            "array or np.load(path, mmap_mode='r'))"
        )
    array = as_input_batch(inputs, name)
    student = getattr(model, "student", None)
    if student is not None and getattr(student, "feature_extractor", None):
        raise ValueError(
            f"stream=True needs {name} that the student takes as they are; featurize them "
            "first (the model's feature extractor would need every row on the device)"
        )
    check_finite_rows(array, name)
    if isinstance(student, Student):
        student.check_inputs(array, name)
    return array


def streamed_data(
    model: Callable,
    inputs: Any,
    labels: Any,
    model_kwargs: dict | None,
    batch_size: int | None,
    prior_batch_size: int | None,
) -> tuple[np.ndarray, np.ndarray | None, MinibatchPlan, HostRows, StreamedEstimator]:
    """``(inputs, labels, plan, host data, estimator)`` of a streamed run, the inputs and
    labels checked and kept on the host (nothing of size N is copied to the device)."""
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
    features = _host_inputs(model, inputs, "inputs")
    kwargs = dict(model_kwargs or {})
    if kwargs.get("prior_inputs") is not None:
        kwargs["prior_inputs"] = _host_inputs(model, kwargs["prior_inputs"], "prior_inputs")
    classes = label_classes(model, features)  # the student checked against the teachers
    if labels is None:
        require_labels(model)
    else:
        labels = checked_labels(labels, "labels", features.shape[0], classes)
    plan = _plan(model, (features, labels), kwargs, batch_size, prior_batch_size)
    rows = _host_rows(model, (features, labels), plan, kwargs)
    resident = tuple(jnp.asarray(v) for v in rows.resident)
    estimator = StreamedEstimator(model, rows, rows.first_rows(), resident, plan.static)
    return features, labels, plan, rows, estimator


def streamed_probe(
    estimator: GradientEstimator,
    start: Any,
    logits_fn: Callable | None,
    predict: jax.Array | None,
) -> dict:
    """The fingerprint's probe of a streamed run (:func:`~mtbkd_jax.infer._start.probe` reads
    every row on the device): the log density and gradient norm on the first minibatch at
    chain 0's start, at every chain's start and away from each, and the streamed predictions'
    log probabilities there; and the log density at chain 0's start on
    :data:`SPREAD_BATCHES` minibatches of rows spread evenly over every plate (the first
    minibatch alone missed an edit to a model's code that acts on rows further on, as in a
    file sorted by class: a review resumed such a run silently)."""
    point = jax.tree.map(lambda x: x[0], start)
    value, grad = jax.jit(lambda e, p: jax.value_and_grad(e.logdensity)(p, e.first_batch()))(
        estimator, point
    )
    norm = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grad)))
    out = {"logdensity_at_start": [float(value)], "gradient_norm_at_start": float(norm)}
    at = jax.jit(lambda e, p, rows: e.logdensity(p, rows))
    out["logdensity_on_rows_spread"] = [
        float(at(estimator, point, rows))
        for rows in _spread_batches(cast(StreamedEstimator, estimator).rows)
    ]
    out.update(site_log_densities(estimator, point, estimator.first_batch()))
    out.update(chain_start_log_densities(estimator, start, estimator.first_batch()))
    return {**out, **prediction_probe(estimator, point, logits_fn, predict)}


def _spread_batches(rows: HostRows) -> list[tuple[jax.Array, ...]]:
    """:data:`SPREAD_BATCHES` minibatches of every plate's rows ``j * s + offset`` (``s = N //
    |B|``, a different offset in each), which together spread over all N rows."""
    batches = []
    for k in range(SPREAD_BATCHES):
        indices = {
            p.name: (np.arange(p.batch_size) * (p.size // p.batch_size) + k * p.size
                     // (p.batch_size * SPREAD_BATCHES)) % p.size
            for p in rows.plates
        }  # fmt: skip
        batches.append(tuple(jnp.asarray(r) for r in rows.take(indices)))
    return batches


def _plan(
    model: Callable,
    args: tuple,
    kwargs: dict,
    batch_size: int | None,
    prior_batch_size: int | None,
) -> MinibatchPlan:
    """The model's minibatch plan, read from abstract stand-ins of the host arrays."""
    found: dict[str, MinibatchPlan] = {}
    hosts = {k: v for k, v in kwargs.items() if _is_host_tree(v)}
    others = {k: v for k, v in kwargs.items() if k not in hosts}

    def plan(args: tuple, hosts: dict) -> int:
        found["plan"] = minibatch_plan(
            model, args, {**hosts, **others}, batch_size, prior_batch_size
        )
        return 0

    def abstract(x: Any, dtype: Any = None) -> jax.ShapeDtypeStruct:
        sample = np.asarray(x[:1] if np.ndim(x) else x)
        kind = dtype or jnp.asarray(np.zeros(0, sample.dtype)).dtype
        return jax.ShapeDtypeStruct(np.shape(x), kind)

    features, labels = args
    stand_ins = (
        abstract(features, jnp.float32),
        None if labels is None else abstract(labels, jnp.int32),
    )
    hosts_abstract = {
        k: abstract(v, jnp.float32) if k == "prior_inputs" else jax.tree.map(abstract, v)
        for k, v in hosts.items()
    }
    jax.eval_shape(plan, stand_ins, hosts_abstract)
    found_plan = found["plan"]
    arrays = {k: hosts.get(k, found_plan.arrays[k]) for k in found_plan.arrays}
    return replace(found_plan, arrays=arrays)


def _row_plate(name: str, shape: tuple, declared: str | None, matching: list[str]) -> str | None:
    """The plate whose minibatches index an array of ``shape``: the one the model declares
    (``row_plates``; refused if its size is not the array's length; a 0-d leaf of a declared
    tree stays whole), else the only plate of that size (several: refused), else none (the
    array stays on the device whole)."""
    if declared is not None and len(shape) > 0:  # a 0-d leaf of a declared tree stays whole
        if declared not in matching:
            raise ValueError(
                f"the model's row_plates says plate {declared!r} indexes {name}, but {name} "
                f"has {shape[0]} rows and the plates of that size are "
                f"{matching or 'none'}"
            )
        return declared
    if len(matching) > 1:
        raise ValueError(
            f"{name} has {shape[0]} rows, the size of plates {matching}: streaming cannot "
            "tell which plate's minibatches index it (give the model a method "
            "row_plates(model_kwargs) -> {keyword: plate}, with 'inputs' and 'labels' for "
            "the positional data)"
        )
    return matching[0] if matching else None


def _is_host_tree(value: object) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(x, np.ndarray) for x in leaves)


def _host_rows(model: Callable, args: tuple, plan: MinibatchPlan, kwargs: dict) -> HostRows:
    """Each leaf's plate (see the module docstring) and device dtype."""
    declared = getattr(model, "row_plates", None)
    declared = declared(kwargs) if callable(declared) else {}
    data = (args, plan.arrays)
    flat: list[Any]
    flat, treedef = jax.tree_util.tree_flatten_with_path(data)
    sizes = {p.name: p.size for p in plan.plates}
    roles: list[str | None] = []
    dtypes = []
    for path, leaf in flat:
        shape = np.shape(leaf)
        dtype: Any
        matching = [p for p, n in sizes.items() if len(shape) and shape[0] == n]
        if path[0].idx == 0:  # the inputs and the labels
            name = "inputs" if path[1].idx == 0 else "labels"
            # several plates of the data's length: the one that sets the epoch, as before
            lead = plan.plates[0].name
            preferred = declared.get(name) or (lead if lead in matching else None)
            role: str | None = _row_plate(name, shape, preferred, matching)
            if role is None:
                raise ValueError(
                    f"{name} have {shape[0] if shape else 0} rows, but no subsampled plate of "
                    f"the model has that size (plates: {sizes}); streaming gathers them by "
                    "the plate that indexes them"
                )
            dtype = np.float32 if path[1].idx == 0 else np.int32
        else:
            name = path[1].key
            role = _row_plate(f"model_kwargs[{name!r}]", shape, declared.get(name), matching)
            kind = np.asarray(leaf[:1] if len(shape) else leaf).dtype
            dtype = np.float32 if name == "prior_inputs" else jnp.asarray(np.zeros(0, kind)).dtype
        roles.append(role)
        dtypes.append(np.dtype(dtype))
    # a streamed leaf built on the device (a model's constants) is copied to the host once
    leaves = tuple(
        np.asarray(x) if r is not None and not isinstance(x, np.ndarray) else x
        for (_, x), r in zip(flat, roles, strict=True)
    )
    return HostRows(treedef, tuple(roles), leaves, tuple(dtypes), plan.plates)
