"""Learned teacher trust (mtbkd_jax.trust): the label models against independent references,
recovery of known trust, the fixed model as a special case, the confidently wrong teacher, and
labels counted once."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro.infer import MCMC, NUTS, Predictive
from numpyro.infer.util import log_density

from mtbkd_jax import MLP, MTBKDModel, Student, TeacherBank, run_map
from mtbkd_jax.metrics import negative_log_likelihood
from mtbkd_jax.priors import TeacherPrior
from mtbkd_jax.trust import (
    TrustHyperprior,
    TrustPosterior,
    TrustValues,
    calibrated_log_probs,
    consensus_class,
    fit_teacher_trust,
    label_log_likelihood,
    label_log_probs,
    teacher_label_log_likelihood,
    teacher_trust_model,
    trusted_teacher_prior,
)


def _bank(seed: int = 0, shape: tuple[int, int, int] = (2, 40, 4), scale: float = 2.0):
    rng = np.random.default_rng(seed)
    return TeacherBank.from_logits(scale * rng.normal(size=shape))


# ------------------------------------------------------------------ the label models
def test_label_probabilities_are_the_mixture_mean_by_monte_carlo():
    """P(y = c | trust) is E[pi_c] for pi drawn from the teacher mixture: checked against the
    mean of 200,000 draws of NumPyro's MixtureSameFamily of Dirichlet(1 + lambda p), within 5
    standard errors; the teachers' soft labels without smoothing (lambda -> infinity) fail it."""
    bank = _bank(1, (3, 5, 4))
    values = TrustValues(
        jnp.array([0.7, 1.0, 2.0]),
        jnp.array([[2.0], [5.0], [0.5]]),
        jnp.array([0.3, -0.2, 0.0]),
        jnp.array(1.5),
    )
    prior = trusted_teacher_prior(
        bank.log_probs, consensus_class(bank.log_probs), values, weight_rule="learned"
    )
    probs = np.exp(np.asarray(label_log_probs(prior), np.float64))
    weights = jnp.exp(prior.log_weights)  # (N, M)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=weights), dist.Dirichlet(1.0 + prior.scaled_probs)
    )
    draws = np.asarray(mixture.sample(jax.random.key(0), (200_000,)), np.float64)
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(probs - mean) < 5 * se + 1e-6)
    soft_labels = prior.scaled_probs / prior.scaled_probs.sum(-1, keepdims=True)
    unsmoothed = np.einsum("nm,nmc->nc", np.asarray(weights), np.asarray(soft_labels))
    assert np.any(np.abs(unsmoothed - mean) > 5 * se + 1e-6)


