"""Float32 arithmetic that gives the float64 batch metrics' figures (for
:mod:`mtbkd_jax.streaming_metrics`): sums that do not drift, bin edges that bin as float64
does, and logs of subnormal probabilities.

**Sums.** Running totals are kept as a double-float pair ``(hi, lo)``. Each addition is
Neumaier's compensated step followed by a renormalisation (Fast2Sum), so the pair is a double-
length float: the float32 pair of :mod:`mtbkd_jax.streaming_metrics` holds integer counts
exactly up to about ``2**47`` and sums to about ``2**-44`` relative, whatever the number of
additions. Counts are added from exact integers, and a batch's float sums are summed in chunks
of rows, so that one large batch rounds as little as many small ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CHUNK_ROWS",
    "add",
    "add_count",
    "chunked_segment_sum",
    "exact_float_value",
    "interior_edges",
    "log_probability",
    "negative_rows",
]

#: Rows per chunk of a batch's per-bin float sums (each chunk sums in float32, then the chunks).
CHUNK_ROWS = 4096
_COUNT_SPLIT = 12  # an int32 count is added as (count >> 12) << 12 and count & 4095: both exact


def add(pair: jax.Array, value: jax.Array) -> jax.Array:
    """``pair`` (leading axis 2: ``hi``, ``lo``) with ``value`` added, renormalised."""
    total, lost = pair[0], pair[1]
    new = total + value
    big_total = jnp.abs(total) >= jnp.abs(value)
    lost = lost + jnp.where(big_total, (total - new) + value, (value - new) + total)
    hi = new + lost
    return jnp.stack([hi, lost - (hi - new)])


def add_count(pair: jax.Array, count: jax.Array) -> jax.Array:
    """``pair`` with a non-negative int32 ``count`` added exactly (in two float-exact parts)."""
    high = (count >> _COUNT_SPLIT) << _COUNT_SPLIT
    return add(add(pair, high.astype(pair.dtype)), (count - high).astype(pair.dtype))


def chunked_segment_sum(values: jax.Array, segments: jax.Array, num_segments: int) -> jax.Array:
    """``segment_sum`` of ``values`` (N, ...) by ``segments`` (same shape), summed per chunk of
    :data:`CHUNK_ROWS` rows and then over the chunks: a sequential float32 scatter-add over
    millions of rows would lose about 1e-3 relative."""
    num_rows = values.shape[0]
    num_chunks = max(1, -(-num_rows // CHUNK_ROWS))
    chunk = (jnp.arange(num_rows) // CHUNK_ROWS).reshape((num_rows,) + (1,) * (values.ndim - 1))
    ids = (chunk * num_segments + segments).reshape(-1)
    sums = jax.ops.segment_sum(values.reshape(-1), ids, num_segments=num_chunks * num_segments)
    return sums.reshape(num_chunks, num_segments).sum(0)


def exact_float_value(pair: jax.Array) -> np.ndarray:
    """The pair's value in float64 on the host."""
    return np.asarray(pair[0], np.float64) + np.asarray(pair[1], np.float64)


def interior_edges(num_bins: int, dtype: np.dtype) -> np.ndarray:
    """The edges ``k / num_bins``, ``0 < k < num_bins``, each rounded up to ``dtype``: a value
    of ``dtype`` is at or above the rounded edge exactly when it is at or above ``k / B``."""
    exact = np.arange(1, num_bins) / num_bins  # float64, correctly rounded
    rounded = exact.astype(dtype)
    below = rounded.astype(np.float64) < exact
    return np.where(below, np.nextafter(rounded, np.array(np.inf, dtype)), rounded)


def _magnitude_bits(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(bits, |bits|)``: the float's bit pattern as a signed integer, and without its sign."""
    wide = values.dtype == jnp.float64
    integer = jnp.int64 if wide else jnp.int32
    bits = jax.lax.bitcast_convert_type(values, integer)
    return bits, bits & jnp.asarray((1 << (63 if wide else 31)) - 1, integer)


def log_probability(p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log p, p == 0)`` for ``p >= 0``, exact for subnormal ``p`` too: XLA on a CPU treats
    subnormal inputs as zero, so their log is taken from the bits (``p = bits * 2**-149`` in
    float32, ``2**-1074`` in float64)."""
    shift, lowest = (52, 1074) if p.dtype == jnp.float64 else (23, 149)
    bits = _magnitude_bits(p)[1]
    zero, subnormal = bits == 0, bits < (1 << shift)
    offset = jnp.asarray(lowest * np.log(2.0), p.dtype)  # a NumPy float64 would widen p's
    from_bits = jnp.log(jnp.where(zero, 1, bits).astype(p.dtype)) - offset
    return jnp.where(subnormal, from_bits, jnp.log(jnp.where(subnormal, 1.0, p))), zero


def negative_rows(probs: jax.Array) -> jax.Array:
    """Rows with a value below 0, subnormal ones included (a CPU compares them as 0)."""
    bits, magnitude = _magnitude_bits(probs)
    return ((bits < 0) & (magnitude != 0)).any(-1)
