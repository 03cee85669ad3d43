"""The teacher-informed mixture prior against SciPy's Dirichlet (an independent reference)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import stats
from scipy.special import gammaln, log_softmax, logsumexp, softmax

from mtbkd_jax import (
    TeacherBank,
    TeacherPrior,
    flat_prior,
    normal_prior,
    teacher_prior_factor,
    teacher_weights,
)
from mtbkd_jax.priors import TeacherMixtureDirichlet


def _reference_log_mixture(q, teacher_probs, weights, concentration):
    """log sum_m w_m Dir(q; 1 + lambda p_m) with scipy.stats.dirichlet, per example (float64)."""
    num_teachers, num_examples, _ = teacher_probs.shape
    out = np.empty(num_examples)
    for i in range(num_examples):
        logs = [
            np.log(weights[m, i])
            + stats.dirichlet.logpdf(q[i], 1 + concentration * teacher_probs[m, i])
            for m in range(num_teachers)
        ]
        out[i] = logsumexp(logs)
    return out


def _random_problem(seed, num_teachers, num_examples=6, num_classes=4, scale=2.0):
    rng = np.random.default_rng(seed)
    teacher_probs = softmax(scale * rng.normal(size=(num_teachers, num_examples, num_classes)), -1)
    weights = rng.dirichlet(np.ones(num_teachers), size=num_examples).T
    q = rng.dirichlet(np.ones(num_classes) * 2, size=num_examples)
    return teacher_probs, weights, q


@pytest.mark.parametrize("num_teachers", [1, 2, 5])
@pytest.mark.parametrize("concentration", [0.5, 10.0, 80.0])
def test_log_prob_matches_scipy_dirichlet_mixture(num_teachers, concentration):
    teacher_probs, weights, q = _random_problem(num_teachers, num_teachers)
    d = TeacherMixtureDirichlet(
        jnp.asarray(teacher_probs, jnp.float32), jnp.asarray(weights, jnp.float32), concentration
    )
    expected = _reference_log_mixture(q, teacher_probs, weights, concentration)
    # float32 evaluation; lgamma of alpha up to ~80 loses ~1e-5 relative
    np.testing.assert_allclose(
        d.log_prob(jnp.asarray(q, jnp.float32)), expected, rtol=2e-4, atol=2e-3
    )
    from_logits = d.log_prob_from_logits(jnp.asarray(np.log(q) + 3.0, jnp.float32))
    np.testing.assert_allclose(from_logits, expected, rtol=2e-4, atol=2e-3)


def test_omitting_the_dirichlet_normaliser_is_detected():
    """A deliberately wrong density (no log B term) is far from the package's value."""
    teacher_probs, weights, q = _random_problem(7, 2)
    d = TeacherMixtureDirichlet(jnp.asarray(teacher_probs), jnp.asarray(weights), 10.0)
    wrong = logsumexp(
        np.log(weights) + 10.0 * np.einsum("mnc,nc->mn", teacher_probs, np.log(q)), axis=0
    )
    assert np.max(np.abs(wrong - np.asarray(d.log_prob(jnp.asarray(q))))) > 1.0


@pytest.mark.parametrize("logit_scale", [1e2, 1e4])
def test_extreme_logits_are_finite_and_match_log_space_reference(logit_scale):
    rng = np.random.default_rng(3)
    num_teachers, num_examples, num_classes = 3, 5, 4
    teacher_logits = logit_scale * rng.normal(size=(num_teachers, num_examples, num_classes))
    student_logits = logit_scale * rng.normal(size=(num_examples, num_classes))
    bank = TeacherBank.from_logits(teacher_logits)
    weights = np.full((num_teachers, num_examples), 1 / num_teachers)
    prior = TeacherPrior.build(bank, concentration=10.0, temperature=2.0, weight_rule=weights)
    got = prior.log_density(jnp.asarray(student_logits, jnp.float32))
    # independent float64 reference in log space
    log_q = log_softmax(student_logits / 2.0, -1)
    p = softmax(teacher_logits / 2.0, -1)
    alpha = 1 + 10.0 * p
    log_b = gammaln(alpha).sum(-1) - gammaln(alpha.sum(-1))
    comps = ((alpha - 1) * log_q[None]).sum(-1) - log_b
    expected = logsumexp(np.log(weights) + comps, axis=0)
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    grad = jax.grad(lambda z: prior.log_density(z).sum())(jnp.asarray(student_logits, jnp.float32))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_sample_moments_match_the_mixture_mean():
    teacher_probs, weights, _ = _random_problem(11, 3, num_examples=3, num_classes=3)
    d = TeacherMixtureDirichlet(jnp.asarray(teacher_probs), jnp.asarray(weights), 20.0)
    draws = np.asarray(d.sample(jax.random.key(0), (40000,)))
    assert draws.shape == (40000, 3, 3)
    np.testing.assert_allclose(draws.sum(-1), 1.0, atol=1e-5)
    alpha = 1 + 20.0 * teacher_probs
    expected = np.einsum("mn,mnc->nc", weights, alpha / alpha.sum(-1, keepdims=True))
    standard_error = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - expected) < 5 * standard_error + 1e-6)
    np.testing.assert_allclose(d.mean, expected, rtol=1e-5)


