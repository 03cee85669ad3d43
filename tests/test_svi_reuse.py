"""run_svi keeps its jitted chunk runner between calls with the same model and settings, with
results identical to a fit without the cache; the cache lets go of a model that is gone."""

import gc

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

from mtbkd_jax import run_map, run_svi
from mtbkd_jax.infer import _svi_runners as svi_module


class CountingModel:
    """A softmax regression that counts the times it is traced under jit (its inputs are
    tracers there) and called on concrete inputs (initialisation)."""

    def __init__(self):
        self.traced = 0
        self.concrete = 0

    def __call__(self, inputs, labels=None, *, scale=1.0):
        if isinstance(inputs, jax.core.Tracer):
            self.traced += 1
        else:
            self.concrete += 1
        weights = numpyro.sample("w", dist.Normal(0.0, scale).expand([inputs.shape[1], 3]))
        bias = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=inputs @ weights + bias), obs=labels)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return x, y


def _fit(model, data, key, **kwargs):
    x, y = data
    settings = {"num_steps": 10, "chunk_size": 5, "progress_bar": False, **kwargs}
    return run_map(jax.random.key(key), model, x, y, **settings)


def _runners_of(model):
    return [runner for key, runner in svi_module._runners.items() if key[0] == id(model)]


def test_second_fit_reuses_the_compiled_runner(data):
    model = CountingModel()
    first = _fit(model, data, 0)
    traced, (runner,) = model.traced, _runners_of(model)
    assert traced >= 1
    second = _fit(model, data, 1)
    assert model.traced == traced, "the second fit traced the model under jit again"
    assert _runners_of(model) == [runner]
    assert not np.array_equal(first.losses, second.losses)  # another key, another start


@pytest.mark.parametrize("guide", ["delta", "normal"])
def test_reused_runner_gives_the_results_of_a_fresh_one(data, guide):
    x, y = data
    model = CountingModel()

    def fit(key):
        return run_svi(
            jax.random.key(key),
            model,
            x,
            y,
            guide=guide,
            num_steps=10,
            chunk_size=5,
            num_draws=4,
            progress_bar=False,
        )

    fit(0)  # fills the cache with a runner whose guide started from key 0
    reused = fit(1)
    svi_module._forget_model(id(model))
    fresh = fit(1)
    np.testing.assert_array_equal(reused.losses, fresh.losses)
    assert reused.draws.keys() == fresh.draws.keys()
    for name in fresh.draws:
        np.testing.assert_array_equal(reused.draws[name], fresh.draws[name])


def test_other_settings_or_shapes_get_their_own_runner(data):
    x, y = data
    model = CountingModel()
    _fit(model, data, 0)
    _fit(model, data, 0, num_steps=5)  # the number of steps is not part of the program
    assert len(_runners_of(model)) == 1
    _fit(model, data, 0, learning_rate=0.05)
    _fit(model, data, 0, optimizer=optax.sgd(0.1))
    _fit(model, data, 0, model_kwargs={"scale": 2.0})
    _fit(model, (x[:20], y[:20]), 0)
    assert len(_runners_of(model)) == 5


def test_cache_lets_go_of_a_deleted_model(data):
    model = CountingModel()
    _fit(model, data, 0)
    model_id = id(model)
    assert any(key[0] == model_id for key in svi_module._runners)
    del model
    gc.collect()
    assert not any(key[0] == model_id for key in svi_module._runners)


def test_unhashable_static_keyword_is_fitted_without_the_cache(data):
    x, y = data
    model = CountingModel()
    before = len(svi_module._runners)
    post = run_map(
        jax.random.key(0),
        lambda inputs, labels=None, *, options: model(inputs, labels, scale=options["scale"]),
        x,
        y,
        num_steps=3,
        progress_bar=False,
        model_kwargs={"options": {"scale": 1.0}},
    )
    assert len(svi_module._runners) == before
    assert np.isfinite(post.losses).all() and post.losses.shape == (3,)


def test_a_support_that_depends_on_the_data_is_never_reused_across_data():
    """A latent whose support depends on the data (``Uniform(0, max x)``): a runner traced
    with one fit's transform must not optimise another fit's data. The second fit equals a fit
    of a fresh model object (it gave s = 9.85 against 4.0 when the runner was reused)."""
    import jax.numpy as jnp

    def model(x, y=None):
        s = numpyro.sample("s", dist.Uniform(0, jnp.max(x)))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Poisson(s), obs=y)

    def same_model(x, y=None):
        return model(x, y)

    y = np.full(20, 4)
    settings = dict(num_steps=300, progress_bar=False)
    run_map(jax.random.key(0), model, 3 * np.ones((20, 1), np.float32), y, **settings)
    second = run_map(jax.random.key(0), model, 10 * np.ones((20, 1), np.float32), y, **settings)
    fresh = run_map(jax.random.key(0), same_model, 10 * np.ones((20, 1), np.float32), y, **settings)
    np.testing.assert_array_equal(second.draws["s"], fresh.draws["s"])
    np.testing.assert_array_equal(second.losses, fresh.losses)
