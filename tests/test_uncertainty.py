"""Uncertainty summaries against independent NumPy/SciPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

import mtbkd_jax as mk


def _draws(seed=0, num_draws=200, num_examples=5, num_classes=4):
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.5, 5, size=(num_examples, num_classes))
    return np.stack([rng.dirichlet(a, size=num_draws) for a in alpha], axis=1)  # (S, N, C)


def test_mean_deviance_and_entropy_decomposition():
    q = _draws()
    md = -2 * (q * np.log(q)).sum(-1).mean(0)
    np.testing.assert_allclose(mk.mean_deviance(jnp.asarray(q)), md, rtol=1e-5)
    assert np.all(np.asarray(mk.mean_deviance(jnp.asarray(q))) <= 2 * np.log(4) + 1e-6)
    parts = mk.entropy_decomposition(jnp.asarray(q))
    total = stats.entropy(q.mean(0), axis=-1)
    aleatoric = stats.entropy(q, axis=-1).mean(0)
    np.testing.assert_allclose(parts["total"], total, rtol=1e-5)
    np.testing.assert_allclose(parts["aleatoric"], aleatoric, rtol=1e-5)
    np.testing.assert_allclose(parts["epistemic"], total - aleatoric, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(parts["epistemic"]) >= -1e-6)  # mutual information >= 0


def _exact_threshold(q_example, level):
    """Independent: sort all S*C values descending; the threshold is the value at which the
    cumulative mass (divided by S) first reaches the level."""
    values = np.sort(q_example.ravel())[::-1]
    cumulative = np.cumsum(values) / q_example.shape[0]
    return values[np.argmax(cumulative >= level)]


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_credible_threshold_by_bisection_matches_the_exact_sort(level):
    q = _draws(1)
    u, bound = mk.credible_threshold(jnp.asarray(q, jnp.float32), level)
    expected = np.array([_exact_threshold(q[:, i], level) for i in range(q.shape[1])])
    np.testing.assert_allclose(u, expected, rtol=1e-4)
    np.testing.assert_allclose(bound, -2 * np.log(expected), rtol=1e-3)
    # the defining property: at u the mass is >= level, just above u it is below
    q32 = np.asarray(q, np.float32)
    mass = np.where(q32 >= np.asarray(u)[None, :, None], q32, 0).sum(-1).mean(0)
    assert np.all(mass >= level - 1e-6)
    with pytest.raises(ValueError, match="level"):
        mk.credible_threshold(jnp.asarray(q), 1.5)


def test_class_intervals_are_posterior_quantiles():
    q = _draws(2)
    intervals = np.asarray(mk.class_intervals(jnp.asarray(q), 0.9))
    np.testing.assert_allclose(intervals[..., 0], np.quantile(q, 0.05, axis=0), rtol=1e-5)
    np.testing.assert_allclose(intervals[..., 1], np.quantile(q, 0.95, axis=0), rtol=1e-5)


def test_kde_mode_matches_scipy_gaussian_kde_on_the_same_grid():
    q = _draws(3, num_draws=100, num_examples=3)
    got = np.asarray(mk.kde_mode_prediction(jnp.asarray(q), num_grid=512))
    grid = np.linspace(0, 1, 512)
    expected = np.empty(q.shape[1:])
    for i in range(q.shape[1]):
        for c in range(q.shape[2]):
            expected[i, c] = grid[np.argmax(stats.gaussian_kde(q[:, i, c])(grid))]
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=2.5e-3)  # within about one grid cell
    # the mode is not the mean for skewed draws (the option changes the prediction)
    assert np.abs(got - q.mean(0)).max() > 0.01


def test_predictive_summary_in_chunks_equals_all_at_once():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    y = rng.integers(0, 3, 37)
    model = mk.MTBKDModel(mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0))), None)
    post = mk.run_svi(
        jax.random.key(0), model, x, y, num_steps=50, num_draws=40, progress_bar=False
    )
    summary = mk.predictive_summary(post, x, example_batch_size=10, kde_mode=True)
    probs = post.predict(x)
    np.testing.assert_allclose(summary["predictive_mean"], probs.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(summary["mean_deviance"], mk.mean_deviance(probs), rtol=1e-5)
    np.testing.assert_allclose(
        summary["credible_threshold"], mk.credible_threshold(probs)[0], rtol=1e-5
    )
    np.testing.assert_allclose(summary["class_intervals"], mk.class_intervals(probs), rtol=1e-5)
    assert summary["kde_mode"].shape == (37, 3)
