"""Classification metrics accumulated over mini-batches, on the device, in a state of fixed size.

:func:`~mtbkd_jax.metrics.classification_metrics` needs every example's probabilities at once.
A transfer or test set of millions of inputs, scored chunk by chunk by a posterior (see
:func:`~mtbkd_jax.uncertainty.predictive_summary`), or on several devices, needs metrics that
add up: accuracy, NLL, the Brier score, the ECE with its reliability bins and the classwise
ECE are all sums over examples of per-example or per-bin terms, so a state of
``O(num_classes * num_bins)`` numbers holds them exactly. The functions follow the
``init`` / ``update`` / ``compute`` pattern of optax and CLU metrics:

- :func:`streaming_init` makes an empty :class:`StreamingMetricsState` (a pytree);
- :func:`streaming_update` adds a batch; it is pure and jit-compiled, so it runs inside a
  ``jax.lax.scan`` or a jitted loop of the user's, and takes a ``mask`` for the padding of a
  last, short batch;
- :func:`streaming_merge` adds two states (a ``jax.lax.psum`` of the state over a device axis
  also works, to float rounding: its counts are exact below ``2**24`` in all);
- :func:`streaming_compute` and :func:`streaming_reliability_bins` turn a state into those
  five figures of :func:`~mtbkd_jax.metrics.classification_metrics` and
  :func:`~mtbkd_jax.metrics.reliability_bins`, on the host.
- :func:`streaming_classification_metrics` does all of it over an iterable of
  ``(probs, labels)`` or ``(probs, labels, mask)`` batches.

**Same figures as the batch metrics**, on the probabilities in the state's dtype (float32
unless ``jax_enable_x64``). The bins are those of :func:`~mtbkd_jax.metrics.reliability_bins`:
``[k/B, (k+1)/B)``, the last closed on the right, with the edges ``k/B`` correctly rounded. For
float32 probabilities each edge is the smallest float32 at or above ``k/B``, so a confidence
lands in the bin that the float64 batch metric (which first converts it to float64) gives it,
exactly: a confidence of ``np.float32(0.7)``, which is below 0.7, is not promoted into the bin
above. Ties in the top class go to the first class, as ``argmax`` does. Accuracy and every
count are exact. The sums of confidences, log-probabilities and squared errors agree with the
float64 batch metrics to float32 rounding (tested: NLL and Brier to 1e-6 relative; the ECEs,
which are differences of such sums, to 5e-6 absolute: 1.7e-6 was seen on 4,096 rows in one
bin), in one batch of two million rows as in
many small ones (a batch's per-bin sums are summed in chunks of 4,096 rows). Subnormal
probabilities, which XLA on a CPU treats as zero, get their exact log. Float64 NumPy input to a
float32 state is rounded to float32 first, with a row's top probability moved by one float32
unit where rounding took it across a bin edge (0.7 rounds to 0.69999999: it stays in the bin of
0.7, as in the float64 batch metrics), and where rounding tied it with another class (``0.5 -
1e-12`` and ``0.5 + 1e-12`` are both 0.5 in float32: the float64 top class stays the predicted
one); values that would round to 0 are refused, since their log would be ``-inf``.

**Sums that stay exact over many batches.** Every statistic is kept as a double-float pair (a
running total and the rounding it lost, renormalised after each addition), and counts are added
from exact integer sums: a plain float32 count stops growing at ``2**24 = 16,777,216`` examples,
the pair counts exactly to about ``2**47``, and the error of the sums does not grow with the
number of batches.

**No silent NaN.** Rows whose probabilities are not finite, negative, or do not sum to 1
(within 1e-3 in the state's dtype, as the batch metrics in float64), or whose label is outside
``0..num_classes - 1`` (checked before any cast to int32), are counted in the state and left out
of the sums (the values cannot be checked inside ``jit``); :func:`streaming_compute` refuses a
state that holds any, or a corrupt state. A probability of exactly 0 on the label gives an NLL
of ``inf``, as the batch metric does, never a clip. Inputs the batch metrics convert (float
labels holding whole numbers, integer probabilities, ``num_bins=15.0``) are refused here:
inside ``jit`` a float label cannot be checked to be whole.

**Not streamable exactly**, so not here: the equal-mass errors of :mod:`mtbkd_jax.calibration`
(their bins are quantiles of all the confidences) and the selective-prediction metrics of
:mod:`mtbkd_jax.selective` (they sort all the examples).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from mtbkd_jax._checks import require_bin_count
from mtbkd_jax._float_exactness import (
    add,
    add_count,
    chunked_segment_sum,
    exact_float_value,
    interior_edges,
    log_probability,
    negative_rows,
)
from mtbkd_jax._streaming_checks import check_batch, check_state_fields, narrowed

__all__ = [
    "StreamingMetricsState",
    "streaming_init",
    "streaming_update",
    "streaming_merge",
    "streaming_compute",
    "streaming_reliability_bins",
    "streaming_classification_metrics",
]

# probabilities whose row sum is further than this from 1 are refused (as metrics._check)
_SUM_TOLERANCE = 1e-3


class StreamingMetricsState(NamedTuple):
    """Sums over the examples added so far. Every field has a leading axis of 2: the
    compensated pair ``(total, lost rounding)``, whose sum is the statistic.

    Attributes:
        examples: examples added (masked rows not counted).
        correct: examples whose most probable class is the label.
        nll: sum of ``-log p(y)`` over the examples where ``p(y) > 0``.
        nll_infinite: examples with ``p(y) == 0`` (their NLL is ``inf``).
        brier: sum of ``sum_c (p_c - 1[y = c])^2``.
        invalid: rows refused (non-finite or negative probabilities, rows not summing to 1,
            labels out of range).
        bin_count, bin_confidence, bin_correct: ``(2, num_bins)``, per confidence bin the
            examples, their confidences ``max_c p_c`` and their correct predictions.
        class_count, class_probability, class_hits: ``(2, num_classes, num_bins)``, per class
            and bin of ``p_c`` the examples, their ``p_c`` and the examples with ``y = c``.
    """

    examples: jax.Array
    correct: jax.Array
    nll: jax.Array
    nll_infinite: jax.Array
    brier: jax.Array
    invalid: jax.Array
    bin_count: jax.Array
    bin_confidence: jax.Array
    bin_correct: jax.Array
    class_count: jax.Array
    class_probability: jax.Array
    class_hits: jax.Array

    @property
    def num_classes(self) -> int:
        return int(self.class_count.shape[-2])

    @property
    def num_bins(self) -> int:
        return int(self.bin_count.shape[-1])


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def streaming_init(
    num_classes: int, num_bins: int = 15, dtype: Any = None
) -> StreamingMetricsState:
    """An empty state for ``num_classes`` classes and ``num_bins`` equal-width bins.

    Args:
        num_classes: the number of classes (columns of ``probs``); at least 2.
        num_bins: confidence bins on [0, 1], as the batch metrics' ``num_bins`` (at most
            ``10**6``: :data:`~mtbkd_jax._checks.MAX_NUM_BINS`).
        dtype: the sums' float type: float32 or float64 (float64 needs ``jax_enable_x64``);
            by default float64 when x64 is enabled, else float32.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    num_bins = require_bin_count(num_bins)
    if dtype is None:
        dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError("dtype float64 needs jax_enable_x64; enable it or use float32")

    def zeros(*shape: int) -> jax.Array:
        return jnp.zeros((2, *shape), dtype)

    return StreamingMetricsState(
        *(zeros() for _ in range(6)),
        *(zeros(num_bins) for _ in range(3)),
        *(zeros(num_classes, num_bins) for _ in range(3)),
    )


