"""``numpyro.infer.MCMC(mtbkd_jax.infer.SGMCMC(...))``: the discretised-variance oracle,
agreement with NUTS, the canonical model, and the NumPyro/ArviZ surface end to end."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro.infer import MCMC, NUTS

import mtbkd_jax as mk
from mtbkd_jax.infer import SGMCMC
from mtbkd_jax.infer.cyclical_sgld import CyclicalSGLDState
from mtbkd_jax.infer.ncsgld import NCSGLDState
from mtbkd_jax.infer.psgld import PSGLDState
from mtbkd_jax.infer.sghmc import SGHMCState
from mtbkd_jax.infer.sgld import SGLDState
from mtbkd_jax.infer.sgnht import SGNHTState

Z = 4.0


def exact_gradient_gaussian(sigma):
    def model(inputs):
        x = numpyro.sample("x", dist.Normal(0.0, sigma))
        with numpyro.plate("data", inputs.shape[0], subsample_size=2) as idx:
            numpyro.factor("nothing", 0.0 * inputs[idx, 0] * x)  # exact gradient

    return model


def mean_model(x, subsample_size=20):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    scale = numpyro.sample("scale", dist.HalfNormal(2.0))
    with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        numpyro.sample("x", dist.Normal(mu, scale), obs=x[idx])


def _ess(draws):
    return float(az.ess(az.from_dict({"posterior": {"x": draws}}))["x"])


def test_sgld_through_mcmc_settles_at_the_discretised_variance():
    sigma, eta = 1.0, 0.3
    mcmc = MCMC(
        SGMCMC(exact_gradient_gaussian(sigma), "sgld", step_size=eta),
        num_warmup=500,
        num_samples=20_000,
        num_chains=4,
        chain_method="vectorized",
        thinning=4,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), jnp.zeros((100, 1)))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    ess = _ess(draws)
    exact = sigma**2 / (1 - eta / (2 * sigma**2))
    z = abs(draws.var() - exact) / (exact * np.sqrt(2 / ess))
    assert z < Z, (draws.var(), exact, ess)
    assert abs(sigma**2 - exact) / (exact * np.sqrt(2 / ess)) > 2 * Z  # power


@pytest.mark.parametrize("sampler", ["sgld", "sgnht", "psgld", "ncsgld"])
def test_sgmcmc_through_mcmc_agrees_with_nuts(sampler):
    """Minibatch SG-MCMC on a normal model with unknown mean and scale (200 points, batch 20)
    against NUTS on the full-data model: posterior means and sds within Monte-Carlo error
    plus the discretisation's (tolerance: 4 MCSE + 10% of the sd). SGHMC is left out here: at
    batch 20 its friction must exceed h Var(grad) / 2 to stay near temperature 1 (at friction
    1 and h = 5e-3 it diverged), which is what SGNHT's thermostat learns; SGHMC is checked
    against NUTS through run_sgmcmc with a friction that suffices
    (tests/test_sgmcmc.py)."""
    x = 1.5 + 0.8 * jax.random.normal(jax.random.key(0), (200,))
    nuts = MCMC(NUTS(mean_model), num_warmup=500, num_samples=2000, progress_bar=False)
    nuts.run(jax.random.key(1), x, subsample_size=None)
    reference = nuts.get_samples()
    step = {"sgld": 2e-4, "sghmc": 5e-3, "sgnht": 5e-3, "psgld": 2e-3, "ncsgld": 2e-4}[sampler]
    mcmc = MCMC(
        SGMCMC(
            mean_model,
            sampler,
            step_size=step,
            friction=1.0 if sampler in ("sghmc", "sgnht") else 0.1,
        ),
        num_warmup=2000,
        num_samples=40_000,
        num_chains=2,
        chain_method="vectorized",
        thinning=10,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), x)
    samples = mcmc.get_samples(group_by_chain=True)
    for name in ("mu", "scale"):
        draws = np.asarray(samples[name], np.float64)
        ess = _ess(draws)
        ref = np.asarray(reference[name], np.float64)
        mcse = draws.std() / np.sqrt(ess) + ref.std() / np.sqrt(500)
        assert abs(draws.mean() - ref.mean()) < Z * mcse + 0.1 * ref.std(), (name, draws.mean())
        assert abs(draws.std() - ref.std()) < 0.15 * ref.std() + Z * mcse, (name, draws.std())


def test_mcmc_surface_end_to_end(capsys):
    """run, get_samples, print_summary, the progress bar, thinning, chains and ArviZ."""
    x = 1.5 + 0.8 * jax.random.normal(jax.random.key(0), (200,))
    mcmc = MCMC(
        SGMCMC(mean_model, "sgld", step_size=2e-4),
        num_warmup=100,
        num_samples=300,
        num_chains=2,
        chain_method="sequential",
        progress_bar=True,
    )
    mcmc.run(jax.random.key(3), x)
    samples = mcmc.get_samples()
    assert samples["mu"].shape == (600,) and samples["scale"].shape == (600,)
    assert bool((samples["scale"] > 0).all())  # constrained by postprocess_fn
    mcmc.print_summary()
    out = capsys.readouterr().out
    assert "mu" in out and "scale" in out and "r_hat" in out
    tree = az.from_numpyro(mcmc)
    posterior = tree["posterior"]
    assert posterior["mu"].shape == (2, 300)
    assert float(az.rhat(tree)["mu"]) < 1.1
    assert mcmc.last_state.i.shape == (2,) or int(mcmc.last_state.i) == 400


def test_the_canonical_model_runs_through_mcmc():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.integers(0, 3, 60).astype(np.int32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 60, 3)))
    model = mk.MTBKDModel(mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0))), bank)
    mcmc = MCMC(
        SGMCMC(model, "sghmc", batch_size=20, step_size=1e-2),
        num_warmup=30,
        num_samples=60,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), jnp.asarray(x), jnp.asarray(y))
    samples = mcmc.get_samples()
    assert set(samples) == {"student.layers.0.kernel", "student.layers.0.bias",
                            "student.layers.1.kernel", "student.layers.1.bias"}  # fmt: skip
    assert all(bool(jnp.isfinite(v).all()) for v in samples.values())
    assert samples["student.layers.0.kernel"].shape == (60, 3, 4)


def test_the_adapter_refuses_bad_settings():
    with pytest.raises(ValueError, match=r"sampler must be one of"):
        SGMCMC(mean_model, "hmc")
    with pytest.raises(ValueError, match=r"step_size"):
        SGMCMC(mean_model, "sgld", step_size=-1.0)
    with pytest.raises(ValueError, match=r"sampler_options applies to"):
        SGMCMC(mean_model, "sgld", sampler_options={"decay": 0.9})

    def full_batch(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    mcmc = MCMC(SGMCMC(full_batch), num_warmup=1, num_samples=1, progress_bar=False)
    with pytest.raises(ValueError, match=r"declares no subsampled plate"):
        mcmc.run(jax.random.key(0), jnp.zeros(10))


def _canonical(num_examples=60, feature_extractor=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 3)).astype(np.float32)
    y = rng.integers(0, 3, num_examples).astype(np.int32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, num_examples, 3)))
    network = mk.MLP(2 if feature_extractor else 3, 3, hidden=(4,), rngs=nnx.Rngs(0))
    student = mk.Student(network, feature_extractor=feature_extractor)
    return mk.MTBKDModel(student, bank), x, y


@pytest.mark.parametrize("batch_size", [0, -5, 20.0, True])
def test_the_adapter_refuses_a_batch_size_that_is_no_count(batch_size):
    """As run_sgmcmc does: before, 0 and -5 crashed inside JAX's indexing and 20.0 ran."""
    model, _, _ = _canonical()
    with pytest.raises((TypeError, ValueError), match=r"batch_size must be an integer >= 1"):
        SGMCMC(model, "sgld", batch_size=batch_size)
    with pytest.raises((TypeError, ValueError), match=r"prior_batch_size must be an integer"):
        SGMCMC(model, "sgld", prior_batch_size=batch_size)
    x, y = np.zeros((60, 3), np.float32), np.zeros(60, np.int32)
    with pytest.raises((TypeError, ValueError), match=r"batch_size must be an integer >= 1"):
        mk.infer.gradient_estimator(model, (x, y), batch_size=batch_size)


