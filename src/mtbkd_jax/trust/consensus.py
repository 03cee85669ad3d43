"""The teachers' consensus on each example: which class's concentration ``lambda_{m,k}`` a
teacher's Dirichlet takes there (:mod:`mtbkd_jax.trust.sites`). Label-free, so it exists on
unlabelled transfer inputs too."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = ["CONSENSUS_TIE_TOLERANCE", "consensus_class", "consensus_weights"]


def consensus_class(log_probs: jax.Array) -> jax.Array:
    """The argmax of the teachers' mean probabilities, shape (N,), from (M, N, C) (a tie goes
    to the lowest class: the trust itself uses :func:`consensus_weights`, which shares it)."""
    return jnp.argmax(logsumexp(log_probs, axis=0), axis=-1).astype(jnp.int32)


CONSENSUS_TIE_TOLERANCE = 1e-6


def consensus_weights(log_probs: jax.Array) -> jax.Array:
    """Each example's consensus over the classes, shape (N, C) from (M, N, C): one-hot on the
    argmax of the teachers' mean probabilities, shared equally among classes tied for it (log
    mean probabilities within ``CONSENSUS_TIE_TOLERANCE`` of the largest, which absorbs the
    float rounding of the mean). An example's per-class concentration is then the mean of its
    tied classes' ``lambda``: equivariant under relabelling the classes or reordering the
    teachers, where an argmax charges every tie (two one-hot teachers that disagree, a uniform
    teacher) to the lowest class index. Without ties the weights are one-hot and ``lambda`` is
    exactly the consensus class's."""
    log_mean = logsumexp(log_probs, axis=0)  # (N, C), up to log M
    top = jnp.max(log_mean, axis=-1, keepdims=True)
    tied = log_mean >= top - CONSENSUS_TIE_TOLERANCE
    return (tied / jnp.sum(tied, axis=-1, keepdims=True)).astype(jnp.float32)


def per_example_concentration(concentration: jax.Array, consensus: jax.Array) -> jax.Array:
    """``lambda_im`` (M, N) from ``lambda`` (M, K) (K = 1: one per teacher; K = C: per class)
    and the consensus: weights (N, C) (:func:`consensus_weights`) or classes (N,)."""
    num_examples = consensus.shape[0]
    if concentration.shape[-1] == 1:
        return jnp.broadcast_to(concentration, concentration.shape[:1] + (num_examples,))
    if consensus.ndim == 1:
        return jnp.take(concentration, consensus, axis=1)
    # exact for one-hot weights: the consensus class's lambda plus zeros
    return jnp.einsum("mc,nc->mn", concentration, consensus, precision="highest")