def test_each_teachers_label_likelihood_is_its_smoothed_soft_label():
    bank = _bank(2, (2, 6, 3))
    values = TrustValues(
        jnp.array([0.5, 3.0]), jnp.array([[1.0], [20.0]]), jnp.zeros(2), jnp.zeros(())
    )
    prior = trusted_teacher_prior(bank.log_probs, consensus_class(bank.log_probs), values)
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    got = np.asarray(teacher_label_log_likelihood(prior, labels))
    logits = np.asarray(bank.log_probs, np.float64) / np.array([0.5, 3.0])[:, None, None]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    lam = np.array([1.0, 20.0])[:, None]
    expected = np.log((1 + lam * p[:, np.arange(6), labels]) / (3 + lam)).T
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [4.0, 200.0])
def test_the_fixed_model_is_the_special_case_of_fixed_trust(scale):
    """tau = 1 and one lambda with a fixed rule give TeacherPrior.build's constants exactly,
    also where the teachers' tempered logit gaps pass 90 nats (scale 200: an entropy formed in
    float32 and then logged underflows there; the fixed model works in log space)."""
    bank = _bank(3, (3, 30, 5), scale=scale)
    if scale > 10:
        gaps = np.diff(np.sort(np.asarray(bank.log_probs), axis=-1)[..., -2:], axis=-1)
        assert (gaps / 2.0 > 90).mean() > 0.3  # tempered at 2: the regime that broke them
    for rule in ("paper", "uniform", "inverse_entropy"):
        fixed = TeacherPrior.build(bank, concentration=7.0, temperature=2.0, weight_rule=rule)
        trusted = trusted_teacher_prior(
            bank.log_probs,
            consensus_class(bank.log_probs),
            TrustValues.fixed(3, 7.0),
            temperature=2.0,
            weight_rule=rule,
        )
        for a, b in zip(fixed, trusted, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


def test_extreme_teachers_give_finite_trust_terms():
    """One-hot teachers (logits of 1e4) and extreme temperatures stay finite."""
    logits = np.zeros((2, 3, 4))
    logits[0, :, 0] = 1e4
    logits[1] = np.array([[1e4, -1e4, 0, 0], [0, 0, 0, 0], [-1e4, 1e4, 1e4, 0]])
    bank = TeacherBank.from_logits(logits)
    for tau in (1e-3, 1.0, 1e3):
        values = TrustValues(jnp.full(2, tau), jnp.full((2, 4), 30.0), jnp.zeros(2), jnp.array(2.0))
        prior = trusted_teacher_prior(
            bank.log_probs, consensus_class(bank.log_probs), values, weight_rule="learned"
        )
        assert all(bool(jnp.isfinite(a).all()) for a in prior)
        assert bool(jnp.isfinite(label_log_probs(prior)).all())
        assert bool(jnp.isfinite(prior.log_density(jnp.array([[50.0, -50.0, 0, 0]] * 3))).all())
    for rule in ("learned", "paper", "inverse_entropy"):  # and finite gradients in tau

        def density(tau, rule=rule):
            values = TrustValues(
                jnp.full(2, tau), jnp.full((2, 4), 30.0), jnp.zeros(2), jnp.array(0.0)
            )
            prior = trusted_teacher_prior(
                bank.log_probs, consensus_class(bank.log_probs), values, weight_rule=rule
            )
            return prior.log_density(jnp.array([[5.0, -5.0, 0, 0]] * 3)).sum()

        for tau in (1e-3, 1.0, 1e3):
            assert np.isfinite(float(density(tau))) and np.isfinite(float(jax.grad(density)(tau)))


# ------------------------------------------------------------------ recovery
def test_simulation_based_calibration_of_the_calibration_model():
    """Trust drawn from its hyperprior, labels simulated from the model, trust refitted: each
    number's central 80% interval covers its truth at the nominal rate (40 simulations x 4
    numbers = 160 trials; 0.8 +- 3.5 binomial standard errors)."""
    num_teachers, num_examples, num_classes = 2, 150, 3
    hyper = TrustHyperprior(per_class=False, weight_rule="uniform")
    bank = _bank(4, (num_teachers, num_examples, num_classes), scale=2.5)
    trust_model = partial(teacher_trust_model, hyperprior=hyper)
    mcmc = MCMC(
        NUTS(trust_model),
        num_warmup=150,
        num_samples=200,
        progress_bar=False,
        jit_model_args=True,
    )
    simulate = Predictive(trust_model, num_samples=1)
    covered = []
    for seed in range(40):
        key_sim, key_fit = jax.random.split(jax.random.key(seed))
        truth = simulate(key_sim, bank.log_probs, None)
        # the model simulates one label set per teacher; keep the first teacher's and fit
        # that teacher alone, whose model it exactly is
        labels = truth["y"][0, 0]
        mcmc.run(key_fit, bank.log_probs[:1], labels)
        draws = mcmc.get_samples()
        for name in ("trust.temperature", "trust.concentration"):
            true_value = float(np.ravel(truth[name][0])[0])
            low, high = np.percentile(np.ravel(draws[name]), [10, 90])
            covered.append(low <= true_value <= high)
    rate = float(np.mean(covered))
    assert (
        0.8 - 3.5 * np.sqrt(0.16 / len(covered)) <= rate <= 0.8 + 3.5 * np.sqrt(0.16 / len(covered))
    ), rate


def _miscalibrated(seed: int, num_examples: int = 400):
    """Labels from known class probabilities; teacher 0 over-confident (logits x 3, tau = 3),
    teacher 1 under-confident (logits x 0.5, tau = 0.5)."""
    rng = np.random.default_rng(seed)
    true_logits = 1.5 * rng.normal(size=(num_examples, 4))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(-1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    bank = TeacherBank.from_logits(np.stack([3.0 * true_logits, 0.5 * true_logits]))
    return bank, labels


def _recovers(trust) -> bool:
    low, high = trust.interval("temperature", 0.9)
    return bool(low[0] > 1.5 and high[1] < 0.8 and high[0] > 2.0 and low[1] < 0.6)


def test_trust_recovers_known_miscalibration_and_ignoring_labels_does_not():
    """The over-confident teacher's tau is learned above 1.5, the under-confident one's below
    0.8 (truths 3 and 0.5; the 90% intervals keep the truths' side); a broken trust whose
    labels carry no information (permuted) fails the same check."""
    bank, labels = _miscalibrated(5)
    hyper = TrustHyperprior(per_class=False, weight_rule="uniform")
    trust = fit_teacher_trust(
        jax.random.key(0), bank, labels, hyperprior=hyper, num_warmup=200, num_draws=200
    )
    assert _recovers(trust), trust.summary()
    assert trust.max_rhat < 1.1
    low, high = trust.interval("temperature", 0.9)
    rows = trust.summary()
    assert trust.temperature_learned and all(row["temperature_learned"] for row in rows)
    assert [row["temperature_90"] for row in rows] == [(low[0], high[0]), (low[1], high[1])]
    permuted = np.random.default_rng(0).permutation(labels)
    broken = fit_teacher_trust(
        jax.random.key(0), bank, permuted, hyperprior=hyper, num_warmup=200, num_draws=200
    )
    assert not _recovers(broken)


# ------------------------------------------------------------------ the confidently wrong teacher
def _blobs(rng: np.random.Generator, mu: np.ndarray, n: int):
    y = rng.integers(0, len(mu), n)
    x = mu[y] + rng.normal(size=(n, mu.shape[1]))
    log_joint = -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(-1)
    log_post = log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True)
    return x.astype(np.float32), y, log_post


def _wrong_teacher_problem():
    """Four classes; a good teacher (the Bayes posterior plus noise), an over-confident one, and
    one that is confidently wrong on class 2 (says 3 wherever the Bayes rule says 2)."""
    rng = np.random.default_rng(1)
    mu = rng.normal(0, 1.2, (4, 5))
    x, y, log_post = _blobs(rng, mu, 150)
    x_test, y_test, _ = _blobs(rng, mu, 3000)
    wrong = log_post.copy()
    where = np.argmax(log_post, 1) == 2
    wrong[where] = 0.0
    wrong[where, 3] = 8.0
    logits = np.stack([log_post + rng.normal(0, 0.3, log_post.shape), 3 * log_post, wrong])
    bank = TeacherBank.from_logits(logits, names=["good", "overconfident", "wrong_on_2"])
    return bank, x, y, x_test, y_test


@pytest.mark.slow
def test_learned_trust_flattens_a_confidently_wrong_teacher_where_it_lies():
    bank, x, y, x_test, y_test = _wrong_teacher_problem()
    trust = fit_teacher_trust(jax.random.key(0), bank, y, num_warmup=300, num_draws=300)
    lam = np.median(trust.draws["concentration"], axis=0)  # (M, C)
    # flattened on the consensus class where it lies, not elsewhere, and not the others
    assert lam[2, 2] < 0.2 * lam[2, [0, 1]].min()
    assert lam[2, 2] < 0.2 * lam[:2, 2].min()

    def test_nll(**options):
        student = Student(MLP(5, 4, hidden=(), rngs=nnx.Rngs(0)))
        mode = run_map(
            jax.random.key(1),
            MTBKDModel(student, bank, **options),
            x,
            y,
            num_steps=2000,
            progress_bar=False,
        )
        return negative_log_likelihood(np.asarray(mode.predict(x_test))[0], y_test)

    paper, learned = test_nll(), test_nll(trust=trust)
    assert learned < paper - 0.01, (learned, paper)


def test_one_teacher_with_fixed_trust_gives_the_fixed_models_map():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    for bank in (_bank(7, (1, 60, 3)), _bank(7, (1, 60, 3)).select([0, 0])):
        fits = []
        for options in (
            {"concentration": 5.0, "weight_rule": "uniform"},
            {"trust": TrustValues.fixed(bank.num_teachers, 5.0), "weight_rule": "uniform"},
        ):
            model = MTBKDModel(Student(MLP(3, 3, hidden=(), rngs=nnx.Rngs(0))), bank, **options)
            mode = run_map(jax.random.key(0), model, x, y, num_steps=500, progress_bar=False)
            fits.append(np.concatenate([np.ravel(v) for v in mode.draws.values()]))
        np.testing.assert_allclose(fits[0], fits[1], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ labels counted once
def _joint_log_density(model, x, y, params):
    return float(log_density(model, (x, y), {}, params)[0])


def test_the_joint_model_uses_each_label_once():
    """In trust='joint' the labels inform trust only through the student: with the student's
    weights held fixed, changing the labels changes the log density by the same amount
    whatever the trust. A model that also adds the labels' trust likelihood (double counting)
    fails that check."""
    bank = _bank(8, (2, 30, 3))
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(30, 4)), jnp.float32)
    y1, y2 = jnp.asarray(rng.integers(0, 3, 30)), jnp.asarray(rng.integers(0, 3, 30))
    model = MTBKDModel(Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0))), bank, trust="joint")
    weights = model.student.init_weights(jax.random.key(0), x)

    def trust(scale):
        return {
            "trust.temperature": jnp.array([0.5, 2.0]) * scale,
            "trust.concentration": jnp.full((2, 3), 4.0) * scale,
            "trust.weight_bias": jnp.array([0.1, -0.1]) * scale,
            "trust.weight_slope": jnp.array(1.0) * scale,
        }

    def label_effect(m, scale):
        params = {**weights, **trust(scale)}
        return _joint_log_density(m, x, y1, params) - _joint_log_density(m, x, y2, params)

    assert abs(label_effect(model, 1.0) - label_effect(model, 3.0)) < 1e-3

    def double_counting(inputs, labels=None):
        inner = numpyro.handlers.trace(model).get_trace(inputs, labels)
        names = ("temperature", "concentration", "weight_bias", "weight_slope")
        values = TrustValues(*(inner[f"trust.{n}"]["value"] for n in names))
        prior = model.trusted_teachers.prior(values, 1.0, "learned")
        numpyro.factor("labels_again", label_log_likelihood(prior, labels).sum())

    assert abs(label_effect(double_counting, 1.0) - label_effect(double_counting, 3.0)) > 0.1


