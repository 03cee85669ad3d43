"""How the teachers' Dirichlets combine under learned trust: the paper's mixture or one product
(logarithmic opinion pooling), ``TrustHyperprior(pooling=...)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from flax import nnx
from numpyro.infer.util import log_density
from scipy.stats import dirichlet

from mtbkd_jax import MLP, MTBKDModel, Student, TeacherBank
from mtbkd_jax.trust import (
    TrustedTeachers,
    TrustHyperprior,
    TrustPosterior,
    TrustValues,
    consensus_class,
    fit_teacher_trust,
    label_log_probs,
    trusted_prior_factor,
    trusted_teacher_prior,
)

VALUES = TrustValues(
    jnp.array([0.7, 1.0, 2.0]),
    jnp.array([[2.0, 9.0, 4.0, 1.0], [5.0, 0.5, 3.0, 7.0], [0.5, 1.5, 20.0, 2.0]]),
    jnp.array([0.3, -0.2, 0.0]),
    jnp.array(1.5),
)


def _bank(seed: int = 0, shape: tuple[int, int, int] = (3, 6, 4), scale: float = 2.0):
    rng = np.random.default_rng(seed)
    return TeacherBank.from_logits(scale * rng.normal(size=shape))


def _priors(bank: TeacherBank, values: TrustValues = VALUES, temperature: float = 1.5):
    consensus = consensus_class(bank.log_probs)
    return tuple(
        trusted_teacher_prior(
            bank.log_probs,
            consensus,
            values,
            temperature=temperature,
            weight_rule="learned",
            pooling=pooling,
        )
        for pooling in ("mixture", "product")
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_product_pooling_is_one_dirichlet_on_the_weighted_sum_of_the_teachers_concentrations():
    """Against numpy and scipy: the pooled concentration is ``1 + sum_m w_m lambda_m p_m`` (the
    soft labels at ``tau_m T``, ``lambda`` of the consensus class), and the prior's log density
    is scipy's Dirichlet log-pdf of the tempered student probabilities, to 1e-4."""
    bank = _bank()
    temperature = 1.5
    mixture, product = _priors(bank, temperature=temperature)
    log_p = np.asarray(bank.log_probs, np.float64)  # (M, N, C)
    tau = np.asarray(VALUES.temperature, np.float64)[:, None, None]
    soft = _softmax(np.log(_softmax(log_p / tau)) / temperature)  # calibrated, then tempered
    consensus = np.asarray(consensus_class(bank.log_probs))
    lam = np.asarray(VALUES.concentration, np.float64)[:, consensus]  # (M, N)
    weights = np.exp(np.asarray(mixture.log_weights, np.float64)).T  # (M, N), the link's
    alpha = 1.0 + np.einsum("mn,mn,mnc->nc", weights, lam, soft)
    assert product.scaled_probs.shape == (6, 1, 4) and product.log_weights.shape == (6, 1)
    np.testing.assert_allclose(np.asarray(product.scaled_probs[:, 0]), alpha - 1.0, rtol=1e-5)
    logits = np.random.default_rng(1).normal(size=(6, 4)) * 2.0
    q = _softmax(logits / temperature)
    expected = [dirichlet.logpdf(q[n], alpha[n]) for n in range(6)]
    got = np.asarray(product.log_density(jnp.asarray(logits, jnp.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_product_pooling_is_the_weighted_geometric_mean_of_the_dirichlets_and_the_mixture_is_not():
    """``log Dir_pooled(q) - sum_m w_m log Dir_m(q)`` does not depend on ``q`` (the pooled
    density is the normalised weighted product); for the mixture density it does."""
    bank = _bank(2)
    mixture, product = _priors(bank, temperature=1.0)
    rng = np.random.default_rng(3)
    weights = np.exp(np.asarray(mixture.log_weights, np.float64))  # (N, M)
    alphas = 1.0 + np.asarray(mixture.scaled_probs, np.float64)  # (N, M, C)
    gaps = {"product": [], "mixture": []}
    for _ in range(5):
        logits = rng.normal(size=(6, 4)) * 3.0
        q = _softmax(logits)
        geometric = np.array(
            [
                sum(weights[n, m] * dirichlet.logpdf(q[n], alphas[n, m]) for m in range(3))
                for n in range(6)
            ]
        )
        for name, prior in (("product", product), ("mixture", mixture)):
            density = np.asarray(prior.log_density(jnp.asarray(logits, jnp.float32)), np.float64)
            gaps[name].append(density - geometric)
    assert np.ptp(np.array(gaps["product"]), axis=0).max() < 1e-3
    assert np.ptp(np.array(gaps["mixture"]), axis=0).max() > 0.1


@pytest.mark.parametrize("identical", [False, True])
def test_one_teacher_or_identical_teachers_pool_to_the_mixtures_prior(identical):
    bank = _bank(4, (1, 8, 3))
    values = TrustValues(jnp.ones(1), jnp.array([[4.0, 9.0, 2.0]]), jnp.zeros(1), jnp.array(0.5))
    if identical:
        bank = bank.select([0, 0])
        values = TrustValues(
            jnp.ones(2), jnp.array([[4.0, 9.0, 2.0]] * 2), jnp.array([0.4, -0.4]), jnp.array(0.5)
        )
    mixture, product = _priors(bank, values)
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(8, 3)) * 2.0, jnp.float32)
    np.testing.assert_allclose(
        np.asarray(product.log_density(logits)), np.asarray(mixture.log_density(logits)), atol=2e-4
    )
    np.testing.assert_allclose(
        np.asarray(label_log_probs(product)), np.asarray(label_log_probs(mixture)), atol=1e-5
    )


def test_the_product_label_model_is_the_pooled_dirichlets_mean():
    bank = _bank(6)
    mixture, product = _priors(bank, temperature=1.0)
    pooled = np.asarray(product.scaled_probs[:, 0], np.float64)
    expected = np.log((1.0 + pooled) / (4.0 + pooled.sum(-1, keepdims=True)))
    np.testing.assert_allclose(np.asarray(label_log_probs(product)), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(label_log_probs(mixture)), expected, atol=1e-3)


def test_extreme_teachers_stay_finite_when_pooled():
    logits = np.zeros((2, 3, 4))
    logits[0, :, 0] = 1e4
    logits[1] = np.array([[1e4, -1e4, 0, 0], [0, 0, 0, 0], [-1e4, 1e4, 1e4, 0]])
    bank = TeacherBank.from_logits(logits)
    for tau, lam in ((1e-3, 1e4), (1.0, 30.0), (1e3, 1e-3)):
        values = TrustValues(jnp.full(2, tau), jnp.full((2, 4), lam), jnp.zeros(2), jnp.array(2.0))
        prior = trusted_teacher_prior(
            bank.log_probs, consensus_class(bank.log_probs), values, pooling="product"
        )
        assert all(bool(jnp.isfinite(a).all()) for a in prior)
        assert bool(jnp.isfinite(label_log_probs(prior)).all())
        assert bool(jnp.isfinite(prior.log_density(jnp.array([[50.0, -50.0, 0, 0]] * 3))).all())


def test_an_unknown_pooling_is_refused_by_name():
    with pytest.raises(ValueError, match="pooling must be one of .*'mixture', 'product'.*'sum'"):
        TrustHyperprior(pooling="sum")
    bank = _bank()
    with pytest.raises(ValueError, match="pooling must be one of"):
        trusted_teacher_prior(bank.log_probs, consensus_class(bank.log_probs), VALUES, pooling="x")


def _trust(bank: TeacherBank, pooling: str) -> TrustPosterior:
    draws = {
        "temperature": np.ones((2, 3), np.float32),
        "concentration": np.broadcast_to(np.asarray(VALUES.concentration), (2, 3, 4)).copy(),
        "weight_bias": np.broadcast_to(np.asarray(VALUES.weight_bias), (2, 3)).copy(),
        "weight_slope": np.full((2,), 1.5, np.float32),
    }
    return TrustPosterior(draws, TrustHyperprior(pooling=pooling), tuple(bank.names))


def test_the_students_model_and_an_own_models_factor_use_the_trusts_pooling():
    bank = _bank(7, (3, 10, 4))
    x = np.random.default_rng(8).normal(size=(10, 5)).astype(np.float32)
    y = np.arange(10) % 4
    densities = {}
    for pooling in ("mixture", "product"):
        student = Student(MLP(5, 4, hidden=(), rngs=nnx.Rngs(0)))
        model = MTBKDModel(student, bank, trust=_trust(bank, pooling))
        assert model.teacher_prior.scaled_probs.shape[1] == (1 if pooling == "product" else 3)
        assert model.settings()["trust"]["hyperprior"]["pooling"] == pooling
        params = model.student.init_weights(jax.random.key(0), jnp.asarray(x))
        densities[pooling] = float(log_density(model, (x, y), {}, params)[0])
    assert np.isfinite(list(densities.values())).all()
    assert abs(densities["mixture"] - densities["product"]) > 1e-3

    # the factor of a model of one's own: the pooled prior's density, summed
    teachers = TrustedTeachers.build(bank.log_probs)
    logits = jnp.asarray(np.random.default_rng(9).normal(size=(10, 4)), jnp.float32)
    with numpyro.handlers.seed(rng_seed=0):
        got = trusted_prior_factor("prior", logits, teachers, VALUES, pooling="product")
    prior = trusted_teacher_prior(
        bank.log_probs, consensus_class(bank.log_probs), VALUES, pooling="product"
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(prior.log_density(logits)), rtol=1e-5)


def test_the_joint_model_with_product_pooling_has_a_finite_density_of_its_own():
    bank = _bank(10, (2, 12, 3))
    x = np.random.default_rng(11).normal(size=(12, 4)).astype(np.float32)
    y = np.arange(12) % 3
    densities = []
    for pooling in ("mixture", "product"):
        model = MTBKDModel(
            Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0))),
            bank,
            trust="joint",
            trust_hyperprior=TrustHyperprior(pooling=pooling),
        )
        params = {
            **model.student.init_weights(jax.random.key(1), jnp.asarray(x)),
            "trust.temperature": jnp.array([0.5, 2.0]),
            "trust.concentration": jnp.array([[4.0, 9.0, 2.0], [1.0, 3.0, 8.0]]),
            "trust.weight_bias": jnp.array([0.3, -0.3]),
            "trust.weight_slope": jnp.array(1.0),
        }
        densities.append(float(log_density(model, (x, y), {}, params)[0]))
    assert np.isfinite(densities).all() and abs(densities[0] - densities[1]) > 1e-3


