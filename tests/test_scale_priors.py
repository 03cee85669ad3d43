"""The collapsed hierarchical Normal base prior (issue 12, item 2): a learned per-group scale.

Every claim is checked against an independent reference (NumPyro's and SciPy's multivariate
Student-t, quadrature over the variance, the exact marginal posterior of a linear-Gaussian
model, an independent optimiser), and each check is shown to reject a deliberately wrong
version.
"""

import contextlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx
from numpyro.infer.util import log_density
from scipy import integrate, optimize, special, stats

import mtbkd_jax as mk
from mtbkd_jax.infer import gradient_estimator
from mtbkd_jax.infer.fingerprint import model_description
from mtbkd_jax.infer.gradients import minibatch_plan
from mtbkd_jax.priors import check_prior_names
from mtbkd_jax.scale_priors import (
    CollapsedNormal,
    HierarchicalNormalPrior,
    ScalePosterior,
    chain_groups,
    hierarchical_normal_prior,
    posterior_scales,
)
from mtbkd_jax.students import LinenMLP

RTOL = 1e-5  # float32 evaluation against float64 references


def _wrong_log_density(value, a, b):
    """The collapsed density with n instead of n/2 (a plausible slip): must be rejected."""
    n, ss = value.size, float(np.sum(np.square(value)))
    return (special.gammaln(a + n) - special.gammaln(a) + a * np.log(b) - n * np.log(2 * np.pi)) - (
        a + n
    ) * np.log(b + ss / 2)


def _student_t_reference(value, a, b):
    """log of NumPyro's and SciPy's multivariate Student-t (df 2a, scale sqrt(b/a) I), which
    must agree with each other; float64 via SciPy."""
    flat = np.ravel(np.asarray(value, np.float64))
    n = flat.size
    scipy_value = stats.multivariate_t(np.zeros(n), (b / a) * np.eye(n), df=2 * a).logpdf(flat)
    numpyro_value = dist.MultivariateStudentT(
        2 * a, jnp.zeros(n), math.sqrt(b / a) * jnp.eye(n)
    ).log_prob(jnp.asarray(flat, jnp.float32))
    np.testing.assert_allclose(numpyro_value, scipy_value, rtol=RTOL)
    return float(scipy_value)


# ------------------------------------------------------------------ the collapsed density
@pytest.mark.parametrize("shape", [(), (3,), (4, 2), (2, 3, 2)])
@pytest.mark.parametrize(("a", "b"), [(2.0, 1.0), (0.7, 3.0), (5.0, 0.2)])
def test_log_density_is_the_multivariate_student_t(shape, a, b):
    rng = np.random.default_rng(len(shape))
    for scale in (0.1, 1.0, 4.0):
        value = scale * rng.normal(size=shape)
        expected = _student_t_reference(value, a, b)
        got = CollapsedNormal(a, b, shape).log_prob(jnp.asarray(value, jnp.float32))
        assert got.shape == ()
        np.testing.assert_allclose(got, expected, rtol=RTOL)
        assert not np.isclose(_wrong_log_density(value, a, b), expected, rtol=1e-3)


def test_log_density_matches_quadrature_over_the_variance():
    """``int N(w; 0, s I) InverseGamma(s; a, b) ds`` by quadrature (on log s), no algebra."""
    a, b = 2.0, 1.0
    for value in (np.array([0.3, -0.2, 0.5]), np.array([1.5, 2.0, -0.7, 0.1, 0.0])):

        def integrand(log_s, value=value):
            s = math.exp(log_s)
            normal = stats.norm(0.0, math.sqrt(s)).logpdf(value).sum()
            return math.exp(normal + stats.invgamma(a, scale=b).logpdf(s) + log_s)

        marginal, error = integrate.quad(integrand, -30, 30, epsabs=0, epsrel=1e-10, limit=200)
        expected = math.log(marginal)
        got = float(CollapsedNormal(a, b, value.shape).log_prob(jnp.asarray(value, jnp.float32)))
        assert abs(got - expected) <= RTOL * abs(expected) + 1e-6
        assert abs(_wrong_log_density(value, a, b) - expected) > 0.1


