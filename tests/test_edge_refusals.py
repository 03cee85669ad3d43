"""Inputs that used to give a number where there is none (NaN, 0 or a wrong value, silently) are
refused with a ``ValueError`` that names the argument: empty or NaN metric inputs, NaN scores,
logits that overflow float32 in CA-MKD, and unusable trust values given to ``MTBKDModel``.
Each case was reproduced against the code before the fix (the values it returned are in the
comments)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mtbkd_jax import MLP, MTBKDModel, Student, TeacherBank
from mtbkd_jax.metrics import (
    accuracy,
    brier_score,
    classification_metrics,
    classwise_calibration_error,
    error_detection_auroc,
    expected_calibration_error,
    interval_coverage,
    interval_coverage_by_probability,
    negative_log_likelihood,
)
from mtbkd_jax.trust import TrustValues
from mtbkd_jax.weighting import ca_mkd_weights

EMPTY = (np.zeros((0, 2)), np.zeros(0, int))


@pytest.mark.parametrize(
    "metric",  # accuracy/NLL/Brier gave NaN with a RuntimeWarning, the ECEs 0.0
    [
        accuracy,
        negative_log_likelihood,
        brier_score,
        expected_calibration_error,
        classwise_calibration_error,
        classification_metrics,
    ],
)
def test_metrics_refuse_an_empty_set(metric):
    with pytest.raises(ValueError, match="probs must hold at least one example"):
        metric(*EMPTY)


@pytest.mark.parametrize("where", [0, 1])
def test_error_detection_auroc_refuses_nan_scores(where):
    scores = [0.1, 0.2, 0.3, 0.4]
    scores[where] = np.nan  # was ranked as the highest score: 0.25 or 1.0
    with pytest.raises(ValueError, match="scores must be finite"):
        error_detection_auroc(scores, [False, True, False, True])
    assert error_detection_auroc([0.1, 0.2, 0.3, 0.4], [False, True, False, True]) == 0.75


@pytest.mark.parametrize("coverage", [interval_coverage, interval_coverage_by_probability])
def test_interval_coverage_refuses_nan_and_empty(coverage):
    with pytest.raises(ValueError, match="intervals must not hold NaN"):  # was 0.0
        coverage(np.array([[[np.nan, np.nan]]]), [[0.5]])
    with pytest.raises(ValueError, match="true_probs must be finite"):  # was 0.0
        coverage(np.array([[[0.1, 0.9]]]), [[np.nan]])
    with pytest.raises(ValueError, match="true_probs must hold at least one"):
        coverage(np.zeros((0, 2, 2)), np.zeros((0, 2)))
    assert interval_coverage(np.array([[[0.1, 0.9], [0.0, 0.2]]]), [[0.5, 0.5]]) == 0.5


def test_ca_mkd_refuses_logits_that_overflow_float32():
    with pytest.raises(ValueError, match="log_probs must be at most 3.403e"):  # was NaN
        ca_mkd_weights([[[1e39, 0.0]], [[0.0, 0.0]]], [0])
    for big in (1e29, 1e35, 3e38):  # float32 holds these: the label's teacher is one-hot
        weights = np.asarray(ca_mkd_weights([[[big, 0.0]], [[0.0, 0.0]]], [0]))
        np.testing.assert_allclose(weights[:, 0], [2 / 3, 1 / 3], atol=1e-6)  # p1 / (p1 + p2)
    for small in (-1e35, -1e39):  # -1e39 is -inf in float32: a probability of 0, allowed
        weights = np.asarray(ca_mkd_weights([[[small, 0.0]], [[0.0, 0.0]]], [0]))
        np.testing.assert_allclose(weights[:, 0], [0.0, 1.0], atol=1e-6)


def _model(values: TrustValues) -> MTBKDModel:
    bank = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 5, 3)))
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    return MTBKDModel(student, bank, trust=values)


def _values(tau=(1.0, 1.0), lam=((4.0,), (4.0,))) -> TrustValues:
    return TrustValues(jnp.array(tau), jnp.array(lam), jnp.zeros(2), jnp.array(0.0))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (_values(tau=(0.0, 1.0)), "trust.temperature must be > 0"),  # was a NaN prior
        (_values(tau=(-1.0, 1.0)), "trust.temperature must be > 0"),  # was an inverted teacher
        (_values(tau=(1e38, 1.0)), "trust.temperature must be > 0, between"),  # 1/tau is 0
        (_values(lam=((-5.0,), (4.0,))), "trust.concentration must be >= 0"),  # NaN prior
        (_values(lam=((np.nan,), (4.0,))), "trust.concentration must be finite"),
        (_values(tau=(1.0, 1.0, 1.0)), r"trust.temperature must have shape \(2,\)"),
        (_values(lam=((1.0, 2.0),) * 2), r"trust.concentration must have shape \(2, 1\) or"),
    ],
)
def test_mtbkd_model_refuses_unusable_trust_values(values, message):
    with pytest.raises(ValueError, match=message):
        _model(values)


def test_usable_trust_values_give_a_finite_prior():
    for values in (_values(), _values(tau=(0.5, 3.0), lam=((0.0, 2.0, 9.0), (1.0, 1.0, 1.0)))):
        model = _model(values)
        assert np.isfinite(np.asarray(model.teacher_prior.log_normalizer)).all()
        density = model.teacher_prior.log_density(jnp.zeros((5, 3)))
        assert np.isfinite(np.asarray(density)).all()


def test_unclear_inputs_get_a_message_that_names_the_argument():
    from mtbkd_jax.metrics import accuracy_at_coverage, reliability_bins

    probs, labels = [[0.9, 0.1], [0.2, 0.8]], [0, 1]
    with pytest.raises(ValueError, match="coverage must lie in"):  # was "'<' not supported"
        accuracy_at_coverage(probs, labels, coverage="0.5")
    with pytest.raises(ValueError, match="labels must be integer class indices"):  # TypeError
        accuracy(probs, ["a", "b"])
    for num_bins in (True, "3", 2.5, 0, float("inf")):  # True was one bin, "3" a TypeError
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            reliability_bins(probs, labels, num_bins=num_bins)
    assert accuracy(probs, np.array([False, True])) == 1.0  # bool labels still work
    assert reliability_bins(probs, labels, num_bins=np.int64(2))[1].tolist() == [0, 2]
    assert accuracy_at_coverage(probs, labels, coverage=np.float32(0.5)) == 1.0


def test_a_nan_entropy_gives_nan_weights_not_a_one_hot_teachers():
    from mtbkd_jax.weighting import inverse_entropy_weights, paper_weights

    entropies = jnp.array([[np.nan, 0.5], [1.0, 0.7]])
    for rule in (paper_weights, inverse_entropy_weights):  # both gave [1, 0] in column 0
        weights = np.asarray(rule(entropies))
        assert np.isnan(weights[:, 0]).all(), rule.__name__
        assert np.isfinite(weights[:, 1]).all() and abs(weights[:, 1].sum() - 1) < 1e-6


def test_a_built_models_settings_cannot_change_in_place():
    """``model.prior_power = 1.0`` after a fit: run_map reused its compiled program (the old
    beta) and the teacher prior kept the old lambda, while settings() recorded the new values,
    so a posterior claimed settings it was not run with. Refused, naming the way out; other
    attributes (a subclass's own) can still be set."""
    bank = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 8, 3)))
    model = MTBKDModel(Student(MLP(4, 3, rngs=nnx.Rngs(0))), bank)
    for name, value in (("prior_power", 1.0), ("concentration", 50.0), ("teacher_prior", None)):
        with pytest.raises(AttributeError, match=rf"MTBKDModel.{name} cannot change .* {name}="):
            setattr(model, name, value)
    assert model.prior_power == 0.1 and model.concentration == 10.0
    model.note = "mine"  # not a setting
    assert model.note == "mine"


