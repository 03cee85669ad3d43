"""Compiled programs released before a long run exhausts the process's memory mappings
(``mtbkd_jax._compiled_programs``): past the limit every jitted function's programs go (and
compile again on the next call, to the same numbers); below it nothing is touched; and the
experiments' fits check before each MAP and posterior (a tuning search's many fits reached
35,197 mappings in one synthetic experiment; Linux's default limit is 65,530)."""

import jax
import jax.numpy as jnp
import numpy as np

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


def test_each_experiment_fit_checks_the_mappings_first(monkeypatch):
    from mtbkd_jax.datasets import DistillationData
    from mtbkd_jax.experiments import ExperimentConfig, fit

    calls = []
    monkeypatch.setattr(fit, "release_if_crowded", lambda: calls.append(1) or False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    logits = np.stack([np.stack([-x[:, 0], x[:, 0]], -1)]) * 3
    bank = mk.TeacherBank.from_logits(logits, names=("a",))
    data = DistillationData(name="toy", x_train=x, y_train=y, x_test=x, y_test=y,
                            teachers_prior=bank, teachers_test=bank)  # fmt: skip
    config = ExperimentConfig(hidden=(4,), map_steps=20, bayes="sgld", sgld_batch_size=10,
                              sgld_epochs=1, sgld_draws_per_epoch=1, sgld_step_size=1e-4,
                              num_chains=1)  # fmt: skip
    model = fit.build_model(data, config, data.teachers_prior)
    mode = fit.fit_map(jax.random.key(0), data, config, model)
    assert calls == [1]
    fit.fit_posterior(jax.random.key(1), data, config, model, mode)
    assert calls == [1, 1]
    assert _compiled_programs.MAPPINGS_LIMIT == 30_000