# the statistics that count examples (added exactly from int32 sums); the others sum floats
_COUNTS = frozenset(
    {"examples", "correct", "nll_infinite", "invalid", "bin_count", "bin_correct"}
    | {"class_count", "class_hits"}
)


@jax.jit
def _update(
    state: StreamingMetricsState, probs: jax.Array, labels: jax.Array, mask: jax.Array
) -> StreamingMetricsState:
    dtype = state.examples.dtype
    num_classes, num_bins = state.num_classes, state.num_bins
    probs = probs.astype(dtype)  # float16/bfloat16 widen exactly
    in_range = (labels >= 0) & (labels < num_classes)  # before any cast can wrap a label
    finite = jnp.isfinite(probs).all(-1) & ~negative_rows(probs)
    sums_to_one = jnp.abs(probs.sum(-1) - 1) <= _SUM_TOLERANCE
    valid = finite & sums_to_one & in_range
    use = mask & valid
    probs = jnp.where(valid[:, None], probs, 1.0 / num_classes)  # no NaN into the sums
    labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    edges = jnp.asarray(interior_edges(num_bins, np.dtype(dtype)))
    weight, counted = use.astype(dtype), use.astype(jnp.int32)

    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    log_label_prob, zero = log_probability(
        jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]
    )
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    brier_terms = ((probs - one_hot) ** 2).sum(-1)

    top_bin = jnp.searchsorted(edges, confidence, side="right")
    class_bin = jnp.arange(num_classes) * num_bins + jnp.searchsorted(edges, probs, side="right")
    per_class = jnp.broadcast_to(counted[:, None], probs.shape)

    def counts(values: jax.Array, segments: jax.Array, size: int) -> jax.Array:
        return jax.ops.segment_sum(values.reshape(-1), segments.reshape(-1), num_segments=size)

    def sums(values: jax.Array, segments: jax.Array, size: int) -> jax.Array:
        return chunked_segment_sum(values, segments, size)

    classes = num_classes * num_bins
    increments = {
        "examples": counted.sum(),
        "correct": (counted * correct).sum(),
        "nll": (weight * jnp.where(zero, 0.0, -log_label_prob)).sum(),
        "nll_infinite": (counted * zero).sum(),
        "brier": (weight * brier_terms).sum(),
        "invalid": (mask & ~valid).astype(jnp.int32).sum(),
        "bin_count": counts(counted, top_bin, num_bins),
        "bin_confidence": sums(weight * confidence, top_bin, num_bins),
        "bin_correct": counts(counted * correct, top_bin, num_bins),
        "class_count": counts(per_class, class_bin, classes).reshape(num_classes, num_bins),
        "class_probability": sums(weight[:, None] * probs, class_bin, classes).reshape(
            num_classes, num_bins
        ),
        "class_hits": counts(per_class * (one_hot > 0), class_bin, classes).reshape(
            num_classes, num_bins
        ),
    }
    return StreamingMetricsState(
        **{
            name: (add_count if name in _COUNTS else add)(pair, increments[name])
            for name, pair in state._asdict().items()
        }
    )


