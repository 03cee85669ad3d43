"""A user's own NumPyro model through every front-end: the log-likelihood comes from its own
observed sites, its plates may have any name, saving needs no ``logits_fn``, and NumPyro's
``Predictive`` takes the draws."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro.infer import Predictive

import mtbkd_jax as mk

N, F, C = 60, 3, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype(np.float32)
    logits = x @ rng.normal(size=(F, C))
    y = np.array([rng.choice(C, p=np.exp(r) / np.exp(r).sum()) for r in logits], np.int32)
    return x, y


def _tempered_model(temperature, plate_name="obs", subsample_size=None):
    """Softmax regression whose likelihood is tempered: Categorical(logits / temperature)."""

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([F, C]).to_event(2))
        with numpyro.plate(plate_name, x.shape[0], subsample_size=subsample_size) as idx:
            logits = x[idx] @ w / temperature
            numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])

    return model


def _logits_fn(weights, x):
    return x @ weights["w"]


def test_the_pointwise_log_likelihood_is_the_models_own(data):
    """A tempered likelihood: the log-likelihood group holds log softmax(x w / T)[y], computed
    here independently with NumPy; the old formula (an untempered Categorical) is off."""
    x, y = data
    post = mk.run_nuts(
        jax.random.key(0),
        _tempered_model(2.0),
        x,
        y,
        num_warmup=50,
        num_draws=100,
        num_chains=1,
        progress_bar=False,
    )
    pointwise = post.log_likelihood()["y"]
    assert pointwise.shape == (1, 100, N)
    w = post.draws["w"][0].astype(np.float64)  # (S, F, C)
    scaled = np.einsum("nf,sfc->snc", x.astype(np.float64), w) / 2.0
    log_probs = scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_probs, y[None, :, None], -1)[..., 0]
    np.testing.assert_allclose(pointwise[0], expected, atol=1e-5)
    untempered = scaled * 2.0 - np.log(np.exp(scaled * 2.0).sum(-1, keepdims=True))
    wrong = np.take_along_axis(untempered, y[None, :, None], -1)[..., 0]
    assert np.abs(wrong - pointwise[0]).max() > 0.1  # the check has power
    tree = post.to_datatree()
    np.testing.assert_array_equal(tree["log_likelihood"]["y"].values, pointwise)
    assert np.isfinite(float(az.loo(tree).elpd))


def test_an_own_model_without_logits_fn_saves_and_converts(data, tmp_path):
    x, y = data
    post = mk.run_map(
        jax.random.key(1), _tempered_model(1.0), x, y, num_steps=50, progress_bar=False
    )
    path = post.save(tmp_path / "own.nc")
    loaded = mk.Posterior.load(path)
    np.testing.assert_array_equal(loaded.draws["w"], post.draws["w"])
    np.testing.assert_allclose(loaded.log_likelihood()["y"], post.log_likelihood()["y"])
    with pytest.raises(ValueError, match="logits_fn"):
        post.predict(x)
    with pytest.raises(ValueError, match="model"):
        loaded.log_likelihood(x, y)  # new data need the model
    # with logits_fn the same posterior predicts
    post.logits_fn = _logits_fn
    assert post.predict(x).shape == (1, N, C)


def test_a_plate_of_any_name_is_subsampled_by_sgmcmc(data):
    """The subsampled plate is found in the model's trace, whatever its name ('obs' here);
    the settings report the minibatch that really ran."""
    x, y = data
    post = mk.run_sgmcmc(
        jax.random.key(2),
        _tempered_model(1.0, "obs", subsample_size=12),
        x,
        y,
        num_epochs=3,
        step_size=1e-3,
        draws_per_epoch=2,
        progress_bar=False,
    )
    assert post.settings["plates"] == [["obs", N, 12]]
    assert post.settings["batch_size"] == 12
    assert post.settings["steps_per_epoch"] == N // 12
    assert post.log_likelihood()["y"].shape == (1, 6, N)  # all N examples, not a minibatch
    with pytest.raises(ValueError, match="no subsampled plate"):
        mk.run_sgmcmc(jax.random.key(2), _tempered_model(1.0, "obs"), x, y, progress_bar=False)
    with pytest.raises(ValueError, match="batch_size=30"):
        mk.run_sgmcmc(
            jax.random.key(2),
            _tempered_model(1.0, "obs", subsample_size=12),
            x,
            y,
            batch_size=30,
            progress_bar=False,
        )


def test_predictive_takes_the_flat_draws_and_nuts_takes_one_shared_start(data):
    x, y = data
    bank = mk.TeacherBank.from_logits(np.random.default_rng(1).normal(size=(2, N, C)))
    model = mk.MTBKDModel(mk.Student(mk.MLP(F, C, hidden=(4,), rngs=nnx.Rngs(0))), bank)
    mode = mk.run_map(jax.random.key(3), model, x, y, num_steps=100, progress_bar=False)
    post = mk.run_nuts(
        jax.random.key(4),
        model,
        x,
        y,
        num_warmup=20,
        num_draws=10,
        num_chains=2,
        init_params=mode.point(),  # one start shared by both chains (the README's pattern)
        progress_bar=False,
    )
    assert post.draws["student.layers.0.kernel"].shape == (2, 10, F, 4)
    samples = post.samples(flat=True)
    assert samples["student.layers.0.kernel"].shape == (20, F, 4)
    predictive = Predictive(model, posterior_samples=samples)
    labels = predictive(jax.random.key(5), jnp.asarray(x[:7]), teacher_prior=False)["y"]
    assert labels.shape == (20, 7)
    # the class frequencies over draws follow the posterior predictive (a loose check: 20
    # draws; the predictive probability of the most likely class is compared)
    probs = np.asarray(post.predict(x[:7])).mean(0)
    freq = np.stack([(np.asarray(labels) == c).mean(0) for c in range(C)], -1)
    assert np.abs(freq - probs).max() < 0.5
    np.testing.assert_array_equal(
        post.samples(flat=False)["student.layers.0.bias"], post.draws["student.layers.0.bias"]
    )


def _broken_model(x, y=None):
    """A model whose extra factor is NaN everywhere (as the teacher prior was, before the
    weight rule was fixed): no sampler can start, and the step size is not to blame."""
    w = numpyro.sample("w", dist.Normal(0, 1).expand([F, C]).to_event(2))
    with numpyro.plate("data", x.shape[0], subsample_size=20) as idx:
        logits = x[idx] @ w
        numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])
        numpyro.factor("broken_prior", jnp.sqrt(-1.0 - jnp.abs(logits[:, 0])))


def test_a_model_that_is_nan_at_the_start_is_named_not_the_step_size(data):
    x, y = data
    settings = dict(num_epochs=1, step_size=1e-6, draws_per_epoch=1, progress_bar=False)
    with pytest.raises(ValueError, match="broken_prior"):  # no random start is finite
        mk.run_sgmcmc(jax.random.key(0), _broken_model, x, y, **settings)
    start = {"w": np.zeros((F, C))}
    with pytest.raises(mk.SamplerDivergedError, match="broken_prior") as error:
        mk.run_sgmcmc(jax.random.key(0), _broken_model, x, y, init_params=start, **settings)
    assert "not the cause" in str(error.value)

    def full_batch(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([F, C]).to_event(2))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=x @ w), obs=y)
            numpyro.factor("broken_prior", jnp.sqrt(-1.0 - jnp.abs(x[:, 0])))

    with pytest.raises(ValueError, match="broken_prior"):
        mk.run_nuts(
            jax.random.key(0),
            full_batch,
            x,
            y,
            num_warmup=2,
            num_draws=2,
            num_chains=1,
            progress_bar=False,
        )


def test_deterministic_sites_factor_likelihoods_and_small_new_data(data, tmp_path):
    """Three things a review found refused: a point() holding a deterministic site as
    init_params; saving a posterior whose likelihood is a factor (no observed site: no
    log-likelihood group, with a warning); the log-likelihood of fewer new examples than the
    plate's subsample_size."""
    x, y = data

    def with_deterministic(x, y=None, subsample_size=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([F, C]).to_event(2))
        numpyro.deterministic("w_total", w.sum())
        with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
            logits = x[idx] @ w
            numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])

    settings = dict(num_warmup=5, num_draws=5, num_chains=1, progress_bar=False)
    first = mk.run_nuts(jax.random.key(0), with_deterministic, x, y, **settings)
    assert "w_total" in first.point()
    again = mk.run_nuts(
        jax.random.key(1), with_deterministic, x, y, init_params=first.point(), **settings
    )
    assert again.draws["w"].shape == (1, 5, F, C)

    sg = mk.run_sgmcmc(
        jax.random.key(2),
        with_deterministic,
        x,
        y,
        num_epochs=1,
        step_size=1e-4,
        draws_per_epoch=1,
        init_params=first.point(),
        model_kwargs={"subsample_size": 20},
        progress_bar=False,
    )
    small = sg.log_likelihood(x[:5], y[:5])["y"]  # 5 examples, subsample_size 20
    assert small.shape == (1, 1, 5) and np.isfinite(small).all()

    def factor_likelihood(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([F, C]).to_event(2))
        log_probs = jax.nn.log_softmax(x @ w, -1)
        numpyro.factor("likelihood", jnp.take_along_axis(log_probs, y[:, None], -1).sum())

    post = mk.run_map(jax.random.key(3), factor_likelihood, x, y, num_steps=20, progress_bar=False)
    with pytest.warns(UserWarning, match="no observed sample site"):
        path = post.save(tmp_path / "factor.nc")
    assert "log_likelihood" not in mk.Posterior.load(path).to_datatree().children


def test_observed_data_is_named_after_the_models_observed_site():
    """It was always 'y': ArviZ functions that pair observed_data with log_likelihood by name
    (az.loo_pit) failed with KeyError 'y' for a model whose site is called 'label'."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([2, 2]).to_event(2))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("label", dist.Categorical(logits=x @ w), obs=y)

    posterior = mk.run_nuts(
        jax.random.key(0), model, x, y, num_warmup=50, num_draws=50, num_chains=2,
        progress_bar=False,
    )  # fmt: skip
    tree = posterior.to_datatree()
    assert list(tree["observed_data"].data_vars) == ["label"]
    assert tree["observed_data"]["label"].dims == ("example",)
    assert tree["log_likelihood"]["label"].dims == ("chain", "draw", "example")
    np.testing.assert_array_equal(tree["observed_data"]["label"].values, y)
    assert np.isfinite(float(az.loo(tree).elpd))
