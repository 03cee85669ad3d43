"""``log_softmax(x / T)`` that stays a distribution at every temperature.

Dividing first and normalising after (``log_softmax(x / T)``) cancels catastrophically when
``|x| / T`` is large: XLA may compute ``x / T`` as ``x * (1 / T)`` in one fused loop and as a
true division in another, and at ``x / T ~ 1e8`` one rounding step of either is worth several
nats, so the largest "probability" came out at 20 or ``inf`` (a one-teacher bank at
``T = 1e-8``). Shifting by the row's largest finite entry *before* dividing makes the largest
entry exactly 0 at every ``T``; the shift is constant along ``axis``, so the function, and its
gradient, are those of ``log_softmax(x / T)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tempered_log_softmax(x: jax.Array, temperature: jax.Array | float, axis: int = -1) -> jax.Array:
    """``log_softmax(x / T)`` along ``axis``, computed as ``log_softmax((x - max x) / T)``.

    ``x`` may hold ``-inf`` (a class of probability zero stays at zero); ``temperature`` is
    positive and constant along ``axis`` (a scalar, or an array of size 1 there that broadcasts
    over the other axes: a temperature that varied across classes would not be ``x / T``).
    """
    finite = jnp.where(jnp.isfinite(x), x, -jnp.inf)
    shift = jax.lax.stop_gradient(jnp.max(finite, axis=axis, keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)  # a row without a finite entry: no shift
    zero = jnp.isneginf(x)  # -inf / T has gradient NaN in T: divided as 0, put back after
    scaled = (jnp.where(zero, 0.0, x) - shift) / temperature
    return jax.nn.log_softmax(jnp.where(zero, -jnp.inf, scaled), axis=axis)


def logsumexp_or_neginf(x: jax.Array, axis: int = -1) -> jax.Array:
    """``logsumexp`` along ``axis``, ``-inf`` where every entry is ``-inf`` (an entropy of an
    exactly one-hot teacher, a sum of no terms), with a zero gradient there: ``logsumexp``'s
    own is ``exp(-inf - (-inf))``, NaN, which reached a learned trust's temperatures."""
    empty = jnp.isneginf(x).all(axis=axis, keepdims=True)
    out = jax.scipy.special.logsumexp(jnp.where(empty, 0.0, x), axis=axis, keepdims=True)
    return jnp.squeeze(jnp.where(empty, -jnp.inf, out), axis=axis)