def _given_dtype(value: object) -> Any:
    """``value``'s dtype as given (a list's as NumPy reads it; ``None`` for ``None``), before
    a conversion to a JAX array narrows it (float64 to float32 without x64)."""
    if value is None:
        return None
    return value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype


def streaming_update(
    state: StreamingMetricsState,
    probs: ArrayLike,
    labels: ArrayLike,
    mask: ArrayLike | None = None,
) -> StreamingMetricsState:
    """``state`` with a batch added. Pure and jit-compiled (one compilation per batch shape):
    call it inside a ``jax.lax.scan`` or a jitted function, or eagerly.

    Args:
        state: from :func:`streaming_init` or an earlier update.
        probs: ``(N, num_classes)`` predictive probabilities (float; widened to the state's
            dtype, so float16 and bfloat16 are taken exactly; each row must still sum to 1
            within 1e-3, as the batch metrics ask, which a half-precision softmax need not:
            take it in float32).
        labels: ``(N,)`` integer class indices.
        mask: ``(N,)`` booleans, ``False`` for padding rows, which are left out; default all
            rows.

    Invalid rows (see the module's notes) are counted, not added; :func:`streaming_compute`
    refuses a state that has any.
    """
    _check_state(state, "state")
    probs, labels = narrowed(probs, labels, state.num_classes, state.examples.dtype, state.num_bins)
    given = (_given_dtype(labels), _given_dtype(mask))  # for check_batch's messages
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    mask_array = None if mask is None else jnp.asarray(mask)
    check_batch(probs, labels, mask_array, state.num_classes, given)
    if mask_array is None:
        mask_array = jnp.ones(labels.shape, bool)
    return _update(state, probs, labels, mask_array)


