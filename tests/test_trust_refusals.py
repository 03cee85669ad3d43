"""Trust and weight inputs that were silently misused (found by a user-probe review of the
trust API, session 37): each one is now refused with a message naming the argument. Every
case below returned a result before its fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from flax import nnx

from mtbkd_jax import MLP, MTBKDModel, Student, TeacherBank, teacher_weights
from mtbkd_jax.trust import (
    TrustedTeachers,
    TrustHyperprior,
    TrustPosterior,
    TrustValues,
    consensus_weights,
    mixing_weight_model,
    teacher_trust_model,
    trusted_teacher_prior,
)
from mtbkd_jax.trust.factor import trusted_prior_factor
from mtbkd_jax.weighting import softmax_weights

M, N, C = 2, 6, 3


@pytest.fixture(scope="module")
def bank():
    return TeacherBank.from_logits(2.0 * np.random.default_rng(0).normal(size=(M, N, C)))


def _student():
    return Student(MLP(3, C, hidden=(), rngs=nnx.Rngs(0)))


def test_a_misspelt_weight_rule_is_refused_not_taken_as_softmax(bank):
    """Any name outside the rules fell through to the softmax rule's weights."""
    consensus, values = consensus_weights(bank.log_probs), TrustValues.fixed(M, 5.0)
    with pytest.raises(ValueError, match="weight_rule must be one of .* got 'papr'"):
        trusted_teacher_prior(bank.log_probs, consensus, values, weight_rule="papr")
    teachers = TrustedTeachers.build(bank.log_probs)
    with pytest.raises(ValueError, match="got 'papr'"):
        teachers.prior(values, 1.0, "papr")
    with pytest.raises(ValueError, match="got 'papr'"):
        trusted_prior_factor("f", jnp.zeros((N, C)), teachers, values, weight_rule="papr")


def test_values_that_invert_a_teacher_or_fit_no_bank_are_refused_in_ones_own_model(bank):
    """A negative tau flipped every teacher's argmax; a negative lambda gave a finite,
    meaningless density; three teachers' values on two gave a broadcasting error."""
    consensus = consensus_weights(bank.log_probs)
    fixed = TrustValues.fixed(M, 5.0)
    with pytest.raises(ValueError, match="trust.temperature must be > 0"):
        trusted_teacher_prior(bank.log_probs, consensus, fixed._replace(temperature=-jnp.ones(M)))
    with pytest.raises(ValueError, match="trust.concentration must be >= 0"):
        bad = fixed._replace(concentration=jnp.full((M, 1), -1.0))
        trusted_teacher_prior(bank.log_probs, consensus, bad)
    with pytest.raises(ValueError, match=r"trust.temperature must have shape \(2,\)"):
        trusted_teacher_prior(bank.log_probs, consensus, fixed._replace(temperature=jnp.ones(3)))
    # traced values (a sampled trust inside jit) are the model's to keep valid: not checked
    traced = jax.jit(lambda tau: trusted_teacher_prior(
        bank.log_probs, consensus, fixed._replace(temperature=tau)
    ).scaled_probs)  # fmt: skip
    assert traced(jnp.ones(M)).shape == (N, M, C)


def test_take_refuses_indices_outside_the_examples(bank):
    """-1 took the last example and 99 gave a NaN density, where TeacherPrior.take refuses."""
    teachers = TrustedTeachers.build(bank.log_probs)
    for bad in ([-1], [99]):
        with pytest.raises(ValueError, match=r"indices must lie in 0..5"):
            teachers.take(jnp.array(bad))
    assert teachers.take(jnp.array([5, 0])).num_examples == 2


def test_a_posterior_whose_draws_contradict_its_hyperprior_is_refused(bank):
    """Temperature slopes under calibration='teacher' were used (the density moved) while
    the record and summary said the slope was fixed at 0; temperatures of 3 under 'none'
    were used while ``interval`` said tau was fixed at 1."""
    draws = {"temperature": np.ones((3, M)), "concentration": np.full((3, M, C), 5.0)}
    teacher = TrustHyperprior(weight_rule="paper", calibration="teacher")
    with pytest.raises(ValueError, match="draws of temperature_slope must all be 0"):
        TrustPosterior({**draws, "temperature_slope": np.full((3, M), 3.0)}, teacher, bank.names)
    none = TrustHyperprior(weight_rule="paper", calibration="none")
    with pytest.raises(ValueError, match="draws of temperature must all be 1"):
        TrustPosterior({**draws, "temperature": np.full((3, M), 3.0)}, none, bank.names)
    # the fixed values, as fit_teacher_trust writes them, are accepted; so is a weight link
    # under a fixed rule, which the prior does not use (nor the record show)
    zeros = {"temperature_slope": np.zeros((3, M)), "weight_bias": np.ones((3, M))}
    TrustPosterior({**draws, **zeros}, teacher, bank.names)
    confidence = TrustHyperprior(weight_rule="paper", calibration="confidence")
    TrustPosterior({**draws, "temperature_slope": np.full((3, M), 3.0)}, confidence, bank.names)


