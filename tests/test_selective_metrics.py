"""Selective prediction, OOD detection and reliability bands (``mtbkd_jax.selective``, re-exported
by ``mtbkd_jax.metrics``) against brute force, scikit-learn and exact distributions."""

import itertools
import math

import matplotlib
import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from mtbkd_jax import metrics
from mtbkd_jax.metrics import accuracy, classification_metrics, reliability_bins
from mtbkd_jax.selective import (
    accuracy_at_coverage,
    aurc,
    ood_auroc,
    ood_detection,
    reliability_bands,
    risk_coverage_curve,
)

matplotlib.use("Agg")


def _case(num_examples=200, num_classes=4, seed=0, ties=False):
    """Random probabilities and labels; with ``ties`` the probabilities sit on a 0.1 grid, so
    many examples share their confidence."""
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(scale=1.5, size=(num_examples, num_classes)), axis=-1)
    if ties:
        probs = rng.multinomial(10, probs) / 10.0
    # labels from the probabilities (calibrated), so that confidence does rank the errors
    labels = (rng.random(num_examples)[:, None] > np.cumsum(probs, -1)).sum(-1)
    return probs, np.minimum(labels, num_classes - 1)


def _brute_risk(probs, labels, scores=None):
    """Pure Python, one k at a time: the errors strictly above the k-th largest score, plus the
    kept part of its tie group at the group's error rate."""
    n = len(labels)
    wrong = [
        int(max(range(len(row)), key=lambda c: (row[c], -c)) != y)
        for row, y in zip(probs.tolist(), labels.tolist(), strict=True)
    ]
    score = [max(row) for row in probs.tolist()] if scores is None else list(scores)
    ranked = sorted(score, reverse=True)
    risks = []
    for k in range(1, n + 1):
        t = ranked[k - 1]
        above = [i for i in range(n) if score[i] > t]
        group = [i for i in range(n) if score[i] == t]
        errors = sum(wrong[i] for i in above)
        errors += (k - len(above)) * sum(wrong[i] for i in group) / len(group)
        risks.append(errors / k)
    return risks


