"""Models SG-MCMC cannot sample are refused, by run_sgmcmc and by the SGMCMC kernel alike.

A latent site inside the subsampled plate (one latent per example) used to be sampled as a
vector of the minibatch's size, paired with whichever examples each step's minibatch held: on
a Poisson model with per-example log rates, the global mean came out 3.6 posterior standard
deviations from NUTS's, with no message. The first test shows that a NumPyro model of this
kind is no corner case (NUTS samples it on the full plate); the others pin the refusals.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import mtbkd_jax as mk
from mtbkd_jax.infer import SGMCMC

X = np.random.default_rng(0).normal(size=(20, 1)).astype(np.float32)


def local_latent(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("data", x.shape[0], subsample_size=5) as i:
        z = numpyro.sample("z", dist.Normal(mu, 1.0))
        numpyro.sample("obs", dist.Normal(z, 1.0), obs=x[i, 0])


def no_latent(x, y=None):
    with numpyro.plate("data", x.shape[0], subsample_size=5) as i:
        numpyro.sample("obs", dist.Normal(0.0, 1.0), obs=x[i, 0])


def discrete_latent(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    k = numpyro.sample("k", dist.Bernoulli(0.5))
    with numpyro.plate("data", x.shape[0], subsample_size=5) as i:
        numpyro.sample("obs", dist.Normal(mu + k, 1.0), obs=x[i, 0])


def latent_in_a_full_plate(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("groups", 3):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=5) as i:
        numpyro.sample("obs", dist.Normal(mu + a.sum(), 1.0), obs=x[i, 0])


def _run(model):
    return mk.run_sgmcmc(
        jax.random.key(0), model, X, num_epochs=1, draws_per_epoch=1, progress_bar=False
    )


def _mcmc(model, **kernel):
    mcmc = MCMC(SGMCMC(model, **kernel), num_warmup=1, num_samples=2, progress_bar=False)
    mcmc.run(jax.random.key(0), jnp.asarray(X))
    return mcmc


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (local_latent, "latent site 'z' lies inside the subsampled plate 'data'"),
        (no_latent, "no latent sample site"),
        (discrete_latent, r"continuous latent sites; \['k'\]"),
    ],
    ids=["local-latent", "no-latent", "discrete"],
)
@pytest.mark.parametrize("front_end", [_run, _mcmc], ids=["run_sgmcmc", "SGMCMC"])
def test_models_sgmcmc_cannot_sample_are_refused(front_end, model, message):
    with pytest.raises(ValueError, match=message):
        front_end(model)


def test_a_latent_in_a_plate_that_does_not_subsample_is_sampled():
    posterior = _run(latent_in_a_full_plate)
    assert np.asarray(posterior.draws["a"]).shape[-1] == 3
    assert _mcmc(latent_in_a_full_plate).get_samples()["a"].shape == (2, 3)


def _gauss(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=5) as i:
        numpyro.sample("obs", dist.Normal(mu, s), obs=x[i, 0])


@pytest.mark.parametrize(
    ("schedule", "message"),
    [(lambda i: jnp.nan, "finite"), (lambda i: -1.0, ">= 0")],
    ids=["nan", "negative"],
)
def test_the_kernel_refuses_a_bad_step_size_schedule(schedule, message):
    """NaN draws came back from a NaN or negative schedule, where run_sgmcmc refused it."""
    with pytest.raises(ValueError, match=message):
        _mcmc(_gauss, step_size=schedule)


@pytest.mark.parametrize(
    ("init_params", "error", "message"),
    [
        ({"muu": 0.0, "s": 0.0}, ValueError, "sites the model does not have"),
        ({"mu": 0.0}, ValueError, r"no value for: \['s'\]"),
        ({"mu": jnp.zeros(3), "s": 0.0}, ValueError, "shape"),
        ({"mu": jnp.nan, "s": 0.0}, ValueError, "finite"),
    ],
    ids=["misspelt", "missing", "shape", "nan"],
)
def test_the_kernel_checks_init_params(init_params, error, message):
    """A bare AssertionError from inside NumPyro before."""
    mcmc = MCMC(SGMCMC(_gauss), num_warmup=1, num_samples=2, progress_bar=False)
    with pytest.raises(error, match=message):
        mcmc.run(jax.random.key(0), jnp.asarray(X), init_params=init_params)


def test_the_kernel_takes_init_params_per_chain_when_vectorized():
    mcmc = MCMC(
        SGMCMC(_gauss, step_size=1e-8), num_warmup=0, num_samples=1, num_chains=2,
        chain_method="vectorized", progress_bar=False,
    )  # fmt: skip
    start = {"mu": jnp.array([1.0, -1.0]), "s": jnp.array([0.0, 0.5])}  # unconstrained
    mcmc.run(jax.random.key(0), jnp.asarray(X), init_params=start)
    np.testing.assert_allclose(mcmc.get_samples()["mu"], [1.0, -1.0], atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        mcmc.run(
            jax.random.key(0),
            jnp.asarray(X),
            init_params={"mu": jnp.zeros((2, 3)), "s": start["s"]},
        )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"cycle_length": 0.5}, TypeError, "cycle_length must be an integer"),
        ({"cycle_length": 2.7}, TypeError, "cycle_length must be an integer"),
        ({"exploration_fraction": 1.5}, ValueError, r"exploration_fraction must lie in \[0, 1\)"),
    ],
)
def test_the_kernel_checks_its_options_when_built(options, error, message):
    with pytest.raises(error, match=message):
        SGMCMC(_gauss, sampler="cyclical_sgld", **options)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda g: mk.infer.sgld(g, temperature=-1.0), "temperature"),
        (lambda g: mk.infer.sghmc(g, friction=-1.0), "friction"),
        (lambda g: mk.infer.sghmc(g, friction=0.0), "friction"),
        (lambda g: mk.infer.sghmc(g, temperature=-1.0), "temperature"),
        (lambda g: mk.infer.sgnht(g, noise=-1.0), "noise"),
        (lambda g: mk.infer.psgld(g, temperature=-1.0), "temperature"),
        (lambda g: mk.infer.psgld(g, decay="a"), "decay"),
        (lambda g: mk.infer.cyclical_sgld(g, 10, temperature=-1.0), "temperature"),
        (lambda g: mk.infer.cyclical_sgld(g, 2.5), "cycle_length"),
    ],
)
def test_the_public_kernels_refuse_settings_that_give_nan(build, message):
    """Each gave NaN positions (the square root of a negative noise variance) before."""
    with pytest.raises((TypeError, ValueError), match=message):
        build(lambda position, minibatch: jax.tree.map(lambda x: -x, position))


@pytest.mark.parametrize(
    "schedule",
    [lambda i: 1e-3 if i < 10 else 1e-4, lambda i: [1e-3, 1e-4][int(i) % 2]],
    ids=["python-if", "python-int"],
)
def test_a_schedule_that_cannot_be_traced_is_refused_by_name(schedule):
    """A bare TracerBoolConversionError from deep inside the sampler before."""
    with pytest.raises(ValueError, match=r"step_size \(a schedule\) must be a JAX function"):
        mk.run_sgmcmc(
            jax.random.key(0), _gauss, X, num_epochs=1, draws_per_epoch=1, step_size=schedule,
            progress_bar=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"step_size \(a schedule\) must be a JAX function"):
        _mcmc(_gauss, step_size=schedule)


def nested_local_latent(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("groups", 2, dim=-1):
        with numpyro.plate("data", x.shape[0], subsample_size=5, dim=-2) as i:
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("obs", dist.Normal(z, 1.0), obs=x[i])


def test_a_local_latent_in_nested_plates_is_refused():
    with pytest.raises(ValueError, match="latent site 'z' lies inside the subsampled plate 'data'"):
        _run(nested_local_latent)


def test_the_kernel_takes_a_schedule_that_starts_after_the_warm_up():
    """The kernel does not know the run's length: a schedule at 0 over the warm-up is fine."""
    import optax

    late = optax.linear_schedule(0.0, 1e-3, 100, transition_begin=10)
    mcmc = _mcmc(_gauss, step_size=late)
    assert np.all(np.isfinite(np.asarray(mcmc.get_samples()["mu"])))


