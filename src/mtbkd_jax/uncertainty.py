"""Predictive summaries over posterior draws ``q_s = softmax(f_theta_s(x))``, shape (S, N, C)."""

from __future__ import annotations

import jax
from jax.scipy.special import xlogy

__all__ = ["predictive_mean", "mean_deviance", "entropy_decomposition"]


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
