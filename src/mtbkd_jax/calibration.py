"""Top-label calibration error on equal-mass bins: the adaptive ECE, and the debiased L2
calibration error of Kumar, Liang & Ma (2019).

The ECE of :func:`~mtbkd_jax.metrics.expected_calibration_error` bins the confidence
``max_c p_c`` into equal-width bins. Two known weaknesses:

- **Sparse bins.** A confident student puts most examples in the top one or two bins, and the
  rest hold a handful each, whose accuracy is mostly noise. Equal-mass bins (each holding about
  the same number of examples) spend the bins where the examples are: the *adaptive* ECE
  (AdaECE of Mukhoti et al., 2020; ECE_EM of Roelofs et al., 2022; Nixon et al., 2019, whose
  ACE averages the same over every class).
- **Bias.** A bin's accuracy is a mean of Bernoulli outcomes, so ``|acc_b - conf_b|`` is
  positive even for a perfectly calibrated model, and more so in small bins: ECE is biased
  upwards and its bootstrap distribution skewed. For the *squared* gap the bias is the
  outcomes' variance, ``p_b (1 - p_b) / n_b`` when a bin's outcomes share one probability
  ``p_b``, and ``acc_b (1 - acc_b) / (n_b - 1)`` is an unbiased estimate of it. Subtracting it
  per bin gives the debiased estimator of Kumar, Liang & Ma (2019, "Verified uncertainty
  calibration", NeurIPS), whose square root estimates the binned L2 (root-mean-square)
  calibration error with far smaller bias. (Where a bin's outcome probabilities differ, the
  correction overshoots by their spread, ``s_b^2 / (n_b - 1)``: negligible in narrow bins. For
  continuous confidences any binned error is a lower bound on the unbinned one.) The squared
  estimate can go below 0 when the model is nearly calibrated; the error is then reported as 0.

Bins are equal-mass, as Kumar et al.'s, but sized otherwise than their released code, which
splits the sorted confidences by ``numpy.array_split`` (15 bins for ``N = 16``, most of one
example, which the debiased estimate cannot use; in a check at ``N = 1000`` the two errors
differed by 4e-4). Here the sorted confidences are split into runs of ``ceil(N / num_bins)``
(so ``ceil(N / ceil(N / num_bins))`` runs, which is ``num_bins`` for ``N`` well above it: 8
for ``N = 16``, ``num_bins = 15``), each boundary the midpoint between the runs' neighbouring
values, and a confidence on a boundary belongs to the bin below, so equal confidences always
share a bin (the result does not depend on the order of the examples; with many ties there
are fewer, unequal bins). Bins of one example add nothing to the debiased estimate (their
variance cannot be estimated).

Plain NumPy in float64 on the host, as :mod:`mtbkd_jax.metrics`, which re-exports these.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from mtbkd_jax._checks import require_bin_count

__all__ = [
    "DEFAULT_NUM_BINS",
    "adaptive_calibration_error",
    "debiased_calibration_error",
    "equal_mass_bins",
]


#: The equal-mass bins of these errors unless told otherwise (the metrics' tables and
#: :mod:`mtbkd_jax.comparison` use it).
DEFAULT_NUM_BINS = 15


def _top_label(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    from mtbkd_jax.metrics import _check

    probs, labels = _check(probs, labels)
    return probs.max(-1), (probs.argmax(-1) == labels).astype(np.float64)


def equal_mass_bins(confidence: ArrayLike, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Each value's equal-mass bin, ``0 .. B - 1`` (``B <= num_bins``: fewer with ties, or
    where ``N`` is not well above ``num_bins``), by the scheme of the module's docstring; every
    bin holds at least one value (Kumar et al.'s code numbers its boundaries, and skips the
    number of a bin that ties leave empty).

    Raises:
        ValueError: ``confidence`` is not a non-empty 1-D array of finite values, or
            ``num_bins`` is not a positive integer.

    Example:
        >>> from mtbkd_jax.calibration import equal_mass_bins
        >>> equal_mass_bins([0.9, 0.6, 0.7, 0.6, 0.95, 0.8], num_bins=3).tolist()
        [2, 0, 1, 0, 2, 1]
    """
    values = np.asarray(confidence, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(
            f"confidence must be a non-empty 1-D array of finite values, got shape {values.shape}"
        )
    num_bins = min(require_bin_count(num_bins), values.size)
    ordered = np.sort(values)
    size = -(-values.size // num_bins)  # ceil(N / B): the runs of Kumar et al.'s split
    starts = np.arange(size, values.size, size)
    edges = np.unique((ordered[starts - 1] + ordered[starts]) / 2.0)
    # side="left": a value equal to an edge (a tie across runs) goes to the bin below it
    index = np.searchsorted(edges, values, side="left")
    # ties can leave a bin between two edges empty (0.5 three times in runs of 2: the edges
    # 0.5 and 0.7 hold nothing between them): number the filled bins 0 .. B - 1
    filled = np.bincount(index) > 0
    return (np.cumsum(filled) - 1)[index]


def _bin_means(
    confidence: np.ndarray, correct: np.ndarray, num_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = equal_mass_bins(confidence, num_bins)
    counts = np.bincount(index).astype(np.float64)
    filled = counts > 0
    counts = counts[filled]
    conf = np.bincount(index, confidence)[filled] / counts
    acc = np.bincount(index, correct)[filled] / counts
    return counts, conf, acc


def adaptive_calibration_error(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = DEFAULT_NUM_BINS
) -> float:
    """Adaptive ECE: ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-mass bins of the
    top-label confidence (the module's docstring says which).

    Example:
        >>> from mtbkd_jax.calibration import adaptive_calibration_error
        >>> probs = [[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4
        >>> round(adaptive_calibration_error(probs, [0, 0, 0, 1, 0, 0, 1, 1], num_bins=2), 3)
        0.125
    """
    confidence, correct = _top_label(probs, labels)
    counts, conf, acc = _bin_means(confidence, correct, num_bins)
    return float((counts / counts.sum() * np.abs(acc - conf)).sum())


def debiased_calibration_error(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = DEFAULT_NUM_BINS
) -> float:
    """The debiased L2 top-label calibration error (Kumar, Liang & Ma, 2019) on equal-mass
    bins: ``sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)]))``,
    bins of one example counting 0 (a ``ValueError`` when every bin holds one: at most
    ``num_bins`` examples with distinct confidences).

    It estimates the root-mean-square gap between confidence and accuracy, not ECE's mean
    absolute gap, on other bins, with the noise's share taken out: its values are on another
    scale than ECE's (on the same bins and before the correction, a root-mean-square gap is at
    least the mean absolute gap; after it, a nearly calibrated model's value is often below
    both ECEs).

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax.calibration import debiased_calibration_error
        >>> rng = np.random.default_rng(0)
        >>> confidence = rng.uniform(0.5, 1.0, 20_000)
        >>> probs = np.stack([confidence, 1 - confidence], -1)
        >>> calibrated = (rng.random(20_000) > confidence).astype(int)  # label 0 w.p. conf
        >>> debiased_calibration_error(probs, calibrated) < 0.01
        True
    """
    confidence, correct = _top_label(probs, labels)
    counts, conf, acc = _bin_means(confidence, correct, num_bins)
    several = counts > 1
    if not several.any():  # every term would count 0: the figure 0 whatever the calibration
        raise ValueError(
            f"debiased_calibration_error needs a bin of two or more examples, but its "
            f"{len(confidence)} example(s) fill {int((counts > 0).sum())} equal-mass bin(s) of "
            f"one each: pass fewer bins (num_bins={num_bins}) or more examples"
        )
    gap = (acc - conf) ** 2
    variance = np.zeros_like(gap)
    variance[several] = acc[several] * (1 - acc[several]) / (counts[several] - 1)
    square = np.where(several, gap - variance, 0.0)
    return float(np.sqrt(max(0.0, (counts / counts.sum() * square).sum())))


def debiased_calibration_error_or_nan(probs: ArrayLike, labels: ArrayLike, num_bins: int) -> float:
    """:func:`debiased_calibration_error`, or NaN with a warning where it is not defined (every
    bin of one example: a test set of at most ``num_bins``), for a table of every metric that a
    tiny test set should not abort."""
    try:
        return debiased_calibration_error(probs, labels, num_bins)
    except ValueError as error:
        if "needs a bin of two or more" not in str(error):
            raise
        warnings.warn(f"debiased_l2_ce is NaN: {error}", UserWarning, stacklevel=3)
        return float("nan")
