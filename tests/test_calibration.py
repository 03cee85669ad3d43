"""Equal-mass calibration errors (mtbkd_jax.calibration): against a transcription of Kumar,
Liang & Ma's reference code (lists and bisect, one example at a time), a brute-force adaptive
ECE, and the debiased estimator's bias over simulated outcomes of a known calibration gap (the
plug-in estimator, deliberately left biased, fails that check)."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtbkd_jax.calibration import (
    adaptive_calibration_error,
    debiased_calibration_error,
    equal_mass_bins,
)
from mtbkd_jax.comparison import paired_bootstrap
from mtbkd_jax.metrics import expected_calibration_error


# --- the reference: Kumar et al.'s `calibration` package (utils.py), transcribed -------------
def _reference_bins(values: list[float], num_bins: int) -> list[int]:
    ordered = sorted(values)
    size = int(np.ceil(len(ordered) / num_bins))
    runs = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    bounds = [(runs[i][-1] + runs[i + 1][0]) / 2.0 for i in range(len(runs) - 1)] + [1.0]
    bounds = sorted(set(bounds))
    return [bisect.bisect_left(bounds, v) for v in values]


def _reference_binned(confidence, correct, num_bins):
    index = _reference_bins(list(confidence), num_bins)
    binned: dict[int, list[tuple[float, float]]] = {}
    for i, c, y in zip(index, confidence, correct, strict=True):
        binned.setdefault(i, []).append((float(c), float(y)))
    return list(binned.values())


def _reference_unbiased_l2(confidence, correct, num_bins):
    binned = _reference_binned(confidence, correct, num_bins)
    total = sum(len(b) for b in binned)
    square = 0.0
    for data in binned:
        if len(data) < 2:
            continue
        mean_conf = sum(c for c, _ in data) / len(data)
        mean_label = sum(y for _, y in data) / len(data)
        variance = mean_label * (1.0 - mean_label) / (len(data) - 1.0)
        square += len(data) / total * ((mean_conf - mean_label) ** 2 - variance)
    return max(square, 0.0) ** 0.5


def _top(probs, labels):
    return probs.max(-1), (probs.argmax(-1) == labels).astype(float)


def _sample(seed, size, classes=4, ties=False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (size, classes))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if ties:  # confidences on a coarse grid: many equal values straddle the runs' boundaries
        probs = np.round(probs * 10) / 10
        probs = probs / probs.sum(-1, keepdims=True)
    labels = rng.integers(0, classes, size)
    return probs, labels


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("size", "num_bins"), [(1000, 15), (37, 10), (5, 15), (64, 1)])
def test_the_bins_and_the_debiased_error_match_the_reference_code(size, num_bins, ties):
    probs, labels = _sample(size + num_bins, size, ties=ties)
    confidence, correct = _top(probs, labels)
    assert equal_mass_bins(confidence, num_bins).tolist() == _reference_bins(
        list(confidence), num_bins
    )
    reference = _reference_unbiased_l2(confidence, correct, num_bins)
    if np.bincount(equal_mass_bins(confidence, num_bins)).max() < 2:
        # every bin holds one example: the reference code's 0 says nothing of the calibration,
        # and the package refuses instead (tests/test_metric_audit.py)
        assert reference == 0.0
        with pytest.raises(ValueError, match="needs a bin of two or more examples"):
            debiased_calibration_error(probs, labels, num_bins)
        return
    assert debiased_calibration_error(probs, labels, num_bins) == pytest.approx(
        reference, abs=1e-12
    )


def test_the_adaptive_ece_is_the_brute_force_sum_over_its_bins():
    probs, labels = _sample(3, 500)
    confidence, correct = _top(probs, labels)
    total = 0.0
    for data in _reference_binned(confidence, correct, 15):
        gap = abs(np.mean([y for _, y in data]) - np.mean([c for c, _ in data]))
        total += len(data) / 500 * gap
    assert adaptive_calibration_error(probs, labels) == pytest.approx(total, abs=1e-12)


def test_distinct_confidences_fill_the_bins_equally():
    confidence = np.random.default_rng(4).permutation(np.linspace(0.3, 1.0, 1000))
    counts = np.bincount(equal_mass_bins(confidence, 15))
    assert counts.tolist() == [67] * 14 + [62]  # runs of ceil(1000 / 15)
    # each bin is a run of the sorted values
    order = np.argsort(confidence)
    assert np.all(np.diff(equal_mass_bins(confidence, 15)[order]) >= 0)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(2, 60), ties=st.booleans())
def test_the_order_of_the_examples_does_not_matter_even_with_ties(seed, size, ties):
    probs, labels = _sample(seed, size, ties=ties)
    perm = np.random.default_rng(seed).permutation(size)
    for metric in (adaptive_calibration_error, debiased_calibration_error):
        try:
            value = metric(probs, labels, 7)
        except ValueError:  # the debiased error of bins of one example each: in any order
            with pytest.raises(ValueError, match="needs a bin of two or more examples"):
                metric(probs[perm], labels[perm], 7)
            continue
        assert metric(probs[perm], labels[perm], 7) == pytest.approx(value, abs=1e-12)


def test_one_hot_predictions_make_one_bin():
    labels = np.array([0, 1, 1, 0, 2, 1])
    probs = np.eye(3)[[0, 1, 2, 2, 2, 1]]  # 4 of 6 right, all at confidence 1
    assert equal_mass_bins(probs.max(-1), 15).tolist() == [0] * 6
    assert adaptive_calibration_error(probs, labels) == pytest.approx(1 / 3)
    assert adaptive_calibration_error(probs, labels) == pytest.approx(
        expected_calibration_error(probs, labels)
    )
    # (1/3)^2 - (2/3)(1/3)/5
    assert debiased_calibration_error(probs, labels) == pytest.approx(np.sqrt(1 / 9 - 2 / 45))


def test_the_debiased_square_is_unbiased_for_a_known_gap_and_the_plug_in_is_not():
    # confidence c, true accuracy c - 0.15 everywhere: the L2 calibration error is 0.15 in
    # every bin, its square 0.0225; the outcomes are drawn afresh 400 times for N = 300
    rng = np.random.default_rng(11)
    size, gap, sims = 300, 0.15, 400
    confidence = rng.uniform(0.6, 0.95, size)
    probs = np.stack([confidence, 1 - confidence], -1)
    debiased, plug_in = [], []
    for _ in range(sims):
        labels = (rng.random(size) >= confidence - gap).astype(int)  # right w.p. c - 0.15
        debiased.append(debiased_calibration_error(probs, labels) ** 2)
        index = equal_mass_bins(confidence)
        correct = (labels == 0).astype(float)
        counts = np.bincount(index)
        mean_gap = np.bincount(index, correct - confidence) / counts
        plug_in.append(np.sum(counts / size * mean_gap**2))  # the square without correction
    se = np.std(debiased) / np.sqrt(sims)
    assert abs(np.mean(debiased) - gap**2) < 3 * se  # measured: 0.0224 (se 0.0005)
    assert np.mean(plug_in) - gap**2 > 10 * se  # the plug-in's bias: measured +0.0112


def test_a_calibrated_model_gets_a_smaller_debiased_error_than_the_plug_in_ece():
    rng = np.random.default_rng(5)
    confidence = rng.uniform(0.5, 1.0, 2000)
    probs = np.stack([confidence, 1 - confidence], -1)
    labels = (rng.random(2000) >= confidence).astype(int)
    assert debiased_calibration_error(probs, labels) < 0.01
    assert expected_calibration_error(probs, labels) > 0.01  # binned noise


@pytest.mark.parametrize(
    ("confidence", "num_bins", "message"),
    [
        ([], 15, "non-empty 1-D"),
        ([[0.5]], 15, "non-empty 1-D"),
        ([0.5, np.nan], 15, "finite"),
        ([0.5, 0.7], 0, "num_bins must be a positive integer"),
        ([0.5, 0.7], 2.5, "num_bins must be a positive integer"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(confidence, num_bins, message):
    with pytest.raises(ValueError, match=message):
        equal_mass_bins(confidence, num_bins)


def test_the_calibration_errors_are_paired_bootstrap_metrics():
    probs, labels = _sample(6, 300)
    blunt = np.full_like(probs, 0.25)
    for metric, score in (
        ("adaptive_ece", adaptive_calibration_error),
        ("debiased_l2_ce", debiased_calibration_error),
    ):
        found = paired_bootstrap(probs, blunt, labels, metric, num_resamples=200)
        assert found.estimate == pytest.approx(score(probs, labels) - score(blunt, labels))


def test_ties_leave_no_bin_number_unused():
    """Three 0.5s in runs of 2 put both edges (0.5 and 0.7) where no value lies between them:
    the bin numbers used to skip 1 ([0, 0, 0, 0, 2, 2]), not ``0 .. B - 1``."""
    assert equal_mass_bins([0.1, 0.5, 0.5, 0.5, 0.9, 0.95], 3).tolist() == [0, 0, 0, 0, 1, 1]
    # the same partition as the reference code's, which numbers its boundaries instead
    for seed in range(20):
        probs, _ = _sample(seed, 40, ties=True)
        confidence = probs.max(-1)
        index = equal_mass_bins(confidence, 7)
        assert np.unique(index).tolist() == list(range(index.max() + 1))
        reference = np.unique(_reference_bins(list(confidence), 7), return_inverse=True)[1]
        assert index.tolist() == reference.reshape(-1).tolist()


def test_the_errors_on_tied_bins_are_unchanged_by_their_numbering():
    # runs [0.55, 0.7], [0.7, 0.7], [0.9, 0.95]: edges 0.7 and 0.8, nothing between them
    probs = np.stack([[0.55, 0.7, 0.7, 0.7, 0.9, 0.95], [0.45, 0.3, 0.3, 0.3, 0.1, 0.05]], -1)
    labels = np.array([1, 0, 1, 0, 0, 0])
    confidence, correct = _top(probs, labels)
    assert equal_mass_bins(confidence, 3).tolist() == [0, 0, 0, 0, 1, 1]
    assert debiased_calibration_error(probs, labels, 3) == pytest.approx(
        _reference_unbiased_l2(confidence, correct, 3), abs=1e-12
    )
    total = sum(
        len(data) / 6 * abs(np.mean([y for _, y in data]) - np.mean([c for c, _ in data]))
        for data in _reference_binned(confidence, correct, 3)
    )
    assert adaptive_calibration_error(probs, labels, 3) == pytest.approx(total, abs=1e-12)
