"""Tempered soft labels ``softmax(z / T)`` at every temperature float32 can hold (property-based).

The regression that motivates this file: ``log_softmax(z / T)`` under ``jax.jit`` gave a
"probability" of 20 for a one-teacher bank at ``T = 1e-8`` (and ``inf`` at ``T = 1e-12``, NaN at
``T = 1e38``): XLA computed ``z / T`` in two fused loops in two ways, and at ``|z| / T ~ 1e8`` one
rounding step is worth several nats. ``mtbkd_jax._tempering.tempered_log_softmax`` shifts by the
row's maximum before dividing. Reference: the same formula in float64 NumPy/SciPy, where the
division is exact enough; tolerance 1e-5 in probability (float32 soft labels).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from mtbkd_jax import TeacherBank, TeacherPrior
from mtbkd_jax._tempering import tempered_log_softmax
from mtbkd_jax.trust import (
    TrustValues,
    calibrated_log_probs,
    consensus_class,
    trusted_teacher_prior,
)
from mtbkd_jax.weighting import softmax_weights

SHAPES = [(1, 8, 3), (1, 16, 5), (2, 8, 3), (3, 4, 2)]  # one teacher's shapes failed before
TEMPERATURES = st.floats(1e-30, 1e30).filter(lambda t: t > 0)


def _reference(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(z / T)`` in float64 (SciPy shifts by the maximum of ``z / T``)."""
    return softmax(np.asarray(log_probs, np.float64) / temperature, axis=-1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(SHAPES),
    scale=st.sampled_from([0.1, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**31 - 1),
    temperature=TEMPERATURES,
)
def test_tempered_soft_labels_are_a_distribution_at_any_temperature(
    shape, scale, seed, temperature
):
    logits = scale * np.random.default_rng(seed).normal(size=shape)
    bank = TeacherBank.from_logits(logits)
    probs = np.asarray(bank.probs(temperature), np.float64)
    assert np.isfinite(probs).all()
    assert probs.min() >= 0 and probs.max() <= 1.0
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, _reference(bank.log_probs, temperature), atol=1e-5)
    entropies = np.asarray(bank.entropies(temperature))
    assert np.isfinite(entropies).all() and entropies.min() >= -1e-5


def test_the_case_that_failed_gives_one_hot_labels():
    """(1, 8, 3) at T = 1e-8 gave a largest probability of 20.3; it is the argmax's one-hot."""
    logits = np.random.default_rng(1).normal(size=(1, 8, 3))
    probs = np.asarray(TeacherBank.from_logits(logits).probs(1e-8))
    np.testing.assert_array_equal(probs, np.eye(3)[logits.argmax(-1)])
    prior = TeacherPrior.build(TeacherBank.from_logits(logits), concentration=5.0, temperature=1e-8)
    assert float(jnp.max(prior.scaled_probs)) <= 5.0


def test_zero_probability_classes_stay_zero_and_ties_stay_shared():
    bank = TeacherBank.from_probs([[[1.0, 0.0], [0.5, 0.5], [0.7, 0.3]]])
    for temperature in (1e-30, 1e-8, 1.0, 1e8, 8e37):
        probs = np.asarray(bank.probs(temperature))
        assert np.isfinite(probs).all(), temperature
        np.testing.assert_array_equal(probs[0, 0], [1.0, 0.0])
        np.testing.assert_allclose(probs[0, 1], [0.5, 0.5], atol=1e-7)


@pytest.mark.parametrize("temperature", [1e-39, 0.0, -1.0, 1e38, float("inf"), float("nan")])
def test_a_temperature_float32_cannot_divide_by_is_refused(temperature):
    bank = TeacherBank.from_logits(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        bank.probs(temperature)


@pytest.mark.parametrize("temperature", [1e-30, 1e-6, 1.0, 1e6, 1e30])
def test_the_helper_matches_float64_and_keeps_its_gradient(temperature):
    x = jnp.array([[3.0, -1.0, 0.5], [-jnp.inf, 2.0, 2.0]])
    got = np.exp(np.asarray(jax.jit(tempered_log_softmax)(x, temperature)))
    np.testing.assert_allclose(got, _reference(np.asarray(x), temperature), atol=1e-6)
    if temperature == 1.0:  # the shift is constant per row: the gradient is log_softmax's
        f = lambda z: jnp.sum(jnp.array([1.0, 2.0, -0.5]) * tempered_log_softmax(z, 2.0))
        g = lambda z: jnp.sum(jnp.array([1.0, 2.0, -0.5]) * jax.nn.log_softmax(z / 2.0))
        np.testing.assert_allclose(jax.grad(f)(x[0]), jax.grad(g)(x[0]), rtol=1e-6)


@pytest.mark.parametrize("tau", [1e-30, 1e-8, 1.0, 1e8])
def test_learned_trust_calibration_at_extreme_temperatures(tau):
    """``tau`` is a sample site of learned trust: its calibrated and tempered labels must stay
    a distribution (and its gradient finite) wherever a draw lands."""
    logits = np.random.default_rng(3).normal(size=(1, 8, 3))
    bank = TeacherBank.from_logits(logits)
    calibrated = np.asarray(calibrated_log_probs(bank.log_probs, jnp.array([tau])), np.float64)
    np.testing.assert_allclose(np.exp(calibrated), _reference(bank.log_probs, tau), atol=1e-5)
    values = TrustValues(jnp.array([tau]), jnp.array([[4.0]]), jnp.zeros(1), jnp.array(0.0))
    prior = trusted_teacher_prior(
        bank.log_probs,
        consensus_class(bank.log_probs),
        values,
        temperature=1e-6,
        weight_rule="learned",
        pooling="mixture",
    )
    assert float(jnp.max(prior.scaled_probs)) <= 4.0 + 1e-5

    def loss(t):
        return jnp.sum(calibrated_log_probs(bank.log_probs, t)[..., 0])

    if tau >= 1e-8:  # below, d/dtau = -(z - max z) / tau^2 overflows float32 (tau^2 < 1e-38)
        assert np.isfinite(np.asarray(jax.grad(loss)(jnp.array([tau])))).all()


def test_softmax_weights_take_their_limit_at_tau_zero():
    entropies = jnp.array([[0.5, 0.3], [1.0, 0.3]])
    np.testing.assert_allclose(softmax_weights(entropies, 0.0), [[1.0, 0.5], [0.0, 0.5]])
    np.testing.assert_allclose(softmax_weights(entropies, 1e-30), [[1.0, 0.5], [0.0, 0.5]])
    expected = softmax(-np.asarray(entropies, np.float64) / 0.7, axis=0)
    np.testing.assert_allclose(softmax_weights(entropies, 0.7), expected, rtol=1e-6)