def test_teachers_with_zero_probabilities_give_finite_trust_gradients():
    """A teacher with exact zeros (log p = -inf, e.g. a random forest) keeps them at every tau,
    and the label models' gradients in the trust stay finite (NaN before: -inf / tau)."""
    probs = np.array([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], [[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]])
    bank = TeacherBank.from_probs(probs)
    labels = jnp.array([1, 2])

    def loss(log_tau, log_lam):
        values = TrustValues(jnp.exp(log_tau), jnp.exp(log_lam), jnp.zeros(2), jnp.array(1.0))
        prior = trusted_teacher_prior(
            bank.log_probs, consensus_class(bank.log_probs), values, weight_rule="learned"
        )
        return (
            teacher_label_log_likelihood(prior, labels).sum()
            + label_log_likelihood(prior, labels).sum()
        )

    grads = jax.grad(loss, argnums=(0, 1))(jnp.array([0.3, -0.2]), jnp.zeros((2, 3)))
    assert all(bool(jnp.isfinite(g).all()) for g in grads)
    calibrated = jnp.exp(calibrated_log_probs(bank.log_probs, jnp.array([5.0, 0.2])))
    assert bool((calibrated[np.asarray(probs) == 0] == 0).all())


def test_an_own_model_with_trust_sites_matches_the_joint_canonical_model():
    """sample_trust + trusted_prior_factor in a model written by hand give the same log density
    as MTBKDModel(trust="joint") (a deliberately wrong weight rule does not)."""
    from mtbkd_jax.trust import TrustedTeachers, sample_trust, trusted_prior_factor

    bank = _bank(9, (2, 20, 3))
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(20, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 20))
    canonical = MTBKDModel(
        Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0))), bank, trust="joint", prior_power=0.5
    )
    teachers = TrustedTeachers.build(bank.log_probs)

    def own(inputs, labels, rule="learned"):
        trust = sample_trust(canonical.trust_hyperprior, 2, 3)
        logits = canonical.student.network(inputs.shape[1:])(inputs)
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=logits), obs=labels)
            trusted_prior_factor(
                "teacher_prior", logits, teachers, trust, weight_rule=rule, prior_power=0.5
            )

    params = {
        **canonical.student.init_weights(jax.random.key(0), x),
        "trust.temperature": jnp.array([0.5, 2.0]),
        "trust.concentration": jnp.full((2, 3), 4.0),
        "trust.weight_bias": jnp.array([0.1, -0.1]),
        "trust.weight_slope": jnp.array(1.0),
    }
    expected = _joint_log_density(canonical, x, y, params)
    assert abs(_joint_log_density(own, x, y, params) - expected) < 1e-3 * abs(expected)
    wrong = partial(own, rule="uniform")
    assert abs(_joint_log_density(wrong, x, y, params) - expected) > 1e-3


