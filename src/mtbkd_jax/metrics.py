"""Classification metrics on predictive probabilities ``(N, C)`` and integer labels ``(N,)``.

All are plain NumPy on the host (they run once per evaluation), computed in float64. The
selective-prediction, OOD-detection and calibration-band metrics live in
:mod:`mtbkd_jax.selective`, the coverage of credible intervals in :mod:`mtbkd_jax.intervals`,
the equal-mass calibration errors (adaptive ECE, the debiased L2 calibration error) in
:mod:`mtbkd_jax.calibration`; all are re-exported here. The same accuracy, NLL, Brier score,
ECE and classwise ECE accumulated over mini-batches, on the device, are in
:mod:`mtbkd_jax.streaming_metrics`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from mtbkd_jax._checks import require_bin_count
from mtbkd_jax.calibration import (
    adaptive_calibration_error,
    debiased_calibration_error,
    debiased_calibration_error_or_nan,
)
from mtbkd_jax.intervals import interval_coverage, interval_coverage_by_probability
from mtbkd_jax.selective import (
    accuracy_at_coverage,
    aurc,
    ood_auroc,
    ood_detection,
    reliability_bands,
    risk_coverage_curve,
)

__all__ = [
    "accuracy",
    "negative_log_likelihood",
    "predictive_nll_from_logits",
    "brier_score",
    "expected_calibration_error",
    "reliability_bins",
    "classwise_calibration_error",
    "adaptive_calibration_error",
    "debiased_calibration_error",
    "error_detection_auroc",
    "interval_coverage",
    "interval_coverage_by_probability",
    "classification_metrics",
    "risk_coverage_curve",
    "aurc",
    "accuracy_at_coverage",
    "ood_auroc",
    "ood_detection",
    "reliability_bands",
]


def _check(
    probs: ArrayLike, labels: ArrayLike, name: str = "probs"
) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` (``name`` in the messages) and ``labels`` checked, as float64 and int64."""
    if np.iscomplexobj(probs):  # a cast would drop the imaginary part with a warning
        raise ValueError(f"{name} must be real, got dtype {np.asarray(probs).dtype}")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got {probs.shape}")
    if probs.shape[0] == 0 or probs.shape[1] == 0:  # a mean over nothing is never a figure
        raise ValueError(f"{name} must hold at least one example and class, got {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if probs.size and np.abs(probs.sum(-1) - 1).max() > 1e-3:
        raise ValueError(
            f"{name} rows must sum to 1 (within 1e-3); found a row summing to "
            f"{probs.sum(-1)[np.argmax(np.abs(probs.sum(-1) - 1))]:.6g}"
        )
    if labels.dtype.kind not in "biuf":  # strings, complex numbers, objects
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if labels.size and not np.all(np.mod(labels, 1) == 0):
            raise ValueError("labels must be integer class indices")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(
            f"labels must lie in 0..{probs.shape[1] - 1} ({name} has C = {probs.shape[1]} "
            f"classes), got values in {labels.min()}..{labels.max()}"
        )
    return probs, labels.astype(np.int64)


# the per-example terms whose means are accuracy, NLL and the Brier score (on checked input;
# mtbkd_jax.comparison resamples them)
def _correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (probs.argmax(-1) == labels).astype(np.float64)


def _nll_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # a zero probability gives inf, never a clip
        return -np.log(probs[np.arange(len(labels)), labels])


def _brier_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return ((probs - np.eye(probs.shape[1])[labels]) ** 2).sum(-1)


def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose most probable class is the label.

    Example:
        >>> from mtbkd_jax.metrics import accuracy
        >>> accuracy([[0.9, 0.1], [0.3, 0.7]], [0, 0])
        0.5
    """
    probs, labels = _check(probs, labels)
    return float(_correct(probs, labels).mean())


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean ``-log p(y_i)`` (natural log); a zero probability gives ``inf``, never a clip."""
    probs, labels = _check(probs, labels)
    return float(_nll_terms(probs, labels).mean())


def predictive_nll_from_logits(draw_logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean ``-log p(y_i)`` of the predictive ``p = mean_s softmax(z_s)``, from the logits.

    The same figure as ``negative_log_likelihood(mean_s softmax(z_s), labels)``, but computed in
    log space in float64 (``logsumexp`` over draws of each draw's ``log_softmax``), so a label
    whose float32 probability underflows to 0 (a logit gap above about 104) still gets its
    finite ``-log p``, and settings compared by it are not tied at ``inf``.

    Args:
        draw_logits: logits ``(N, C)`` of one draw or ``(..., N, C)`` of several (every
            leading axis is a draw axis, e.g. ``Posterior.predict_logits``'s ``(S, N, C)``).
        labels: integer classes ``(N,)``.

    Example:
        >>> from mtbkd_jax.metrics import predictive_nll_from_logits
        >>> round(predictive_nll_from_logits([[0.0, 200.0]], [0]), 3)
        200.0
    """
    logits = np.asarray(draw_logits, dtype=np.float64)
    if logits.ndim < 2 or logits.size == 0:
        raise ValueError(
            "draw_logits must have shape (N, C) or (..., N, C) with at least one draw, example "
            f"and class, got {logits.shape}"
        )
    if not np.isfinite(logits).all():
        raise ValueError("draw_logits must be finite")
    if (logits >= 0).all() and np.allclose(logits.sum(-1), 1.0, rtol=0.0, atol=1e-4):
        warnings.warn(  # read as logits, probabilities give a far flatter predictive
            "draw_logits are rows of probabilities (non-negative, each summing to 1), which "
            "are read as logits here: pass the probabilities to negative_log_likelihood",
            UserWarning,
            skip_file_prefixes=(str(Path(__file__).parent),),
        )
    logits = logits.reshape(-1, *logits.shape[-2:])
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    uniform = np.full(logits.shape[1:], 1.0 / logits.shape[-1])
    _, labels = _check(uniform, labels)  # the labels' checks, against N and C
    picked = log_probs[:, np.arange(len(labels)), labels]  # (S, N)
    top = picked.max(0)
    log_mean = top + np.log(np.exp(picked - top).mean(0))
    return float(-log_mean.mean())


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean over examples of ``sum_c (p_c - 1[y = c])^2`` (the multi-class Brier score)."""
    probs, labels = _check(probs, labels)
    return float(_brier_terms(probs, labels).mean())


def _equal_width_bins(scores: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_bins + 1`` edges on [0, 1] and each score's bin: ``[lo, hi)``, the last
    ``[lo, 1]``. ``k / B`` is correctly rounded, so a score of exactly 0.7 sits on the edge 0.7
    (np.linspace would give 0.7000000000000001 and drop it into the bin below)."""
    edges = np.arange(int(num_bins) + 1) / int(num_bins)
    return edges, np.searchsorted(edges[1:-1], scores, side="right")


def reliability_bins(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width confidence bins on [0, 1]; each bin is [lo, hi) but the last is [lo, 1].
    ``num_bins`` (here and in the other calibration metrics) is a whole number from 1 to
    ``10**6`` (:data:`~mtbkd_jax._checks.MAX_NUM_BINS`), or a 0-d array of one.

    Returns:
        ``(edges, counts, mean_confidence, accuracy)``; empty bins hold NaN.
    """
    probs, labels = _check(probs, labels)
    num_bins = require_bin_count(num_bins)
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    edges, index = _equal_width_bins(confidence, num_bins)
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(index, confidence, minlength=num_bins) / counts
        mean_acc = np.bincount(index, correct.astype(float), minlength=num_bins) / counts
    return edges, counts, mean_conf, mean_acc


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> float:
    """ECE: ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width bins (last bin closed)."""
    _, counts, conf, acc = reliability_bins(probs, labels, num_bins)
    filled = counts > 0
    return float((counts[filled] / counts.sum() * np.abs(acc[filled] - conf[filled])).sum())


def _binned_gap(scores: np.ndarray, outcomes: np.ndarray, num_bins: int) -> float:
    _, index = _equal_width_bins(scores, num_bins)
    counts = np.bincount(index, minlength=num_bins)
    sums = np.bincount(index, scores, minlength=num_bins)
    hits = np.bincount(index, outcomes.astype(float), minlength=num_bins)
    filled = counts > 0
    return float((np.abs(hits[filled] - sums[filled])).sum() / len(scores))


def classwise_calibration_error(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> float:
    """Classwise ECE (Kull et al., 2019): the mean over classes of the equal-width-binned gap
    between ``p_c`` and the frequency of ``y = c``, ``sum_b (n_b / N) |freq_b - mean p_b|``."""
    probs, labels = _check(probs, labels)
    num_bins = require_bin_count(num_bins)
    return float(
        np.mean([_binned_gap(probs[:, c], labels == c, num_bins) for c in range(probs.shape[1])])
    )


# the equal-width calibration errors as sums of per-example gaps: ECE is
# sum_b |sum_{i in b} (correct_i - conf_i)| / N, the classwise ECE the mean over classes of the
# same with (1[y_i = c] - p_ic); each part is (every example's bin, its gap), so that a
# resample's value is a bincount of its examples' gaps (mtbkd_jax.comparison resamples them)
def _calibration_parts(
    probs: np.ndarray, labels: np.ndarray, classwise: bool, num_bins: int = 15
) -> list[tuple[np.ndarray, np.ndarray]]:

    def part(scores: np.ndarray, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _equal_width_bins(scores, num_bins)[1], outcomes - scores

    if not classwise:
        return [part(probs.max(-1), _correct(probs, labels))]
    return [part(probs[:, c], (labels == c).astype(np.float64)) for c in range(probs.shape[1])]


def error_detection_auroc(scores: ArrayLike, errors: ArrayLike) -> float:
    """AUROC of detecting errors by an uncertainty score (higher score = more likely wrong).

    ``P(score of an error > score of a correct prediction)``, ties counted one half
    (the Mann-Whitney statistic). NaN when all predictions are right or all wrong.

    Args:
        scores: (N,) finite uncertainty scores.
        errors: (N,) whether each prediction is wrong: booleans, or numbers that are 0 or 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    errors = _error_flags(errors)
    if scores.shape != errors.shape or scores.ndim != 1 or scores.size == 0:
        raise ValueError(
            "scores and errors must be (N,) arrays with N >= 1, got shapes "
            f"{scores.shape}, {errors.shape}"
        )
    if not np.isfinite(scores).all():  # a NaN would sort as the highest score
        raise ValueError("scores must be finite (no NaN or infinity)")
    num_errors, num_right = int(errors.sum()), int((~errors).sum())
    if num_errors == 0 or num_right == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    rank_sum = ranks[errors].sum()
    return float((rank_sum - num_errors * (num_errors + 1) / 2.0) / (num_errors * num_right))


def _error_flags(errors: ArrayLike) -> np.ndarray:
    """``errors`` as booleans, raising unless each is a boolean or a number equal to 0 or 1
    (a NaN, a probability or the string ``"False"`` would otherwise count as an error)."""
    array = np.asarray(errors)
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"errors must be booleans or 0/1 numbers (True where a prediction is wrong), got "
            f"an array of dtype {array.dtype}"
        )
    bad = ~np.isin(array, (0, 1))
    if bad.any():
        first = array[tuple(np.argwhere(bad)[0])]
        raise ValueError(
            f"errors must be booleans or 0/1 numbers (True where a prediction is wrong); "
            f"{int(bad.sum())} value(s) are neither, the first {first.item()!r}"
        )
    return array.astype(bool)


def classification_metrics(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> dict[str, float]:
    """Accuracy, NLL, Brier score, ECE, classwise ECE, the equal-mass calibration errors
    (``"adaptive_ece"``, ``"debiased_l2_ce"``: :mod:`mtbkd_jax.calibration`), and the
    selective-prediction metrics :func:`~mtbkd_jax.selective.aurc` and
    :func:`~mtbkd_jax.selective.accuracy_at_coverage` at 90% (``"aurc"``,
    ``"accuracy_at_90"``; confidence ``max_c p_c``) in one dict."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels, num_bins),
        "classwise_ece": classwise_calibration_error(probs, labels, num_bins),
        "adaptive_ece": adaptive_calibration_error(probs, labels, num_bins),
        "debiased_l2_ce": debiased_calibration_error_or_nan(probs, labels, num_bins),
        "aurc": aurc(probs, labels),
        "accuracy_at_90": accuracy_at_coverage(probs, labels, coverage=0.9),
    }