def test_batched_values_and_parameters_broadcast():
    d = CollapsedNormal(jnp.array([1.0, 2.0]), 1.5, (3,))
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    value = jnp.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])
    expected = [_student_t_reference(np.asarray(value[i]), a, 1.5) for i, a in enumerate((1, 2))]
    np.testing.assert_allclose(d.log_prob(value), expected, rtol=RTOL)
    assert d.log_prob(jnp.zeros((7, 2, 3))).shape == (7, 2)


def test_draws_follow_the_density():
    """``||w||^2 / n / (b / a) ~ F(n, 2a)`` for ``w = sigma z``, ``sigma^2 ~ IG(a, b)``."""
    a, b, shape = 2.0, 1.0, (4, 3)
    draws = np.asarray(CollapsedNormal(a, b, shape).sample(jax.random.key(0), (4000,)))
    assert draws.shape == (4000, *shape)
    statistic = np.sum(draws**2, axis=(1, 2)) / 12 / (b / a)
    assert stats.kstest(statistic, stats.f(12, 2 * a).cdf).pvalue > 1e-3
    # a sampler drawing sigma^2 from Gamma(a, b) instead of its inverse is rejected
    gamma = np.asarray(jax.random.gamma(jax.random.key(1), a, (4000,))) / b
    wrong = np.sum(np.asarray(jax.random.normal(jax.random.key(2), (4000, 12))) ** 2, 1) * gamma
    assert stats.kstest(wrong / 12 / (b / a), stats.f(12, 2 * a).cdf).pvalue < 1e-6


def test_the_defaults_claims():
    """The module docstring: E[sigma^2] = 1 (each weight's marginal variance is that of
    Normal(0, 1)), prior median of sigma 0.77, central 90% interval (0.46, 1.68)."""
    prior = hierarchical_normal_prior()
    assert (prior.concentration, prior.rate, prior.groups) == (2.0, 1.0, "parameter")
    variance_of_sigma2 = stats.invgamma(2.0, scale=1.0)
    assert variance_of_sigma2.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(prior("w", (3,)).variance, np.ones(3), rtol=RTOL)
    sigma = np.sqrt(variance_of_sigma2.ppf([0.05, 0.5, 0.95]))
    np.testing.assert_allclose(sigma, [0.46, 0.77, 1.68], atol=0.005)
    # Monte Carlo: the marginal variance of one weight (a t with 4 degrees of freedom has an
    # infinite fourth moment, so the sample variance converges slowly: 5% on 400 000 draws)
    draws = np.asarray(prior("w", ()).sample(jax.random.key(3), (400_000,)))
    assert np.var(draws) == pytest.approx(1.0, rel=0.05)
    assert np.isinf(CollapsedNormal(1.0, 1.0, ()).variance)


# ------------------------------------------------------------------ sigma's posterior
def _conditional_reference(value, a, b):
    """E[sigma | w] and the CDF of sigma | w on a grid, by quadrature of N(w; 0, sigma^2)
    times the inverse-gamma density of sigma^2 (no conjugacy used)."""
    flat = np.ravel(value)

    def log_joint(sigma):
        sigma = np.asarray(sigma, np.float64)[..., None]
        return (
            stats.norm(0.0, sigma).logpdf(flat).sum(-1)
            + stats.invgamma(a, scale=b).logpdf(sigma[..., 0] ** 2)
            + np.log(2 * sigma[..., 0])
        )

    bounded = optimize.minimize_scalar(lambda s: -log_joint(s), bounds=(1e-3, 50), method="bounded")
    density = lambda s: np.exp(log_joint(s) + bounded.fun)  # noqa: E731
    norm = integrate.quad(density, 0, np.inf, limit=200)[0]
    mean = integrate.quad(lambda s: s * density(s), 0, np.inf, limit=200)[0] / norm
    grid = np.linspace(1e-3, 5.0, 20001)
    cdf = integrate.cumulative_trapezoid(density(grid) / norm, grid, initial=0.0)
    return mean, grid, cdf


