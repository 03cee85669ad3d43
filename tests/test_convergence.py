"""Whether a MAP had converged: how much of its loss's fall came at the end, recorded and
warned about."""

import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mtbkd_jax as mk
from mtbkd_jax.infer import _convergence
from mtbkd_jax.infer._convergence import MAP_TOLERANCE, final_loss_change, trend_z_score


def test_final_loss_change_against_a_direct_computation():
    losses = np.linspace(100.0, 50.0, 200)  # falls by 50 / 199 a step
    # by hand: windows of 20 steps; the first and last means 180 steps apart, the last two 20
    assert final_loss_change(losses) == pytest.approx(20 / 180, rel=1e-9)
    first, before, last = losses[:20].mean(), losses[-40:-20].mean(), losses[-20:].mean()
    assert final_loss_change(losses) == pytest.approx((before - last) / (first - last))
    # unchanged by a constant in the loss or its units (a change relative to |loss| is not)
    assert final_loss_change(3.0 * losses - 1e5) == pytest.approx(final_loss_change(losses))
    # flat at the end; oscillating around a flat end; rising at the end
    settled = np.concatenate([np.linspace(10.0, 1.0, 100), np.ones(200)])
    assert final_loss_change(settled) == 0.0
    wiggle = settled + 0.5 * (-1.0) ** np.arange(300)
    assert abs(final_loss_change(wiggle)) < 1e-12
    assert final_loss_change(np.concatenate([settled, np.linspace(1.0, 2.0, 40)])) < 0
    assert np.isnan(final_loss_change(np.arange(99.0)[::-1]))  # too few steps to judge
    assert np.isnan(final_loss_change(np.arange(300.0)))  # never fell: nothing to share


def test_the_z_score_tells_a_trend_from_noise():
    rng = np.random.default_rng(0)
    trend = np.linspace(10.0, 0.0, 1000)
    assert trend_z_score(trend) > 100  # deterministic and still falling
    scores = [trend_z_score(rng.normal(size=2000)) for _ in range(200)]  # noise alone
    assert 0.6 < np.std(scores) < 1.5 and abs(np.mean(scores)) < 0.3
    assert trend_z_score(np.ones(500)) == 0.0


def _logistic_regression(scale):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.logistic(size=200) > 0).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, scale).expand([3]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=inputs @ w).to_event(1), obs=labels)

    return model, x, y


def test_a_map_stopped_while_its_loss_falls_is_warned_about_and_a_converged_one_is_not():
    """Adam at a tiny learning rate for 100 steps is still walking downhill: warned (pointing
    at this file, the caller), naming num_steps, with the share recorded; 2,000 steps at 0.05
    reach the mode: no warning. SVI with a Normal guide records it too, unwarned."""
    model, x, y = _logistic_regression(10.0)
    with pytest.warns(
        mk.infer.ConvergenceWarning, match="still falling.*100 steps.*num_steps"
    ) as w:
        early = mk.run_map(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                           progress_bar=False)  # fmt: skip
    assert w[0].filename == __file__
    assert early.settings["final_loss_change"] > MAP_TOLERANCE
    with pytest.warns(mk.infer.ConvergenceWarning, match="rising again"):
        _convergence.warn_if_not_converged(-5 * MAP_TOLERANCE, 10.0, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.infer.ConvergenceWarning)
        _convergence.warn_if_not_converged(5 * MAP_TOLERANCE, 1.0, 100)  # within the noise
        done = mk.run_map(jax.random.key(0), model, x, y, num_steps=2000, learning_rate=0.05,
                          progress_bar=False)  # fmt: skip
        svi = mk.run_svi(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                         num_draws=5, progress_bar=False)  # fmt: skip
    assert abs(done.settings["final_loss_change"]) < MAP_TOLERANCE
    # the mode itself: L2-penalised logistic regression, ||w||^2 / (2 * 10^2) (scikit-learn)
    from sklearn.linear_model import LogisticRegression

    mode = LogisticRegression(C=100.0, fit_intercept=False, tol=1e-10, max_iter=10_000)
    np.testing.assert_allclose(done.draws["w"][0, 0], mode.fit(x, y).coef_[0], atol=2e-3)
    assert np.isfinite(svi.settings["final_loss_change"])


