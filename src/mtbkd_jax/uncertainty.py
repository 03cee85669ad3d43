"""Predictive summaries over posterior draws ``q_s = softmax(f_theta_s(x))``, shape (S, N, C).

Pure functions of an (S, N, C) array, plus :func:`predictive_summary`, which evaluates a
posterior on inputs in chunks of examples so that no (S, N, C) array is ever held for all N.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

__all__ = [
    "predictive_mean",
    "mean_deviance",
    "entropy_decomposition",
    "credible_threshold",
    "class_intervals",
    "kde_mode_prediction",
    "predictive_summary",
]


@jax.jit
def predictive_mean(draw_probs: jax.Array) -> jax.Array:
    """The posterior predictive mean ``Q(x) = mean_s q_s``, shape (N, C)."""
    return draw_probs.mean(0)


@jax.jit
def mean_deviance(draw_probs: jax.Array) -> jax.Array:
    """The paper's uncertainty score ``MD(x) = mean_s sum_c -2 q_sc log q_sc``, shape (N,).

    Natural log; it lies in ``[0, 2 log C]``.
    """
    return (-2.0 * xlogy(draw_probs, draw_probs).sum(-1)).mean(0)


@jax.jit
def entropy_decomposition(draw_probs: jax.Array) -> dict[str, jax.Array]:
    """``H(Q) = mean_s H(q_s) + MI``: total, aleatoric (expected) and epistemic (MI), (N,) each."""
    mean = draw_probs.mean(0)
    total = -xlogy(mean, mean).sum(-1)
    aleatoric = (-xlogy(draw_probs, draw_probs).sum(-1)).mean(0)
    return {"total": total, "aleatoric": aleatoric, "epistemic": total - aleatoric}


def credible_threshold(draw_probs, level: float = 0.95, num_iterations: int = 60):
    """The paper's credible threshold per example, by bisection (METHOD §6).

    Finds the largest ``u`` with ``mean_s sum_c q_sc 1[q_sc >= u] >= level``: the class
    probabilities at least ``u`` carry ``level`` of the posterior predictive mass. Its bound on
    the deviance scale is ``-2 log u``.

    Returns:
        ``(u, deviance_bound)``, each of shape (N,).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return _credible_threshold(jnp.asarray(draw_probs), float(level), int(num_iterations))


@jax.jit(static_argnums=(1, 2))
def _credible_threshold(draw_probs, level, num_iterations):
    def mass_above(u):  # (N,)
        return jnp.where(draw_probs >= u[None, :, None], draw_probs, 0.0).sum(-1).mean(0)

    def body(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        enough = mass_above(mid) >= level
        return jnp.where(enough, mid, low), jnp.where(enough, high, mid)

    num_examples = draw_probs.shape[1]
    low, _ = jax.lax.fori_loop(
        0, num_iterations, body, (jnp.zeros(num_examples), jnp.ones(num_examples))
    )
    return low, -2.0 * jnp.log(low)


def class_intervals(draw_probs, level: float = 0.95) -> jax.Array:
    """Equal-tailed credible intervals of each class probability, shape (N, C, 2)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0
    bounds = jnp.quantile(jnp.asarray(draw_probs), jnp.array([tail, 1.0 - tail]), axis=0)
    return jnp.moveaxis(bounds, 0, -1)


def kde_mode_prediction(draw_probs, num_grid: int = 512) -> jax.Array:
    """The reference notebook's point prediction: per class, the mode of a Gaussian KDE of the S
    draws ``q_sc`` (Scott's bandwidth, evaluated on a grid over [0, 1]), renormalised.

    Returns:
        Probabilities (N, C); take ``argmax`` for the class.
    """
    return _kde_mode(jnp.asarray(draw_probs), int(num_grid))


@jax.jit(static_argnums=1)
def _kde_mode(draw_probs, num_grid):
    num_draws = draw_probs.shape[0]
    grid = jnp.linspace(0.0, 1.0, num_grid)
    # Scott's rule as in scipy.stats.gaussian_kde: bandwidth = sd * S^(-1/5), sd with ddof=1
    sd = jnp.std(draw_probs, axis=0, ddof=1)
    bandwidth = jnp.maximum(sd * num_draws ** (-1.0 / 5.0), 1e-12)  # (N, C)
    z = (grid[:, None, None, None] - draw_probs[None]) / bandwidth[None, None]  # (G, S, N, C)
    density = jnp.exp(-0.5 * z**2).sum(1)  # (G, N, C), common factors dropped
    mode = grid[jnp.argmax(density, axis=0)]  # (N, C)
    degenerate = sd <= 0
    mode = jnp.where(degenerate, draw_probs[0], mode)
    return mode / mode.sum(-1, keepdims=True)


def predictive_summary(
    posterior,
    inputs,
    *,
    level: float = 0.95,
    example_batch_size: int = 512,
    draw_batch_size: int = 64,
    kde_mode: bool = False,
) -> dict[str, np.ndarray]:
    """Every per-example summary of a posterior on ``inputs``, computed in chunks of examples.

    Memory is ``S * example_batch_size * C`` at a time, never ``S * N * C``.

    Returns:
        A dict of NumPy arrays: ``predictive_mean`` (N, C), ``mean_deviance``,
        ``credible_threshold``, ``deviance_bound``, ``total_entropy``, ``aleatoric``,
        ``epistemic`` (N,), ``class_intervals`` (N, C, 2), and ``kde_mode`` (N, C) if asked.
    """
    if example_batch_size < 1:
        raise ValueError(f"example_batch_size must be >= 1, got {example_batch_size}")
    inputs = np.asarray(inputs)
    parts = []
    for start in range(0, inputs.shape[0], example_batch_size):
        probs = posterior.predict(
            inputs[start : start + example_batch_size], draw_batch_size=draw_batch_size
        )
        u, bound = credible_threshold(probs, level)
        entropies = entropy_decomposition(probs)
        part = {
            "predictive_mean": predictive_mean(probs),
            "mean_deviance": mean_deviance(probs),
            "credible_threshold": u,
            "deviance_bound": bound,
            "total_entropy": entropies["total"],
            "aleatoric": entropies["aleatoric"],
            "epistemic": entropies["epistemic"],
            "class_intervals": class_intervals(probs, level),
        }
        if kde_mode:
            part["kde_mode"] = kde_mode_prediction(probs)
        parts.append({k: np.asarray(v) for k, v in part.items()})
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
