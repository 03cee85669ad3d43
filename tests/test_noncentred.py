"""The learned-scale prior non-centred (mtbkd_jax.noncentred): the same prior and posterior of
the weights in other coordinates, starting points that map to the same weights, and models the
samplers and predictions take unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro import handlers
from numpyro.infer import MCMC, NUTS
from scipy import stats

import mtbkd_jax as mk
from mtbkd_jax.noncentred import (
    NonCentredScale,
    centred_posterior,
    centred_weights,
    noncentred,
    noncentred_config,
    noncentred_point,
)
from mtbkd_jax.scale_priors import CollapsedNormal, hierarchical_normal_prior


def _prior_draws(student, num, rate_factor=1.0):
    """``num`` prior draws of the weights of ``student``'s non-centred model (rate times
    ``rate_factor``: 2 is the deliberately wrong version)."""

    class Wrong(NonCentredScale):
        def __call__(self, name, fn, obs):
            fn = CollapsedNormal(fn.concentration, rate_factor * fn.rate, fn.event_shape)
            return super().__call__(name, fn, obs)

    def config(site):
        return Wrong() if noncentred_config(site) is not None else None

    model = mk.MTBKDModel(student, None)
    x = jnp.zeros((2, 3))

    def weights(key):
        seeded = handlers.seed(handlers.reparam(model, config=config), key)
        trace = handlers.trace(seeded).get_trace(x, jnp.zeros(2, jnp.int32))
        return {k: s["value"] for k, s in trace.items() if s["type"] == "deterministic"}

    return jax.vmap(weights)(jax.random.split(jax.random.key(0), num))


@pytest.mark.parametrize("groups", ["parameter", "network"])
def test_the_prior_of_the_weights_is_the_collapsed_one(groups):
    """Under the collapsed prior ``||w||^2 a / (n b)`` of a group of ``n`` weights is
    ``F(n, 2a)``-distributed (a multivariate Student-t's squared radius): the non-centred
    weights pass a Kolmogorov-Smirnov test against SciPy's F (4,000 draws, p > 0.001; each
    array alone with ``groups="parameter"``, the whole network, built by the chained
    conditionals, with ``"network"``). A hyperprior with twice the rate fails it."""
    student = mk.Student(
        mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)),
        prior=hierarchical_normal_prior(3.0, 2.0, groups=groups),
    )
    a, b = 3.0, 2.0

    def pvalues(draws):
        arrays = list(draws.values())
        if groups == "network":
            arrays = [jnp.concatenate([v.reshape(v.shape[0], -1) for v in arrays], axis=1)]
        out = []
        for v in arrays:
            flat = np.asarray(v, np.float64).reshape(v.shape[0], -1)
            n = flat.shape[1]
            radius = (flat**2).sum(1) * a / (n * b)
            out.append(stats.kstest(radius, stats.f(n, 2 * a).cdf).pvalue)
        return out

    draws = _prior_draws(student, 4000)
    assert sorted(k.removeprefix("student.") for k in draws) == sorted(student.parameter_names())
    assert min(pvalues(draws)) > 1e-3
    assert max(pvalues(_prior_draws(student, 4000, rate_factor=2.0))) < 1e-6


def _regression():
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = x @ np.array([2.0, -1.0, 0.0, 0.5], np.float32) + np.random.default_rng(1).normal(
        size=30
    ).astype(np.float32)

    def model():
        w = numpyro.sample("w", CollapsedNormal(2.0, 1.0, (4,)))
        numpyro.sample("y", dist.Normal(jnp.asarray(x) @ w, 1.0), obs=jnp.asarray(y))

    return model


def _nuts(model, seed):
    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(seed))
    return np.asarray(mcmc.get_samples()["w"])


def test_nuts_gives_the_same_posterior_of_the_weights_in_both_coordinates():
    """A Bayesian linear regression with the collapsed prior, by NUTS centred and non-centred:
    posterior means and standard deviations of the weights agree within 0.06 (5 Monte Carlo
    standard errors of 4,000 draws at the measured ESS; measured differences below 0.02)."""
    model = _regression()
    centred = _nuts(model, 0)
    mcmc = MCMC(NUTS(handlers.reparam(model, config=noncentred_config)), num_warmup=500,
                num_samples=4000, progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.key(1))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    assert set(samples) == {"w", "w_scale2", "w_unit"}  # w recorded as deterministic
    np.testing.assert_allclose(centred_weights(samples)["w"], samples["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(samples["w"].mean(0), centred.mean(0), atol=0.06)
    np.testing.assert_allclose(samples["w"].std(0), centred.std(0), atol=0.06)


def _canonical(groups="layer"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    logits = np.stack([np.stack([-x[:, 0], x[:, 0]], -1), np.stack([x[:, 1], -x[:, 1]], -1)])
    bank = mk.TeacherBank.from_logits(logits * 2, names=("a", "b"))
    student = mk.Student(
        mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)), prior=hierarchical_normal_prior(groups=groups)
    )
    return mk.MTBKDModel(student, bank, concentration=5.0, prior_power=0.3), x, y


def test_a_point_maps_to_the_same_weights_with_the_conditional_mode_of_each_scale():
    """``noncentred_point`` keeps the weights (``centred_weights`` gives them back) and sets
    each array's ``sigma^2`` to the mode of its conditional posterior, ``(b + ||w||^2/2) /
    (a + n/2 + 1)``, with ``(a, b)`` updated by the arrays before it in its group (computed
    here by hand for ``groups="layer"``: the bias is sampled first, then the kernel)."""
    model, x, y = _canonical("layer")
    point = {k: v[0, 0] for k, v in mk.run_map(jax.random.key(0), model, x, y, num_steps=50,
                                                 progress_bar=False).draws.items()}  # fmt: skip
    moved = noncentred_point(model, point, x, y)
    back = centred_weights(moved)
    assert sorted(back) == sorted(point)
    for name in point:
        np.testing.assert_allclose(back[name], point[name], rtol=1e-5, atol=1e-6)
    order = [n for n in handlers.trace(handlers.seed(model, 0)).get_trace(x, y) if n in point]
    for layer in ("student.layers.0", "student.layers.1"):
        a, b = 2.0, 1.0
        for name in [n for n in order if n.startswith(layer + ".")]:
            w = np.asarray(point[name], np.float64)
            expected = (b + 0.5 * (w**2).sum()) / (a + 0.5 * w.size + 1)
            np.testing.assert_allclose(moved[name + "_scale2"], expected, rtol=1e-5)
            a, b = a + 0.5 * w.size, b + 0.5 * (w**2).sum()
    # the same function at the start: the wrapped model's logits read either coordinates
    wrapped = noncentred(model)
    np.testing.assert_allclose(
        wrapped.logits(moved, x), model.logits(point, x), rtol=1e-5, atol=1e-5
    )


def test_the_samplers_take_the_wrapped_model_and_predict_with_its_weights():
    """SGLD and NC-SGLD run on ``noncentred(model)`` from a MAP's point; the draws hold the
    scales and units, the posterior predicts with the weights they multiply to (checked
    against the inner model's logits), and the run's settings say the coordinates (so a
    checkpoint of the centred model does not resume it)."""
    model, x, y = _canonical("parameter")
    mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=50, progress_bar=False)
    start = noncentred_point(model, mode.point(), x, y)
    wrapped = noncentred(model)
    assert noncentred(wrapped) is wrapped
    for sampler in ("sgld", "ncsgld"):
        posterior = mk.run_sgmcmc(jax.random.key(1), wrapped, x, y, sampler=sampler,
                                  batch_size=8, num_epochs=4, draws_per_epoch=2, step_size=1e-3,
                                  num_chains=2,
                                  init_params=start, progress_bar=False)  # fmt: skip
        assert posterior.settings["base_prior_coordinates"] == "non-centred"
        assert "student.layers.1.kernel_unit" in posterior.draws
        weights = centred_weights({k: v[1, -1] for k, v in posterior.draws.items()})
        expected = jax.nn.softmax(model.logits(weights, x), -1)
        np.testing.assert_allclose(
            np.asarray(posterior.predict(x))[-1], np.asarray(expected), rtol=1e-4, atol=1e-5
        )
        assert np.all(posterior.draws["student.layers.1.kernel_scale2"] > 0)
        # as a posterior of the model itself: the weights, the same predictions
        centred = centred_posterior(posterior)
        assert sorted(centred.draws) == sorted(mode.draws) and centred.model is model
        assert centred.draws["student.layers.1.kernel"].shape[:2] == (2, 8)
        np.testing.assert_allclose(
            np.asarray(centred.predict(x)), np.asarray(posterior.predict(x)), rtol=1e-6
        )
        assert centred_posterior(mode) is mode


def test_bad_arguments_are_refused_with_their_names():
    with pytest.raises(TypeError, match="NonCentredScale applies to CollapsedNormal sites"):
        NonCentredScale()("w", dist.Normal(0.0, 1.0), None)
    with pytest.raises(ValueError, match="cannot reparameterize the observed site 'w'"):
        NonCentredScale()("w", CollapsedNormal(2.0, 1.0, (2,)), jnp.zeros(2))
    with pytest.raises(TypeError, match="model must be a NumPyro model"):
        noncentred(3)
    model, x, y = _canonical()
    with pytest.raises(ValueError, match="point has no value for the learned-scale site"):
        noncentred_point(model, {}, x, y)


def test_a_model_of_your_own_keeps_its_own_attributes_through_the_wrapper():
    """The wrapper reads the model's attributes through; a model without ``logits`` gives none
    (so the samplers ask for ``logits_fn``), and the settings say the coordinates."""

    def model(x, y=None):
        numpyro.sample("w", CollapsedNormal(2.0, 1.0, (2,)))

    model.flavour = "plain"
    wrapped = noncentred(model)
    assert getattr(wrapped, "logits", None) is None
    assert wrapped.flavour == "plain"
    assert wrapped.settings() == {"base_prior_coordinates": "non-centred"}
    trace = handlers.trace(handlers.seed(wrapped, 0)).get_trace(jnp.zeros(3))
    assert [n for n, s in trace.items() if s["type"] == "sample"] == ["w_scale2", "w_unit"]


def test_site_names_hold_for_linen_students_and_models_inside_scopes():
    """The new sites are named after the array's full name whatever renames it: a linen
    student (whose names NumPyro's flax lifting rewrites) and a model wrapped in an outer
    scope; there the group chain still conditions each array on the ones before it."""
    from flax import linen

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(2)(linen.tanh(linen.Dense(4)(x)))

    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
    for groups in ("parameter", "layer"):
        model = mk.MTBKDModel(mk.Student(Net(), prior=hierarchical_normal_prior(groups=groups)))
        wrapped = noncentred(model)
        trace = handlers.trace(handlers.seed(wrapped, 0)).get_trace(x, y)
        latent = sorted(
            n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
        )
        assert latent == sorted(
            f"student.Dense_{i}.{p}{suffix}"
            for i in (0, 1) for p in ("bias", "kernel") for suffix in ("_scale2", "_unit")
        )  # fmt: skip
        point = {k: np.full(v.shape, 0.5, np.float32) for k, v in
                 mk.run_map(jax.random.key(0), model, x, y, num_steps=2,
                            progress_bar=False).point().items()}  # fmt: skip
        moved = noncentred_point(model, point, x, y)
        assert sorted(moved) == latent

    # an outer scope: the same names under its prefix, and the chained hyperpriors
    def outer(groups, wrap):
        model = mk.MTBKDModel(
            mk.Student(mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)),
                       prior=hierarchical_normal_prior(groups=groups))
        )  # fmt: skip
        scoped = handlers.scope(wrap(model), prefix="outer")
        return handlers.trace(handlers.seed(scoped, 0)).get_trace(x, y)

    trace = outer("parameter", noncentred)
    assert "outer/student.layers.1.kernel_unit" in trace
    assert trace["outer/student.layers.1.kernel"]["type"] == "deterministic"
    for wrap in (lambda m: m, noncentred):
        trace = outer("network", wrap)
        fns = [s["fn"] for s in trace.values() if isinstance(s.get("fn"), CollapsedNormal)]
        if not fns:  # non-centred: the hyperpriors sit on the scale sites
            fns = [s["fn"] for n, s in trace.items() if n.endswith("_scale2")]
        # each array's a: 2, then 2 + n/2 of the arrays before it (4, 12, 2, 8 weights)
        assert [float(f.concentration) for f in fns] == [2.0, 4.0, 10.0, 11.0]


def test_a_batched_collapsed_normal_gets_a_scale_per_row():
    """A CollapsedNormal with a batch shape: each row its own scale and units, so the rows of
    a draw are not proportional, and each row's radius is F(n, 2a) (KS, p > 0.001)."""

    def model():
        numpyro.sample("w", CollapsedNormal(jnp.full(3, 2.0), 1.0, (5,)))

    def draw(key):
        trace = handlers.trace(handlers.seed(handlers.reparam(model, noncentred_config), key))
        return trace.get_trace()["w"]["value"]

    w = np.asarray(jax.vmap(draw)(jax.random.split(jax.random.key(0), 4000)), np.float64)
    assert w.shape == (4000, 3, 5)
    ratios = w[:, 1] / w[:, 0]
    assert np.ptp(ratios, axis=1).min() > 1e-3  # not one z shared by the rows
    for row in range(3):
        radius = (w[:, row] ** 2).sum(1) * 2.0 / 5
        assert stats.kstest(radius, stats.f(5, 4.0).cdf).pvalue > 1e-3


def test_scales_of_non_centred_draws_are_refused_until_centred():
    from mtbkd_jax.scale_priors import posterior_scales

    draws = {"student.w_scale2": np.ones(3), "student.w_unit": np.ones((3, 2))}
    with pytest.raises(ValueError, match="draws hold non-centred sites"):
        posterior_scales(draws, hierarchical_normal_prior())
    scales = posterior_scales(centred_weights(draws), hierarchical_normal_prior())
    assert scales["w"].size == 2