@pytest.mark.parametrize("size", [32, 500])
def test_a_subsample_size_passed_to_the_canonical_model_is_refused_naming_batch_size(size):
    """The canonical model sets its plates' subsample_size from the sampler's batch_size; a
    subsample_size passed with the data was replaced by 64 without a word (MCMC: NumPyro's
    model/guide warning at best), even 500 of 60 examples."""
    model, x, y = _canonical()
    mcmc = MCMC(SGMCMC(model, "sgld", step_size=1e-4), num_warmup=1, num_samples=2,
                progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match=rf"subsample_size'\] = {size}.*pass batch_size="):
        mcmc.run(jax.random.key(0), x, y, subsample_size=size)
    with pytest.raises(ValueError, match=r"sets subsample_size itself.*pass batch_size="):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, model_kwargs={"subsample_size": size},
                      num_epochs=1, step_size=1e-4, progress_bar=False)  # fmt: skip
    # the plan's own value, passed again, is no conflict
    MCMC(SGMCMC(model, "sgld", step_size=1e-4, batch_size=20), num_warmup=1, num_samples=2,
         progress_bar=False).run(jax.random.key(0), x, y, subsample_size=20)  # fmt: skip


def test_a_feature_extractor_student_asks_for_featurized_inputs_through_mcmc():
    """MCMC passes the inputs to the model as given; the run_* functions featurize them. The
    refusal says so (before: only that the shape did not fit)."""
    model, x, y = _canonical(feature_extractor=lambda v: v[:, :2] * 2.0)
    mcmc = MCMC(SGMCMC(model, "sgld", step_size=1e-4, batch_size=20), num_warmup=1,
                num_samples=2, progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"feature_extractor.*student\.featurize\(inputs\)"):
        mcmc.run(jax.random.key(0), x, y)
    mcmc.run(jax.random.key(0), np.asarray(model.student.featurize(x)), y)
    assert mcmc.get_samples()["student.layers.0.kernel"].shape == (2, 2, 4)


