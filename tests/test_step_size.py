"""The step size chosen by pilot runs (``mtbkd_jax.infer.step_size``), checked against Gaussian
targets whose stability limit and discretisation error are known in closed form.

The posterior of ``mu`` (``d`` coordinates, prior N(0, 1), ``N`` observations of N(mu_i, s_i))
is Gaussian with precisions ``p_i = 1 + N / s_i^2``. SGLD, ``mu <- mu - h p (mu - m) +
sqrt(2 h) xi``, is stable iff ``h < 2 / max p_i``, and its stationary variances are
``1 / (p_i (1 - h p_i / 2))``, so the configurational temperature the diagnostic estimates is
``T = sum_i p_i / (1 - h p_i / 2) / sum_i p_i`` exactly. Full batch: no gradient noise, except
in the test that adds it on purpose.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from mtbkd_jax.infer import (
    ConvergenceWarning,
    StepSizeChoice,
    check_step_size,
    choose_step_size,
    gradient_estimator,
    psgld,
    run_sgmcmc,
)
from mtbkd_jax.infer.step_size import default_ladder

N = 24
SCALES = np.array([1.0, 2.0, 4.0])
PRECISIONS = 1.0 + N / SCALES**2  # 25, 7, 2.5
LIMIT = 2.0 / PRECISIONS.max()  # 0.08
CHAINS = 64  # every pilot of the Gaussian model: one compiled program


def gaussian(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=x.shape[0]) as i:
        numpyro.sample("obs", dist.Normal(mu, SCALES).to_event(1), obs=x[i])


DATA = jnp.zeros((N, 3))  # the posterior mode is 0
MODE = {"mu": np.zeros(3, np.float32)}


# a Gaussian mean (prior N(0, 1), 200 observations of N(mu, 1)) by minibatches of 20
MEAN_NUM, MEAN_BATCH = 200, 20
MEAN_DATA = np.random.default_rng(0).normal(size=(MEAN_NUM, 1)).astype(np.float32)


def minibatch_mean(x, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=MEAN_BATCH) as i:
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x[i, 0])


def sgld_temperature(h, precisions=PRECISIONS):
    """The exact stationary configurational temperature of SGLD (tau = 1)."""
    return float(np.sum(precisions / (1 - h * precisions / 2)) / np.sum(precisions))


def check(h, **kwargs):
    options = dict(num_chains=CHAINS, init_params=MODE) | kwargs
    return check_step_size(jax.random.key(1), gaussian, DATA, step_size=h, **options)


# ------------------------------------------------------------------ the diagnostic
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_the_temperature_estimate_matches_the_exact_sgld_value(fraction):
    """Tolerance 25%: from 64 chains x 10 points the relative sd of the mean of p^2 mu^2 is
    about sqrt(2 / 640) = 6% (4 sd); the exact value runs from 1.26 to 3.96, so an estimator
    off by a constant factor (or blind to h) fails."""
    h = fraction * LIMIT
    result = check(h)
    assert result.stable, result.reason
    assert result.temperature_ratio == pytest.approx(sgld_temperature(h), rel=0.25)


@pytest.mark.parametrize("fraction", [0.95, 1.1, 1.5])  # 1.5: h = 3 / w^2, the brief's example
def test_steps_near_and_past_the_limit_are_refused(fraction):
    """Above 90% of the limit the exact T exceeds 10 (0.95: T = 20); past it the chain
    diverges. A diagnostic that only looked for NaN would pass 0.95 and 1.1 (finite after 200
    steps: |1 - 2.2| ^ 200 = 7e15)."""
    result = check(fraction * LIMIT)
    assert not result.stable
    assert result.reason
    if fraction > 1:
        assert "diverges" in result.reason or "non-finite" in result.reason


def test_the_minibatch_noise_does_not_bias_the_estimate():
    """With minibatches the chain's variance is ``(2h + h^2 V) / (1 - (1 - h p)^2)``
    (``V = N (N - B) S^2 / B``, the gradient's variance over minibatches drawn without
    replacement), so ``T = p var``. Estimating ``|grad U|^2`` by one minibatch gradient squared
    would add ``V / p`` (here about 9 against T = 3.5); the product of two independent
    minibatches does not. Tolerance 30% (128 chains: the relative sd is about 7%)."""
    num, batch, x, model = MEAN_NUM, MEAN_BATCH, MEAN_DATA, minibatch_mean

    precision, h = 1.0 + num, 0.002
    variance = num * (num - batch) * x[:, 0].var(ddof=1) / batch
    exact = precision * (2 * h + h**2 * variance) / (1 - (1 - h * precision) ** 2)
    assert variance / precision > 2 * exact  # the naive estimate would be far off
    start = {"mu": np.float32(x.mean() * num / precision)}
    result = check_step_size(
        jax.random.key(3), model, x, step_size=h, num_chains=128, init_params=start
    )
    assert result.temperature_ratio == pytest.approx(exact, rel=0.3)
    # the minibatch noise against the injected noise: h V / 2 (d = 1, tau = 1); 1280 pairs of
    # gradients give a relative sd of about 4%, tolerance 15% (a ratio without the 1/2, or
    # of the gradient's second moment instead of its variance, is off by 2x or more)
    assert result.noise_ratio == pytest.approx(h * variance / 2, rel=0.15)
    # full batch: no minibatch noise (exactly 0 here: the data are zeros, so the permuted
    # full batches sum the same numbers; in general the order moves the last bits)
    assert check(0.5 * LIMIT).noise_ratio == pytest.approx(0.0, abs=1e-9)


def test_the_choice_reports_the_minibatch_noise_at_the_chosen_step():
    """``StepSizeChoice.noise_ratio`` is the largest stable pilot's ratio scaled to the chosen
    step (linear in the step), and the posterior's record carries it."""
    num, batch, x, model = MEAN_NUM, MEAN_BATCH, MEAN_DATA, minibatch_mean

    start = {"mu": np.float32(x.mean() * num / (1.0 + num))}
    choice = choose_step_size(jax.random.key(3), model, x, num_chains=16, init_params=start)
    (largest,) = [c for c in choice.checks if c.step_size == choice.largest_stable]
    assert choice.noise_ratio == pytest.approx(choice.margin * largest.noise_ratio, rel=1e-12)
    variance = num * (num - batch) * x[:, 0].var(ddof=1) / batch
    assert choice.noise_ratio == pytest.approx(choice.step_size * variance / 2, rel=0.3)
    assert choice.as_dict()["noise_ratio"] == choice.noise_ratio


