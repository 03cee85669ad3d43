"""Classification metrics against scikit-learn and hand-worked cases (all float64)."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from mtbkd_jax.metrics import (
    accuracy,
    adaptive_calibration_error,
    brier_score,
    classification_metrics,
    debiased_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
    predictive_nll_from_logits,
    reliability_bins,
)


def _random_case(num_examples=300, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(scale=2.0, size=(num_examples, num_classes)), axis=-1)
    labels = rng.integers(0, num_classes, size=num_examples)
    return probs, labels


# --------------------------------------------------------------------------- accuracy / NLL
@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_matches_sklearn(seed):
    probs, labels = _random_case(seed=seed)
    assert accuracy(probs, labels) == pytest.approx(accuracy_score(labels, probs.argmax(-1)), abs=0)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_nll_matches_sklearn_log_loss(num_classes):
    probs, labels = _random_case(num_classes=num_classes, seed=num_classes)
    reference = log_loss(labels, probs, labels=list(range(num_classes)))
    assert negative_log_likelihood(probs, labels) == pytest.approx(reference, abs=1e-10)


def test_nll_class_absent_from_labels():
    # class 2 never occurs in the labels: labels=range(C) keeps sklearn's columns aligned
    probs, _ = _random_case(num_examples=40, num_classes=3, seed=3)
    labels = np.array([0, 1] * 20)
    reference = log_loss(labels, probs, labels=[0, 1, 2])
    assert negative_log_likelihood(probs, labels) == pytest.approx(reference, abs=1e-10)


def test_nll_zero_probability_is_inf_not_clipped():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert negative_log_likelihood(probs, [1, 0]) == np.inf
    assert negative_log_likelihood(probs, [0, 0]) == pytest.approx(np.log(2) / 2, abs=1e-15)


# ------------------------------------------------------------------------- NLL from logits
def test_nll_from_logits_equals_the_nll_of_the_mean_of_the_draws_softmax():
    """Against scikit-learn's log loss of the float64 predictive mean, on moderate logits."""
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=3.0, size=(5, 60, 4))
    labels = rng.integers(0, 4, size=60)
    mean = softmax(logits, axis=-1).mean(0)
    reference = log_loss(labels, mean, labels=list(range(4)))
    assert predictive_nll_from_logits(logits, labels) == pytest.approx(reference, abs=1e-10)
    # one draw (N, C), and several draw axes flattened
    assert predictive_nll_from_logits(logits[0], labels) == pytest.approx(
        log_loss(labels, softmax(logits[0], axis=-1), labels=list(range(4))), abs=1e-10
    )
    assert predictive_nll_from_logits(logits[:4].reshape(2, 2, 60, 4), labels) == pytest.approx(
        log_loss(labels, softmax(logits[:4], axis=-1).mean(0), labels=list(range(4))), abs=1e-10
    )


def test_nll_from_logits_is_the_log_of_the_mean_not_the_mean_of_the_logs():
    """Two draws that disagree: the log of the mean probability (about log 4), which the
    mean of the draws' log probabilities (a deliberately wrong version) misses by far."""
    logits = np.array([[[0.0, 0.0]], [[0.0, 10.0]]])  # p(y=0) = 1/2 and 1/(1 + e^10)
    p = [0.5, 1.0 / (1.0 + np.exp(10.0))]
    got = predictive_nll_from_logits(logits, [0])
    assert got == pytest.approx(-np.log(np.mean(p)), abs=1e-12)
    assert abs(got - (-np.mean(np.log(p)))) > 3.9