def test_the_own_models_factor_takes_the_hyperprior_sample_trust_was_given():
    """Under a hyperprior with the paper's rule pooled as a product, sample_trust samples no
    weight link; trusted_prior_factor's defaults (learned rule, mixture) then gave a uniform
    mixture, silently (log joint -137.0 against -150.9). hyperprior= gives its rule and pooling."""
    from mtbkd_jax.trust import TrustedTeachers, sample_trust, trusted_prior_factor

    bank = _bank(9, (2, 20, 3))
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(20, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 20))
    h = TrustHyperprior(weight_rule="paper", pooling="product")
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    canonical = MTBKDModel(student, bank, trust="joint", trust_hyperprior=h, prior_power=0.5)
    teachers = TrustedTeachers.build(bank.log_probs)

    def own(inputs, labels, **options):
        trust = sample_trust(h, 2, 3)
        logits = student.network(inputs.shape[1:])(inputs)
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=logits), obs=labels)
            trusted_prior_factor(
                "teacher_prior", logits, teachers, trust, prior_power=0.5, **options
            )

    params = {
        **student.init_weights(jax.random.key(0), x),
        "trust.temperature": jnp.array([0.5, 2.0]),
        "trust.concentration": jnp.full((2, 1), 4.0),
    }
    expected = _joint_log_density(canonical, x, y, params)
    given = _joint_log_density(partial(own, hyperprior=h), x, y, params)
    assert abs(given - expected) < 1e-3 * abs(expected)
    assert abs(_joint_log_density(own, x, y, params) - expected) > 1.0  # the defaults: another
    with pytest.raises(ValueError, match="pooling='mixture' differs from the hyperprior's"):
        _joint_log_density(partial(own, hyperprior=h, pooling="mixture"), x, y, params)