def test_the_conditional_scale_posterior_matches_quadrature():
    a, b = 2.0, 1.0
    value = np.array([[0.3, -0.2], [0.5, 0.05], [-0.4, 0.25]])
    mean, grid, cdf = _conditional_reference(value, a, b)
    draws = {"student.kernel": np.broadcast_to(value, (20000, 3, 2))}  # one w, many draws
    scale = posterior_scales(draws, hierarchical_normal_prior(a, b))["kernel"]
    assert isinstance(scale, ScalePosterior) and scale.size == 6
    assert scale.concentration == a + 3
    np.testing.assert_allclose(scale.conditional_means(), mean, rtol=1e-6)
    assert scale.mean() == pytest.approx(mean, rel=1e-6)
    sigma = scale.sample(jax.random.key(0))
    assert sigma.shape == (20000,)
    assert stats.kstest(sigma, lambda s: np.interp(s, grid, cdf)).pvalue > 1e-3
    # the wrong update (n instead of n/2) is rejected by the same reference
    wrong = ScalePosterior(a + 6, scale.rate, 6)
    assert abs(wrong.mean() - mean) > 0.05 * mean
    # the documented floor: E[sigma^2 | w] >= b / (a + n/2 - 1), reached at w = 0
    zero = posterior_scales({"student.kernel": np.zeros((1, 3, 2))}, hierarchical_normal_prior())
    assert float(zero["kernel"].rate[0]) / (zero["kernel"].concentration - 1) == b / (a + 3 - 1)


# ------------------------------------------------------------------ groups in a Student
def _joint_reference(weights, prior, name="student"):
    """The sum over groups of the Student-t density of the group's concatenated weights."""
    groups: dict[str, list[np.ndarray]] = {}
    for site, value in sorted(weights.items()):
        groups.setdefault(prior.group_of(site[len(name) + 1 :]), []).append(np.ravel(value))
    return sum(
        _student_t_reference(np.concatenate(parts), prior.concentration, prior.rate)
        for parts in groups.values()
    )


@pytest.mark.parametrize("groups", ["parameter", "layer", "network"])
@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_a_students_weights_get_the_joint_collapsed_density_of_each_group(groups, kind):
    prior = hierarchical_normal_prior(1.5, 0.8, groups=groups)
    module = mk.MLP(4, 3, hidden=(5,), rngs=nnx.Rngs(0)) if kind == "nnx" else LinenMLP(3, (5,))
    student = mk.Student(module, prior=prior)
    x = jnp.ones((2, 4))
    student.check_inputs(x)
    weights = student.init_weights(jax.random.key(1), x)
    assert len(weights) == 4 and all(w.ndim for w in weights.values())
    got, _ = log_density(student, (x,), {}, weights)
    expected = _joint_reference(weights, prior)
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    if groups != "parameter":  # the test tells groupings apart
        per_array = _joint_reference(weights, hierarchical_normal_prior(1.5, 0.8))
        assert abs(per_array - expected) > 0.1


def test_prior_draws_of_a_layer_group_follow_the_joint_prior():
    """Drawn through the chain, a layer's kernel and bias share one sigma: the layer's
    ``||w||^2 / n / (b / a)`` is F(n, 2a); with a scale per array it is not."""
    x = jnp.ones((1, 4))
    keys = jax.random.split(jax.random.key(0), 4000)

    def statistic(groups):
        student = mk.Student(
            mk.MLP(4, 3, hidden=(5,), rngs=nnx.Rngs(0)),
            prior=hierarchical_normal_prior(groups=groups),
        )
        draws = jax.vmap(lambda k: student.init_weights(k, x))(keys)
        layer = [draws[f"student.layers.0.{p}"].reshape(4000, -1) for p in ("kernel", "bias")]
        return np.sum(np.concatenate(layer, 1) ** 2, 1) / 25 / 0.5

    reference = stats.f(25, 4).cdf
    assert stats.kstest(statistic("layer"), reference).pvalue > 1e-3
    assert stats.kstest(statistic("parameter"), reference).pvalue < 1e-6


def test_chain_groups_is_a_no_op_for_other_priors_and_per_array_groups():
    for prior in (mk.normal_prior(1.0), hierarchical_normal_prior(), None):
        assert isinstance(chain_groups(prior), contextlib.nullcontext)
    assert not isinstance(
        chain_groups(hierarchical_normal_prior(groups="layer")), contextlib.nullcontext
    )


# ------------------------------------------------------------------ NUTS learns the scale
def _regression(num_features, num_examples, true_sigma, noise, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, num_features)).astype(np.float32)
    w = true_sigma * rng.normal(size=num_features)
    b = true_sigma * rng.normal() if bias else 0.0
    y = (x @ w + b + noise * rng.normal(size=num_examples)).astype(np.float32)
    return x, y