def test_single_teacher_density_peaks_at_the_teacher_soft_label():
    """The mode of Dir(1 + lambda p) is p: the package's density is highest there."""
    p = np.array([[[0.7, 0.2, 0.1]]])
    d = TeacherMixtureDirichlet(jnp.asarray(p), jnp.ones((1, 1)), 30.0)
    at_mode = float(d.log_prob(jnp.asarray(p[0]))[0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        other = rng.dirichlet(np.ones(3))[None]
        assert float(d.log_prob(jnp.asarray(other))[0]) <= at_mode + 1e-6


def test_distribution_is_a_pytree_and_accepts_zero_weights():
    p = jax.nn.softmax(jnp.arange(12.0).reshape(2, 2, 3))
    weights = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    d = TeacherMixtureDirichlet(p, weights, 5.0, validate_args=True)
    value = jnp.full((2, 3), 1 / 3)
    jitted = jax.jit(lambda dist_, v: dist_.log_prob(v))(d, value)
    np.testing.assert_allclose(jitted, d.log_prob(value), rtol=1e-6)
    with pytest.raises(ValueError, match="concentration"):
        TeacherMixtureDirichlet(p, weights, -1.0)


def _linear_model(prior, power, subsample_size=None):
    def model(x, y):
        w = numpyro.sample(
            "w", numpyro.distributions.Normal(0, 1).expand([x.shape[1], 3]).to_event(2)
        )
        with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            logits = x[idx] @ w
            numpyro.sample("y", numpyro.distributions.Categorical(logits=logits), obs=y[idx])
            teacher_prior_factor("teacher_prior", logits, prior.take(idx), prior_power=power)
        return idx

    return model


def test_factor_adds_beta_times_the_mixture_and_is_scaled_by_the_plate():
    rng = np.random.default_rng(5)
    num_examples = 12
    x = rng.normal(size=(num_examples, 2)).astype(np.float32)
    y = rng.integers(0, 3, num_examples)
    bank = TeacherBank.from_logits(rng.normal(size=(2, num_examples, 3)))
    prior = TeacherPrior.build(bank, concentration=5.0, temperature=1.5, weight_rule="paper")
    w = rng.normal(size=(2, 3)).astype(np.float32)
    weights = np.asarray(teacher_weights(bank, "paper"), np.float64)
    probs = softmax(np.asarray(bank.log_probs, np.float64) / 1.5, -1)

    def reference(index):
        logits = x[index].astype(np.float64) @ w.astype(np.float64)
        loglik = log_softmax(logits, -1)[np.arange(len(index)), y[index]]
        q = softmax(logits / 1.5, -1)
        mix = _reference_log_mixture(q, probs[:, index], weights[:, index], 5.0)
        return loglik, mix

    # full batch: log density = base prior + sum(loglik) + beta * sum(log mixture)
    model = _linear_model(prior, 0.3)
    got, _ = log_density(model, (x, y), {}, {"w": w})
    loglik, mix = reference(np.arange(num_examples))
    base = stats.norm.logpdf(w).sum()
    np.testing.assert_allclose(got, base + loglik.sum() + 0.3 * mix.sum(), rtol=1e-4)
    # subsampled: likelihood and prior both scaled by N / |B|, base prior counted once
    model = _linear_model(prior, 0.3, subsample_size=4)
    seeded = handlers.seed(model, jax.random.key(2))
    got, trace = log_density(seeded, (x, y), {}, {"w": w})
    index = np.asarray(trace["data"]["value"])
    loglik, mix = reference(index)
    expected = base + (num_examples / 4) * (loglik.sum() + 0.3 * mix.sum())
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_base_priors():
    prior = normal_prior(1.0, scales={"layers.0": 0.5, "layers.0.bias": 0.1})
    assert prior("layers.0.kernel", (2, 2)).scale == 0.5
    assert prior("layers.0.bias", (2,)).scale == 0.1
    assert prior("layers.1.kernel", (2, 2)).scale == 1.0
    assert prior("layers.00.kernel", (2, 2)).scale == 1.0  # prefix match is by path segment
    flat = flat_prior()("any", (3,))
    assert float(flat.log_prob(jnp.asarray(123.0))) == 0.0
    with pytest.raises(ValueError, match="scale"):
        normal_prior(0.0)
    with pytest.raises(ValueError, match="scales"):
        normal_prior(1.0, scales={"a": -1.0})


def test_prior_build_validates_hyperparameters():
    bank = TeacherBank.from_logits(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="concentration"):
        TeacherPrior.build(bank, concentration=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        TeacherPrior.build(bank, concentration=1.0, temperature=0.0)
    prior = TeacherPrior.build(bank, concentration=1.0)
    with pytest.raises(ValueError, match="student_logits"):
        teacher_prior_factor("t", jnp.zeros((4, 2)), prior)
    with pytest.raises(ValueError, match="prior_power"):
        teacher_prior_factor("t", jnp.zeros((3, 2)), prior, prior_power=-1.0)
    with pytest.raises(TypeError, match="prior"):
        teacher_prior_factor("t", jnp.zeros((3, 2)), "not a prior")
    assert float(prior.temperature) == 1.0


# ------------------------------------------------------ audit 22: findings 6 (take) and 7 (weights)
def test_take_refuses_concrete_indices_out_of_range():
    """``TeacherPrior.take([0, 7])`` on a 5-example prior used to fill row 7 with NaN (a NaN
    log density); concrete indices are now checked as ``TeacherBank.take`` checks them."""
    rng = np.random.default_rng(0)
    prior = TeacherPrior.build(
        TeacherBank.from_logits(rng.normal(size=(2, 5, 3))), concentration=10.0
    )
    with pytest.raises(
        ValueError,
        match=r"indices must lie in 0\.\.4 \(the teacher prior has 5 examples\), got 0\.\.7",
    ):
        prior.take(np.array([0, 7]))
    with pytest.raises(ValueError, match=r"indices must lie in 0\.\.4 .* got -1\.\.2"):
        prior.take(jnp.array([-1, 2]))
    with pytest.raises(TypeError, match=r"indices must hold integers, got dtype float64"):
        prior.take(np.array([0.0, 1.0]))
    # in range: eager and traced (inside jit, not checked) agree
    index = np.array([4, 0])
    eager = prior.take(index).log_density(jnp.zeros((2, 3)))
    traced = jax.jit(lambda i: prior.take(i).log_density(jnp.zeros((2, 3))))(jnp.asarray(index))
    assert np.isfinite(np.asarray(eager)).all()
    np.testing.assert_allclose(traced, eager, rtol=1e-6)


def test_run_map_with_a_prior_built_for_fewer_examples_names_the_indices():
    """The README's own-model recipe with the prior built on 15 examples and data of 20:
    ``run_map`` used to report NumPyro's bare "Cannot find valid initial parameters"."""
    from flax import nnx

    import mtbkd_jax as mk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    prior = TeacherPrior.build(
        TeacherBank.from_logits(rng.normal(size=(2, 15, 3))), concentration=10.0
    )
    student = mk.Student(mk.MLP(3, 3, hidden=(2,), rngs=nnx.Rngs(0)))

    def my_model(x, y=None):
        network = student.network(x.shape[1:])
        with numpyro.plate("data", x.shape[0]) as idx:
            logits = network(x[idx])
            numpyro.sample("y", numpyro.distributions.Categorical(logits=logits), obs=y)
            teacher_prior_factor("teacher_prior", logits, prior.take(idx), prior_power=0.1)

    with pytest.raises(
        ValueError,
        match=r"indices must lie in 0\.\.14 \(the teacher prior has 15 examples\), got 0\.\.19",
    ):
        mk.run_map(
            jax.random.key(0),
            my_model,
            x,
            y,
            num_steps=2,
            logits_fn=student.logits,
            progress_bar=False,
        )


def test_mixture_refuses_weights_whose_columns_do_not_sum_to_one():
    """Weights of ones (columns summing to 2) gave a ``mean`` summing to 2 and a ``log_prob``
    off by ``log 2``; they are refused, and weights within 1e-3 of the simplex normalised."""
    p = jax.nn.softmax(jnp.arange(12.0).reshape(2, 2, 3))
    q = jnp.full((2, 3), 1 / 3)
    with pytest.raises(
        ValueError,
        match=r"weights must have columns .* summing to 1 \(within 1e-3\), got a sum of 2 at "
        r"index \(0,\)",
    ):
        TeacherMixtureDirichlet(p, jnp.ones((2, 2)), 10.0)
    with pytest.raises(
        ValueError, match=r"weights must have columns .* got a sum of 0 at index \(1,\)"
    ):
        TeacherMixtureDirichlet(p, jnp.array([[1.0, 0.0], [0.0, 0.0]]), 10.0)
    half = TeacherMixtureDirichlet(p, jnp.full((2, 2), 0.5), 10.0)
    near = TeacherMixtureDirichlet(p, jnp.full((2, 2), 0.5004), 10.0)  # within 1e-3: normalised
    np.testing.assert_allclose(near.mean.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(near.log_prob(q), half.log_prob(q), rtol=1e-6)
    # traced weights are not checked, but normalised: the distribution agrees with itself
    traced = jax.jit(lambda w: TeacherMixtureDirichlet(p, w, 10.0).log_prob(q))(jnp.ones((2, 2)))
    np.testing.assert_allclose(traced, half.log_prob(q), rtol=1e-6)


@pytest.mark.parametrize("temperature", [1e-34, 1e-37])
def test_a_tempered_softmax_that_underflows_gives_the_finite_density_of_one_hot_teachers(
    temperature,
):
    """At temperatures the check accepts (down to the smallest normal float32), the student's
    ``(x - max x) / T`` overflows to ``-inf`` and a one-hot teacher's zeros made ``0 * -inf``
    = NaN in the density and its gradient (a review; 1e-35 and below). Reference: float64 by
    hand, two one-hot teachers at uniform weights, the student agreeing with teacher 0, so
    the density is ``log 0.5 - log B(1 + lambda e_0)``."""
    bank = TeacherBank.from_probs(np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]]))
    prior = TeacherPrior.build(
        bank, concentration=10.0, temperature=temperature, weight_rule="uniform"
    )
    logits = jnp.asarray([[1e4, -1e4, -1e4]], jnp.float32)
    expected = np.log(0.5) - (gammaln(11.0) + 2 * gammaln(1.0) - gammaln(13.0))
    np.testing.assert_allclose(prior.log_density(logits), [expected], rtol=1e-6)
    gradient = jax.grad(lambda z: prior.log_density(z).sum())(logits)
    assert np.isfinite(np.asarray(gradient)).all()


def test_a_concentration_where_float32_loses_the_density_is_warned_or_refused():
    """lambda = 1e37 gave a NaN density (log-gammas overflowing) and 1e6-1e7 a density off by
    1-23 nats against float64, both silently (a review). Reference for the refusal's reason:
    scipy's float64 log-gammas, against which the float32 normaliser at 1e7 is off by more than
    a nat. Above 1e3 a warning (the gradient 1.4% off there, 27% at 1e4); at 1e3 none."""
    from mtbkd_jax.priors import log_dirichlet_normalizer

    p = np.array([0.3, 0.7])
    exact = gammaln(1 + 1e7 * p).sum() - gammaln(2 + 1e7)
    assert abs(float(log_dirichlet_normalizer(jnp.asarray(1 + 1e7 * p, jnp.float32))) - exact) > 1
    bank = TeacherBank.from_probs(np.array([[[0.3, 0.7]], [[0.62, 0.38]]]))
    for value in (2e6, 1e37):
        with pytest.raises(ValueError, match=r"concentration must be at most 1e\+06"):
            TeacherPrior.build(bank, concentration=value)
    with pytest.warns(UserWarning, match=r"concentration=5000 is above 1000"):
        TeacherPrior.build(bank, concentration=5e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TeacherPrior.build(bank, concentration=1e3)