def _fitted_trust():
    """A trust posterior of 4 draws for two 3-class teachers named teacher_0 and teacher_1."""
    from mtbkd_jax.trust import TrustPosterior

    draws = {
        "temperature": np.ones((4, 2)),
        "concentration": np.full((4, 2, 3), 5.0),
        "weight_bias": np.zeros((4, 2)),
        "weight_slope": np.zeros(4),
    }
    return TrustPosterior(draws, TrustHyperprior(), ("teacher_0", "teacher_1"), 1.0)


def test_a_trust_fitted_for_other_teachers_or_another_temperature_is_refused():
    bank, trust = _bank(10, (2, 8, 3)), _fitted_trust()
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    MTBKDModel(student, bank, trust=trust)  # the right teachers, at the right temperature
    with pytest.raises(ValueError, match="fitted for the teachers"):
        MTBKDModel(student, TeacherBank(bank.log_probs, ("a", "b")), trust=trust)
    with pytest.raises(ValueError, match="temperature"):
        MTBKDModel(student, bank, trust=trust, temperature=2.0)
    with pytest.raises(ValueError, match="trust must be"):
        MTBKDModel(student, bank, trust="learned")


def test_weight_options_a_trust_would_ignore_are_refused_and_settings_record_the_rule_used():
    """A fitted trust or "joint" takes its weights from its hyperprior: weight_rule, weight_tau
    and weight_temperature were silently ignored, and settings() recorded the ignored rule (it
    goes into every posterior and checkpoint fingerprint). TrustValues use weight_rule at tau 1
    and temperature 1: other values were dropped."""
    bank, fitted = _bank(10, (2, 8, 3)), _fitted_trust()
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    assert MTBKDModel(student, bank, trust=fitted).settings()["weight_rule"] == "learned"
    joint = MTBKDModel(student, bank, trust="joint", trust_hyperprior=TrustHyperprior())
    assert joint.settings()["weight_rule"] == "learned"
    for trust in (fitted, "joint"):
        for option in ({"weight_rule": "uniform"}, {"weight_tau": 0.01}):
            with pytest.raises(ValueError, match=f"{next(iter(option))} would be ignored"):
                MTBKDModel(student, bank, trust=trust, **option)
        model = MTBKDModel(student, bank, trust=trust, weight_rule="learned")  # the rule used
        assert model.settings()["weight_rule"] == "learned"
    with pytest.raises(ValueError, match="trust must be None, a TrustPosterior"):
        MTBKDModel(student, bank, trust="bogus", weight_rule="uniform")  # the trust is named
    values = TrustValues.fixed(2, 10.0)
    assert (
        MTBKDModel(student, bank, trust=values, weight_rule="uniform").settings()["weight_rule"]
        == "uniform"
    )
    for option in ({"weight_tau": 100.0}, {"weight_temperature": 5.0}):
        with pytest.raises(ValueError, match=f"taken at {next(iter(option))}=1"):
            MTBKDModel(student, bank, trust=values, weight_rule="softmax", **option)
    with pytest.raises(ValueError, match="got an array of weights"):
        MTBKDModel(student, bank, trust=values, weight_rule=np.full((2, 8), 0.5))
    # lambda: the trust's own (values, a posterior, a given joint hyperprior) takes its place,
    # so another concentration was recorded in settings() without acting
    for trust, where in ((values, "the trust's"), (fitted, "the trust's"), ("joint", "trust_hy")):
        with pytest.raises(ValueError, match=rf"concentration=123.0 is not used .*\({where}"):
            hyperprior = TrustHyperprior() if trust == "joint" else None
            MTBKDModel(student, bank, trust=trust, concentration=123.0, trust_hyperprior=hyperprior)
    with pytest.raises(ValueError, match=r"concentration=10.0 is not used"):  # the default's
        MTBKDModel(student, bank, trust=values, concentration=10.0)  # value, given: refused too
    sampled = MTBKDModel(student, bank, trust="joint", concentration=3.0)  # the default's lambda
    assert sampled.trust_hyperprior.concentration == 3.0
    # paper() gives its lambda = 5 only where the trust uses it (not the user's to refuse)
    assert MTBKDModel.paper(student, bank, trust=values).teacher_prior is not None
    assert MTBKDModel.paper(student, bank, trust="joint").trust_hyperprior.concentration == 5.0


