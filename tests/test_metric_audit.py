"""Findings of a metrics audit (session 28), each against an independent float64 reference:
the mutual information in float32 cancelled (negative values, and OOD inputs ranked by rounding
noise), float64 input to a float32 streaming state left bin edges, and bad inputs to four
metrics gave a number or a NumPy internal error instead of a clear refusal."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mtbkd_jax.metrics as metrics
import mtbkd_jax.streaming_metrics as streaming
from mtbkd_jax.calibration import debiased_calibration_error
from mtbkd_jax.selective import ood_auroc, ood_detection, reliability_bands
from mtbkd_jax.uncertainty import entropy_decomposition


def mutual_information_reference(draws: np.ndarray) -> np.ndarray:
    """mean_s KL(q_s || mean) in float64, by its definition."""
    q = np.asarray(draws, np.float64)
    mean = q.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q / mean), 0.0)
    return terms.sum(-1).mean(0)


def jittered(rng, base, scale, num_draws=8):
    draws = base * np.exp(scale * rng.normal(size=(num_draws, *base.shape)))
    return (draws / draws.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 0.3, 3.0])
def test_mutual_information_is_accurate_in_float32_however_small(scale):
    """Relative error 1e-3 against float64 (as total - aleatoric, 189 at scale 1e-4)."""
    rng = np.random.default_rng(1)
    draws = jittered(rng, rng.dirichlet(np.ones(10), size=300), scale)
    got = np.asarray(entropy_decomposition(draws)["epistemic"], np.float64)
    reference = mutual_information_reference(draws)
    np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-12)
    parts = entropy_decomposition(draws)  # the decomposition still adds up, to float32 rounding
    np.testing.assert_allclose(parts["total"], parts["aleatoric"] + parts["epistemic"], atol=2e-6)


@pytest.mark.parametrize(("scale", "median", "largest"), [(1e-2, 1e-5, 1e-4), (1e-6, 0.03, 0.2)])
def test_the_mutual_informations_stated_accuracy_holds(scale, median, largest):
    """entropy_decomposition's docstring: against float64 on the same draws, a relative error
    of 1e-6 in the median (below 1e-5 at most) at a spread of 1e-2, about 1% (below 10%) at
    1e-6 (measured on seeds 0-2: 1.2e-6 / 7.4e-6 and 1.3% / 8.5%), where total - aleatoric is
    off by about 3e5 relative at 1e-6 (2.6e5 in the median measured). Bounds with room."""
    rng = np.random.default_rng(0)
    draws = jittered(rng, rng.dirichlet(np.ones(10), size=300), scale)
    parts = entropy_decomposition(draws)
    reference = mutual_information_reference(draws)
    error = np.abs(np.asarray(parts["epistemic"], np.float64) - reference) / reference
    assert np.median(error) < median and error.max() < largest
    if scale == 1e-6:
        cancelled = np.asarray(parts["total"], np.float64) - np.asarray(parts["aleatoric"])
        assert np.median(np.abs(cancelled - reference) / reference) > 1e4


def test_identical_draws_have_no_mutual_information_and_tie_as_ood_scores():
    rng = np.random.default_rng(0)
    inside = rng.dirichlet(np.ones(10), size=200)
    outside = rng.dirichlet(np.ones(10), size=200)  # float64: its mean of 3 copies rounds
    for probs in (inside.astype(np.float32), outside):
        assert np.all(np.asarray(entropy_decomposition(np.stack([probs] * 3))["epistemic"]) == 0)
    found = ood_detection(np.stack([inside] * 3), np.stack([outside] * 3))
    assert found["ood_auroc_mi"] == 0.5  # a constant score: a tie, not rounding noise (0.49)


def test_small_mutual_information_ranks_ood_inputs_as_float64_does():
    """In-distribution draws that agree to 1e-4, OOD draws to 3e-4: every OOD input has the
    larger MI. The float32 difference total - aleatoric scored 0.914 here."""
    rng = np.random.default_rng(3)
    inside = jittered(rng, rng.dirichlet(np.ones(10), size=150), 1e-4)
    outside = jittered(rng, rng.dirichlet(np.ones(10), size=150), 3e-4)
    reference = ood_auroc(
        mutual_information_reference(inside), mutual_information_reference(outside)
    )
    assert reference == 1.0
    assert ood_detection(inside, outside)["ood_auroc_mi"] == reference  # float64, on the host
    in_mi, out_mi = (entropy_decomposition(d)["epistemic"] for d in (inside, outside))
    assert ood_auroc(in_mi, out_mi) == reference  # float32, as predictive_summary gives it


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(2, 12))
def test_mutual_information_is_never_negative(seed, num_draws, num_classes):
    rng = np.random.default_rng(seed)
    base = rng.dirichlet(np.full(num_classes, 0.3), size=20)
    base[rng.random(base.shape) < 0.1] = 0.0  # exact zeros, as a one-hot draw has
    base[base.sum(-1) == 0, 0] = 1.0
    draws = jittered(rng, base / base.sum(-1, keepdims=True), 10.0 ** rng.uniform(-6, 0))
    mi = np.asarray(entropy_decomposition(draws)["epistemic"], np.float64)
    assert np.all(mi >= 0) and np.all(np.isfinite(mi))
    np.testing.assert_allclose(mi, mutual_information_reference(draws), rtol=2e-3, atol=1e-9)


@pytest.mark.parametrize("num_bins", [10, 15, 20])
def test_float64_probabilities_on_a_bin_edge_keep_their_bin_in_a_float32_state(num_bins):
    """0.7 rounds to 0.69999999 in float32: the state binned it below the edge (ECE 0.175
    against the batch metric's 0.475). Vote shares of an ensemble sit on such edges."""
    rng = np.random.default_rng(0)
    shares = rng.integers(0, num_bins + 1, size=(500, 3)).astype(np.float64)
    shares[shares.sum(-1) == 0, 0] = 1.0
    probs = shares / shares.sum(-1, keepdims=True)  # many values k / B and j / (sum) exactly
    probs[:50] = np.stack([[7, 3, 0]] * 50) / 10.0  # 0.7 and 0.3 exactly
    labels = rng.integers(0, 3, size=500)
    state = streaming.streaming_update(streaming.streaming_init(3, num_bins), probs, labels)
    got = streaming.streaming_compute(state)
    expected = metrics.classification_metrics(probs, labels, num_bins)
    for key in ("ece", "classwise_ece", "accuracy"):
        np.testing.assert_allclose(got[key], expected[key], atol=5e-6, err_msg=key)
    edges, counts, *_ = metrics.reliability_bins(probs, labels, num_bins)
    np.testing.assert_array_equal(streaming.streaming_reliability_bins(state)[1], counts)


def test_two_float64_examples_on_edges_give_the_batch_ece():
    probs, labels = np.array([[0.7, 0.3], [0.65, 0.35]]), np.array([0, 1])
    state = streaming.streaming_update(streaming.streaming_init(2, 10), probs, labels)
    got = streaming.streaming_compute(state)["ece"]
    assert abs(got - metrics.expected_calibration_error(probs, labels, 10)) < 1e-6  # 0.475


@pytest.mark.parametrize(
    "errors",
    [[0, 0, np.nan, 1], [0.0, 0.0, 0.3, 0.9], [0, 0, 2, 1], ["False", "False", "True", "True"]],
)
def test_error_flags_that_are_not_booleans_are_refused(errors):
    with pytest.raises(ValueError, match="errors must be booleans or 0/1 numbers"):
        metrics.error_detection_auroc([0.1, 0.4, 0.35, 0.8], errors)


def test_error_flags_as_booleans_or_zeros_and_ones_agree():
    scores = [0.1, 0.4, 0.35, 0.8]
    by_int = metrics.error_detection_auroc(scores, [0, 0, 1, 1])
    assert by_int == metrics.error_detection_auroc(scores, [False, False, True, True]) == 0.75
    with pytest.raises(ValueError, match="N >= 1"):
        metrics.error_detection_auroc([], [])


@pytest.mark.parametrize("edges", [(0.0, np.nan, 1.0), (np.nan, 0.5, 1.0), (0.0, 0.5, 0.5, 1.0)])
def test_coverage_bins_with_nan_or_repeated_edges_are_refused(edges):
    intervals = np.stack([np.zeros((4, 2)), np.ones((4, 2))], -1)
    with pytest.raises(ValueError, match="edges must be at least two increasing values"):
        metrics.interval_coverage_by_probability(intervals, np.full((4, 2), 0.5), edges)


def test_the_debiased_error_refuses_bins_of_one_example_each():
    """15 examples, all wrong at 91-99% confidence, in 15 bins: every term counted 0 and the
    figure was 0.0 (ECE 0.95). Fewer bins give a figure."""
    confidence = np.linspace(0.91, 0.99, 15)
    probs, labels = np.stack([confidence, 1 - confidence], -1), np.ones(15, int)
    with pytest.raises(ValueError, match="num_bins=15"):
        debiased_calibration_error(probs, labels, num_bins=15)
    assert debiased_calibration_error(probs, labels, num_bins=3) > 0.9


@pytest.mark.parametrize("shape", [(0, 3, 2), (2, 0, 2), (2, 3, 0)])
def test_empty_logits_are_refused_by_name(shape):
    labels = np.zeros(shape[1], int)
    with pytest.raises(ValueError, match="draw_logits must have shape"):
        metrics.predictive_nll_from_logits(np.zeros(shape), labels)


@pytest.mark.parametrize("level", ["0.9", None, True, 1.0])
def test_a_band_level_that_is_not_a_probability_is_refused_by_name(level):
    with pytest.raises(ValueError, match="level must be a number in"):
        reliability_bands([[0.7, 0.3]] * 10, [0] * 10, num_bins=2, level=level)