def test_nll_from_logits_stays_finite_where_float32_probabilities_underflow():
    """A logit gap of 200: float32 softmax gives the label probability 0 (NLL inf); from the
    logits the exact -log p = 200 + log(1 + e^-200) = 200 (to float64)."""
    logits = np.array([[0.0, 200.0], [3.0, 0.0]], np.float32)
    labels = np.array([0, 0])
    probs32 = np.asarray(softmax(logits.astype(np.float32), axis=-1), np.float32)
    assert probs32[0, 0] == 0.0 and negative_log_likelihood(probs32, labels) == np.inf
    expected = (200.0 + np.log1p(np.exp(-3.0))) / 2
    assert predictive_nll_from_logits(logits, labels) == pytest.approx(expected, rel=1e-12)
    # one draw underflows, the other does not: p = (e^-200 + 1/2) / 2
    draws = np.array([[[0.0, 200.0]], [[0.0, 0.0]]], np.float32)
    assert predictive_nll_from_logits(draws, [0]) == pytest.approx(np.log(4.0), rel=1e-12)


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.array([0.0, 1.0]), [0], "draw_logits must have shape"),
        (np.array([[0.0, np.inf]]), [0], "draw_logits must be finite"),
        (np.array([[0.0, np.nan]]), [0], "draw_logits must be finite"),
        (np.zeros((2, 3)), [0, 3], "labels must lie in 0..2"),
        (np.zeros((2, 3)), [0], "labels must have shape"),
    ],
)
def test_nll_from_logits_refuses_bad_input(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        predictive_nll_from_logits(logits, labels)


# ------------------------------------------------------------------------------------ Brier
def test_brier_multiclass_by_hand():
    probs, labels = _random_case(num_examples=50, num_classes=4, seed=4)
    reference = 0.0
    for i in range(len(labels)):
        for c in range(4):
            reference += (probs[i, c] - (1.0 if labels[i] == c else 0.0)) ** 2
    reference /= len(labels)
    assert brier_score(probs, labels) == pytest.approx(reference, abs=1e-12)


def test_brier_tiny_hand_case():
    # row 0: (0.7-1)^2 + 0.2^2 + 0.1^2 = 0.09 + 0.04 + 0.01 = 0.14
    # row 1: (0.5)^2 + (0.5-1)^2 + 0 = 0.5
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    assert brier_score(probs, [0, 1]) == pytest.approx((0.14 + 0.5) / 2, abs=1e-12)


def test_brier_binary_relation_to_sklearn():
    rng = np.random.default_rng(5)
    p1 = rng.uniform(size=200)
    probs = np.stack([1 - p1, p1], axis=1)
    labels = rng.integers(0, 2, size=200)
    # sum over both classes counts the same squared error twice
    assert brier_score(probs, labels) == pytest.approx(2 * brier_score_loss(labels, p1), abs=1e-12)


# -------------------------------------------------------------------------------------- ECE
def test_ece_hand_worked():
    # C = 3, 2 bins [0, 0.5) and [0.5, 1].
    #   ex0 conf 0.40 (pred 0, y 0) correct  -> bin 0
    #   ex1 conf 0.45 (pred 1, y 0) wrong    -> bin 0
    #   ex2 conf 0.80 (pred 0, y 0) correct  -> bin 1
    #   ex3 conf 0.70 (pred 2, y 0) wrong    -> bin 1
    # bin 0: acc 1/2, conf (0.40 + 0.45)/2 = 0.425, |gap| = 0.075, weight 2/4
    # bin 1: acc 1/2, conf (0.80 + 0.70)/2 = 0.750, |gap| = 0.250, weight 2/4
    # ECE = 0.5 * 0.075 + 0.5 * 0.25 = 0.1625
    probs = np.array(
        [
            [0.40, 0.30, 0.30],
            [0.20, 0.45, 0.35],
            [0.80, 0.10, 0.10],
            [0.10, 0.20, 0.70],
        ]
    )
    labels = np.array([0, 0, 0, 0])
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.1625, abs=1e-12)
    edges, counts, conf, acc = reliability_bins(probs, labels, num_bins=2)
    np.testing.assert_allclose(edges, [0.0, 0.5, 1.0], atol=0)
    np.testing.assert_array_equal(counts, [2, 2])
    np.testing.assert_allclose(conf, [0.425, 0.75], atol=1e-12)
    np.testing.assert_allclose(acc, [0.5, 0.5], atol=1e-12)


