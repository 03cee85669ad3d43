"""Classification metrics on predictive probabilities ``(N, C)`` and integer labels ``(N,)``.

All are plain NumPy on the host (they run once per evaluation), computed in float64.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "negative_log_likelihood",
    "brier_score",
    "expected_calibration_error",
    "reliability_bins",
    "classification_metrics",
]


def _check(probs, labels):
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and non-negative")
    if probs.size and np.abs(probs.sum(-1) - 1).max() > 1e-3:
        raise ValueError(
            f"probs rows must sum to 1 (within 1e-3); found a row summing to "
            f"{probs.sum(-1)[np.argmax(np.abs(probs.sum(-1) - 1))]:.6g}"
        )
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if labels.size and not np.all(np.mod(labels, 1) == 0):
            raise ValueError("labels must be integer class indices")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return probs, labels.astype(np.int64)


def accuracy(probs, labels) -> float:
    """Fraction of examples whose most probable class is the label."""
    probs, labels = _check(probs, labels)
    return float((probs.argmax(-1) == labels).mean())


def negative_log_likelihood(probs, labels) -> float:
    """Mean ``-log p(y_i)`` (natural log); a zero probability gives ``inf``, never a clip."""
    probs, labels = _check(probs, labels)
    with np.errstate(divide="ignore"):
        return float(-np.log(probs[np.arange(len(labels)), labels]).mean())


def brier_score(probs, labels) -> float:
    """Mean over examples of ``sum_c (p_c - 1[y = c])^2`` (the multi-class Brier score)."""
    probs, labels = _check(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(-1).mean())


def reliability_bins(probs, labels, num_bins: int = 15):
    """Equal-width confidence bins on [0, 1]; each bin is [lo, hi) but the last is [lo, 1].

    Returns:
        ``(edges, counts, mean_confidence, accuracy)``; empty bins hold NaN.
    """
    probs, labels = _check(probs, labels)
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    # k / B is correctly rounded, so a confidence of exactly 0.7 sits on the edge 0.7
    # (np.linspace would give 0.7000000000000001 and drop it into the bin below)
    edges = np.arange(int(num_bins) + 1) / int(num_bins)
    index = np.searchsorted(edges[1:-1], confidence, side="right")  # right-closed last bin
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(index, confidence, minlength=num_bins) / counts
        mean_acc = np.bincount(index, correct.astype(float), minlength=num_bins) / counts
    return edges, counts, mean_conf, mean_acc


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
    """ECE: ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width bins (last bin closed)."""
    _, counts, conf, acc = reliability_bins(probs, labels, num_bins)
    filled = counts > 0
    return float((counts[filled] / counts.sum() * np.abs(acc[filled] - conf[filled])).sum())


def classification_metrics(probs, labels, num_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier score and ECE in one dict."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels, num_bins),
    }
