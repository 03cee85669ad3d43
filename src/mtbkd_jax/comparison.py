"""Two predictors compared on one test set: a metric's difference with a paired bootstrap
interval over the test examples.

A table's metric is an estimate from a finite test set, and two rows evaluated on the same
examples share most of its noise (the hard examples are hard for both). Resampling the
examples jointly, the same indices for both predictors (the paired bootstrap; Efron &
Tibshirani, 1993, ch. 16), gives the interval of the *difference*, which is what a claim such
as "MT-BKD's NLL is below KD's" needs; two separate intervals would be far wider.

Predictions of several runs of each predictor on the same examples (seeds of one experiment)
may be given stacked, ``(R, N, C)``: the difference is then that of the metric's mean over the
runs, and each resample draws one set of example indices for every run. The interval is an
inference about the population the test examples were drawn from, *given these R trained
runs*: the variation from one training seed to the next is averaged as in the table, not
counted in the interval.

Caveats:

- The percentile bootstrap is anti-conservative on small test sets. Under a true null (two
  equally good predictors, 400 simulated test sets, 1,000 resamples; the type-I error's
  standard error 0.011) its 5% test rejected in 0.10 (NLL), 0.105 (Brier) and 0.07 (accuracy)
  of the test sets at N = 20, in 0.07, 0.08 and 0.035 at N = 50, in 0.04, 0.05 and 0.035 at
  N = 100 (a review's simulation; ``tests/test_comparison.py`` checks the excess at N = 20).
  Below :data:`SMALL_TEST_SET` (50) examples a warning says so. The calibration errors go the
  other way (ECE 0.013 at N = 300; the adaptive and debiased errors 0.007 at N = 200, 150 test
  sets): their tests rarely reject a true null, and have little power.
- The calibration errors and AURC are not means over examples; their intervals are the
  bootstrap's approximation. ECE and the adaptive ECE are biased upwards by the outcomes'
  noise, more so for the noisier (less confident) row and on small resamples, so a difference
  between two *calibrated* rows is not 0 in expectation. The debiased L2 calibration error
  (``"debiased_l2_ce"``) takes that bias out of the estimate, but not out of the resamples: a
  resample is scored against the test set as its population, whose binned gaps are the test
  set's raw gaps. Measured by ``benchmarks/bootstrap_calibration_coverage.py`` (N = 1,000, 60
  test sets each, 95% intervals): between a calibrated model and a one-hot oracle (both
  calibrated: a true difference of 0) the interval covered 0 in 0.77 of the test sets for
  ``debiased_l2_ce`` and in none for ``ece`` and ``adaptive_ece``; on test sets drawn from a
  population of 200,000, it covered the population's difference in 0.97 (``ece``), 1.00
  (``adaptive_ece``) and 0.98 (``debiased_l2_ce``). So read a calibration verdict between a
  nearly calibrated row and a much less confident one with care, and prefer
  ``debiased_l2_ce`` there. (Centring the resamples on the estimate, or the basic interval,
  did better on the first check and worse on the second.)
- A test set of fewer than :data:`MIN_EXAMPLES` (10) examples is refused: every resample
  would repeat the same few examples (one example gave a zero-width interval and p = 0.001).
- Probabilities are accepted when their rows sum to 1 within 1e-3, so two copies of one
  predictor normalised differently can differ in NLL by up to that much.
- Speed, per pair of rows at N = 10,000 with 2,000 resamples (docs/benchmarks.md): NLL,
  accuracy and the Brier score are means of per-example terms (well under a second); ECE and
  the classwise ECE are sums of per-example gaps in fixed bins, resampled as each resample's
  multiplicities times the gaps per bin (under a second each with 10 classes, 10-20x faster
  than scoring each resample); the others
  (AURC, accuracy at 90%, the adaptive and debiased errors, whose bins move with the resample)
  are scored in full on each resample, about 15-25 s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mtbkd_jax._checks import scalar_argument
from mtbkd_jax.calibration import DEFAULT_NUM_BINS
from mtbkd_jax.metrics import (
    _brier_terms,
    _calibration_parts,
    _check,
    _correct,
    _nll_terms,
    accuracy,
    adaptive_calibration_error,
    brier_score,
    classwise_calibration_error,
    debiased_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
)
from mtbkd_jax.selective import accuracy_at_coverage, aurc

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "MIN_EXAMPLES",
    "SMALL_TEST_SET",
    "TIE_TOLERANCE",
    "Difference",
    "paired_bootstrap",
]

Metric = Callable[[np.ndarray, np.ndarray], float]

# differences this close to 0 are 0: a mean over runs of thirds (accuracy with 3 runs) or of
# the same terms in another order rounds an exact tie to +-1e-17, which would count it in one
# tail only (and turn a p-value of 0.13 into 0.04)
TIE_TOLERANCE = 1e-12
#: The fewest test examples :func:`paired_bootstrap` accepts.
MIN_EXAMPLES = 10
#: below this many test examples the interval is warned as too narrow (see the caveats)
SMALL_TEST_SET = 50


def _accuracy_at_90(probs: np.ndarray, labels: np.ndarray) -> float:
    return accuracy_at_coverage(probs, labels, coverage=0.9)


#: The metrics of an experiment's row, by the row's names (lower is better, but for those of
#: :data:`HIGHER_IS_BETTER`).
METRICS: dict[str, Metric] = {
    "nll": negative_log_likelihood,
    "accuracy": accuracy,
    "brier": brier_score,
    "ece": expected_calibration_error,
    "classwise_ece": classwise_calibration_error,
    "adaptive_ece": adaptive_calibration_error,
    "debiased_l2_ce": debiased_calibration_error,
    "aurc": aurc,
    "accuracy_at_90": _accuracy_at_90,
}


#: The metrics of :data:`METRICS` whose larger values are better (the others: smaller).
HIGHER_IS_BETTER = frozenset({"accuracy", "accuracy_at_90"})


# the metrics that are means over examples, by their per-example terms: a resample's value is
# the mean of its examples' terms (the others are scored in full on each resample)
_TERMS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "nll": _nll_terms,
    "accuracy": _correct,
    "brier": _brier_terms,
}


# the equal-width calibration errors, by their parts (mtbkd_jax.metrics._calibration_parts):
# a resample's value is its examples' multiplicities times their gaps per bin, not a full scoring
_BINNED: dict[str, bool] = {"ece": False, "classwise_ece": True}  # metric -> classwise


def _binned_values(
    parts: list[tuple[np.ndarray, np.ndarray]], multiplicity: np.ndarray, num_bins: int = 15
) -> np.ndarray:
    """The calibration error of each resample from its examples' multiplicities ``(R, N)``
    (how often each example was drawn): per part, each bin's summed gap is one matrix
    product with the ``(N, num_bins)`` matrix holding each example's gap in its bin's
    column."""
    rows, n = multiplicity.shape
    total = np.zeros(rows)
    for bins, gaps in parts:
        gap_matrix = np.zeros((n, num_bins))
        gap_matrix[np.arange(n), bins] = gaps
        total += np.abs(multiplicity @ gap_matrix).sum(-1) / n
    return total / len(parts)


def _multiplicity(index: np.ndarray) -> np.ndarray:
    """``(R, N)``: how often each example appears in each resample (the rows of ``index``)."""
    rows, n = index.shape
    flat = (np.arange(rows)[:, None] * n + index).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


@dataclass(frozen=True)
class Difference:
    """``metric(a) - metric(b)`` on one test set (the mean over runs, with stacked runs) and
    its paired bootstrap interval.

    Attributes:
        metric: the metric's name (a key of :data:`METRICS`).
        estimate: the difference on the test set itself.
        low, high: the percentile interval of the resampled differences at ``level``.
        level: the interval's nominal coverage.
        p_value: two-sided bootstrap p-value of "no difference", ``2 min(P*(d <= 0),
            P*(d >= 0))`` with the ``(1 + count) / (1 + num_resamples)`` correction, at most 1:
            it is below ``1 - level`` exactly when the interval excludes 0 (up to the
            correction). Resampled differences within :data:`TIE_TOLERANCE` of 0 count as
            ties, in both tails.
        num_resamples: the number of bootstrap resamples.
        num_examples: the test examples (N).
        num_runs: the runs averaged (R).

    :attr:`verdict` reads the interval: ``"better"`` or ``"worse"`` (``a`` against ``b``, by
    the metric's direction, :data:`HIGHER_IS_BETTER`) when it excludes 0, else ``"level"``.
    """

    metric: str
    estimate: float
    low: float
    high: float
    level: float
    p_value: float
    num_resamples: int
    num_examples: int
    num_runs: int

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` or ``"level"``: ``a`` against ``b`` at :attr:`level`."""
        if self.low <= 0 <= self.high:
            return "level"
        higher = self.low > 0
        return "better" if higher == (self.metric in HIGHER_IS_BETTER) else "worse"

    def as_dict(self) -> dict[str, Any]:
        """The fields, and the :attr:`verdict`."""
        return asdict(self) | {"verdict": self.verdict}


def _stacked(probs: ArrayLike, name: str) -> np.ndarray:
    """``probs`` as float64 ``(R, N, C)``, with at least one run and one example."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, C) or (R, N, C), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one run and one example, got {array.shape}")
    return array


def _check_runs(array: np.ndarray, labels: np.ndarray, name: str) -> None:
    """Each run of ``array`` checked like a metric's input, the argument named (``probs_a
    must be finite``); a refusal of the labels (their shape, dtype or range: ``array``'s shape
    was checked against the other argument's) names ``labels``."""
    for run in array:
        _check(run, labels, name)


def _check_seed_and_size(seed: object, num_examples: int, metric: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if metric == "debiased_l2_ce" and num_examples <= DEFAULT_NUM_BINS:
        raise ValueError(
            f"metric 'debiased_l2_ce' needs more test examples than its {DEFAULT_NUM_BINS} "
            f"equal-mass bins (a bin of two or more), got {num_examples}: leave it out here"
        )
    if num_examples < MIN_EXAMPLES:
        raise ValueError(
            f"labels: a paired bootstrap needs at least {MIN_EXAMPLES} test examples, got "
            f"{num_examples}; on fewer, every resample repeats the same few examples and the "
            "interval and p-value describe them, not a population (one example gave a "
            "zero-width interval and p = 0.001)"
        )
    if num_examples < SMALL_TEST_SET:
        warnings.warn(
            f"a paired bootstrap on {num_examples} test examples (fewer than {SMALL_TEST_SET}) "
            "is anti-conservative: under a true null its 5% test rejected in about 10% of "
            "simulated test sets of 20 examples (mtbkd_jax.comparison's caveats)",
            UserWarning,
            skip_file_prefixes=(str(Path(__file__).parent),),
        )


def _check_options(metric: str, level: float, num_resamples: int) -> tuple[float, int]:
    """``level`` and ``num_resamples`` checked (a 0-d array taken as its number)."""
    level = scalar_argument(level, "level")  # type: ignore[assignment]
    num_resamples = scalar_argument(num_resamples, "num_resamples")  # type: ignore[assignment]
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if isinstance(level, bool) or not isinstance(level, float | int | np.floating | np.integer):
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int | np.integer):
        raise ValueError(f"num_resamples must be an integer, got {num_resamples!r}")
    if num_resamples < 100:
        raise ValueError(f"num_resamples must be at least 100, got {num_resamples}")
    return level, int(num_resamples)


def _resampled_differences(
    metric: str,
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray,
    num_resamples: int,
    seed: int,
) -> np.ndarray:
    """The difference on ``num_resamples`` resamples of the examples, the same indices for
    ``a``, ``b`` and every run; drawn in chunks of about two million indices."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    per = None  # a mean over examples: each resample's difference is a mean of these
    if metric in _TERMS:
        terms = _TERMS[metric]
        per = np.mean([terms(r, labels) for r in a], 0) - np.mean([terms(r, labels) for r in b], 0)
    binned = None  # an equal-width calibration error: each run's parts, for a and for b
    if metric in _BINNED:
        binned = [[_calibration_parts(r, labels, _BINNED[metric]) for r in x] for x in (a, b)]
    out = np.empty(num_resamples)
    for start in range(0, num_resamples, chunk):
        index = rng.integers(0, n, size=(min(chunk, num_resamples - start), n))
        if per is not None:
            out[start : start + len(index)] = per[index].mean(-1)
            continue
        if binned is not None:
            counts = _multiplicity(index)
            ours, theirs = (
                np.mean([_binned_values(parts, counts) for parts in runs], 0) for runs in binned
            )
            out[start : start + len(index)] = ours - theirs
            continue
        score = METRICS[metric]
        for k, rows in enumerate(index, start):
            y = labels[rows]
            out[k] = np.mean(
                [score(ra[rows], y) - score(rb[rows], y) for ra, rb in zip(a, b, strict=True)]
            )
    return out


def paired_bootstrap(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    labels: ArrayLike,
    metric: str = "nll",
    *,
    level: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> Difference:
    """``metric(probs_a) - metric(probs_b)`` on the test set, with a paired percentile
    bootstrap interval over its examples.

    Args:
        probs_a, probs_b: predictive probabilities on the same examples, ``(N, C)``, or
            ``(R, N, C)`` for R runs of each (e.g. seeds; the difference of the means over
            runs). Both must have the same shape.
        labels: ``(N,)`` integer classes.
        metric: a key of :data:`METRICS` (``"nll"``, ``"accuracy"``, ``"brier"``, ``"ece"``,
            ``"classwise_ece"``, ``"adaptive_ece"``, ``"debiased_l2_ce"``, ``"aurc"``,
            ``"accuracy_at_90"``).
        level: the interval's coverage, in (0, 1).
        num_resamples: bootstrap resamples (at least 100).
        seed: the seed of the resampled indices.

    Raises:
        ValueError: bad shapes or probabilities (the argument is named), an unknown metric,
            a level outside (0, 1), fewer than 100 resamples, or a metric that is not finite
            on the test set (an NLL with a zero probability on a label).

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax.comparison import paired_bootstrap
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.integers(0, 2, 500)
        >>> sharp = np.where(labels[:, None] == np.arange(2), 0.8, 0.2)
        >>> blunt = np.full((500, 2), 0.5)
        >>> d = paired_bootstrap(sharp, blunt, labels, "nll")
        >>> round(d.estimate, 3), d.high < 0
        (-0.47, True)
    """
    labels = np.asarray(labels)
    a, b = _stacked(probs_a, "probs_a"), _stacked(probs_b, "probs_b")
    if a.shape != b.shape:
        raise ValueError(
            f"probs_a and probs_b must have the same shape, got {a.shape} and {b.shape}"
        )
    _check_runs(a, labels, "probs_a")
    _check_runs(b, labels, "probs_b")
    level, num_resamples = _check_options(metric, level, num_resamples)
    seed = scalar_argument(seed, "seed")  # type: ignore[assignment]
    _check_seed_and_size(seed, len(labels), metric)
    labels = labels.astype(np.int64)
    score = METRICS[metric]
    estimate = float(
        np.mean([score(ra, labels) - score(rb, labels) for ra, rb in zip(a, b, strict=True)])
    )
    if not np.isfinite(estimate):
        raise ValueError(
            f"metric {metric!r} is not finite on the test set (a zero probability on a label?)"
        )
    if abs(estimate) <= TIE_TOLERANCE:
        estimate = 0.0
    resampled = _resampled_differences(metric, a, b, labels, int(num_resamples), seed)
    resampled[np.abs(resampled) <= TIE_TOLERANCE] = 0.0
    low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    tail = min((resampled <= 0).sum(), (resampled >= 0).sum())
    p_value = min(1.0, 2 * (1 + tail) / (1 + num_resamples))
    return Difference(
        metric=metric,
        estimate=estimate,
        low=float(low),
        high=float(high),
        level=float(level),
        p_value=float(p_value),
        num_resamples=int(num_resamples),
        num_examples=len(labels),
        num_runs=len(a),
    )
