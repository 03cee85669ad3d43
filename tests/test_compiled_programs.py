"""Compiled programs released before a long run exhausts the process's memory mappings
(``mtbkd_jax._compiled_programs``): past the limit every jitted function's programs go (and
compile again on the next call, to the same numbers); below it nothing is touched; and every
``run_*`` checks before it compiles (a tuning search's many fits reached 35,197 mappings in
one synthetic experiment; Linux's default limit is 65,530)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtbkd_jax as mk
from mtbkd_jax import _compiled_programs
from mtbkd_jax._compiled_programs import memory_mappings, release_if_crowded


def test_past_the_limit_the_compiled_programs_are_released_and_compile_again():
    double = jax.jit(lambda x: x * 2.0)
    first = double(jnp.arange(3.0))
    assert double._cache_size() == 1
    assert release_if_crowded(limit=10**9) is False  # below the limit: kept
    assert double._cache_size() == 1
    assert release_if_crowded(limit=0) is True
    assert double._cache_size() == 0
    np.testing.assert_array_equal(double(jnp.arange(3.0)), first)


def test_releasing_gives_the_mappings_back():
    """200 live jitted functions' programs hold mappings that clearing the caches returns
    (measured 2,290 -> 497 for 300 functions in session 29)."""
    functions = [jax.jit(lambda x, k=k: x * k + k) for k in range(200)]
    for f in functions:
        f(jnp.ones(2)).block_until_ready()
    before = memory_mappings()
    release_if_crowded(limit=0)
    after = memory_mappings()
    assert before > 0 and after < before - 100, (before, after)


def _toy(batch=10):
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("data", inputs.shape[0], subsample_size=batch) as i:
            numpyro.sample("y", dist.Bernoulli(logits=inputs[i] @ w), obs=labels[i])

    return model, x, y


def test_every_run_checks_the_mappings_first(monkeypatch):
    """A user's own script that fits many models in one process (a grid search) is kept
    under the limit as the experiments are: each ``run_*`` checks before it compiles."""
    from mtbkd_jax.infer import _common

    calls = []
    monkeypatch.setattr(_common, "release_if_crowded", lambda: calls.append(1) or False)
    model, x, y = _toy()
    key = jax.random.key(0)
    quiet = {"progress_bar": False}
    mk.run_map(key, model, x, y, num_steps=5, **quiet)
    mk.run_svi(key, model, x, y, num_steps=5, num_draws=2, **quiet)
    with pytest.warns(mk.infer.ConvergenceWarning):  # one epoch: not at the posterior yet
        mk.run_sgmcmc(key, model, x, y, step_size=1e-3, num_epochs=1, draws_per_epoch=1, **quiet)
    mk.run_nuts(key, _toy(batch=None)[0], x, y, num_warmup=5, num_draws=5, **quiet)
    assert calls == [1, 1, 1, 1]


def test_a_run_past_the_limit_releases_and_gives_the_same_fit(monkeypatch):
    """Past the limit a run releases every compiled program first (the jitted function
    compiled before loses its cache) and still gives the same numbers."""
    model, x, y = _toy()
    key = jax.random.key(1)
    first = mk.run_map(key, model, x, y, num_steps=50, progress_bar=False)
    double = jax.jit(lambda v: v * 2.0)
    double(jnp.ones(2))
    monkeypatch.setattr(_compiled_programs, "memory_mappings", lambda: 10**6)
    again = mk.run_map(key, model, x, y, num_steps=50, progress_bar=False)
    assert double._cache_size() == 0  # released by the run
    np.testing.assert_array_equal(again.draws["w"], first.draws["w"])