def test_a_hyperprior_without_a_trust_and_the_paper_rule_named_with_a_trust_are_refused():
    """Both were silently ignored: trust_hyperprior with trust=None gave the fixed model
    (settings() equal to the model without it), and weight_rule="paper" given with a fitted or
    joint trust could not be told from the constructor's default (the trust's rule was used)."""
    bank, fitted = _bank(10, (2, 8, 3)), _fitted_trust()
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="trust_hyperprior is for trust='joint'.*got trust=None"):
        MTBKDModel(student, bank, trust_hyperprior=TrustHyperprior(pooling="product"))
    for trust in (fitted, "joint"):
        with pytest.raises(ValueError, match="weight_rule would be ignored"):
            MTBKDModel(student, bank, trust=trust, weight_rule="paper")
        assert MTBKDModel(student, bank, trust=trust).weight_rule == "learned"
    paper_rule = TrustHyperprior(weight_rule="paper")  # named where it is the rule used: fine
    joint = MTBKDModel(
        student, bank, trust="joint", trust_hyperprior=paper_rule, weight_rule="paper"
    )
    assert joint.weight_rule == "paper"
    assert MTBKDModel.paper(student, bank, trust=fitted, temperature=1.0).weight_rule == "learned"
    values = TrustValues.fixed(2, 10.0)  # given values take weight_rule, by default the paper's
    assert MTBKDModel(student, bank, trust=values).weight_rule == "paper"
    assert MTBKDModel(student, bank).weight_rule == "paper"


def test_fit_teacher_trust_checks_its_settings():
    bank = _bank(11, (2, 12, 3))
    labels = np.arange(12) % 3
    key = jax.random.key(0)
    cases = [
        ({"rng_key": 0}, TypeError, "rng_key"),
        ({"num_chains": 0}, ValueError, "num_chains must be an integer >= 1"),
        ({"num_chains": 2.5}, TypeError, "num_chains must be an integer"),
        ({"num_draws": 0}, ValueError, "num_draws must be an integer >= 1"),
        ({"num_warmup": -1}, ValueError, "num_warmup must be an integer >= 0"),
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, ValueError, "temperature must be a finite number > 0"),
    ]
    for change, error, message in cases:
        args = {"rng_key": key, "num_warmup": 2, "num_draws": 2, "num_chains": 1} | change
        with pytest.raises(error, match=message):
            fit_teacher_trust(args.pop("rng_key"), bank, labels, **args)


# ------------------------------------------------------------- confidence-dependent calibration
def test_confidence_calibration_matches_an_independent_formula():
    """``log tau_im = log tau_m + kappa_m (H(p_im)/log C - 1/2)`` computed by NumPy example by
    example (to float32 rounding); zero slopes give the per-teacher calibration exactly."""
    bank = _bank(7, (2, 30, 4), scale=3.0)
    log_p = np.asarray(bank.log_probs, np.float64)
    tau, kappa = np.array([1.7, 0.6]), np.array([2.5, -1.0])
    expected = np.empty_like(log_p)
    for m in range(2):
        for i in range(30):
            p = np.exp(log_p[m, i])
            u = -(p * log_p[m, i]).sum() / np.log(4)
            t = tau[m] * np.exp(kappa[m] * (u - 0.5))
            z = log_p[m, i] / t
            expected[m, i] = z - np.log(np.exp(z).sum())
    got = calibrated_log_probs(bank.log_probs, jnp.asarray(tau), jnp.asarray(kappa))
    np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5)
    flat = calibrated_log_probs(bank.log_probs, jnp.asarray(tau), jnp.zeros(2))
    np.testing.assert_array_equal(
        np.asarray(flat), np.asarray(calibrated_log_probs(bank.log_probs, jnp.asarray(tau)))
    )
    with pytest.raises(ValueError, match="calibration"):
        TrustHyperprior(calibration="per_example")