def test_a_plate_subsampling_more_than_its_size_is_refused():
    """NumPyro takes subsample_size > N as the full batch without a word: a typo'd minibatch
    size ran full batch."""

    def model(x, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0], subsample_size=300) as i:
            numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x[i, 0])

    with pytest.raises(
        ValueError, match=r"plate 'data' has subsample_size=300; it must lie in 1..200"
    ):
        mk.run_sgmcmc(jax.random.key(0), model, np.zeros((200, 1), np.float32), step_size=1e-3,
                      num_epochs=1, progress_bar=False)  # fmt: skip


@pytest.mark.parametrize("cycle_length", [2.5, 0, True])
def test_a_cycle_length_that_is_not_a_count_is_refused(cycle_length):
    with pytest.raises((TypeError, ValueError), match="cycle_length"):
        mk.infer.schedules.cyclical(1e-3, cycle_length)


def test_a_minibatch_term_outside_its_plate_is_refused():
    """``teacher_prior_factor`` (or any factor / observed site) written after the ``with
    numpyro.plate(...)`` block: its log density is a minibatch's, but no plate scales it by
    N / |B|, so SG-MCMC weighed it |B| / N times too little (0.1 of its weight at N = 640,
    B = 64) while NUTS on the full data was right, with no message. A term inside a plate of
    its own of the same size (the transfer set's) is not refused."""
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)

    def model(x, subsample_size=8, outside=True, own_plate=False):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as i:
            score = x[i] @ w
            if not outside:
                numpyro.factor("term", -(score**2))
        if outside and own_plate:
            with numpyro.plate("transfer", 8):
                numpyro.factor("term", -(score**2))
        elif outside:
            numpyro.factor("term", -(score**2))

    with pytest.raises(ValueError, match=r"site 'term' has a batch axis of the minibatch's size "
                       r"outside the subsampled plate 'data'.*N / \|B\|"):  # fmt: skip
        mk.infer.gradient_estimator(model, (x,), {})
    with pytest.raises(ValueError, match="outside the subsampled plate"):
        MCMC(SGMCMC(model, "sgld", step_size=1e-3), num_warmup=1, num_samples=1).run(
            jax.random.key(0), x
        )
    for options in ({"outside": False}, {"own_plate": True}, {"subsample_size": 40}):
        mk.infer.gradient_estimator(model, (x,), options)  # inside, own plate, or full batch
