"""The checks of :mod:`mtbkd_jax.streaming_metrics` that run on the host, outside ``jit``:
a batch's shapes and dtypes, a state's structure, and host arrays wider than the state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["check_batch", "check_state_fields", "narrowed"]


def check_batch(
    probs: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None,
    classes: int,
    given: tuple[Any, Any] = (None, None),
) -> None:
    """Shapes and dtypes, the only things known while tracing; ``given`` holds the labels' and
    the mask's dtypes before their conversion to JAX arrays (float64 labels became float32
    without x64), which the messages report."""
    labels_dtype = labels.dtype if given[0] is None else given[0]
    mask_dtype = None if mask is None else (mask.dtype if given[1] is None else given[1])
    if probs.ndim != 2 or probs.shape[1] != classes:
        raise ValueError(f"probs must have shape (N, {classes}), got {probs.shape}")
    if not jnp.issubdtype(probs.dtype, jnp.floating):
        raise ValueError(f"probs must be floating point, got dtype {probs.dtype}")
    if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
        raise ValueError(f"labels must be integer class indices, got dtype {labels_dtype}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
    if mask is not None and (mask.shape != probs.shape[:1] or mask.dtype != jnp.bool_):
        raise ValueError(
            f"mask must be a boolean array of shape ({probs.shape[0]},), "
            f"got {mask_dtype} {mask.shape}"
        )


def check_state_fields(fields: list, name: str) -> None:
    """Raise unless a state's fields are consistent compensated pairs of one float dtype:
    six scalars, three ``(num_bins,)`` and three ``(num_classes, num_bins)``."""
    shapes = [np.shape(field) for field in fields]
    dtypes = {jnp.result_type(field) for field in fields}
    scalar, bins, classes = shapes[0], shapes[6], shapes[9]
    expected = [scalar] * 6 + [bins] * 3 + [classes] * 3
    well_formed = (
        scalar == (2,)
        and len(bins) == 2
        and bins[0] == 2
        and len(classes) == 3
        and (classes[0], classes[2]) == (2, bins[1])
        and shapes == expected
        and len(dtypes) == 1
        and dtypes <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)}
    )
    if not well_formed:
        raise ValueError(
            f"{name} is not a state made by streaming_init and its updates: fields of shapes "
            f"{shapes} and dtypes {sorted(map(str, dtypes))}"
        )


def narrowed(
    probs: ArrayLike, labels: ArrayLike, num_classes: int, dtype: Any, num_bins: int
) -> tuple:
    """Host arrays wider than the state: labels that a cast to int32 would wrap become -1
    (invalid), probabilities that would round to 0 are refused (their NLL would be inf), and
    the rest are rounded to the state's dtype with each row's confidence kept in its bin
    (:func:`bin_kept`)."""
    if not isinstance(labels, jax.Array):  # host labels (a JAX array, maybe traced, is kept)
        labels = np.asarray(labels)  # a list of Python ints may not fit int32 either
        if labels.dtype.kind in "iu" and labels.dtype.itemsize > 4:
            in_range = (labels >= 0) & (labels < num_classes)
            kept = np.full(labels.shape, -1, np.int32)  # -1 (invalid) fits no unsigned dtype
            kept[in_range] = labels[in_range]
            labels = kept
    dtype = np.dtype(dtype)
    probs = _on_host(probs, dtype)
    if isinstance(probs, np.ndarray) and probs.dtype.kind == "f" and probs.dtype != dtype:
        if probs.dtype.itemsize > dtype.itemsize:
            lost = (probs != 0) & (probs.astype(dtype) == 0)
            if lost.any():
                raise ValueError(
                    f"probs hold {int(lost.sum())} nonzero value(s) that round to 0 in the "
                    f"state's {dtype} (the smallest: {probs[lost].min():.3g}); their log would "
                    "be -inf: use a float64 state (jax_enable_x64) or pass float32 probabilities"
                )
            return bin_kept(probs, dtype, num_bins), labels
    return probs, labels


def _on_host(probs: ArrayLike, dtype: np.dtype) -> ArrayLike:
    """Lists and tuples as NumPy arrays (their Python floats are float64: a cast to a float32
    state must keep their bins as an array's does), and likewise a concrete JAX array wider
    than the state (x64 on); a traced or not fully addressable array is left as it is."""
    if isinstance(probs, list | tuple):
        return np.asarray(probs)
    wide = (
        isinstance(probs, jax.Array)
        and not isinstance(probs, jax.core.Tracer)
        and jnp.issubdtype(probs.dtype, jnp.floating)
        and probs.dtype.itemsize > dtype.itemsize
        and probs.is_fully_addressable
    )
    return np.asarray(probs) if wide else probs


def bin_kept(probs: np.ndarray, dtype: Any, num_bins: int) -> np.ndarray:
    """``probs`` rounded to ``dtype``, each value moved by one unit in the last place where
    rounding took it across a bin edge ``k / num_bins`` (0.7 in float64 is ``0.69999999`` in
    float32: it would leave bin 7 of 10 for bin 6), so the state bins every confidence and
    every class probability as the float64 batch metrics do; then each row's top class is made
    the float64 one (:func:`_top_kept`)."""
    from mtbkd_jax.metrics import _equal_width_bins

    rounded = probs.astype(dtype)
    if rounded.ndim != 2 or rounded.size == 0:
        return rounded  # check_batch names the shape
    usable = np.isfinite(probs)
    want = _equal_width_bins(np.where(usable, probs, 0.0), num_bins)[1]
    got = _equal_width_bins(np.where(usable, rounded, 0.0).astype(np.float64), num_bins)[1]
    moved = rounded.copy()
    up, down = usable & (got < want), usable & (got > want)
    moved[up] = np.nextafter(rounded[up], np.asarray(np.inf, dtype))
    moved[down] = np.nextafter(rounded[down], np.asarray(-np.inf, dtype))
    return _top_kept(probs, moved, usable, num_bins)


def _top_kept(
    probs: np.ndarray, rounded: np.ndarray, usable: np.ndarray, num_bins: int
) -> np.ndarray:
    """``rounded`` with each row's top class that of ``probs``: where rounding tied the top
    value with another class's (``0.5 - 1e-12`` and ``0.5 + 1e-12`` are both 0.5 in float32),
    the first of the tied classes would be predicted, and accuracy and the ECE would count
    another class than the float64 batch metrics. The top value is raised by one unit in the
    last place above the others, or where that would take it into another bin than its
    float64 value's, the others tied with it lowered by one unit instead."""
    from mtbkd_jax.metrics import _equal_width_bins

    want = np.where(usable, probs, -np.inf).argmax(-1)
    rows = np.flatnonzero(usable.all(-1) & (rounded.argmax(-1) != want))
    if not rows.size:
        return rounded
    kept, infinity = rounded.copy(), np.asarray(np.inf, rounded.dtype)

    def bins(values: np.ndarray) -> np.ndarray:
        return _equal_width_bins(values.astype(np.float64), num_bins)[1]

    for row in rows:
        top, values = want[row], kept[row]
        raised = values.copy()
        raised[top] = np.nextafter(np.delete(values, top).max(), infinity)
        rivals = np.flatnonzero(values >= values[top])
        rivals = rivals[rivals != top]
        lowered = values.copy()
        lowered[rivals] = np.nextafter(values[top], -infinity)
        wanted = bins(probs[row])
        use_lowered = bins(raised)[top] != wanted[top] and (bins(lowered) == wanted)[rivals].all()
        kept[row] = lowered if use_lowered else raised
    return kept
