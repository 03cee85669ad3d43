"""Selective prediction, out-of-distribution detection and calibration bands: where a Bayesian
student should show its worth (its uncertainty ranks examples, not only its mean).

Plain NumPy on the host in float64, like :mod:`mtbkd_jax.metrics`, which re-exports every name
here. Probabilities are ``(N, C)`` rows summing to one, labels integer classes ``(N,)``.

Ties in a confidence score are *shared*, never broken by the examples' order: among a group of
examples with equal scores, keeping ``j`` of them counts ``j`` times the group's error rate (the
expectation over a random order of the group). At the end of a group that is exactly the error
rate of all examples at least that confident, and a shuffle of the examples changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mtbkd_jax._checks import scalar_argument
from mtbkd_jax._deprecation import renamed_keywords

__all__ = [
    "risk_coverage_curve",
    "aurc",
    "accuracy_at_coverage",
    "ood_auroc",
    "ood_detection",
    "reliability_bands",
]

# the old scores= was a confidence; ood_auroc's scores= is an uncertainty (higher: more OOD)
_CONFIDENCE_HINT = (
    "higher means more confident (negate an uncertainty such as an entropy); "
    "ood_auroc's scores= is the other way round"
)


def _checked(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    # metrics imports this module to re-export it, so its validation is imported at call time
    from mtbkd_jax.metrics import _check

    return _check(probs, labels)  # which also refuses an empty set


def _confidence(confidence: ArrayLike | None, probs: np.ndarray) -> np.ndarray:
    """The confidence of each example: ``confidence`` checked, or by default ``max_c p_c``."""
    name = "confidence"
    if confidence is None:
        return probs.max(-1)
    values = np.asarray(confidence, dtype=np.float64)
    if values.shape != probs.shape[:1]:
        raise ValueError(f"{name} must have shape ({probs.shape[0]},), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return values


def _selective_errors(errors: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Expected number of errors among the ``k`` most confident examples, ``k = 1..N``; ties in
    ``confidence`` shared (the module docstring's convention)."""
    order = np.argsort(-confidence, kind="stable")
    errors, confidence = errors[order].astype(np.float64), confidence[order]
    # tie groups in the descending order: each position's group start, size and error count
    new_group = np.r_[True, confidence[1:] != confidence[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.r_[starts, len(confidence)])
    group_errors = np.add.reduceat(errors, starts)
    before = np.r_[0.0, np.cumsum(group_errors)[:-1]]  # errors in the groups above
    k = np.arange(1, len(confidence) + 1)
    g = group[k - 1]
    return before[g] + (k - starts[g]) * group_errors[g] / sizes[g]


@renamed_keywords("mtbkd_jax.metrics.risk_coverage_curve", _CONFIDENCE_HINT, scores="confidence")
def risk_coverage_curve(
    probs: ArrayLike, labels: ArrayLike, confidence: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve of selective classification (Geifman & El-Yaniv, 2017).

    Keep the ``k`` examples the model is most confident about and predict ``argmax_c p_c`` on
    them: the coverage is ``k / N`` and the risk the error rate among those kept, for every
    ``k = 1..N``. Ties in the confidence are shared (see the module docstring): the curve does
    not depend on the order of the examples.

    Args:
        probs: (N, C) predictive probabilities; their argmax is the prediction.
        labels: (N,) true classes.
        confidence: (N,) a confidence per example, higher meaning *keep* (e.g. ``-entropy``
            or ``-mean_deviance``: the opposite sign to the uncertainty scores of
            :func:`ood_auroc` and :func:`~mtbkd_jax.metrics.error_detection_auroc`); by
            default the largest predictive probability ``max_c p_c``. (Formerly
            ``scores=``, deprecated.)

    Returns:
        ``(coverage, risk)``, two (N,) arrays with ``coverage[k - 1] = k / N``.

    Example:
        >>> from mtbkd_jax.selective import risk_coverage_curve
        >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]]
        >>> coverage, risk = risk_coverage_curve(probs, [0, 1, 1])  # the 0.8 one is wrong
        >>> coverage.round(3).tolist(), risk.round(3).tolist()
        ([0.333, 0.667, 1.0], [0.0, 0.5, 0.333])
    """
    probs, labels = _checked(probs, labels)
    confidence = _confidence(confidence, probs)
    errors = probs.argmax(-1) != labels
    k = np.arange(1, len(labels) + 1)
    return k / len(labels), _selective_errors(errors, confidence) / k


@renamed_keywords("mtbkd_jax.metrics.aurc", _CONFIDENCE_HINT, scores="confidence")
def aurc(probs: ArrayLike, labels: ArrayLike, confidence: ArrayLike | None = None) -> float:
    """Area under the risk-coverage curve: the mean of the risk over ``k = 1..N`` (the
    convention of Geifman et al., 2019). Lower is better; its floor, reached by a score that
    ranks every right prediction above every wrong one, is above 0 unless all are right.

    Args:
        probs: (N, C) predictive probabilities.
        labels: (N,) true classes.
        confidence: (N,) higher meaning keep (as :func:`risk_coverage_curve`'s); by default
            ``max_c p_c``.

    Example:
        >>> from mtbkd_jax.selective import aurc
        >>> round(aurc([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]], [0, 1, 1]), 4)  # (0 + 1/2 + 1/3) / 3
        0.2778
    """
    return float(risk_coverage_curve(probs, labels, confidence)[1].mean())


@renamed_keywords("mtbkd_jax.metrics.accuracy_at_coverage", _CONFIDENCE_HINT, scores="confidence")
def accuracy_at_coverage(
    probs: ArrayLike,
    labels: ArrayLike,
    coverage: float = 0.9,
    confidence: ArrayLike | None = None,
) -> float:
    """Accuracy on the ``ceil(coverage * N)`` most confident examples (ties shared, as in
    :func:`risk_coverage_curve`; a product within ``1e-9`` of an integer counts as it, so 0.7
    of 10 examples is 7). With ``coverage=1`` it is :func:`~mtbkd_jax.metrics.accuracy`.

    Args:
        probs: (N, C) predictive probabilities.
        labels: (N,) true classes.
        coverage: the fraction of examples kept, in (0, 1] (a number or a 0-d array).
        confidence: (N,) higher meaning keep (as :func:`risk_coverage_curve`'s); by default
            ``max_c p_c``.

    Example:
        >>> from mtbkd_jax.selective import accuracy_at_coverage
        >>> accuracy_at_coverage([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]], [0, 1, 1], coverage=0.5)
        0.5
    """
    coverage = scalar_argument(coverage, "coverage")  # type: ignore[assignment]
    number = isinstance(coverage, int | float | np.integer | np.floating)
    if isinstance(coverage, bool) or not number or not 0 < coverage <= 1:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage!r}")
    _, risk = risk_coverage_curve(probs, labels, confidence)
    kept = min(len(risk), max(1, math.ceil(coverage * len(risk) - 1e-9)))
    return float(1.0 - risk[kept - 1])


def _one_dimensional(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty (N,) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return array


def ood_auroc(in_scores: ArrayLike, out_scores: ArrayLike) -> float:
    """AUROC of telling out-of-distribution examples (the positives) from in-distribution ones
    by a score where higher means more likely OOD (predictive entropy, mutual information).

    ``P(out score > in score) + P(equal) / 2`` over all (out, in) pairs: the Mann-Whitney
    statistic by average ranks, ties counting one half. 1 separates perfectly, 0.5 is chance.

    Example:
        >>> from mtbkd_jax.selective import ood_auroc
        >>> ood_auroc([0.1, 0.2, 0.5], [0.4, 0.5, 0.9])  # pairs: 7 above, one tie, one below
        0.8333333333333334
    """
    from mtbkd_jax.metrics import error_detection_auroc

    inside = _one_dimensional(in_scores, "in_scores")
    outside = _one_dimensional(out_scores, "out_scores")
    is_out = np.r_[np.zeros(len(inside), bool), np.ones(len(outside), bool)]
    return error_detection_auroc(np.r_[inside, outside], is_out)


def _draws(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"{name} must have shape (S, N, C) (draws, examples, classes), none of them 0, "
            f"got {array.shape}"
        )
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if np.abs(array.sum(-1) - 1).max() > 1e-3:
        raise ValueError(f"{name}: each draw's class probabilities must sum to 1 (within 1e-3)")
    return array


def ood_detection(in_draw_probs: ArrayLike, out_draw_probs: ArrayLike) -> dict[str, Any]:
    """OOD detection AUROCs by the predictive entropy and by the mutual information.

    The scores (natural log, in float64 on the host) are the entropy of
    the predictive mean and the mutual information between the label and the parameters, the
    mean over draws of ``KL(q_s || mean)``: never negative, and exactly 0 where every draw is
    the same (a posterior that did not move scores a tie, AUROC 0.5, not rounding noise). With
    a single draw (a MAP, ``S = 1``) the mutual information is zero by definition, so its AUROC
    is ``None``.

    Args:
        in_draw_probs: (S, N_in, C) class probabilities of S draws on in-distribution inputs.
        out_draw_probs: (S', N_out, C) the same on OOD inputs (same C; S' may differ).

    Returns:
        ``{"ood_auroc_entropy": float, "ood_auroc_mi": float | None}`` (:func:`ood_auroc`);
        ``"ood_auroc_mi"`` is ``None`` when either input has one draw.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax.selective import ood_detection
        >>> sure = np.array([[[0.95, 0.05]]] * 2)  # 2 draws, 1 example, 2 classes
        >>> unsure = np.array([[[0.5, 0.5]]] * 2)
        >>> ood_detection(sure, unsure)["ood_auroc_entropy"]
        1.0
    """
    inside = _draws(in_draw_probs, "in_draw_probs")
    outside = _draws(out_draw_probs, "out_draw_probs")
    if inside.shape[2] != outside.shape[2]:
        raise ValueError(
            f"in_draw_probs and out_draw_probs must have the same number of classes, got "
            f"{inside.shape[2]} and {outside.shape[2]}"
        )
    parts = [_entropy_parts(d) for d in (inside, outside)]
    single = min(inside.shape[0], outside.shape[0]) == 1
    return {
        "ood_auroc_entropy": ood_auroc(parts[0]["total"], parts[1]["total"]),
        "ood_auroc_mi": None if single else ood_auroc(parts[0]["epistemic"], parts[1]["epistemic"]),
    }


def _entropy_parts(draw_probs: np.ndarray) -> dict[str, np.ndarray]:
    """The entropy decomposition of (S, N, C) float64 draws, (N,) each: ``total`` (the
    predictive mean's entropy), ``aleatoric`` (the draws' mean entropy) and ``epistemic`` (the
    mutual information, as :func:`mtbkd_jax.uncertainty.entropy_decomposition` computes it,
    here in float64)."""
    from mtbkd_jax._information import mutual_information

    mean = draw_probs.mean(0)
    total = -_xlogx(mean).sum(-1)
    aleatoric = -_xlogx(draw_probs).sum(-1).mean(0)
    return {
        "total": total,
        "aleatoric": aleatoric,
        "epistemic": mutual_information(draw_probs, np),
    }


def _xlogx(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, values * np.log(values), 0.0)


def _simulated_hits(
    confidence: np.ndarray, index: np.ndarray, num_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """``(num_resamples, filled bins)``: each filled bin's number of hits (exact integers, in
    the bins' order) when each example is right with probability its ``confidence``; empty
    bins take no memory (``num_bins`` may far exceed ``N``)."""
    order = np.argsort(index, kind="stable")  # the examples grouped by bin
    starts = np.flatnonzero(np.r_[True, np.diff(index[order]) != 0])
    simulated = np.empty((num_resamples, len(starts)))
    chunk = max(1, 4_000_000 // len(confidence))  # bounds the (chunk, N) draws in memory
    for start in range(0, num_resamples, chunk):
        stop = min(start + chunk, num_resamples)
        hits = rng.random((stop - start, len(confidence))) < confidence
        simulated[start:stop] = np.add.reduceat(hits[:, order].astype(np.int64), starts, axis=1)
    return simulated


def reliability_bands(
    probs: ArrayLike,
    labels: ArrayLike,
    num_bins: int = 15,
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Reliability bins with consistency bars (Bröcker & Smith, 2007).

    The bins are :func:`~mtbkd_jax.metrics.reliability_bins`' (equal width on the top-label
    confidence ``max_c p_c``). A bar is the range of accuracies a *calibrated* model would show
    in that bin: each example's correctness is simulated as Bernoulli(its confidence),
    ``num_resamples`` times, and the bar spans the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles (linear interpolation) of the bin's simulated frequency. An accuracy outside its
    bar is miscalibration that the bin's size does not explain. Seeded: the same call gives the
    same bars.

    Args:
        probs: (N, C) predictive probabilities.
        labels: (N,) true classes.
        num_bins: the number of equal-width bins on [0, 1].
        num_resamples: simulated outcome sets (>= 2).
        level: the bars' probability, in (0, 1).
        seed: seeds ``numpy.random.default_rng``.

    Returns:
        A dict of (num_bins,) arrays: ``confidence`` (mean in the bin), ``frequency`` (its
        accuracy), ``count``, ``lower`` and ``upper`` (the bar); plus ``edges``
        (num_bins + 1,). Empty bins hold NaN and count 0.

    Example:
        >>> from mtbkd_jax.selective import reliability_bands
        >>> bands = reliability_bands([[0.7, 0.3]] * 10, [0] * 7 + [1] * 3, num_bins=2)
        >>> int(bands["count"][1]), float(bands["frequency"][1])
        (10, 0.7)
        >>> bool(bands["lower"][1] <= 0.7 <= bands["upper"][1])
        True
    """
    from mtbkd_jax.metrics import _equal_width_bins, reliability_bins

    num_resamples = scalar_argument(num_resamples, "num_resamples")  # type: ignore[assignment]
    seed = scalar_argument(seed, "seed")  # type: ignore[assignment]
    level = scalar_argument(level, "level")  # type: ignore[assignment]
    whole = isinstance(num_resamples, int | np.integer) and not isinstance(num_resamples, bool)
    if not whole or num_resamples < 2:
        raise ValueError(f"num_resamples must be an integer >= 2, got {num_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    real = isinstance(level, int | float | np.integer | np.floating)
    if isinstance(level, bool) or not real or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    probs, labels = _checked(probs, labels)
    edges, counts, confidence, frequency = reliability_bins(probs, labels, num_bins)
    top = probs.max(-1)
    _, index = _equal_width_bins(top, len(counts))  # reliability_bins' bins
    filled = counts > 0
    simulated = _simulated_hits(top, index, int(num_resamples), np.random.default_rng(seed))
    simulated /= counts[filled]
    tail = (1.0 - level) / 2.0
    lower, upper = np.full(len(counts), np.nan), np.full(len(counts), np.nan)
    lower[filled], upper[filled] = np.quantile(simulated, [tail, 1.0 - tail], axis=0)
    return {
        "edges": edges,
        "confidence": confidence,
        "frequency": frequency,
        "count": counts,
        "lower": lower,
        "upper": upper,
    }