def test_loss_rise_against_a_direct_computation():
    """``loss_rise`` is min(last tenth) - first loss; the warning fires only when every loss of
    the last tenth is above the start beyond rounding (a rise of 1e-3 of |start| or less is not
    warned: a warm start at the mode jitters there)."""
    from mtbkd_jax.infer._convergence import RISE_TOLERANCE, loss_rise

    rng = np.random.default_rng(1)
    blown = np.concatenate([[341.5], np.linspace(3e6, 1e7, 499)])  # levelled off, no noise
    assert loss_rise(blown) == pytest.approx(blown[-50:].min() - 341.5)
    falling = np.linspace(300.0, 80.0, 500)
    assert loss_rise(falling) == pytest.approx(80.0 - 300.0)  # the last tenth's lowest: its end
    assert np.isnan(loss_rise(np.ones(99)))  # too few steps to judge
    with pytest.warns(mk.infer.ConvergenceWarning, match="ended above where it started.*500"):
        _convergence.warn_if_loss_rose(blown, 500)
    at_mode = 85.7 * (1 + 0.5 * RISE_TOLERANCE * rng.uniform(0.1, 1.0, size=500))
    at_mode[0] = 85.7
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.infer.ConvergenceWarning)
        _convergence.warn_if_loss_rose(falling, 500)
        _convergence.warn_if_loss_rose(at_mode, 500)  # above the start, but by rounding
        _convergence.warn_if_loss_rose(blown[:99], 99)


@pytest.mark.parametrize("learning_rate", [1e3, 1e6])
def test_a_map_whose_adam_blew_up_is_warned_about(learning_rate):
    """Adam at a learning rate far too large ends far above its first loss: a point much worse
    than its random start, returned silently before (its loss never fell, or blew up, then
    levelled off, so the share of the fall measured nothing). Warned, pointing at this file."""
    model, x, y = _logistic_regression(10.0)
    with pytest.warns(mk.infer.ConvergenceWarning, match="ended above where it started") as w:
        bad = mk.run_map(jax.random.key(0), model, x, y, num_steps=300,
                         learning_rate=learning_rate, progress_bar=False)  # fmt: skip
    assert any(r.filename == __file__ for r in w)
    from numpyro.infer.util import log_density

    start = mk.run_map(jax.random.key(0), model, x, y, num_steps=300, learning_rate=0.05,
                       progress_bar=False)  # fmt: skip
    worse = -log_density(model, (x, y), {}, bad.point())[0]
    better = -log_density(model, (x, y), {}, start.point())[0]
    assert worse > better + 10.0  # the warned point is far from the mode


def test_a_minibatch_map_that_fitted_noise_is_not_warned_about_its_first_loss():
    """A minibatch MAP's first loss is one noisy draw; on labels of pure noise the fit barely
    moves, and the last tenth's lowest loss sat above a lucky first draw in 2 of 20 seeds
    (seeds 0 and 5 here), which warned "ended above where it started" wrongly. A noisy loss
    must rise by more than 3 times its step noise."""
    import numpyro

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1)).astype(np.float32)
    y = rng.integers(0, 2, 2000).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        with numpyro.plate("data", inputs.shape[0], subsample_size=10) as i:
            numpyro.sample("y", dist.Bernoulli(logits=inputs[i] @ w), obs=labels[i])

    for seed in (0, 5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = mk.run_map(jax.random.key(seed), model, x, y, num_steps=300,
                             learning_rate=0.01, progress_bar=False)  # fmt: skip
        assert not [w for w in caught if "ended above" in str(w.message)]
        losses = np.asarray(fit.to_datatree()["optimization"]["loss"]).ravel()
        assert _convergence.loss_rise(losses) > 0  # the case the check must not warn about


def _minibatch_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.logistic(size=2000) > 0).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        with numpyro.plate("data", inputs.shape[0], subsample_size=10) as i:
            numpyro.sample("y", dist.Bernoulli(logits=inputs[i] @ w), obs=labels[i])

    return model, x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_a_minibatch_map_that_blew_up_is_warned_about_though_its_noise_grew_with_it(seed):
    """Adam at learning rate 100 on minibatches of 10 ends 7-30x above its start's full-data
    loss, but its minibatch losses are so noisy that the record cannot show it (the lowest
    loss of the last tenth is below the first loss: returned silently before). Judged on the
    same minibatches at both ends, it is warned about; at learning rate 0.1 it is not."""
    from numpyro.infer.util import log_density

    model, x, y = _minibatch_regression()
    with pytest.warns(mk.infer.ConvergenceWarning, match="same 64 draws of its minibatches"):
        bad = mk.run_map(jax.random.key(seed), model, x, y, num_steps=300, learning_rate=100.0,
                         progress_bar=False)  # fmt: skip
    losses = np.asarray(bad.to_datatree()["optimization"]["loss"]).ravel()
    assert not _convergence.loss_rise(losses) > 0  # the record alone shows no rise

    full = numpyro.handlers.substitute(model, data={"data": jax.numpy.arange(2000)})
    with warnings.catch_warnings():  # the full data, independently of the check, is meant
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        start = -log_density(full, (x, y), {}, {"w": np.zeros(3, np.float32)})[0]
        end = -log_density(full, (x, y), {}, bad.point())[0]
    assert end > 5 * start  # far worse than even an all-zero start
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.infer.ConvergenceWarning)
        mk.run_map(jax.random.key(seed), model, x, y, num_steps=300, learning_rate=0.1,
                   progress_bar=False)  # fmt: skip