def test_ece_confidence_one_lands_in_last_bin():
    probs = np.array([[1.0, 0.0], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    for num_bins in (5, 15):  # last bin [0.8, 1] or [0.933, 1]: only the 1.0 example
        edges, counts, conf, acc = reliability_bins(probs, labels, num_bins=num_bins)
        assert len(counts) == num_bins  # no phantom extra bin for confidence 1.0
        assert len(edges) == num_bins + 1
        assert counts.sum() == 3
        assert counts[-1] == 1
        assert conf[-1] == 1.0
        assert acc[-1] == 1.0
    _, counts, _, _ = reliability_bins(probs, labels, num_bins=2)
    np.testing.assert_array_equal(counts, [0, 3])
    # with 2 bins, everything sits in [0.5, 1]: acc 2/3, conf (1 + 0.6 + 0.7)/3
    expected = abs(2 / 3 - (1.0 + 0.6 + 0.7) / 3)
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(
        expected, abs=1e-12
    )


def test_ece_inner_edge_goes_to_upper_bin():
    # confidence exactly 0.5 (C = 4 row [0.5, 0.2, 0.2, 0.1]) with 2 bins -> bin [0.5, 1]
    probs = np.array([[0.5, 0.2, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]])
    labels = np.array([0, 1])
    _, counts, conf, acc = reliability_bins(probs, labels, num_bins=2)
    np.testing.assert_array_equal(counts, [1, 1])
    np.testing.assert_allclose(conf, [0.4, 0.5], atol=0)
    np.testing.assert_allclose(acc, [0.0, 1.0], atol=0)
    # bin 0: |0 - 0.4| = 0.4; bin 1: |1 - 0.5| = 0.5; each weight 1/2
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.45, abs=1e-12)
    # 0.25 with 4 bins (an exactly representable inner edge) -> bin [0.25, 0.5)
    _, counts, _, _ = reliability_bins(np.array([[0.25, 0.25, 0.25, 0.25]]), [0], num_bins=4)
    np.testing.assert_array_equal(counts, [0, 1, 0, 0])


def test_ece_decimal_inner_edge_goes_to_upper_bin():
    probs = np.array([[0.7, 0.1, 0.1, 0.1]])
    _, counts, _, _ = reliability_bins(probs, [0], num_bins=10)
    assert counts[7] == 1


def test_empty_bins_are_nan_and_ignored():
    probs = np.array([[0.9, 0.1], [0.95, 0.05]])
    labels = np.array([0, 0])
    _, counts, conf, acc = reliability_bins(probs, labels, num_bins=10)
    assert counts.sum() == 2
    assert np.isnan(conf[counts == 0]).all() and np.isnan(acc[counts == 0]).all()
    # |1 - 0.9| / 2 + |1 - 0.95| / 2 = 0.075
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(0.075, abs=1e-12)


def _synthetic_calibration(power, num_examples=200_000, num_classes=4, seed=6):
    """Confidence c ~ U(0.3, 1) on a random class; correct ~ Bernoulli(c ** power)."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, size=num_examples)
    predicted = rng.integers(0, num_classes, size=num_examples)
    probs = np.repeat(((1 - confidence) / (num_classes - 1))[:, None], num_classes, axis=1)
    probs[np.arange(num_examples), predicted] = confidence
    correct = rng.uniform(size=num_examples) < confidence**power
    wrong_class = (predicted + rng.integers(1, num_classes, size=num_examples)) % num_classes
    labels = np.where(correct, predicted, wrong_class)
    return probs, labels


def test_ece_calibrated_vs_miscalibrated():
    probs, labels = _synthetic_calibration(power=1)
    # sanity of the generator: rows on the simplex, accuracy ~ E[c] = 0.65 (tol 0.01)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
    assert accuracy(probs, labels) == pytest.approx(0.65, abs=0.01)
    assert expected_calibration_error(probs, labels) < 0.01
    probs, labels = _synthetic_calibration(power=3)
    # expected gap E[c - c^3] for c ~ U(0.3, 1) is about 0.26
    assert expected_calibration_error(probs, labels) > 0.05


def _brute_binned_gap(scores, outcomes, num_bins):
    """Independent reference for one binned calibration gap, by direct comparison with the
    edges: bin b holds ``b / B <= s < (b + 1) / B``, the last bin also ``s == 1``; returns
    ``sum_b |sum_{i in b} outcome_i - sum_{i in b} s_i| / N``."""
    total, placed = 0.0, 0
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        last = b == num_bins - 1
        members = [i for i, s in enumerate(scores) if low <= s < high or (last and s == high)]
        placed += len(members)
        total += abs(sum(float(outcomes[i]) for i in members) - sum(scores[i] for i in members))
    assert placed == len(scores)  # the bins partition [0, 1]
    return total / len(scores)


def _brute_ece(probs, labels, num_bins):
    """ECE by the brute-force bins: confidence = max p, outcome = prediction correct."""
    return _brute_binned_gap(probs.max(-1), probs.argmax(-1) == labels, num_bins)


def _brute_classwise_ece(probs, labels, num_bins):
    """Classwise ECE by the brute-force bins: the mean over classes of the gap of p_c vs
    1[y = c]."""
    gaps = [_brute_binned_gap(probs[:, c], labels == c, num_bins) for c in range(probs.shape[1])]
    return sum(gaps) / len(gaps)


def _edge_case(num_bins, num_examples=200, num_classes=3, seed=10):
    """Rows whose top entry (at a random position) is exactly a bin edge k / B, including 0
    and 1, the rest split evenly. The prediction is right where k is odd and wrong where k is
    even, so neighbouring bins' gaps have opposite signs: an edge value put in the wrong bin,
    or 1.0 put in a bin of its own, changes both ECEs."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, num_bins + 1, size=num_examples)
    top = k / num_bins
    probs = np.repeat(((1 - top) / (num_classes - 1))[:, None], num_classes, axis=1)
    where = rng.integers(0, num_classes, size=num_examples)
    probs[np.arange(num_examples), where] = top
    other = (where + rng.integers(1, num_classes, size=num_examples)) % num_classes
    return probs, np.where(k % 2 == 1, where, other)


def test_a_test_set_too_small_for_the_debiased_error_gives_nan_for_it_alone():
    """At most ``num_bins`` examples leave every equal-mass bin with one, where the debiased
    error is not defined: it raised, and the whole experiment's table with it. It is NaN,
    warned, and every other entry is computed as for a larger set."""
    probs, labels = _random_case(seed=3)
    probs, labels = probs[:12], labels[:12]
    with pytest.warns(UserWarning, match=r"debiased_l2_ce is NaN: .* 12 example"):
        out = classification_metrics(probs, labels)
    assert np.isnan(out["debiased_l2_ce"])
    others = {k: v for k, v in out.items() if k != "debiased_l2_ce"}
    assert all(np.isfinite(v) for v in others.values())
    assert out["nll"] == pytest.approx(log_loss(labels, probs, labels=range(probs.shape[1])))
    with pytest.raises(ValueError, match="needs a bin of two or more"):  # asked for alone
        debiased_calibration_error(probs, labels)


def test_classification_metrics_dict():
    """Every entry against an independent computation: scikit-learn for accuracy and NLL, the
    Brier sum by hand, brute-force bins for both ECEs (tolerance: float64 summation order)."""
    probs, labels = _random_case(seed=7)
    out = classification_metrics(probs, labels, num_bins=5)
    assert set(out) == {
        "accuracy",
        "nll",
        "brier",
        "ece",
        "classwise_ece",
        "adaptive_ece",  # both checked against Kumar et al.'s code in tests/test_calibration.py
        "debiased_l2_ce",
        "aurc",  # checked against brute force in tests/test_selective_metrics.py
        "accuracy_at_90",
    }
    assert out["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(-1)), abs=0)
    assert out["nll"] == pytest.approx(log_loss(labels, probs, labels=range(4)), abs=1e-10)
    brier = ((probs - np.eye(4)[labels]) ** 2).sum(-1).mean()
    assert out["brier"] == pytest.approx(brier, abs=1e-12)
    assert out["ece"] == pytest.approx(_brute_ece(probs, labels, 5), abs=1e-12)
    assert out["classwise_ece"] == pytest.approx(_brute_classwise_ece(probs, labels, 5), abs=1e-12)
    assert out["adaptive_ece"] == adaptive_calibration_error(probs, labels, 5)
    assert out["debiased_l2_ce"] == debiased_calibration_error(probs, labels, 5)


@pytest.mark.parametrize("num_bins", [2, 4, 5, 10, 15])
def test_both_eces_match_brute_force_bins_on_edge_values(num_bins):
    """Probabilities exactly on bin edges, 0 and 1: an edge belongs to the bin above it and 1
    to the last bin, for the ECE and the classwise ECE alike (tolerance: summation order)."""
    from mtbkd_jax.metrics import classwise_calibration_error

    probs, labels = _edge_case(num_bins)
    assert (probs == 1.0).any() and (probs == 0.0).any()
    assert expected_calibration_error(probs, labels, num_bins) == pytest.approx(
        _brute_ece(probs, labels, num_bins), abs=1e-12
    )
    assert classwise_calibration_error(probs, labels, num_bins) == pytest.approx(
        _brute_classwise_ece(probs, labels, num_bins), abs=1e-12
    )


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "metric", [accuracy, negative_log_likelihood, brier_score, expected_calibration_error]
)
def test_bad_inputs_raise(metric):
    probs, labels = _random_case(num_examples=6, num_classes=3, seed=8)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C\)"):
        metric(probs[None], labels)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C\)"):
        metric(probs[0], labels)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        metric(probs, labels[:5])
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        metric(probs, labels[None])
    bad = labels.copy()
    bad[2] = 3
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        metric(probs, bad)
    bad[2] = -1
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        metric(probs, bad)


