"""Classification metrics against scikit-learn and hand-worked cases (all float64)."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from mtbkd_jax.metrics import (
    accuracy,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
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


def test_classification_metrics_dict():
    probs, labels = _random_case(seed=7)
    out = classification_metrics(probs, labels, num_bins=5)
    assert set(out) == {"accuracy", "nll", "brier", "ece", "classwise_ece"}
    assert out["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(-1)), abs=0)
    assert out["nll"] == pytest.approx(log_loss(labels, probs, labels=range(4)), abs=1e-10)
    assert out["ece"] == pytest.approx(expected_calibration_error(probs, labels, 5), abs=0)


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
    with pytest.raises(ValueError, match="finite"):
        negative_log_likelihood(np.array([[np.nan, 1.0], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(np.array([[0.9, 0.9], [0.5, 0.5]]), labels)


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
    # the bins partition the pairs: counts add up and pooled coverage is their weighted mean
    assert sum(r["count"] for r in rows) == true.size
    pooled = sum(r["coverage"] * r["count"] for r in rows) / true.size
    assert pooled == pytest.approx(interval_coverage(intervals, true))
    with pytest.raises(ValueError, match="edges"):
        interval_coverage_by_probability(intervals, true, edges=(0.5, 0.1))
    with pytest.raises(ValueError, match="intervals must have shape"):
        interval_coverage_by_probability(intervals[:2], true)
