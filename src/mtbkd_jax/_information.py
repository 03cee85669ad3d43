"""The mutual information between the label and the parameters, from posterior draws,
without the cancellation of ``H(mean) - mean H``: for :mod:`mtbkd_jax.uncertainty` (JAX, on
the device) and :mod:`mtbkd_jax.selective` (NumPy, float64 on the host)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

__all__ = ["mutual_information"]


def mutual_information(draw_probs: Any, xp: Any = jnp) -> Any:
    """``mean_s sum_c q_sc log(q_sc / Q_c)``, (N,): ``log(q / Q)`` as ``log1p((q - Q) / Q)``
    where ``q`` is near ``Q`` (``q - Q`` exact from differences to draw 0), else
    ``log q - log Q``; terms with ``q = 0`` count 0. ``xp``: ``jax.numpy``, or ``numpy`` for
    float64 on the host."""
    offsets = draw_probs - draw_probs[0]
    mean_offset = offsets.mean(0)
    mean = draw_probs[0] + mean_offset  # exactly draw 0 where every draw equals it
    gap = offsets - mean_offset  # q - Q, without the cancellation of q - mean(q)
    positive = (draw_probs > 0) & (mean > 0)  # Q = 0 with q > 0: an underflow, the term ~ 0
    safe_mean = xp.where(positive, mean, 1.0)
    safe_probs = xp.where(positive, draw_probs, 1.0)
    near = xp.abs(gap) < 0.5 * safe_mean
    log_ratio = xp.where(near, xp.log1p(gap / safe_mean), xp.log(safe_probs) - xp.log(safe_mean))
    terms = xp.where(positive, draw_probs * log_ratio, 0.0)
    return xp.maximum(terms.sum(-1).mean(0), 0.0)