# --------------------------------------------------------------------- risk-coverage / AURC
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_risk_coverage_and_aurc_match_brute_force(ties, seed):
    """Tolerance 1e-12: the same sums in another order (float64)."""
    probs, labels = _case(seed=seed, ties=ties)
    if ties:
        assert len(np.unique(probs.max(-1))) < len(labels) // 5  # ties really occur
    coverage, risk = risk_coverage_curve(probs, labels)
    reference = _brute_risk(probs, labels)
    n = len(labels)
    np.testing.assert_allclose(coverage, [k / n for k in range(1, n + 1)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(risk, reference, rtol=0, atol=1e-12)
    assert aurc(probs, labels) == pytest.approx(sum(reference) / n, abs=1e-12)
    # a wrong convention (least confident first) is told apart
    assert abs(aurc(probs, labels, confidence=-probs.max(-1)) - sum(reference) / n) > 0.01


def test_custom_scores_match_brute_force_and_higher_means_keep():
    probs, labels = _case(seed=3)
    scores = np.random.default_rng(3).integers(0, 5, size=len(labels)).astype(float)  # ties
    _, risk = risk_coverage_curve(probs, labels, confidence=scores)
    np.testing.assert_allclose(risk, _brute_risk(probs, labels, scores), rtol=0, atol=1e-12)
    # an oracle score (right predictions first) reaches the lowest AURC
    right = (probs.argmax(-1) == labels).astype(float)
    assert aurc(probs, labels, confidence=right) < aurc(probs, labels) < aurc(probs, labels, -right)


def test_shared_ties_are_the_expectation_over_random_orders():
    """The tie convention against its definition: the mean of the stable-sorted risk curve over
    all 7! orders of the examples (exact; tolerance 1e-12)."""
    probs = np.array(
        [[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.7, 0.3], [0.7, 0.3], [0.6, 0.4], [0.6, 0.4]]
    )
    labels = np.array([0, 1, 1, 0, 1, 0, 0])
    wrong = probs.argmax(-1) != labels
    total = np.zeros(7)
    orders = list(itertools.permutations(range(7)))
    for order in orders:
        order = np.array(order)
        kept = order[np.argsort(-probs.max(-1)[order], kind="stable")]
        total += np.cumsum(wrong[kept]) / np.arange(1, 8)
    _, risk = risk_coverage_curve(probs, labels)
    np.testing.assert_allclose(risk, total / len(orders), rtol=0, atol=1e-12)
    # and a plain stable sort (the first of each tie group kept first) would differ
    stable = np.cumsum(wrong[np.argsort(-probs.max(-1), kind="stable")]) / np.arange(1, 8)
    assert np.abs(stable - risk).max() > 0.1
    # shuffling the examples changes nothing
    perm = np.random.default_rng(0).permutation(7)
    np.testing.assert_allclose(risk_coverage_curve(probs[perm], labels[perm])[1], risk, atol=0)


@pytest.mark.parametrize("ties", [False, True])
def test_accuracy_at_coverage(ties):
    probs, labels = _case(num_examples=150, seed=4, ties=ties)
    assert accuracy_at_coverage(probs, labels, coverage=1.0) == pytest.approx(
        accuracy(probs, labels), abs=1e-12
    )
    reference = _brute_risk(probs, labels)
    for coverage in (0.9, 0.5, 0.7, 0.01):
        kept = math.ceil(round(coverage * 150, 9))
        assert accuracy_at_coverage(probs, labels, coverage) == pytest.approx(
            1 - reference[kept - 1], abs=1e-12
        )


def test_accuracy_at_coverage_rounds_up_but_not_on_float_noise():
    probs = np.array([[0.9, 0.1]] * 100)
    labels = np.array([0] * 7 + [1] * 93)
    scores = np.arange(100, 0, -1.0)  # the 7 right ones first
    assert 0.07 * 100 > 7  # 7.000000000000001: a bare ceil would keep 8
    assert accuracy_at_coverage(probs, labels, 0.07, confidence=scores) == 1.0
    assert accuracy_at_coverage(probs, labels, 0.071, confidence=scores) == 7 / 8


def test_classification_metrics_selective_keys():
    probs, labels = _case(seed=5, ties=True)
    out = classification_metrics(probs, labels)
    assert out["aurc"] == pytest.approx(sum(_brute_risk(probs, labels)) / len(labels), abs=1e-12)
    assert out["accuracy_at_90"] == accuracy_at_coverage(probs, labels, 0.9)


def test_metrics_re_exports_the_selective_functions():
    for name in (
        "risk_coverage_curve",
        "aurc",
        "accuracy_at_coverage",
        "ood_auroc",
        "ood_detection",
        "reliability_bands",
    ):
        assert name in metrics.__all__
        assert getattr(metrics, name) is globals()[name]


# ------------------------------------------------------------------------------- OOD AUROC
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ood_auroc_matches_sklearn_with_ties(seed):
    """Tolerance 1e-12 (sklearn integrates the ROC curve by trapezoids, ties as one step)."""
    rng = np.random.default_rng(seed)
    inside = rng.integers(0, 8, size=120).astype(float)
    outside = rng.integers(2, 10, size=80).astype(float)
    reference = roc_auc_score(np.r_[np.zeros(120), np.ones(80)], np.r_[inside, outside])
    assert ood_auroc(inside, outside) == pytest.approx(reference, abs=1e-12)
    # a wrong convention (ties counting 0) is told apart
    strict = (outside[:, None] > inside[None, :]).mean()
    assert abs(strict - reference) > 0.01


def test_ood_auroc_properties():
    assert ood_auroc([0.1, 0.2], [0.3, 0.9, 0.5]) == 1.0
    assert ood_auroc([0.3, 0.9, 0.5], [0.1, 0.2]) == 0.0
    assert ood_auroc([1.0, 1.0], [1.0]) == 0.5


def test_ood_detection_uses_the_entropy_decomposition():
    """Against entropies computed here in float64 and sklearn; the package's are float32, so
    the tolerance is 1e-9 with scores spread far wider than float32 rounding."""
    rng = np.random.default_rng(6)
    inside = softmax(rng.normal(scale=3.0, size=(8, 60, 3)), -1)
    outside = softmax(rng.normal(size=(2, 40, 3)) * np.array([1.0, 4.0])[:, None, None], -1)

    def entropies(draws):
        mean = draws.mean(0)
        total = -(mean * np.log(mean)).sum(-1)
        return total, total - (-(draws * np.log(draws)).sum(-1)).mean(0)

    (h_in, mi_in), (h_out, mi_out) = entropies(inside), entropies(outside)
    truth = np.r_[np.zeros(60), np.ones(40)]
    out = ood_detection(inside, outside)
    assert set(out) == {"ood_auroc_entropy", "ood_auroc_mi"}
    assert out["ood_auroc_entropy"] == pytest.approx(
        roc_auc_score(truth, np.r_[h_in, h_out]), abs=1e-9
    )
    assert out["ood_auroc_mi"] == pytest.approx(
        roc_auc_score(truth, np.r_[mi_in, mi_out]), abs=1e-9
    )
    # one draw (a MAP): no mutual information to rank by
    single = ood_detection(inside[:1], outside[:1])
    assert single["ood_auroc_mi"] is None
    assert single["ood_auroc_entropy"] == pytest.approx(
        roc_auc_score(truth, np.r_[entropies(inside[:1])[0], entropies(outside[:1])[0]]), abs=1e-9
    )


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: aurc(np.ones(3), [0, 0, 0]), "probs must have shape"),
        (lambda: aurc(np.zeros((0, 2)), np.zeros(0, int)), "probs must hold at least one"),
        (lambda: aurc([[0.5, 0.5]], [0, 1]), "labels must have shape"),
        (lambda: aurc([[0.5, 0.5]], [0], confidence=[1, 2]), r"confidence must have shape \(1,\)"),
        (lambda: risk_coverage_curve([[0.5, 0.5]], [0], [np.nan]), "confidence must be finite"),
        (lambda: accuracy_at_coverage([[0.5, 0.5]], [0], coverage=0), "coverage must lie"),
        (lambda: accuracy_at_coverage([[0.5, 0.5]], [0], coverage=1.5), "coverage must lie"),
        (lambda: ood_auroc([], [1.0]), "in_scores must be a non-empty"),
        (lambda: ood_auroc([1.0], [[1.0]]), "out_scores must be a non-empty"),
        (lambda: ood_auroc([1.0], [np.inf]), "out_scores must be finite"),
        (lambda: ood_detection(np.full((3, 2), 0.5), np.full((1, 3, 2), 0.5)), "in_draw_probs"),
        (lambda: ood_detection(np.full((1, 3, 2), 0.5), np.full((1, 3, 2), 0.6)), "out_draw_pr"),
        (lambda: ood_detection(np.full((1, 3, 2), 0.5), np.full((1, 3, 4), 0.25)), "same number"),
        (lambda: reliability_bands([[0.5, 0.5]], [0], num_resamples=1), "num_resamples"),
        (lambda: reliability_bands([[0.5, 0.5]], [0], level=1.0), "level must be a number in"),
        (lambda: reliability_bands([[0.5, 0.5]], [0], num_bins=0), "num_bins"),
        (lambda: reliability_bands([[0.5, 0.5]], [0], num_resamples=None), "num_resamples must"),
        (lambda: reliability_bands([[0.5, 0.5]], [0], seed=-1), "seed must be a non-negative"),
        (lambda: reliability_bands([[0.5, 0.5]], [0], seed=1.5), "seed must be a non-negative"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------ reliability bands
def _calibrated(num_examples, seed, sharpen=1.0):
    """Labels drawn from softmax(logits); the predictor reports softmax(sharpen * logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(num_examples, 3))
    true = softmax(logits, -1)
    labels = (rng.random(num_examples)[:, None] > np.cumsum(true, -1)).sum(-1)
    return softmax(sharpen * logits, -1), labels


def _inside(bands, min_count):
    filled = bands["count"] >= min_count
    f = bands["frequency"][filled]
    return (bands["lower"][filled] <= f) & (f <= bands["upper"][filled])


def test_bands_match_the_exact_poisson_binomial_quantiles():
    """The bar of a bin against the quantiles of the exact distribution of its frequency (a
    Poisson binomial, by convolution): within one atom, 1 / n, with 20,000 resamples."""
    probs, labels = _calibrated(400, seed=1)
    bands = reliability_bands(probs, labels, num_bins=5, num_resamples=20_000, seed=3)
    edges, counts, _, _ = reliability_bins(probs, labels, 5)
    index = np.searchsorted(edges[1:-1], probs.max(-1), side="right")
    checked = 0
    for b in np.flatnonzero(counts >= 10):
        pmf = np.array([1.0])
        for c in probs.max(-1)[index == b]:
            pmf = np.r_[pmf * (1 - c), 0.0] + np.r_[0.0, pmf * c]
        cdf, n = np.cumsum(pmf), counts[b]
        exact_low, exact_high = np.searchsorted(cdf, [0.025, 0.975]) / n
        assert abs(bands["lower"][b] - exact_low) <= 1 / n + 1e-12, b
        assert abs(bands["upper"][b] - exact_high) <= 1 / n + 1e-12, b
        checked += 1
    assert checked >= 3


def test_calibrated_frequencies_fall_inside_about_95_percent_of_bars():
    """Pooled over 40 calibrated data sets (274 bins of >= 20 examples), the share of bins whose
    frequency lies inside its 95% bar is within [0.91, 0.99]: 95% (a little more from the
    discreteness of a frequency) +- 3 binomial sd (0.013). Bars of the wrong level (50%) fail
    the same check."""
    inside, narrow = [], []
    for seed in range(40):
        probs, labels = _calibrated(2000, seed)
        inside.append(_inside(reliability_bands(probs, labels, 10, 400, seed=seed), 20))
        narrow.append(_inside(reliability_bands(probs, labels, 10, 400, 0.5, seed=seed), 20))
    inside, narrow = np.concatenate(inside), np.concatenate(narrow)
    assert len(inside) >= 250
    assert 0.91 <= inside.mean() <= 0.99, inside.mean()
    assert not 0.91 <= narrow.mean() <= 0.99, narrow.mean()


def test_overconfident_predictions_fall_outside_most_bars():
    probs, labels = _calibrated(3000, seed=0, sharpen=3.0)  # pushed toward 1
    outside = ~_inside(reliability_bands(probs, labels, 10), 50)
    assert len(outside) >= 4 and outside.mean() >= 0.8, outside


def test_bands_are_seeded_and_consistent_with_the_bins():
    probs, labels = _case(seed=8)
    a = reliability_bands(probs, labels, 8, seed=1)
    b = reliability_bands(probs, labels, 8, seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    edges, counts, conf, freq = reliability_bins(probs, labels, 8)
    np.testing.assert_array_equal(a["count"], counts)
    np.testing.assert_array_equal(a["confidence"], conf)
    np.testing.assert_array_equal(a["frequency"], freq)
    empty = counts == 0
    assert empty.any() and np.isnan(a["lower"][empty]).all()
    assert (a["lower"][~empty] <= a["upper"][~empty]).all()
    c = reliability_bands(probs, labels, 8, seed=2)
    assert not np.array_equal(a["lower"], c["lower"]) or not np.array_equal(a["upper"], c["upper"])


# ------------------------------------------------------------------------------ the figure
def test_reliability_diagram_renders_bars_and_counts(tmp_path):
    import matplotlib.pyplot as plt

    from mtbkd_jax.plots import reliability_diagram

    probs, labels = _calibrated(500, seed=2)
    sharp, _ = _calibrated(500, seed=2, sharpen=3.0)
    path = tmp_path / "fig" / "reliability.png"
    fig = reliability_diagram(
        {"a": probs, "b": sharp}, labels, path, num_bins=10, num_resamples=200
    )
    assert path.stat().st_size > 0
    ax, counts_ax = fig.axes
    heights = [p.get_height() for p in counts_ax.patches]
    expected = [*reliability_bins(probs, labels, 10)[1], *reliability_bins(sharp, labels, 10)[1]]
    assert heights == expected
    assert len(ax.collections) == 2  # one set of consistency bars per method
    plt.close(fig)
    fig = reliability_diagram({"a": probs}, labels, bands=False)  # the old call still works
    assert len(fig.axes[0].collections) == 0
    plt.close(fig)


def test_the_former_scores_keyword_still_works_with_a_deprecation_warning():
    """``scores=`` read as a confidence where ``ood_auroc``'s scores are an uncertainty; the
    selective functions now name it ``confidence=`` (the old name warns and means the same)."""
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
    labels, confidence = np.array([0, 1, 1]), np.array([0.1, 0.9, 0.5])
    expected = aurc(probs, labels, confidence=confidence)
    with pytest.warns(
        DeprecationWarning,
        match=r"aurc\(scores=\).*confidence= \(higher means more confident.*ood_auroc",
    ):
        assert aurc(probs, labels, scores=confidence) == expected
    with pytest.warns(DeprecationWarning, match="accuracy_at_coverage"):
        kept = accuracy_at_coverage(probs, labels, 0.5, scores=confidence)
    assert kept == accuracy_at_coverage(probs, labels, 0.5, confidence=confidence) == 0.5
    with pytest.raises(TypeError, match="got both scores="):
        aurc(probs, labels, scores=confidence, confidence=confidence)


@pytest.mark.parametrize("wrap", [np.asarray, lambda x: __import__("jax").numpy.asarray(x)])
def test_a_zero_dimensional_array_is_taken_as_its_number(wrap):
    """coverage=np.asarray(0.9) was refused as 'coverage must lie in (0, 1], got array(0.9)',
    and so were 0-d JAX arrays and a 0-d level, num_resamples or seed (found by a user-probe
    review); a non-scalar is refused as one."""
    probs, labels = [[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]], [0, 1, 1]
    assert accuracy_at_coverage(probs, labels, coverage=wrap(0.5)) == pytest.approx(
        accuracy_at_coverage(probs, labels, coverage=0.5)
    )
    assert accuracy_at_coverage(probs, labels, coverage=wrap(1)) == pytest.approx(
        accuracy(probs, labels)
    )
    plain = reliability_bands(probs, labels, num_bins=2, num_resamples=50, level=0.5, seed=3)
    wrapped = reliability_bands(
        probs, labels, num_bins=wrap(2), num_resamples=wrap(50), level=wrap(0.5), seed=wrap(3)
    )
    for key in plain:
        np.testing.assert_allclose(wrapped[key], plain[key], rtol=1e-6, err_msg=key)
    for bad in ([0.9], (0.9,), wrap([0.9]), wrap([[0.9]])):
        with pytest.raises(ValueError, match="coverage must be a scalar"):
            accuracy_at_coverage(probs, labels, coverage=bad)
        with pytest.raises(ValueError, match="level must be a scalar"):
            reliability_bands(probs, labels, level=bad)
    with pytest.raises(ValueError, match="coverage must lie in"):  # a 0-d array still checked
        accuracy_at_coverage(probs, labels, coverage=wrap(1.5))


def test_many_more_bins_than_examples_take_no_memory_per_bin():
    """reliability_bands built an (N, num_bins) one-hot matrix and an (R, num_bins) array:
    num_bins=10**6 would have taken gigabytes for a few examples; only filled bins count."""
    probs, labels = [[0.7, 0.3]] * 10, [0] * 7 + [1] * 3
    few = reliability_bands(probs, labels, num_bins=10, num_resamples=200)
    many = reliability_bands(probs, labels, num_bins=10**6, num_resamples=200)
    assert many["count"].sum() == 10 and int(np.argmax(many["count"])) == 700_000
    for key in ("lower", "upper", "frequency", "confidence"):  # the same draws: the same bar
        assert many[key][700_000] == few[key][7]
    assert np.isnan(many["lower"]).sum() == 10**6 - 1
    with pytest.raises(ValueError, match="num_bins must be at most 1_000_000"):
        reliability_bands(probs, labels, num_bins=10**6 + 1)