def _check_state(state: object, name: str) -> None:
    if not isinstance(state, StreamingMetricsState):
        raise ValueError(
            f"{name} must be a StreamingMetricsState (from streaming_init), got {type(state)}"
        )
    check_state_fields(list(state), name)


def streaming_merge(
    first: StreamingMetricsState, second: StreamingMetricsState
) -> StreamingMetricsState:
    """The state of both states' examples (e.g. one per device, process or data shard)."""
    _check_state(first, "first")
    _check_state(second, "second")
    same_dtype = jnp.result_type(first.examples) == jnp.result_type(second.examples)
    if jax.tree.map(jnp.shape, first) != jax.tree.map(jnp.shape, second) or not same_dtype:
        raise ValueError(
            f"first and second must have the same classes, bins and dtype, got "
            f"({first.num_classes}, {first.num_bins}) and ({second.num_classes}, "
            f"{second.num_bins})"
        )

    return StreamingMetricsState(
        *(add(add(a, b[0]), b[1]) for a, b in zip(first, second, strict=True))
    )


def _values(state: StreamingMetricsState) -> dict[str, np.ndarray]:
    """Each statistic as float64 on the host (total plus its lost rounding); refuses a state
    with no example or with invalid rows."""
    _check_state(state, "state")
    values = {name: exact_float_value(pair) for name, pair in state._asdict().items()}
    broken = [name for name, value in values.items() if not np.isfinite(value).all()]
    if broken:
        raise ValueError(f"state holds NaN or infinite sums in {broken}: it is corrupt")
    if values["invalid"] != 0:
        raise ValueError(
            f"state holds {values['invalid']:.0f} invalid rows (probabilities not finite, "
            "negative or not summing to 1 within 1e-3, or labels outside "
            f"0..{state.num_classes - 1}); they were left out of the sums, so no figure "
            "would describe the data given"
        )
    if values["examples"] < 0.5:
        raise ValueError("state holds no example: a mean over no examples is no figure")
    return values


def streaming_compute(state: StreamingMetricsState) -> dict[str, float]:
    """Accuracy, NLL, Brier score, ECE and classwise ECE of the examples added: those five
    keys and values of :func:`~mtbkd_jax.metrics.classification_metrics` (to float32 rounding
    of each term for a float32 state; its equal-mass and selective figures need every example
    at once), plus ``"examples"``.

    Raises:
        ValueError: no example was added, or some rows were invalid.
    """
    v = _values(state)
    n = v["examples"]
    return {
        "examples": float(np.round(n)),
        "accuracy": float(v["correct"] / n),
        "nll": float("inf") if v["nll_infinite"] > 0 else float(v["nll"] / n),
        "brier": float(v["brier"] / n),
        "ece": float(np.abs(v["bin_correct"] - v["bin_confidence"]).sum() / n),
        "classwise_ece": float(np.abs(v["class_hits"] - v["class_probability"]).sum(-1).mean() / n),
    }


def streaming_reliability_bins(
    state: StreamingMetricsState,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(edges, counts, mean_confidence, accuracy)`` of the examples added, as
    :func:`~mtbkd_jax.metrics.reliability_bins` returns them (empty bins hold NaN)."""
    v = _values(state)
    counts = np.round(v["bin_count"]).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(counts > 0, v["bin_confidence"] / counts, np.nan)
        accuracy = np.where(counts > 0, v["bin_correct"] / counts, np.nan)
    edges = np.arange(state.num_bins + 1) / state.num_bins
    return edges, counts, confidence, accuracy


def streaming_classification_metrics(
    batches: Iterable[tuple[ArrayLike, ...]],
    num_classes: int,
    num_bins: int = 15,
    dtype: Any = None,
) -> dict[str, float]:
    """:func:`streaming_compute` of every ``(probs, labels)`` or ``(probs, labels, mask)``
    batch of ``batches`` (a list, or a generator that scores one chunk at a time), added in
    turn to a state of ``dtype`` (:func:`streaming_init`'s)."""
    state = streaming_init(num_classes, num_bins, dtype)
    for k, batch in enumerate(batches):
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise ValueError(
                f"batches must yield (probs, labels) or (probs, labels, mask); item {k} is not one"
            )
        state = streaming_update(state, *batch)
    return streaming_compute(state)