def test_values_with_a_slope_their_hyperprior_says_is_zero_are_refused(bank):
    values = TrustValues(jnp.ones(M), jnp.full((M, 1), 5.0), jnp.zeros(M), jnp.zeros(()))
    sloped = values._replace(temperature_slope=jnp.full(M, 3.0))
    for calibration in ("none", "teacher"):
        with pytest.raises(ValueError, match="trust.temperature_slope is"):
            MTBKDModel(
                _student(),
                bank,
                trust=sloped,
                weight_rule="learned",
                trust_hyperprior=TrustHyperprior(calibration=calibration),
            )
    hyperprior = TrustHyperprior(calibration="confidence")
    MTBKDModel(_student(), bank, trust=sloped, weight_rule="learned", trust_hyperprior=hyperprior)


def test_weight_options_a_rule_ignores_are_refused_and_the_used_ones_recorded(bank):
    """weight_tau with the paper's rule (and weight_temperature with uniform weights) were
    accepted and ignored; settings() recorded neither, so two models of different softmax
    temperatures had equal records."""
    with pytest.raises(ValueError, match="weight_tau=0.1 is not used with weight_rule='paper'"):
        MTBKDModel(_student(), bank, weight_rule="paper", weight_tau=0.1)
    with pytest.raises(ValueError, match="weight_temperature=2.0 is not used with weight_rule="):
        MTBKDModel(_student(), bank, weight_rule="uniform", weight_temperature=2.0)
    with pytest.raises(ValueError, match="weight_temperature=2.0 is not used .*an array"):
        MTBKDModel(_student(), bank, weight_rule=np.full((M, N), 0.5), weight_temperature=2.0)
    with pytest.raises(ValueError, match="tau=0.5 is not used with rule='inverse_entropy'"):
        teacher_weights(bank, "inverse_entropy", tau=0.5)
    sharp, soft = (
        MTBKDModel(_student(), bank, weight_rule="softmax", weight_tau=t) for t in (0.1, 1.0)
    )
    assert sharp.settings()["weight_tau"] == 0.1 and soft.settings()["weight_tau"] == 1.0
    assert sharp.settings() != soft.settings()
    warm = MTBKDModel(_student(), bank, weight_rule="paper", weight_temperature=2.0)
    assert warm.settings()["weight_temperature"] == 2.0


def test_learned_weights_without_a_trust_say_a_trust_is_needed(bank):
    with pytest.raises(ValueError, match="'learned' needs a trust"):
        MTBKDModel(_student(), bank, weight_rule="learned")


def test_a_negative_softmax_tau_is_refused():
    """softmax_weights(H, -1) favoured the least sure teacher; teacher_weights refused it."""
    entropies = jnp.asarray([[0.1], [1.0]])
    with pytest.raises(ValueError, match="tau must be > 0, got -1.0"):
        softmax_weights(entropies, -1.0)
    assert float(softmax_weights(entropies, 1.0)[0, 0]) > 0.5


def test_a_joint_trusts_concentration_is_its_hyperprior_median_as_given(bank):
    """1e-4 was raised to 1e-3 without a word (and recorded as 1e-4); 0 became 1e-3."""
    model = MTBKDModel(_student(), bank, trust="joint", concentration=1e-4)
    assert model.trust_hyperprior.concentration == 1e-4
    assert model.settings()["concentration"] == 1e-4
    with pytest.raises(ValueError, match="LogNormal hyperprior and must be > 0, got 0"):
        MTBKDModel(_student(), bank, trust="joint", concentration=0.0)


@pytest.mark.parametrize("labels", [[0, 1, 2, 0, 1, 3], [0, 1, 2, 0, 1]])
def test_the_label_models_check_concrete_labels(bank, labels):
    """A label >= C gave a -inf log probability and a wrong length a broadcasting error."""
    for model, extra in (
        (teacher_trust_model, ()),
        (mixing_weight_model, (TrustValues.fixed(M, 5.0),)),
    ):
        seeded = numpyro.handlers.seed(model, jax.random.key(0))
        with pytest.raises(ValueError, match="labels (must lie in 0..2|has 5 entries)"):
            seeded(bank.log_probs, labels, *extra)