def _confidence_miscalibrated(seed: int, kappa: float, num_examples: int = 600):
    """One teacher whose true temperature grows with its own entropy: labels drawn from
    ``softmax(log p / tau_i)``, ``log tau_i = log 1.5 + kappa (u_i - 1/2)``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_examples, 4)) * rng.uniform(0.3, 4.0, size=(num_examples, 1))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    u = -(np.exp(log_p) * log_p).sum(-1) / np.log(4)
    tau = 1.5 * np.exp(kappa * (u - 0.5))
    z = log_p / tau[:, None]
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    return TeacherBank.from_logits(logits[None]), labels


def test_confidence_calibration_recovers_a_confidence_dependent_temperature():
    """A teacher over-confident only where it is unsure (true kappa = 3): the 90% interval of
    the learned slope covers 3 and excludes 0, and the held-out labels are better predicted
    than by one temperature per teacher; with permuted labels (a trust that ignores them) the
    slope's interval does not cover the truth while excluding 0."""
    hyper = TrustHyperprior(
        per_class=False, weight_rule="uniform", calibration="confidence", concentration=100.0
    )
    bank, labels = _confidence_miscalibrated(3, kappa=3.0)
    held_bank, held_labels = _confidence_miscalibrated(4, kappa=3.0)

    def fit(hyperprior, y):
        return fit_teacher_trust(
            jax.random.key(0), bank, y, hyperprior=hyperprior, num_warmup=200, num_draws=200
        )

    def recovers(trust) -> bool:
        low, high = trust.interval("temperature_slope", 0.9)
        return bool(low[0] <= 3.0 <= high[0] and low[0] > 0.0)

    trust = fit(hyper, labels)
    assert recovers(trust), trust.summary()
    assert trust.max_rhat < 1.1
    assert "temperature_slope" in trust.summary()[0]

    def held_out(fitted) -> float:
        prior = fitted.teacher_prior(held_bank)
        return float(np.mean(label_log_likelihood(prior, jnp.asarray(held_labels))))

    one_temperature = fit(TrustHyperprior(per_class=False, weight_rule="uniform"), labels)
    assert held_out(trust) > held_out(one_temperature) + 0.01
    permuted = np.random.default_rng(0).permutation(labels)
    assert not recovers(fit(hyper, permuted))


# ------------------------------------------------------------------ no calibration
def test_no_calibration_keeps_the_teachers_soft_labels_and_learns_the_rest():
    """``calibration="none"``: the label model has no temperature site, every temperature draw
    is 1, and the trusted prior's soft labels are the teachers' own probabilities (scaled by
    the learned ``lambda``), while ``lambda`` is still learned from the labels."""
    from numpyro import handlers

    bank = _bank(2, (2, 60, 3))
    labels = np.asarray(jnp.argmax(bank.log_probs[0], -1))
    hyper = TrustHyperprior(calibration="none")
    trace = handlers.trace(handlers.seed(teacher_trust_model, 0)).get_trace(
        bank.log_probs, jnp.asarray(labels), hyperprior=hyper
    )
    assert "trust.temperature" not in trace and "trust.concentration" in trace
    trust = fit_teacher_trust(
        jax.random.key(0), bank, labels, hyperprior=hyper, num_warmup=100, num_draws=100
    )
    np.testing.assert_array_equal(trust.draws["temperature"], 1.0)
    prior = trust.teacher_prior(bank)
    lam = np.asarray(prior.scaled_probs).sum(-1, keepdims=True)  # (N, M, 1): lambda per example
    soft = np.asarray(prior.scaled_probs) / lam
    np.testing.assert_allclose(soft, np.moveaxis(np.exp(bank.log_probs), 0, 1), rtol=1e-5)
    # teacher 0 predicts every label: learned lambda above the prior median, teacher 1 below
    assert np.median(trust.draws["concentration"][:, 0]) > hyper.concentration
    assert np.median(trust.draws["concentration"][:, 1]) < hyper.concentration
    # the summary does not present the fixed tau = 1 as a learned value with an interval
    assert not trust.temperature_learned
    assert all(
        row["temperature_90"] is None and row["temperature"] == 1.0 for row in trust.summary()
    )
    with pytest.raises(ValueError, match="calibration='none'"):
        trust.interval("temperature")


def test_values_whose_link_or_hyperprior_a_model_would_ignore_are_refused():
    """MTBKDModel(trust=TrustValues) uses the model's weight_rule and only the hyperprior's
    pooling: a learned link under a fixed rule (posterior.point() with the default 'paper'),
    or a hyperprior that says otherwise, would be dropped without a word."""
    bank = _bank(0, (2, 10, 3))
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    linked = TrustValues(jnp.ones(2), jnp.full((2, 1), 5.0), jnp.array([0.5, -0.5]), jnp.array(1.0))
    with pytest.raises(ValueError, match="weight_rule='learned'"):
        MTBKDModel(student, bank, trust=linked)  # the default rule is 'paper'
    MTBKDModel(student, bank, trust=linked, weight_rule="learned")
    MTBKDModel(student, bank, trust=TrustValues.fixed(2, 5.0))  # no link: any rule
    with pytest.raises(ValueError, match="trust_hyperprior.weight_rule"):
        MTBKDModel(student, bank, trust=linked, weight_rule="learned",
                   trust_hyperprior=TrustHyperprior(weight_rule="uniform"))  # fmt: skip
    warm = linked._replace(temperature=jnp.array([1.5, 1.0]))
    with pytest.raises(ValueError, match="calibration is 'none'"):
        MTBKDModel(student, bank, trust=warm, weight_rule="learned",
                   trust_hyperprior=TrustHyperprior(calibration="none"))  # fmt: skip


