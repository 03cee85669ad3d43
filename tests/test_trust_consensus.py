"""The teachers' consensus, which picks each example's per-class concentration: ties shared
among the tied classes, so that the trusted prior does not depend on the order of the classes
or of the teachers (an argmax charges every tie to the lowest class index)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtbkd_jax import TeacherBank
from mtbkd_jax.trust import (
    TrustValues,
    consensus_class,
    consensus_weights,
    label_log_probs,
    trusted_teacher_prior,
)

NUM_CLASSES = 4


def _tied_bank() -> TeacherBank:
    """Two one-hot-like teachers (logit gap 30) that disagree on examples 0-2, agree on 3-4,
    and a uniform example 5: ties on 0-2 (two classes) and 5 (all four)."""
    sure = np.array([[0, 1, 2, 3, 3, 0], [1, 2, 3, 3, 3, 0]])
    logits = 30.0 * np.eye(NUM_CLASSES)[sure]
    logits[:, 5] = 0.0
    return TeacherBank.from_logits(logits)


def _values(rng: np.random.Generator, num_teachers: int = 2) -> TrustValues:
    return TrustValues(
        jnp.asarray(rng.uniform(0.5, 2.0, num_teachers), jnp.float32),
        jnp.asarray(rng.uniform(1.0, 40.0, (num_teachers, NUM_CLASSES)), jnp.float32),
        jnp.asarray(rng.normal(size=num_teachers), jnp.float32),
        jnp.asarray(0.7, jnp.float32),
    )


def test_consensus_weights_share_ties_and_are_one_hot_otherwise():
    weights = np.asarray(consensus_weights(_tied_bank().log_probs))
    expected = np.zeros((6, NUM_CLASSES))
    for row, classes in enumerate([(0, 1), (1, 2), (2, 3), (3,), (3,), (0, 1, 2, 3)]):
        expected[row, list(classes)] = 1 / len(classes)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    continuous = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(3, 50, 5)))
    np.testing.assert_array_equal(
        consensus_weights(continuous.log_probs),
        jax.nn.one_hot(consensus_class(continuous.log_probs), 5),
    )


@pytest.mark.parametrize("pooling", ["mixture", "product"])
def test_without_ties_the_weights_give_the_argmax_prior_bit_for_bit(pooling):
    """The experiments' teachers are continuous: there the weights change nothing at all."""
    bank = TeacherBank.from_logits(3.0 * np.random.default_rng(1).normal(size=(3, 40, 4)))
    values = _values(np.random.default_rng(2), 3)
    by_class, by_weights = (
        trusted_teacher_prior(bank.log_probs, consensus, values, pooling=pooling)
        for consensus in (consensus_class(bank.log_probs), consensus_weights(bank.log_probs))
    )
    for a, b in zip(by_class, by_weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _prior_terms(bank: TeacherBank, values: TrustValues, consensus_of) -> tuple:
    prior = trusted_teacher_prior(bank.log_probs, consensus_of(bank.log_probs), values)
    student = jnp.asarray(np.random.default_rng(3).normal(size=(6, NUM_CLASSES)), jnp.float32)
    return prior.log_density(student), label_log_probs(prior), student


@pytest.mark.parametrize("permutation", [[3, 2, 1, 0], [1, 3, 0, 2]])
def test_relabelling_the_classes_leaves_the_prior_and_the_label_model_unchanged(permutation):
    """Classes permuted consistently (teachers' logits, the per-class lambda, the student's
    logits): the student's prior density is the same and the label model's class
    probabilities are permuted, with ties in the consensus. The argmax consensus (a
    deliberately order-dependent version) fails it."""
    bank, values = _tied_bank(), _values(np.random.default_rng(4))
    order = np.asarray(permutation)
    permuted_bank = TeacherBank.from_logits(np.asarray(bank.log_probs)[..., order])
    permuted_values = values._replace(concentration=values.concentration[:, order])
    density, label_probs, student = _prior_terms(bank, values, consensus_weights)
    prior = trusted_teacher_prior(
        permuted_bank.log_probs, consensus_weights(permuted_bank.log_probs), permuted_values
    )
    np.testing.assert_allclose(prior.log_density(student[:, order]), density, rtol=1e-5)
    np.testing.assert_allclose(label_log_probs(prior), label_probs[:, order], rtol=1e-5)
    argmax_density = _prior_terms(bank, values, consensus_class)[0]
    argmax_prior = trusted_teacher_prior(
        permuted_bank.log_probs, consensus_class(permuted_bank.log_probs), permuted_values
    )
    moved = np.abs(np.asarray(argmax_prior.log_density(student[:, order]) - argmax_density))
    assert moved.max() > 1e-2  # the argmax's ties follow the class order


def test_reordering_the_teachers_leaves_the_prior_unchanged_at_exact_ties():
    """Three teachers each sure of a different class at the same gap tie in exact
    arithmetic; float32 rounding of their mean then decided an argmax by the teacher order."""
    logits = np.zeros((3, 200, NUM_CLASSES))
    gaps = np.random.default_rng(5).uniform(5.0, 40.0, 200)
    for teacher in range(3):
        logits[teacher, :, teacher] = gaps
    rng = np.random.default_rng(6)
    values = _values(rng, 3)._replace(weight_bias=jnp.zeros(3))  # exchangeable teachers
    student = jnp.asarray(rng.normal(size=(200, NUM_CLASSES)), jnp.float32)
    densities = []
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        bank = TeacherBank.from_logits(logits[order])
        reordered = values._replace(
            temperature=values.temperature[np.asarray(order)],
            concentration=values.concentration[np.asarray(order)],
        )
        prior = trusted_teacher_prior(bank.log_probs, consensus_weights(bank.log_probs), reordered)
        densities.append(np.asarray(prior.log_density(student)))
    np.testing.assert_allclose(densities[1], densities[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(densities[2], densities[0], rtol=1e-5, atol=1e-4)