def test_the_paired_rule_against_a_direct_computation():
    """A noisy record is judged by ``paired()``: a mean rise above 3 standard errors of the
    pairs' differences (and above the rounding tolerance) warns; the same rise with pairs that
    scatter more does not; without ``paired`` a noisy record is not judged."""
    rng = np.random.default_rng(3)
    noisy = 1000.0 + 100.0 * rng.normal(size=300)  # step noise far above 1e-3 of the loss
    start = 1000.0 + 50.0 * rng.normal(size=64)
    steady = start + 40.0 + 10.0 * rng.normal(size=64)  # z about 30
    scattered = start + 40.0 + 400.0 * rng.normal(size=64)  # z about 0.8
    with pytest.warns(mk.infer.ConvergenceWarning, match="same 64 draws.*above the starting"):
        _convergence.warn_if_loss_rose(noisy, 300, paired=lambda: (start, steady))
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.infer.ConvergenceWarning)
        _convergence.warn_if_loss_rose(noisy, 300, paired=lambda: (start, scattered))
        _convergence.warn_if_loss_rose(noisy, 300, paired=lambda: (start, start + 0.5))  # rounding
        _convergence.warn_if_loss_rose(1e7 + noisy, 300)  # noisy, nothing to pair: not judged
    exact = (np.full(1, 1000.0), np.full(1, 1040.0))  # a full-batch loss that oscillated
    with pytest.warns(mk.infer.ConvergenceWarning, match="loss is 1040, the starting point's 1000"):
        _convergence.warn_if_loss_rose(noisy, 300, paired=lambda: exact)
    with pytest.raises(FloatingPointError, match="loss at the fitted point is not finite"):
        _convergence.warn_if_loss_rose(noisy, 300, paired=lambda: (start, steady * np.nan))
    calls = []
    smooth = np.linspace(300.0, 80.0, 300)
    _convergence.warn_if_loss_rose(smooth, 300, paired=lambda: calls.append(1))
    assert not calls  # a loss without noise is judged by its record: nothing evaluated


@pytest.mark.parametrize("minibatch", [False, True])
def test_parameters_made_non_finite_by_the_last_step_are_an_error(minibatch):
    """The losses are checked before each update, so a last update that made the parameters
    NaN returned a NaN point without a word (a review found it with an optimiser whose last
    step scales by NaN). It is an error, as a non-finite loss at any step is."""
    import jax.numpy as jnp
    import optax

    model, x, y = _minibatch_regression() if minibatch else _logistic_regression(10.0)
    last_nan = optax.chain(
        optax.adam(1e-2), optax.scale_by_schedule(lambda n: jnp.where(n == 299, jnp.nan, 1.0))
    )
    with pytest.raises(FloatingPointError, match="parameters became non-finite at its last step"):
        mk.run_map(jax.random.key(0), model, x, y, num_steps=300, optimizer=last_nan,
                   progress_bar=False)  # fmt: skip