@pytest.mark.parametrize(
    ("site", "value", "match"),
    [
        ("temperature", -1.0, "> 0"),
        ("concentration", -2.0, ">= 0"),
        ("weight_bias", np.nan, "finite"),
    ],
)
def test_a_trust_posterior_with_impossible_draws_is_refused(site, value, match):
    """Draws a model would turn into a NaN prior or an inverted teacher (TrustValues with the
    same numbers are refused too)."""
    draws = {
        "temperature": np.ones((4, 2)),
        "concentration": np.full((4, 2, 1), 5.0),
        "weight_bias": np.zeros((4, 2)),
        "weight_slope": np.zeros(4),
    }
    TrustPosterior(draws, TrustHyperprior(), ("a", "b"))
    draws[site] = draws[site].copy()
    draws[site][1] = value
    with pytest.raises(ValueError, match=match):
        TrustPosterior(draws, TrustHyperprior(), ("a", "b"))


def test_label_functions_refuse_labels_outside_the_classes_and_per_class_must_be_a_bool():
    """-1 indexed the last class and a label >= C gave NaN; per_class='False' (from a config
    file) was truthy, so it meant per class."""
    bank = _bank(1, (2, 5, 3))
    prior = trusted_teacher_prior(
        bank.log_probs, consensus_class(bank.log_probs), TrustValues.fixed(2, 5.0)
    )
    good = np.array([0, 1, 2, 0, 1])
    assert np.isfinite(np.asarray(label_log_likelihood(prior, good))).all()
    for bad in (np.array([0, 1, 2, 0, -1]), np.array([0, 1, 2, 0, 3]), good[:4]):
        for function in (label_log_likelihood, teacher_label_log_likelihood):
            with pytest.raises(ValueError, match="labels"):
                function(prior, bad)
    traced = jax.jit(label_log_likelihood)(prior, jnp.asarray(good))  # tracers pass unchecked
    np.testing.assert_allclose(traced, label_log_likelihood(prior, good), rtol=1e-6)
    with pytest.raises(TypeError, match="per_class must be True or False"):
        TrustHyperprior(per_class="False")


def test_a_trust_posterior_built_by_hand_is_checked_against_its_teachers():
    """Draws for one teacher under three names were broadcast to all three (settings showed
    one temperature), two were a broadcasting TypeError later, missing link draws a bare
    KeyError in summary(), and draw counts that differ between sites were accepted."""
    from mtbkd_jax.trust import TrustPosterior

    names = ("a", "b", "c")
    good = {"temperature": np.full((10, 3), 0.5), "concentration": np.full((10, 3, 1), 20.0)}
    trust = TrustPosterior(good, TrustHyperprior(), names)  # no weight link: the fixed zeros
    assert [row["weight_bias"] for row in trust.summary()] == [0.0, 0.0, 0.0]
    assert float(trust.point().weight_slope) == 0.0
    cases = [
        ({"temperature": np.full((10, 1), 0.5)}, r"temperature must have shape \(10, 3\)"),
        (
            {"concentration": np.full((10, 2, 1), 20.0)},
            r"concentration must have shape \(10, 3, 1\)",
        ),
        ({"weight_bias": np.zeros((15, 3))}, r"weight_bias must have shape \(10, 3\)"),
        ({"weight_slope": np.zeros((10, 3))}, r"weight_slope must have shape \(10,\)"),
        ({"temperatures": np.ones((10, 3))}, "hold no site 'temperatures'"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            TrustPosterior({**good, **change}, TrustHyperprior(), names)


def test_a_trust_whose_chains_disagree_is_warned_and_recorded():
    """fit_teacher_trust gave max_rhat 2.84 on 3 warm-up steps without a word; a model built on
    it used it as it was. Now warned (above 1.1), and summary() records the learned slope."""
    from mtbkd_jax.trust import RHAT_WARNING, fit_teacher_trust

    bank = _bank(11, (2, 30, 3))
    labels = np.arange(30) % 3
    with pytest.warns(UserWarning, match=r"the trust's chains disagree \(largest split R-hat"):
        trust = fit_teacher_trust(jax.random.key(0), bank, labels, num_warmup=3, num_draws=4)
    assert trust.max_rhat > RHAT_WARNING
    assert {"weight_bias", "weight_slope"} <= set(trust.summary()[0])


def test_a_hyperprior_concentration_of_true_is_refused():
    with pytest.raises(TypeError, match="concentration must be a number, got True"):
        TrustHyperprior(concentration=True)  # was taken as lambda = 1
