"""Whether a MAP had converged: the loss's fall over its last steps, recorded and warned about."""

import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import mtbkd_jax as mk
from mtbkd_jax.infer import _convergence
from mtbkd_jax.infer._convergence import MAP_TOLERANCE, final_loss_change


def test_final_loss_change_against_a_direct_computation():
    losses = np.linspace(100.0, 50.0, 200)  # falls by 0.25 a step
    expected = (losses[-40:-20].mean() - losses[-20:].mean()) / losses[-20:].mean()
    assert final_loss_change(losses) == pytest.approx(expected, rel=1e-12)
    # by hand: steps of 50 / 199; the windows' means 20 steps apart; the last mean 50 + 9.5 steps
    step = 50.0 / 199
    assert final_loss_change(losses) == pytest.approx(20 * step / (50 + 9.5 * step), rel=1e-9)
    # a flat loss, an oscillating one around a flat level, and one near 0 (floored scale)
    assert final_loss_change(np.full(300, -7.0)) == 0.0
    wiggle = 3.0 + 0.5 * (-1.0) ** np.arange(400)
    assert abs(final_loss_change(wiggle)) < 1e-12
    # a loss near 0: its fall over 10 of 99 steps of 0.02 / 99, over a scale floored at 1
    assert final_loss_change(np.linspace(0.02, 0.0, 100)) == pytest.approx(0.2 / 99, rel=1e-6)
    assert np.isnan(final_loss_change(np.arange(19.0)))  # too few steps to judge


def _logistic_regression(scale):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.logistic(size=200) > 0).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, scale).expand([3]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=inputs @ w).to_event(1), obs=labels)

    return model, x, y


def test_a_map_stopped_while_its_loss_falls_is_warned_about_and_a_converged_one_is_not():
    """Adam at a tiny learning rate for 100 steps is still walking downhill: warned, naming
    num_steps, with the fall recorded; 2,000 steps at 0.05 reach the mode: no warning, and the
    recorded fall is below the tolerance. SVI with a Normal guide records it too, unwarned."""
    model, x, y = _logistic_regression(10.0)
    with pytest.warns(mk.infer.ConvergenceWarning, match="still falling.*100 steps.*num_steps"):
        early = mk.run_map(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                           progress_bar=False)  # fmt: skip
    assert early.settings["final_loss_change"] > MAP_TOLERANCE
    # a loss that rose over the last tenth (an unstable optimiser) is no convergence either
    with pytest.warns(mk.infer.ConvergenceWarning, match="rising again"):
        _convergence.warn_if_not_converged(-5 * MAP_TOLERANCE, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.infer.ConvergenceWarning)
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