def _exact_sigma_posterior(x, y, noise, a, b, bias):
    """p(sigma | y) for y ~ N(X w, noise^2 I), w ~ N(0, sigma^2 I) (w holding the bias too,
    for a shared scale), sigma^2 ~ IG(a, b): y ~ N(0, sigma^2 X X^T + noise^2 I), evaluated
    with the SVD of X on a grid in sigma. Returns the grid, the density and its CDF."""
    design = np.column_stack([x, np.ones(len(x))]) if bias else np.asarray(x, np.float64)
    u, s, _ = np.linalg.svd(design, full_matrices=False)
    z2 = (u.T @ y) ** 2
    grid = np.linspace(1e-3, 3.0, 30001)
    var = grid[:, None] ** 2 * s[None, :] ** 2 + noise**2
    log_lik = -0.5 * np.sum(np.log(var) + z2[None, :] / var, axis=1)
    log_post = log_lik + stats.invgamma(a, scale=b).logpdf(grid**2) + np.log(2 * grid)
    pdf = np.exp(log_post - log_post.max())
    pdf /= integrate.trapezoid(pdf, grid)
    return grid, pdf, integrate.cumulative_trapezoid(pdf, grid, initial=0.0)


def _regression_model(student, noise):
    def model(inputs, labels=None, *, targets=None):
        mean = student(inputs)[:, 0]
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("t", dist.Normal(mean, noise), obs=targets)

    return model


@pytest.mark.parametrize(("groups", "bias"), [("parameter", False), ("layer", True)])
def test_nuts_learns_the_scale_of_a_linear_regression(groups, bias):
    """Weights simulated with sigma = 0.3, far below the prior median 0.77: NUTS's posterior
    of sigma (Rao-Blackwellised from the weight draws) matches the exact marginal posterior
    by quadrature, covers the truth and lies below the prior median."""
    a, b, noise, true_sigma = 2.0, 1.0, 0.5, 0.3
    x, y = _regression(60, 150, true_sigma, noise, bias, seed=3)
    prior = hierarchical_normal_prior(a, b, groups=groups)
    student = mk.Student(nnx.Linear(60, 1, use_bias=bias, rngs=nnx.Rngs(0)), prior=prior)
    posterior = mk.run_nuts(
        jax.random.key(0),
        _regression_model(student, noise),
        x,
        None,
        model_kwargs={"targets": y},
        num_warmup=400,
        num_draws=400,
        num_chains=1,
        progress_bar=False,
    )
    assert not posterior.sample_stats["diverging"].any()
    scales = posterior_scales(posterior, prior)
    assert list(scales) == (["kernel"] if not bias else [""])
    scale = scales["kernel" if not bias else ""]
    assert scale.size == 60 + bias and scale.rate.shape == (1, 400)
    grid, pdf, cdf = _exact_sigma_posterior(x, y, noise, a, b, bias)
    exact_mean = integrate.trapezoid(grid * pdf, grid)
    # the Rao-Blackwellised mean's Monte Carlo error is ~0.1% here (the conditional means
    # vary by ~2% over the draws); 1% rejects the n-for-n/2 update (~30% off) and a scale that
    # does not learn (the prior mean of sigma is 0.89)
    assert scale.mean() == pytest.approx(exact_mean, rel=0.01)
    wrong = ScalePosterior(a + scale.size, scale.rate, scale.size)
    assert wrong.mean() != pytest.approx(exact_mean, rel=0.1)
    sigma = scale.sample(jax.random.key(1)).ravel()  # one sigma per weight draw
    # quantiles of 400 draws: 3% (seen: within 2%)
    quantiles = np.quantile(sigma, [0.05, 0.5, 0.95])
    np.testing.assert_allclose(quantiles, np.interp([0.05, 0.5, 0.95], cdf, grid), rtol=0.03)
    low, high = np.quantile(sigma, [0.005, 0.995])
    assert low < true_sigma < high
    prior_median = math.sqrt(stats.invgamma(a, scale=b).median())
    assert high < prior_median


