"""The coverage of credible intervals where the true class probabilities are known (the
synthetic benchmarks): pooled over every (example, class) pair, and by the true probability's
size, with the side on which the misses fall. Plain NumPy in float64; re-exported by
:mod:`mtbkd_jax.metrics`.

Bounds narrower than float64 (float32 from :func:`~mtbkd_jax.uncertainty.class_intervals`,
float16, bfloat16) are compared with the true probabilities rounded to the bounds' dtype: a
truth that rounds onto a bound counts as on it, so inside (``class_intervals`` of draws that
all equal 0.3 gives the float32 bounds ``[0.30000001, 0.30000001]``, which hold the truth 0.3
at float32 precision, not in float64). Which bin of ``true_probs`` a pair falls in is decided
by the truth as given."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["interval_coverage", "interval_coverage_by_probability"]


def _bounds_dtype(intervals: ArrayLike) -> np.dtype | None:
    """The bounds' floating dtype where it is narrower than float64 (else ``None``)."""
    dtype = np.asarray(intervals).dtype
    try:
        bits = np.finfo(dtype).bits  # float16, float32, ml_dtypes' bfloat16 (kind "V")
    except (TypeError, ValueError):  # integers, bools, objects: nothing to round to
        return None
    return dtype if bits < 64 and dtype.kind != "c" else None


def _at_bounds_precision(true_probs: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """``true_probs`` rounded to the bounds' ``dtype`` (as float64), so that a truth is
    compared with the bounds at their precision; unchanged when ``dtype`` is ``None``."""
    if dtype is None:
        return true_probs
    return np.asarray(true_probs.astype(dtype), dtype=np.float64)


def _check_intervals(intervals: ArrayLike, true_probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    intervals = np.asarray(intervals, dtype=np.float64)
    true_probs = np.asarray(true_probs, dtype=np.float64)
    if intervals.shape != (*true_probs.shape, 2):
        raise ValueError(
            f"intervals must have shape {(*true_probs.shape, 2)} (lower and upper bounds for "
            f"true_probs of shape {true_probs.shape}), got {intervals.shape}"
        )
    if true_probs.size == 0:
        raise ValueError("true_probs must hold at least one probability, got shape (0, ...)")
    # a NaN bound or probability compares False everywhere, so it would count as a miss
    if np.isnan(intervals).any():
        raise ValueError("intervals must not hold NaN")
    low, high = true_probs.min(), true_probs.max()  # NaN if any is; then refused
    if not np.isfinite(true_probs).all() or low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"true_probs must be finite and in [0, 1], got {low:g} to {high:g}")
    clipped: np.ndarray = np.clip(true_probs, 0.0, 1.0)  # rounding's excess (1 + 1e-16)
    reversed_ = intervals[..., 0] > intervals[..., 1]
    if reversed_.any():
        where = tuple(int(i) for i in np.argwhere(reversed_)[0])
        raise ValueError(
            f"intervals must hold (lower, upper) with lower <= upper; at {where} the lower bound "
            f"{intervals[where][0]:.6g} is above the upper {intervals[where][1]:.6g} "
            "(bounds swapped?)"
        )
    return intervals, clipped


def interval_coverage(intervals: ArrayLike, true_probs: ArrayLike) -> float:
    """Fraction of true class probabilities inside their credible intervals (bounds included).

    Bounds narrower than float64 (float32 from :func:`~mtbkd_jax.uncertainty.class_intervals`)
    are compared with each truth rounded to their dtype: a truth that rounds onto a bound is on
    it, so inside (the float32 bounds ``[0.30000001, 0.30000001]`` hold the truth 0.3).

    Args:
        intervals: (N, C, 2) lower and upper bounds.
        true_probs: (N, C) the known class probabilities (synthetic data).
    """
    dtype = _bounds_dtype(intervals)
    intervals, true_probs = _check_intervals(intervals, true_probs)
    true_probs = _at_bounds_precision(true_probs, dtype)
    inside = (intervals[..., 0] <= true_probs) & (true_probs <= intervals[..., 1])
    return float(inside.mean())


def interval_coverage_by_probability(
    intervals: ArrayLike,
    true_probs: ArrayLike,
    edges: ArrayLike = (0.0, 0.01, 0.1, 0.9, 1.0),
) -> list[dict[str, float]]:
    """Coverage within bins of the true probability, and on which side the misses fall.

    With many classes most (example, class) pairs have a tiny true probability, and the pooled
    :func:`interval_coverage` is then mostly about the intervals' lower tails; this shows it.

    Args:
        intervals: (N, C, 2) lower and upper bounds.
        true_probs: (N, C) the known class probabilities.
        edges: increasing bin edges; a bin is ``[low, high)``, the last one ``[low, high]``
            (of the truth as given; it is compared with bounds narrower than float64 at their
            precision, as in :func:`interval_coverage`).

    Returns:
        One dict per non-empty bin: ``low``, ``high``, ``count``, ``coverage``, and the
        fractions of the bin with the truth ``below`` and ``above`` its interval.
    """
    dtype = _bounds_dtype(intervals)
    intervals, true_probs = _check_intervals(intervals, true_probs)
    compared = _at_bounds_precision(true_probs, dtype)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):  # NaN: refused
        raise ValueError(f"edges must be at least two increasing values, got {edges.tolist()}")
    outside = (true_probs < edges[0]) | (true_probs > edges[-1])
    if outside.any():  # they would be in no bin, and the rows would not add up to the pairs
        raise ValueError(
            f"edges must span every true probability: {int(outside.sum())} lie outside "
            f"[{edges[0]:g}, {edges[-1]:g}] (use edges from 0 to 1)"
        )
    below = compared < intervals[..., 0]
    above = compared > intervals[..., 1]
    rows = []
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = k == len(edges) - 2
        in_bin = (true_probs >= low) & ((true_probs <= high) if last else (true_probs < high))
        count = int(in_bin.sum())
        if count:
            rows.append(
                {
                    "low": float(low),
                    "high": float(high),
                    "count": count,
                    "coverage": float(1.0 - (below | above)[in_bin].mean()),
                    "below": float(below[in_bin].mean()),
                    "above": float(above[in_bin].mean()),
                }
            )
    return rows