# ------------------------------------------------------------------ the rule
def test_the_chosen_step_is_below_the_limit_within_a_rung_of_limit_times_margin():
    choice = choose_step_size(jax.random.key(0), gaussian, DATA, num_chains=CHAINS,
                              init_params=MODE)  # fmt: skip
    assert isinstance(choice, StepSizeChoice)
    assert choice.step_size < LIMIT
    assert LIMIT * choice.margin / 3 <= choice.step_size <= LIMIT * choice.margin
    # exactly: the largest rung of 10 / 3^k under 90% of the limit (0.072) is 10 / 3^5
    assert choice.largest_stable == pytest.approx(10 / 3**5)
    assert choice.step_size == pytest.approx(0.5 * 10 / 3**5)
    assert len(choice.checks) <= 6  # bisection of 24 rungs
    assert all(c.step_size > choice.largest_stable for c in choice.unstable)
    record = choice.as_dict()
    assert record["checks"][0]["step_size"] == choice.checks[0].step_size
    assert record["checks"][0]["noise_ratio"] == pytest.approx(0.0, abs=1e-9)  # full batch
    assert choice.noise_ratio == pytest.approx(0.0, abs=1e-9)


def test_bisection_finds_the_same_rung_as_trying_every_rung():
    ladder = [LIMIT * f for f in (3.0, 1.5, 1.2, 0.85, 0.6, 0.3, 0.1)]
    verdicts = [check(h).stable for h in ladder]
    assert verdicts == [False, False, False, True, True, True, True]
    choice = choose_step_size(jax.random.key(0), gaussian, DATA, candidates=ladder[::-1],
                              num_chains=CHAINS, init_params=MODE, margin=0.25)  # fmt: skip
    assert choice.largest_stable == pytest.approx(ladder[verdicts.index(True)])
    assert choice.step_size == pytest.approx(0.25 * choice.largest_stable)
    assert choice.candidates == tuple(sorted(ladder, reverse=True))


def test_a_ladder_with_no_stable_rung_is_refused_and_a_stable_top_warns():
    with pytest.raises(ValueError, match="every step size tried is unstable"):
        choose_step_size(jax.random.key(0), gaussian, DATA, candidates=[3 / 25, 2.5 / 25],
                         num_chains=CHAINS, init_params=MODE)  # fmt: skip
    with pytest.warns(UserWarning, match="the limit may lie higher"):
        choice = choose_step_size(jax.random.key(0), gaussian, DATA, candidates=[LIMIT / 10],
                                  num_chains=CHAINS, init_params=MODE)  # fmt: skip
    assert choice.step_size == pytest.approx(LIMIT / 20)