def test_pooled_weights_learned_from_labels_favour_the_reliable_teacher():
    """A teacher right on 90% of the labels and one that guesses: under product pooling the
    label model gives the first the larger weight bias (its 90% interval above the other's
    median); labels shuffled (so that neither teacher is reliable) do not."""
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 4, 160)
    right = np.where(rng.random(160) < 0.9, labels, rng.integers(0, 4, 160))
    logits = np.stack([3.0 * np.eye(4)[right], 3.0 * np.eye(4)[rng.integers(0, 4, 160)]])
    bank = TeacherBank.from_logits(logits, names=["good", "guess"])
    hyperprior = TrustHyperprior(pooling="product", calibration="none", per_class=False)
    biases = {}
    for name, y in (("labels", labels), ("shuffled", rng.permutation(labels))):
        trust = fit_teacher_trust(
            jax.random.key(0), bank, y, hyperprior=hyperprior, num_warmup=150, num_draws=150
        )
        biases[name] = trust.draws["weight_bias"]
    low = np.percentile(biases["labels"][:, 0] - biases["labels"][:, 1], 5)
    assert low > 0.0, low
    assert np.median(biases["shuffled"][:, 0] - biases["shuffled"][:, 1]) < 1.0


def test_the_weights_label_model_uses_the_pooling():
    """Stage 2 of the cut (``mixing_weight_model``): the labels' logits are the pooled
    Dirichlet's mean under ``pooling="product"``, computed here by hand; the mixture's mean
    (the other pooling) is not."""
    from numpyro.handlers import seed, substitute, trace

    from mtbkd_jax.trust import mixing_weight_model

    bank = _bank(13, (3, 6, 4))
    labels = jnp.arange(6) % 4
    link = {"trust.weight_bias": VALUES.weight_bias, "trust.weight_slope": VALUES.weight_slope}
    logits = {}
    for pooling in ("mixture", "product"):
        model = substitute(seed(mixing_weight_model, 0), link)
        hyperprior = TrustHyperprior(pooling=pooling)
        site = trace(model).get_trace(bank.log_probs, labels, VALUES, hyperprior=hyperprior)["y"]
        logits[pooling] = np.asarray(site["fn"].logits, np.float64)
    _, product = _priors(bank, temperature=1.0)
    pooled = np.asarray(product.scaled_probs[:, 0], np.float64)
    expected = np.log((1.0 + pooled) / (4.0 + pooled.sum(-1, keepdims=True)))
    np.testing.assert_allclose(logits["product"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits["mixture"], expected, atol=1e-3)


def test_a_pooled_posterior_keeps_the_teachers_weights_and_saves(tmp_path):
    """Under product pooling the prior has one component, but the model's ``teacher_weights``
    are still the M teachers' (those of the sum), so the posterior converts to ArviZ and
    saves."""
    from mtbkd_jax import run_map

    bank = _bank(14, (3, 12, 4))
    x = np.random.default_rng(15).normal(size=(12, 5)).astype(np.float32)
    y = np.arange(12) % 4
    models = {
        pooling: MTBKDModel(
            Student(MLP(5, 4, hidden=(), rngs=nnx.Rngs(0))), bank, trust=_trust(bank, pooling)
        )
        for pooling in ("mixture", "product")
    }
    np.testing.assert_allclose(
        np.asarray(models["product"].teacher_weights), np.asarray(models["mixture"].teacher_weights)
    )
    assert models["product"].teacher_weights.shape == (3, 12)
    mode = run_map(jax.random.key(0), models["product"], x, y, num_steps=5, progress_bar=False)
    tree = mode.to_datatree()
    assert tree.constant_data["teacher_weights"].shape == (3, 12)
    mode.save(tmp_path / "pooled.nc")


def test_a_hyperprior_other_than_the_posteriors_own_is_refused_and_given_values_record_it():
    bank = _bank(16, (3, 6, 4))
    student = Student(MLP(5, 4, hidden=(), rngs=nnx.Rngs(0)))
    trust = _trust(bank, "mixture")
    with pytest.raises(ValueError, match="trust_hyperprior is for trust='joint' or TrustValues"):
        MTBKDModel(student, bank, trust=trust, trust_hyperprior=TrustHyperprior(pooling="product"))
    same = MTBKDModel(student, bank, trust=trust, trust_hyperprior=trust.hyperprior)
    assert same.settings()["trust"]["hyperprior"]["pooling"] == "mixture"
    for hyperprior, pooling in ((None, "mixture"), (TrustHyperprior(pooling="product"), "product")):
        given = MTBKDModel(
            student, bank, trust=VALUES, trust_hyperprior=hyperprior, weight_rule="learned"
        )
        assert given.settings()["trust"]["pooling"] == pooling
        assert given.teacher_prior.scaled_probs.shape[1] == (1 if pooling == "product" else 3)
        mixture = MTBKDModel(student, bank, trust=VALUES, weight_rule="learned")
        np.testing.assert_allclose(given.teacher_weights, mixture.teacher_weights, rtol=1e-6)