def test_map_is_the_mode_of_the_collapsed_posterior():
    """run_map's optimum equals an independent L-BFGS optimum of the collapsed log posterior
    in float64; the Normal(0, 1) prior's optimum is far from it."""
    a, b, noise = 2.0, 1.0, 1.0
    x, y = _regression(10, 20, 0.3, noise, False, seed=4)
    prior = hierarchical_normal_prior(a, b)
    student = mk.Student(nnx.Linear(10, 1, use_bias=False, rngs=nnx.Rngs(0)), prior=prior)
    mode = mk.run_map(
        jax.random.key(0),
        _regression_model(student, noise),
        x,
        None,
        model_kwargs={"targets": y},
        num_steps=4000,
        optimizer=optax.adam(optax.exponential_decay(2e-2, 1000, 0.1)),
        progress_bar=False,
    )
    found = np.asarray(mode.draws["student.kernel"][0, 0, :, 0], np.float64)

    def negative_log_posterior(w, collapsed=True):
        fit = 0.5 * np.sum((y - x.astype(np.float64) @ w) ** 2) / noise**2
        if collapsed:
            return fit + (a + w.size / 2) * np.log(b + 0.5 * w @ w)
        return fit + 0.5 * w @ w

    expected = optimize.minimize(negative_log_posterior, np.zeros(10), method="L-BFGS-B").x
    np.testing.assert_allclose(found, expected, atol=2e-3)
    ridge = optimize.minimize(negative_log_posterior, np.zeros(10), args=(False,)).x
    assert np.max(np.abs(ridge - expected)) > 0.05


# ------------------------------------------------------------------ the canonical model
@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 64, 3)))
    return x, y, bank


def _student(prior):
    return mk.Student(mk.MLP(4, 3, hidden=(5,), rngs=nnx.Rngs(0)), prior=prior)


def test_sgmcmc_counts_the_base_prior_once_per_minibatch(classification):
    """The minibatch log density is the base prior (once) plus N/|B| times the minibatch's
    log likelihood, whatever the minibatch."""
    x, y, _ = classification
    prior = hierarchical_normal_prior(groups="layer")
    model = mk.MTBKDModel(_student(prior), None)
    estimator = gradient_estimator(model, (jnp.asarray(x), jnp.asarray(y)), batch_size=16)
    weights = model.student.init_weights(jax.random.key(2), jnp.asarray(x))
    base = _joint_reference({k: np.asarray(v) for k, v in weights.items()}, prior)
    for start in (0, 16, 48):
        index = jnp.arange(start, start + 16)
        log_q = jax.nn.log_softmax(model.student.logits(weights, jnp.asarray(x)[index]))
        likelihood = float(jnp.take_along_axis(log_q, jnp.asarray(y)[index, None], 1).sum())
        got = float(estimator.logdensity(weights, {"data": index}))
        assert got == pytest.approx(base + 64 / 16 * likelihood, rel=RTOL)
        assert got != pytest.approx(64 / 16 * (base + likelihood), rel=1e-3)


def test_map_nuts_and_sgmcmc_run_on_the_canonical_model(classification):
    x, y, bank = classification
    prior = hierarchical_normal_prior(groups="layer")
    model = mk.MTBKDModel(_student(prior), bank)
    runs = {
        "map": mk.run_map(jax.random.key(0), model, x, y, num_steps=200, progress_bar=False),
        "nuts": mk.run_nuts(
            jax.random.key(1), model, x, y, num_warmup=50, num_draws=20, num_chains=1,
            progress_bar=False,
        ),
        "sgmcmc": mk.run_sgmcmc(
            jax.random.key(2), model, x, y, batch_size=16, num_epochs=3, step_size=1e-3,
            draws_per_epoch=2, progress_bar=False,
        ),
    }  # fmt: skip
    for method, posterior in runs.items():
        for value in posterior.draws.values():
            assert np.isfinite(value).all(), method
        scales = posterior_scales(posterior, prior)
        assert sorted(scales) == ["layers.0", "layers.1"], method
        assert scales["layers.0"].size == 4 * 5 + 5
        assert all(0 < s.mean() < np.inf for s in scales.values()), method
        assert np.isfinite(posterior.predict(x)).all(), method
        assert posterior.settings["base_prior"] == str(prior.description)
    assert "base prior hierarchical_normal (paper: flat)" in model.differs_from_paper()


