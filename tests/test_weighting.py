"""Mixing-weight rules against weights computed independently from SciPy entropies.

References are float64 (``scipy.special.softmax`` + ``scipy.stats.entropy(base=2)``); the
package works in float32, so weights are compared with ``atol = 1e-6`` (weights lie in [0, 1],
float32 ulp there is <= 6e-8; logits are of order 1 so entropies are well away from 0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax

from mtbkd_jax import TeacherBank, teacher_weights
from mtbkd_jax.weighting import (
    inverse_entropy_weights,
    paper_weights,
    softmax_weights,
    uniform_weights,
)

ATOL = 1e-6


def _logits(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def _reference_entropies(logits, temperature=1.0):
    """Entropy in bits of softmax(logits / T), shape (M, N), all in float64 with SciPy."""
    return stats.entropy(softmax(logits / temperature, axis=-1), base=2, axis=-1)


def _one_hot_probs(classes, num_classes):
    classes = np.asarray(classes)
    return np.eye(num_classes)[classes]


# ------------------------------------------------------------------------------------ paper
def test_paper_two_teachers_exact():
    logits = _logits((2, 20, 5), seed=1)
    bank = TeacherBank.from_logits(logits)
    h = _reference_entropies(logits)
    weights = np.asarray(teacher_weights(bank, "paper"))
    assert weights.shape == (2, 20)
    np.testing.assert_allclose(weights[0], h[1] / (h[0] + h[1]), atol=ATOL)
    np.testing.assert_allclose(weights[1], h[0] / (h[0] + h[1]), atol=ATOL)
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=ATOL)


def test_paper_favours_lower_entropy_teacher():
    # teacher 0 sharp, teacher 1 flat on every example
    rng = np.random.default_rng(2)
    sharp = rng.normal(size=(10, 4)) * 4.0
    flat = rng.normal(size=(10, 4)) * 0.1
    logits = np.stack([sharp, flat])
    h = _reference_entropies(logits)
    assert (h[0] < h[1]).all()
    weights = np.asarray(teacher_weights(TeacherBank.from_logits(logits), "paper"))
    assert (weights[0] > weights[1]).all()
    # the reversed ("wrong") rule w_1 = H_1 / (H_1 + H_2) must not match
    wrong = h[0] / (h[0] + h[1])
    assert np.abs(weights[0] - wrong).max() > 0.1
    np.testing.assert_allclose(weights[0], h[1] / (h[0] + h[1]), atol=ATOL)


@pytest.mark.parametrize("num_teachers", [3, 5])
def test_paper_many_teachers(num_teachers):
    logits = _logits((num_teachers, 15, 4), seed=3 + num_teachers)
    h = _reference_entropies(logits)
    total = h.sum(0)
    reference = np.empty_like(h)
    for m in range(num_teachers):
        for i in range(h.shape[1]):
            reference[m, i] = (1.0 - h[m, i] / total[i]) / (num_teachers - 1)
    weights = np.asarray(teacher_weights(TeacherBank.from_logits(logits), "paper"))
    assert weights.shape == (num_teachers, 15)
    np.testing.assert_allclose(weights, reference, atol=ATOL)
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=ATOL)
    assert (weights >= 0).all()
    assert (weights <= 1.0 / (num_teachers - 1) + ATOL).all()
    # ordering: lower entropy -> larger weight, per example
    for i in range(h.shape[1]):
        np.testing.assert_array_equal(np.argsort(weights[:, i]), np.argsort(-h[:, i]))


def test_paper_single_teacher_all_ones():
    bank = TeacherBank.from_logits(_logits((1, 7, 3), seed=9))
    weights = np.asarray(teacher_weights(bank, "paper"))
    assert weights.shape == (1, 7)
    np.testing.assert_array_equal(weights, 1.0)


def test_paper_all_one_hot_gives_uniform():
    probs = np.stack(
        [_one_hot_probs([0, 1, 2, 0], 3), _one_hot_probs([1, 1, 0, 2], 3)]
        + [_one_hot_probs([2, 0, 0, 1], 3)]
    )
    bank = TeacherBank.from_probs(probs)
    np.testing.assert_array_equal(np.asarray(bank.entropies()), 0.0)
    weights = np.asarray(teacher_weights(bank, "paper"))
    assert not np.isnan(weights).any()
    np.testing.assert_allclose(weights, 1 / 3, atol=ATOL)


def test_paper_some_one_hot_examples():
    # example 0: both teachers one-hot (uniform); example 1: teacher 0 one-hot, teacher 1 not
    probs = np.array(
        [
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            [[0.0, 0.0, 1.0], [0.5, 0.25, 0.25]],
        ]
    )
    weights = np.asarray(teacher_weights(TeacherBank.from_probs(probs), "paper"))
    assert not np.isnan(weights).any()
    np.testing.assert_allclose(weights[:, 0], [0.5, 0.5], atol=ATOL)
    # H_0 = 0, H_1 = 1.5 bits -> w_0 = H_1 / (H_0 + H_1) = 1, w_1 = 0
    np.testing.assert_allclose(weights[:, 1], [1.0, 0.0], atol=ATOL)


# ---------------------------------------------------------------------------- inverse_entropy
def test_inverse_entropy_proportional_to_inverse():
    logits = _logits((4, 12, 5), seed=10)
    h = _reference_entropies(logits)
    reference = (1.0 / h) / (1.0 / h).sum(0, keepdims=True)
    weights = np.asarray(teacher_weights(TeacherBank.from_logits(logits), "inverse_entropy"))
    np.testing.assert_allclose(weights, reference, atol=ATOL)
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=ATOL)
    # w_m * H_m is constant over teachers for each example
    product = weights * h
    np.testing.assert_allclose(product, product[:1].repeat(4, 0), rtol=1e-5)


def test_inverse_entropy_zero_entropy_teachers_share():
    probs = np.array(
        [
            [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]],
            [[0.3, 0.3, 0.4], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
            [[0.0, 0.0, 1.0], [0.6, 0.2, 0.2], [0.0, 0.0, 1.0]],
        ]
    )
    weights = np.asarray(teacher_weights(TeacherBank.from_probs(probs), "inverse_entropy"))
    assert not np.isnan(weights).any()
    # example 0: teachers 0 and 2 are one-hot; example 1: only teacher 1; example 2: all three
    np.testing.assert_allclose(weights[:, 0], [0.5, 0.0, 0.5], atol=ATOL)
    np.testing.assert_allclose(weights[:, 1], [0.0, 1.0, 0.0], atol=ATOL)
    np.testing.assert_allclose(weights[:, 2], [1 / 3, 1 / 3, 1 / 3], atol=ATOL)


# ---------------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_softmax_rule_against_scipy(tau):
    logits = _logits((3, 10, 4), seed=11)
    h = _reference_entropies(logits)
    reference = softmax(-h / tau, axis=0)
    weights = np.asarray(teacher_weights(TeacherBank.from_logits(logits), "softmax", tau=tau))
    np.testing.assert_allclose(weights, reference, atol=1e-5 if tau < 1 else ATOL)
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=ATOL)
    np.testing.assert_allclose(
        np.asarray(softmax_weights(jnp.asarray(h, jnp.float32), tau)), reference, atol=1e-5
    )


def test_softmax_small_tau_picks_surest_teacher():
    logits = _logits((4, 10, 5), seed=12)
    h = _reference_entropies(logits)
    weights = np.asarray(teacher_weights(TeacherBank.from_logits(logits), "softmax", tau=1e-4))
    np.testing.assert_allclose(weights, np.eye(4)[h.argmin(0)].T, atol=1e-6)


def test_softmax_bad_tau_raises():
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=13))
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            teacher_weights(bank, "softmax", tau=tau)


# ---------------------------------------------------------------------------------- uniform
def test_uniform():
    bank = TeacherBank.from_logits(_logits((4, 6, 3), seed=14))
    weights = np.asarray(teacher_weights(bank, "uniform"))
    assert weights.shape == (4, 6)
    np.testing.assert_allclose(weights, 0.25, atol=ATOL)


# ------------------------------------------------------------------------------- user array
def test_user_array_normalised_per_column():
    bank = TeacherBank.from_logits(_logits((3, 4, 3), seed=15))
    raw = np.array([[1.0, 0.0, 2.0, 5.0], [1.0, 3.0, 2.0, 0.0], [2.0, 1.0, 0.0, 5.0]])
    weights = np.asarray(teacher_weights(bank, raw))
    expected = np.array(
        [[0.25, 0.0, 0.5, 0.5], [0.25, 0.75, 0.5, 0.0], [0.5, 0.25, 0.0, 0.5]]
    )  # each column divided by its sum (4, 4, 4, 10)
    np.testing.assert_allclose(weights, expected, atol=ATOL)
    # a list is accepted too
    np.testing.assert_allclose(np.asarray(teacher_weights(bank, raw.tolist())), expected, atol=ATOL)


def test_user_array_errors():
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=16))
    with pytest.raises(ValueError, match=r"shape \(M, N\)"):
        teacher_weights(bank, np.ones((3, 2)))
    with pytest.raises(ValueError, match="dimensions"):
        teacher_weights(bank, np.ones(6))
    bad = np.ones((2, 3))
    bad[0, 1] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        teacher_weights(bank, bad)
    bad = np.ones((2, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        teacher_weights(bank, bad)
    bad = np.ones((2, 3))
    bad[:, 1] = 0.0
    with pytest.raises(ValueError, match=r"column summing to 0 \(example 1\)"):
        teacher_weights(bank, bad)


def test_rule_and_bank_type_errors():
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=17))
    with pytest.raises(ValueError, match="rule must be one of"):
        teacher_weights(bank, "entropy")
    with pytest.raises(TypeError, match="teachers must be a TeacherBank"):
        teacher_weights(np.zeros((2, 3, 3)), "paper")
    with pytest.raises(ValueError, match="temperature"):
        teacher_weights(bank, "paper", temperature=0.0)


# ------------------------------------------------------------------------------------- jit
def _numpy_rule(rule, h):
    """Each rule written out in float64 NumPy/SciPy (an independent reference)."""
    num_teachers = h.shape[0]
    if rule is paper_weights:
        return (h.sum(0) - h) / ((num_teachers - 1) * h.sum(0))
    if rule is inverse_entropy_weights:
        return (1 / h) / (1 / h).sum(0)
    if rule is softmax_weights:
        return softmax(-h, axis=0)
    return np.full_like(h, 1.0 / num_teachers)


@pytest.mark.parametrize(
    "rule", [paper_weights, inverse_entropy_weights, uniform_weights, softmax_weights]
)
def test_rules_are_jittable(rule):
    """Each rule inside a user's jit equals its NumPy reference (entropies well away from 0)."""
    h = _reference_entropies(_logits((3, 8, 4), seed=18))
    weights = jax.jit(lambda e: rule(e))(jnp.asarray(h, dtype=jnp.float32))
    assert weights.shape == (3, 8)
    np.testing.assert_allclose(np.asarray(weights).sum(0), 1.0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(weights), _numpy_rule(rule, h), atol=ATOL)


def test_softmax_weights_jit_with_traced_tau():
    h = _reference_entropies(_logits((3, 5, 4), seed=19))
    weights = jax.jit(softmax_weights)(jnp.asarray(h, jnp.float32), 0.5)
    np.testing.assert_allclose(np.asarray(weights), softmax(-h / 0.5, axis=0), atol=1e-5)


# ---------------------------------------------------------------------------- temperature T_w
def test_weights_use_entropy_at_weighting_temperature():
    logits = _logits((2, 12, 4), seed=20) * 2.0
    h2 = _reference_entropies(logits, temperature=2.0)
    h1 = _reference_entropies(logits, temperature=1.0)
    bank = TeacherBank.from_logits(logits)
    weights = np.asarray(teacher_weights(bank, "paper", temperature=2.0))
    np.testing.assert_allclose(weights[0], h2[1] / (h2[0] + h2[1]), atol=ATOL)
    np.testing.assert_allclose(weights[1], h2[0] / (h2[0] + h2[1]), atol=ATOL)
    # and it differs from the T_w = 1 weights (so the temperature is really used)
    assert np.abs(weights[0] - h1[1] / (h1[0] + h1[1])).max() > 1e-2