@pytest.mark.parametrize("coverage", [interval_coverage, interval_coverage_by_probability])
def test_true_probabilities_outside_the_unit_interval(coverage):
    """A float64 softmax's 1 + 1e-12 is rounding (it was refused as outside the edges, with
    the advice to use the default edges); 1.5 is no probability (it counted as a miss)."""
    intervals = np.array([[[0.0, 0.01], [0.9, 1.0]]])
    coverage(intervals, [[0.0, 1.0 + 1e-12]])  # accepted, as 1
    with pytest.raises(
        ValueError, match=r"true_probs must be finite and in \[0, 1\], got 0 to 1.5"
    ):
        coverage(intervals, [[0.0, 1.5]])


def test_metric_inputs_without_classes_or_with_complex_values_are_named():
    probs = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match=r"probs must hold at least one example and class"):
        accuracy(np.zeros((2, 0)), [0, 0])  # was "labels must lie in 0..-1"
    with pytest.raises(ValueError, match="probs must be real, got dtype complex128"):
        accuracy(probs.astype(complex), [0, 1])  # was accepted, the imaginary part dropped
    with pytest.raises(ValueError, match="labels must be integer class indices, got dtype comp"):
        accuracy(probs, np.array([0 + 0j, 1 + 0j]))  # was NumPy's "remainder" TypeError


def test_probabilities_given_as_logits_are_warned():
    """Read as logits, probabilities give a far flatter predictive (0.918 here, against the
    probabilities' own NLL of 1.263)."""
    from mtbkd_jax.metrics import predictive_nll_from_logits

    probs = [[0.2, 0.8], [0.6, 0.4]]
    with pytest.warns(UserWarning, match="draw_logits are rows of probabilities"):
        flattened = predictive_nll_from_logits(probs, [0, 1])
    assert flattened < negative_log_likelihood(probs, [0, 1])