def test_the_exact_log_density_by_full_batch_raises_no_model_guide_warning():
    """``-e.logdensity(e.unconstrain(draw), e.full_batch())``, which the extra_fields message
    recommends, substitutes indices of another length than the plates' minibatch on purpose:
    NumPyro's "subsample_size does not match" (a model/guide mismatch) is not raised; the value
    is the unsubsampled model's log density."""
    import warnings

    from numpyro.infer.util import log_density

    model, x, y = _canonical()
    estimator = mk.infer.gradient_estimator(model, (x, y), batch_size=20)
    position = estimator.initial_position(jax.random.key(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = float(estimator.logdensity(position, estimator.full_batch()))
    exact, _ = log_density(model, (x, y), model.constant_kwargs(), position)
    assert value == pytest.approx(float(exact), rel=1e-5)


@pytest.mark.parametrize("jit_model_args", [False, True])
def test_a_second_run_on_new_data_samples_the_new_posterior(jit_model_args):
    """MCMC reuses its compiled sampler across runs when the model's arguments are traced
    (``jit_model_args=True``): the kernel must read the data it is given, not the first
    run's (found by review: both runs gave the first data's mean)."""
    mcmc = MCMC(
        SGMCMC(mean_model, "sgld", step_size=2e-4),
        num_warmup=1500,
        num_samples=300,
        progress_bar=False,
        jit_model_args=jit_model_args,
    )
    x = 0.5 * jax.random.normal(jax.random.key(0), (200,))
    mcmc.run(jax.random.key(1), x)
    first = float(mcmc.get_samples()["mu"].mean())
    mcmc.run(jax.random.key(1), x + 5.0)
    second = float(mcmc.get_samples()["mu"].mean())
    assert abs(first - float(x.mean())) < 0.2
    assert abs(second - float(x.mean()) - 5.0) < 0.2, (first, second)


def test_psgld_adapts_its_preconditioner_in_the_warmup_only():
    """An always-adapting pSGLD samples p / G (variance 1.33 on N(0, 1) at this step:
    tests/test_kernels.py); through MCMC it adapts during NumPyro's warm-up, through
    run_sgmcmc during the burn-in, and the run records where it stopped."""
    kernel = SGMCMC(exact_gradient_gaussian(1.0), "psgld", step_size=0.01)
    mcmc = MCMC(kernel, num_warmup=3000, num_samples=30_000, num_chains=8,
                chain_method="vectorized", thinning=10, progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.key(0), jnp.zeros((4, 1)))
    assert kernel.options["options"]["adapt_steps"] == 3000
    draws = np.asarray(mcmc.get_samples()["x"], np.float64)
    assert abs(draws.var() - 1.0) < 0.12, draws.var()  # 1.33 adapting at every step
    x = 1.5 + 0.8 * jax.random.normal(jax.random.key(0), (200, 1))

    def column_mean(x, y=None):
        mean_model(x[:, 0])

    posterior = mk.run_sgmcmc(jax.random.key(1), column_mean, x, sampler="psgld",
                              step_size=1e-3, num_epochs=2, num_burnin_epochs=3,
                              progress_bar=False)  # fmt: skip
    assert posterior.settings["sampler_options"]["adapt_steps"] == 3 * 10  # 200 / 20 a epoch


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_draws_that_are_not_finite_are_counted_as_divergences(capsys, chain_method):
    """A step past the stability limit sends SGLD's draws to inf/NaN: ``diverging`` (a default
    field, as NUTS's) marks them, ``print_summary`` counts them and ArviZ's sample_stats holds
    them; a stable step marks none."""
    model = exact_gradient_gaussian(0.01)  # stable below eta = 2 sigma^2 = 2e-4
    x = jnp.zeros((10, 1))

    def run(step_size):
        mcmc = MCMC(SGMCMC(model, "sgld", step_size=step_size), num_warmup=10,
                    num_samples=300, num_chains=2, chain_method=chain_method,
                    progress_bar=False)  # fmt: skip
        mcmc.run(jax.random.key(0), x)
        return mcmc

    unstable = run(1e-2)
    diverging = np.asarray(unstable.get_extra_fields()["diverging"])
    finite = np.isfinite(np.asarray(unstable.get_samples()["x"]))
    assert diverging.shape == finite.shape and diverging.any()
    np.testing.assert_array_equal(diverging, ~finite)
    unstable.print_summary()
    assert f"Number of divergences: {int(diverging.sum())}" in capsys.readouterr().out
    tree = az.from_numpyro(unstable)
    assert int(tree["sample_stats"]["diverging"].sum()) == int(diverging.sum())

    stable = run(1e-5)
    assert not np.asarray(stable.get_extra_fields()["diverging"]).any()


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_extra_fields_it_has_are_collected_and_one_it_lacks_is_named(chain_method):
    """``extra_fields``: the state's own fields (nested ones too) come back per draw; a field
    it has not (NUTS's ``potential_energy``, or the nested ``kernel.momentum`` of a kernel
    without momentum) is a ValueError naming it and the fields there are (before: NumPyro's
    "tuple indices must be integers or slices, not str"). The
    potential the message gives, at a draw, equals the hand-written one."""
    x = jnp.asarray(np.random.default_rng(0).normal(1.0, 2.0, size=100))
    kernel = SGMCMC(mean_model, "sgld", step_size=1e-3)
    mcmc = MCMC(kernel, num_warmup=5, num_samples=7, num_chains=2,
                chain_method=chain_method, progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.key(0), x, extra_fields=("step_size", "kernel.position.mu"))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    assert extra["step_size"].shape == (2, 7)
    np.testing.assert_allclose(extra["step_size"], 1e-3)
    draws = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_allclose(extra["kernel.position.mu"], draws["mu"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"no field 'potential_energy' .* its fields are i, z,"):
        mcmc.run(jax.random.key(1), x, extra_fields=("potential_energy",))
    with pytest.raises(ValueError, match=r"SGLDState has no field 'momentum'; its fields are posi"):
        mcmc.run(jax.random.key(1), x, extra_fields=("kernel.momentum",))
    # a tuple's methods are no fields: the attribute read found them, and JAX got a method
    with pytest.raises(ValueError, match=r"SGLDState has no field 'count'; its fields are posi"):
        mcmc.run(jax.random.key(1), x, extra_fields=("kernel.count",))
    with pytest.raises(ValueError, match=r"SGMCMC's state has no field 'index'; its fields are i,"):
        mcmc.run(jax.random.key(1), x, extra_fields=("index",))
    e = kernel.estimator
    draw = {k: v[0, -1] for k, v in draws.items()}
    potential = -e.logdensity(e.unconstrain(draw), e.full_batch())
    mu, scale = float(draw["mu"]), float(draw["scale"])
    by_hand = -(
        dist.Normal(0.0, 3.0).log_prob(mu)
        + dist.HalfNormal(2.0).log_prob(scale) + np.log(scale)  # log |d scale / d log scale|
        + dist.Normal(mu, scale).log_prob(x).sum()
    )  # fmt: skip
    assert float(potential) == pytest.approx(float(by_hand), rel=1e-5)


@pytest.mark.parametrize(
    "state_type",
    [SGLDState, SGHMCState, PSGLDState, NCSGLDState, SGNHTState, CyclicalSGLDState],
)
def test_every_kernel_state_names_a_missing_extra_field(state_type):
    """A nested ``extra_fields`` path into any kernel's state that names no field is a
    ValueError naming the state and its fields; integer indexing is a tuple's."""
    state = state_type(*range(len(state_type._fields)))
    with pytest.raises(ValueError, match=rf"{state_type.__name__} has no field 'nope'"):
        state["nope"]
    with pytest.raises(ValueError, match=r"has no field 'index'"):  # a tuple method, not a field
        state["index"]
    for method in ("count", "index"):  # NumPyro reads by attribute first: no tuple method there
        assert hasattr(state, method) == (method in state_type._fields)  # PSGLDState's count
    assert state[0] == 0 and state[-1] == len(state_type._fields) - 1
    assert state[state_type._fields[-1]] == len(state_type._fields) - 1
    assert getattr(state, state_type._fields[0]) == 0


def test_friction_given_to_a_kernel_that_ignores_it_is_warned_at_the_call():
    """Only SGHMC and SGNHT use ``friction``: another sampler warns, at the user's line."""
    with pytest.warns(UserWarning, match=r"friction=2 is ignored by sampler 'psgld'") as record:
        SGMCMC(mean_model, "psgld", friction=2.0)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SGMCMC(mean_model, "sghmc", friction=2.0)
        SGMCMC(mean_model, "sgld")


@pytest.mark.parametrize("num_chains, chain_method", [(1, "sequential"), (2, "vectorized")])
def test_a_state_continued_on_data_of_another_size_is_named(num_chains, chain_method):
    """``post_warmup_state`` holds the epoch orders of its data: continued on data of another
    size it was a ``lax.cond`` type error from inside JAX; it is named, and the same size
    continues."""
    x = jnp.asarray(np.random.default_rng(0).normal(1.0, 2.0, size=100))
    mcmc = MCMC(SGMCMC(mean_model, "sgld", step_size=1e-3), num_warmup=5, num_samples=5,
                num_chains=num_chains, chain_method=chain_method, progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.key(0), x)
    mcmc.post_warmup_state = mcmc.last_state
    with pytest.raises(ValueError, match=r"orders for 100 rows of plate 'data', but the data "):
        mcmc.run(mcmc.post_warmup_state.rng_key, x[:80])
    mcmc.run(mcmc.post_warmup_state.rng_key, x)
    assert mcmc.get_samples()["mu"].shape == (5 * num_chains,)