@pytest.mark.parametrize("num_bins", [0, -3, 2.5])
def test_bad_num_bins_raise(num_bins):
    probs, labels = _random_case(num_examples=6, num_classes=3, seed=9)
    with pytest.raises(ValueError, match="num_bins"):
        reliability_bins(probs, labels, num_bins=num_bins)


def test_metrics_reject_invalid_probabilities():
    labels = np.array([0, 1])
    with pytest.raises(ValueError, match="probs must be finite and non-negative"):
        negative_log_likelihood(np.array([[np.nan, 1.0], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="probs must be finite and non-negative"):
        accuracy(np.array([[np.inf, 0.0], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="probs must be finite and non-negative"):
        brier_score(np.array([[1.1, -0.1], [0.5, 0.5]]), labels)  # sums to 1, negative entry
    with pytest.raises(ValueError, match="probs rows must sum to 1"):
        expected_calibration_error(np.array([[0.9, 0.9], [0.5, 0.5]]), labels)


def test_metrics_take_whole_float_labels_and_reject_fractional_ones():
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert accuracy(probs, np.array([0.0, 1.0])) == 1.0
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        accuracy(probs, np.array([0.0, 0.5]))


def test_classwise_ece_last_bin_is_closed_on_the_right():
    """Class probabilities of exactly 1.0 (and 0.5 on the inner edge) with 2 bins.

    Class 0: scores 1.0, 0.75, 0.5, 0.0 with outcomes 0, 1, 1, 0.
      [0, 0.5): {0.0}: |0 - 0| = 0; [0.5, 1]: {1.0, 0.75, 0.5}: |2 - 2.25| = 0.25 -> 0.25 / 4
    Class 1: scores 0.0, 0.25, 0.5, 1.0 with outcomes 1, 0, 0, 1.
      [0, 0.5): {0.0, 0.25}: |1 - 0.25| = 0.75; [0.5, 1]: {0.5, 1.0}: |1 - 1.5| = 0.5 -> 1.25 / 4
    Classwise ECE = (0.0625 + 0.3125) / 2 = 0.1875. With the last bin open ([0.5, 1), the 1.0s
    in a bin of their own) it would be 0.375; with 0.5 in the lower bin, 0.3125.
    """
    from mtbkd_jax.metrics import classwise_calibration_error

    probs = np.array([[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.0, 1.0]])
    labels = np.array([1, 0, 0, 1])
    assert classwise_calibration_error(probs, labels, 2) == pytest.approx(0.1875, abs=1e-12)
    assert _brute_classwise_ece(probs, labels, 2) == pytest.approx(0.1875, abs=1e-12)


def test_classwise_ece_hand_worked():
    from mtbkd_jax.metrics import classwise_calibration_error

    # two classes, 2 bins; class 0 scores 0.8, 0.8, 0.3, 0.3 with outcomes 1, 0, 0, 0
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.3, 0.7], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    # class 0: bin [0.5,1]: mean 0.8, freq 0.5 -> 2/4*0.3; bin [0,0.5): mean 0.3, freq 0 -> 2/4*0.3
    # class 1: bin [0,0.5): mean 0.2 freq 0.5 -> 0.15; bin [0.5,1]: mean 0.7 freq 1 -> 0.15
    assert abs(classwise_calibration_error(probs, labels, 2) - 0.3) < 1e-12


def test_error_detection_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from mtbkd_jax.metrics import error_detection_auroc

    rng = np.random.default_rng(0)
    errors = rng.uniform(size=500) < 0.3
    scores = np.round(rng.normal(size=500) + errors, 1)  # rounded: many ties
    assert abs(error_detection_auroc(scores, errors) - roc_auc_score(errors, scores)) < 1e-12
    assert np.isnan(error_detection_auroc(scores, np.zeros(500, bool)))


def test_interval_coverage_hand_worked():
    from mtbkd_jax.metrics import interval_coverage

    intervals = np.array([[[0.1, 0.3], [0.6, 0.9]], [[0.0, 0.5], [0.5, 1.0]]])
    true = np.array([[0.2, 0.95], [0.5, 0.5]])
    assert interval_coverage(intervals, true) == 0.75
    with pytest.raises(ValueError, match="intervals"):
        interval_coverage(intervals[:, :1], true)


def test_interval_coverage_by_probability_hand_worked():
    from mtbkd_jax.metrics import interval_coverage, interval_coverage_by_probability

    true = np.array([[0.001, 0.999], [0.05, 0.95], [0.5, 0.5]])
    intervals = np.array(
        [
            [[0.002, 0.01], [0.99, 0.998]],  # 0.001 below its interval; 0.999 above
            [[0.01, 0.1], [0.9, 0.99]],  # both inside
            [[0.4, 0.6], [0.6, 0.7]],  # inside; 0.5 below
        ]
    )
    rows = interval_coverage_by_probability(intervals, true)
    by_low = {r["low"]: r for r in rows}
    assert by_low[0.0] == {
        "low": 0.0,
        "high": 0.01,
        "count": 1,
        "coverage": 0.0,
        "below": 1.0,
        "above": 0.0,
    }
    assert by_low[0.01]["count"] == 1 and by_low[0.01]["coverage"] == 1.0
    assert by_low[0.1]["count"] == 2 and by_low[0.1]["coverage"] == 0.5
    assert by_low[0.1]["below"] == 0.5
    assert by_low[0.9]["count"] == 2 and by_low[0.9]["coverage"] == 0.5
    assert by_low[0.9]["above"] == 0.5
    # the bins partition the pairs: counts add up and pooled coverage is their weighted mean,
    # 3 of the 6 pairs inside (counted above by hand)
    assert sum(r["count"] for r in rows) == true.size
    pooled = sum(r["coverage"] * r["count"] for r in rows) / true.size
    assert pooled == pytest.approx(0.5, abs=1e-15)
    assert interval_coverage(intervals, true) == 0.5
    # edges that leave pairs in no bin used to drop them silently
    with pytest.raises(ValueError, match="edges must span every true probability: 2 lie outside"):
        interval_coverage_by_probability(intervals, true, edges=(0.0, 0.5, 0.9))


def test_interval_coverage_edges_are_closed_where_documented():
    """A bin is [low, high), the last [low, high]; a truth on an interval's bound is inside."""
    from mtbkd_jax.metrics import interval_coverage, interval_coverage_by_probability

    true = np.array([[0.1, 0.9], [0.0, 1.0]])
    intervals = np.stack([true, true], axis=-1)  # degenerate intervals: bound == truth
    assert interval_coverage(intervals, true) == 1.0
    rows = interval_coverage_by_probability(intervals, true, edges=(0.0, 0.1, 1.0))
    assert [(r["low"], r["count"]) for r in rows] == [(0.0, 1), (0.1, 3)]


def test_a_truth_that_rounds_onto_a_narrower_bound_is_inside():
    """class_intervals of draws all equal to (0.3, 0.7) gives float32 bounds
    [0.30000001, 0.30000001] and [0.69999999, 0.69999999]; the float64 truths 0.3 and 0.7 were
    compared in float64 and missed both (coverage 0.0; found by a user-probe review). At the
    bounds' precision they are on them."""
    import jax.numpy as jnp

    from mtbkd_jax.metrics import interval_coverage, interval_coverage_by_probability
    from mtbkd_jax.uncertainty import class_intervals

    true = [[0.3, 0.7]]
    intervals = class_intervals(np.tile([[[0.3, 0.7]]], (10, 1, 1)), 0.95)
    assert np.asarray(intervals).dtype == np.float32
    assert float(intervals[0, 0, 0]) != 0.3  # the float32 bound is not the float64 truth
    assert interval_coverage(intervals, true) == 1.0
    assert interval_coverage(np.asarray(intervals), true) == 1.0
    rows = interval_coverage_by_probability(intervals, true, edges=(0.0, 0.5, 1.0))
    assert [(r["count"], r["coverage"], r["below"], r["above"]) for r in rows] == [
        (1, 1.0, 0.0, 0.0),
        (1, 1.0, 0.0, 0.0),
    ]
    for dtype in (jnp.bfloat16, np.float16):  # the truth is rounded to these too
        bounds = jnp.asarray(np.stack([true, true], -1), dtype)
        assert interval_coverage(bounds, true) == 1.0
    # float64 bounds are compared with the truth as it is: the float32 bound misses in float64
    assert interval_coverage(np.asarray(intervals, np.float64), true) == 0.0
    # and a truth beyond a narrow bound by more than its rounding still misses
    assert interval_coverage(intervals, [[0.3001, 0.7]]) == 0.5


# ------------------------------------------------------------------------ coverage errors
@pytest.mark.parametrize("name", ["interval_coverage", "interval_coverage_by_probability"])
def test_interval_coverage_shape_errors_name_both_arguments(name):
    from mtbkd_jax import metrics

    function = getattr(metrics, name)
    true = np.full((4, 3), 1 / 3)
    intervals = np.stack([true - 0.1, true + 0.1], axis=-1)
    for bad_intervals, bad_true in (
        (intervals[:3], true),  # fewer examples
        (intervals[:, :2], true),  # fewer classes
        (intervals[..., :1], true),  # one bound only
        (np.concatenate([intervals, intervals[..., :1]], -1), true),  # three bounds
        (intervals, true[:, :2]),  # the truth is the odd one out
        (intervals, true[None]),
    ):
        with pytest.raises(ValueError, match=r"intervals must have shape .*true_probs"):
            function(bad_intervals, bad_true)


@pytest.mark.parametrize("edges", [(0.5,), (), (0.5, 0.1), (0.0, 0.5, 0.5, 1.0), [[0, 0.5, 1]]])
def test_interval_coverage_by_probability_rejects_bad_edges(edges):
    from mtbkd_jax.metrics import interval_coverage_by_probability

    true = np.full((2, 2), 0.5)
    intervals = np.stack([true - 0.1, true + 0.1], axis=-1)
    with pytest.raises(ValueError, match="edges must be at least two increasing values"):
        interval_coverage_by_probability(intervals, true, edges=edges)


def test_classwise_ece_and_error_auroc_reject_bad_input():
    from mtbkd_jax.metrics import classwise_calibration_error, error_detection_auroc

    probs, labels = _random_case(num_examples=6, num_classes=3, seed=11)
    for num_bins in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            classwise_calibration_error(probs, labels, num_bins)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C\)"):
        classwise_calibration_error(probs[None], labels)
    scores, errors = np.arange(5.0), np.array([True, False] * 2 + [True])
    for bad_scores, bad_errors in ((scores[:4], errors), (scores[None], errors[None])):
        with pytest.raises(ValueError, match=r"scores and errors must be \(N,\) arrays"):
            error_detection_auroc(bad_scores, bad_errors)


def test_interval_coverage_refuses_swapped_bounds():
    """Swapped bounds would give coverage ~0 silently; they are an input error."""
    from mtbkd_jax.metrics import interval_coverage

    true = np.full((3, 2), 0.5)
    intervals = np.stack([np.full((3, 2), 0.6), np.full((3, 2), 0.4)], -1)
    with pytest.raises(ValueError, match=r"intervals must hold \(lower, upper\)"):
        interval_coverage(intervals, true)


@pytest.mark.parametrize(
    "function",
    [
        expected_calibration_error,
        adaptive_calibration_error,
        debiased_calibration_error,
        lambda p, y, b: reliability_bins(p, y, b)[1].tolist(),
        lambda p, y, b: classification_metrics(p, y, b)["classwise_ece"],
    ],
)
def test_a_zero_dimensional_bin_count_is_taken_and_an_absurd_one_refused(function):
    """num_bins=np.asarray(10) was refused as 'num_bins must be a positive integer' (found by
    a user-probe review), while num_bins=10**9 was taken and allocated gigabytes; a 0-d array
    is its number, more than 10**6 bins are refused, and a non-scalar is refused as one."""
    import jax.numpy as jnp

    probs, labels = _random_case(num_examples=40, num_classes=3, seed=5)
    expected = function(probs, labels, 10)
    assert function(probs, labels, np.asarray(10)) == expected
    assert function(probs, labels, jnp.asarray(10)) == expected
    assert function(probs, labels, np.asarray(10.0)) == expected  # a whole float, as 10.0
    for bad in (np.asarray([10]), [10], np.asarray(2.5), np.asarray(True)):
        with pytest.raises(ValueError, match="num_bins must be a"):
            function(probs, labels, bad)
    with pytest.raises(ValueError, match="num_bins must be a scalar"):
        function(probs, labels, np.asarray([10]))
    for huge in (10**9, np.int64(10**6 + 1), np.asarray(10**9), 1e12):
        with pytest.raises(ValueError, match=r"num_bins must be at most 1_000_000 .*got 1_0"):
            function(probs, labels, huge)