# ------------------------------------------------------------------ pSGLD
@jax.jit
def _psgld_draws(h, keys, steps=2000):
    estimator = gradient_estimator(gaussian, (DATA, None))
    kernel, batch = psgld(estimator), estimator.full_batch()

    def chain(key):
        def step(state, k):
            state = kernel.step(k, state, batch, h)[0]
            return state, state.position["mu"]

        start = kernel.init({"mu": jnp.full(3, 0.1)})
        return jax.lax.scan(step, start, jax.random.split(key, steps))[1][steps // 2 :]

    return jax.vmap(chain)(keys)


def long_run_temperature(h):
    """pSGLD's stationary T measured on a long run (8 chains x 1000 kept steps) by the exact
    Gaussian identity ``T = sum_i p_i^2 var_i / sum_i p_i`` (not the pilot's estimator)."""
    draws = np.asarray(_psgld_draws(jnp.float32(h), jax.random.split(jax.random.key(5), 8)))
    variance = draws.reshape(-1, 3).var(axis=0)
    return float(np.sum(PRECISIONS**2 * variance) / np.sum(PRECISIONS))


def test_psgld_steps_are_judged_by_what_their_chains_do():
    """pSGLD never diverges here (its preconditioner shrinks as the chain spreads), but at
    too large a step its chain spreads far beyond the posterior. The pilot's T agrees with a
    long run's (tolerance 30%; seen within 12%), the chosen
    step's long run stays under the threshold, and the refused rung's exceeds it. pSGLD starts
    near, not at, the mode: at a zero gradient its first preconditioner is 1 / 1e-5."""
    start = {"mu": np.full(3, 0.1, np.float32)}
    choice = choose_step_size(jax.random.key(0), gaussian, DATA, sampler="psgld",
                              num_chains=CHAINS, init_params=start)  # fmt: skip
    assert choice.sampler == "psgld"
    refused = min(c.step_size for c in choice.unstable)
    assert refused == pytest.approx(3 * choice.largest_stable)
    for check_ in choice.checks:
        if check_.stable and check_.step_size >= 0.1:
            long = long_run_temperature(check_.step_size)
            assert check_.temperature_ratio == pytest.approx(long, rel=0.3)
    assert long_run_temperature(choice.step_size) < 10
    assert long_run_temperature(refused) > 10


# ------------------------------------------------------------------ run_sgmcmc(step_size="auto")
def test_run_sgmcmc_auto_applies_and_records_the_choice():
    settings = dict(num_epochs=20, draws_per_epoch=1, num_chains=CHAINS, init_params=MODE,
                    progress_bar=False, chunk_epochs=20)  # fmt: skip
    auto = run_sgmcmc(jax.random.key(2), gaussian, DATA, step_size="auto", **settings)
    chosen = auto.settings["step_size"]
    record = auto.settings["step_size_choice"]
    assert chosen == record["step_size"] == pytest.approx(0.5 * record["largest_stable"])
    assert chosen < LIMIT
    np.testing.assert_allclose(auto.sample_stats["step_size"], chosen, rtol=1e-6)
    fixed = run_sgmcmc(jax.random.key(2), gaussian, DATA, step_size=chosen, **settings)
    np.testing.assert_array_equal(auto.draws["mu"], fixed.draws["mu"])
    assert "step_size_choice" not in fixed.settings


def test_run_sgmcmc_refuses_other_strings_and_auto_with_a_checkpoint(tmp_path):
    with pytest.raises(TypeError, match="step_size must be a number, a schedule or 'auto'"):
        run_sgmcmc(jax.random.key(0), gaussian, DATA, step_size="fast")
    with pytest.raises(ValueError, match="step_size='auto' cannot be combined"):
        run_sgmcmc(jax.random.key(0), gaussian, DATA, step_size="auto",
                   checkpoint_path=tmp_path / "run.ckpt")  # fmt: skip


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(candidates=[]), ValueError, "candidates must hold at least one"),
        (dict(candidates=0.1), TypeError, "candidates must be a sequence"),
        (dict(candidates=[0.1, -1.0]), ValueError, "candidates must be a finite number > 0"),
        (dict(margin=1.5), ValueError, "margin must lie in"),
        (dict(sampler="hmc"), ValueError, "sampler must be one of"),
        (dict(temperature=0.0), ValueError, "temperature must be a finite number > 0"),
        (dict(pilot_steps=5), ValueError, "pilot_steps"),
        (dict(max_temperature_ratio=1.0), ValueError, "max_temperature_ratio must be > 1"),
        (dict(step_sizes=[0.1]), TypeError, r"unexpected keyword argument\(s\) \['step_sizes'\]"),
        (dict(sampler_options={"decay": 0.9}), ValueError, "sampler_options"),
        (dict(friction=0.0), ValueError, "friction must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        choose_step_size(jax.random.key(0), gaussian, DATA, **kwargs)


def test_friction_a_pilot_ignores_is_warned_at_the_call():
    """SGLD's pilot ignores ``friction``, as its run does: warned at the user's line."""
    with pytest.warns(UserWarning, match=r"friction=0.5 is ignored by sampler 'sgld'") as record:
        check(1e-3, friction=0.5, pilot_steps=20)
    assert record[0].filename == __file__


def test_the_default_ladder():
    ladder = default_ladder()
    assert ladder[0] == 10.0 and len(ladder) == 24
    np.testing.assert_allclose(np.divide(ladder[:-1], ladder[1:]), 3.0)
    with pytest.raises(ValueError, match="factor must be > 1"):
        default_ladder(factor=1.0)


def _sharp_mean(x, y=None):
    """Posterior sd 0.1 (precision 100): SGLD with exact gradients is stable for h < 0.02."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", x.shape[0], subsample_size=x.shape[0]) as i:
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x[i, 0])


def test_a_given_step_past_the_stability_limit_is_warned_about_at_the_end():
    """At h = 0.0205 (limit 0.02) the draws reached 2e6 on a posterior of sd 0.1 and the run
    returned them without a word; the chains' last states now say T / tau ~ 1e14. At h =
    0.005 the end is at the posterior (T / tau 1.1) and nothing is said."""
    x = jnp.zeros((100, 1))
    settings = dict(num_epochs=300, draws_per_epoch=1, num_chains=4, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at a stable step
        calm = run_sgmcmc(jax.random.key(0), _sharp_mean, x, step_size=0.005, **settings)
    assert 0.5 < calm.settings["end_temperature_ratio"] < 2.0
    with pytest.warns(ConvergenceWarning, match="configurational temperature"):
        hot = run_sgmcmc(jax.random.key(0), _sharp_mean, x, step_size=0.0205, **settings)
    assert hot.settings["end_temperature_ratio"] > 1e6


def _double_well(x, y=None):
    """U(z) = 4 (z^2 - 1)^2 + z^2 / 200: curvature -16 at z = 0, a local maximum of the
    density, where the chains start (and stay, at a step this small)."""
    z = numpyro.sample("z", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", x.shape[0], subsample_size=x.shape[0]) as i:
        numpyro.factor("well", -4.0 * (z**2 - 1.0) ** 2 * (1.0 + 0.0 * x[i, 0]) / x.shape[0])


def test_an_end_whose_curvature_is_not_positive_is_reported_as_unmeasured():
    """T / tau's curvature estimate there is negative, so the ratio cannot be measured: it was
    reported as "T / tau is nan", blaming the step size. Now the warning says it could not be
    measured, naming the curvature, and no ratio is recorded. A run at temperature 0 (an
    optimiser) is not judged at all."""
    x = jnp.zeros((50, 1))
    settings = dict(num_epochs=20, draws_per_epoch=1, num_chains=2, progress_bar=False,
                    step_size=1e-7, init_params={"z": jnp.zeros(())})  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_sgmcmc(jax.random.key(0), _double_well, x, **settings)
    messages = [str(w.message) for w in caught]
    assert any("could not be measured" in m and "is -3" in m and "not positive" in m
               for m in messages), messages  # fmt: skip
    assert not any("is nan" in m or "past the stability limit" in m for m in messages), messages
    assert run.settings.get("end_temperature_ratio") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cold = run_sgmcmc(jax.random.key(0), _double_well, x, temperature=0.0, **settings)
    assert cold.settings.get("end_temperature_ratio") is None


def test_an_end_whose_gradient_is_not_finite_is_warned_as_left_the_posterior(monkeypatch):
    """The end check's measures, made to report a non-finite squared gradient: the chains'
    last states are off the posterior (a ConvergenceWarning naming the step), not a ratio."""
    from mtbkd_jax.infer import _end_check

    monkeypatch.setattr(_end_check, "end_measures", lambda *a, **k: (float("inf"), 1.0))
    with pytest.warns(ConvergenceWarning, match="gradient .* not finite.*step size \\(0.001\\)"):
        run = run_sgmcmc(jax.random.key(0), _sharp_mean, jnp.zeros((100, 1)), step_size=1e-3,
                         num_epochs=3, draws_per_epoch=1, progress_bar=False)  # fmt: skip
    assert run.settings.get("end_temperature_ratio") is None