# ------------------------------------------------------------------ identity and errors
def test_description_digest_and_fingerprint_change_with_the_hyperparameters(classification):
    x, y, bank = classification
    features = jnp.asarray(x)

    def identity(prior):
        model = mk.MTBKDModel(_student(prior), bank)
        plan = minibatch_plan(model, (features, jnp.asarray(y)), None, 16)
        description = model_description(model, plan, features)
        return prior.description, model.student.prior_digest(), json.dumps(description)

    base = identity(hierarchical_normal_prior(2.0, 1.0))
    assert json.loads(json.dumps(base[0])) == base[0]
    assert base == identity(hierarchical_normal_prior(2.0, 1.0))
    for other in (
        hierarchical_normal_prior(3.0, 1.0),
        hierarchical_normal_prior(2.0, 0.5),
        mk.normal_prior(1.0),
    ):
        changed = identity(other)
        assert all(c != d for c, d in zip(changed, base, strict=True)), other
    grouped = identity(hierarchical_normal_prior(2.0, 1.0, groups="layer"))
    assert grouped[0] != base[0] and grouped[2] != base[2]


def test_the_student_accepts_it_and_the_name_check_still_works():
    prior = hierarchical_normal_prior()
    student = _student(prior)
    assert student.prior is prior and student.with_prior(prior).prior is prior
    names = student.parameter_names()
    assert names == ["layers.0.bias", "layers.0.kernel", "layers.1.bias", "layers.1.kernel"]
    check_prior_names(prior, names)  # names no parameter: nothing to check
    with pytest.raises(ValueError, match=r"normal_prior\(scales=...\) names \['layers.9'\]"):
        check_prior_names(mk.normal_prior(1.0, scales={"layers.9": 0.5}), names)
    assert repr(prior) == (
        "hierarchical_normal_prior(concentration=2.0, rate=1.0, groups='parameter')"
    )
    assert isinstance(prior, HierarchicalNormalPrior)
    assert prior.group_of("layers.0.kernel") == "layers.0.kernel"
    layer = hierarchical_normal_prior(groups="layer")
    assert (layer.group_of("layers.0.kernel"), layer.group_of("kernel")) == ("layers.0", "")
    assert hierarchical_normal_prior(groups="network").group_of("head.bias") == "network"


def test_the_distribution_is_a_pytree():
    d = CollapsedNormal(2.0, 1.0, (3, 2), group="layers.0")
    leaves, tree = jax.tree.flatten(d)
    rebuilt = jax.tree.unflatten(tree, leaves)
    assert (rebuilt.event_shape, rebuilt.group) == ((3, 2), "layers.0")
    value = jnp.full((3, 2), 0.4)
    assert float(jax.jit(lambda d: d.log_prob(value))(d)) == pytest.approx(float(d.log_prob(value)))
    given = d.given(4, 2.0)
    assert (float(given.concentration), float(given.rate), given.group) == (4.0, 2.0, "layers.0")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"concentration": 0.0}, ValueError, "concentration must be a finite number > 0"),
        ({"concentration": "2"}, TypeError, "concentration must be a number"),
        ({"rate": -1.0}, ValueError, "rate must be a finite number > 0"),
        ({"rate": float("inf")}, ValueError, "rate must be a finite number > 0"),
        ({"groups": "layers"}, ValueError, "groups must be one of"),
        ({"groups": {"layers.0": "a"}}, TypeError, "groups must be one of"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        hierarchical_normal_prior(**kwargs)


def test_bad_posterior_scales_arguments_are_refused_by_name():
    prior = hierarchical_normal_prior()
    draws = {"student.kernel": np.zeros((2, 3))}
    with pytest.raises(TypeError, match="prior must be the hierarchical_normal_prior"):
        posterior_scales(draws, mk.normal_prior(1.0))
    with pytest.raises(TypeError, match="draws must be a Posterior or a dict"):
        posterior_scales([1, 2], prior)
    with pytest.raises(ValueError, match="draws has no site named 'teacher.'"):
        posterior_scales(draws, prior, name="teacher")
    with pytest.raises(ValueError, match="sample_ndim must be >= 0"):
        posterior_scales(draws, prior, sample_ndim=-1)
    with pytest.raises(ValueError, match=r"draws\['student.kernel'\] has shape \(2, 3\)"):
        posterior_scales(draws, prior, sample_ndim=3)
    point = posterior_scales(draws, prior, sample_ndim=0)["kernel"]  # one point, e.g. a MAP
    assert point.rate.shape == () and point.size == 6
