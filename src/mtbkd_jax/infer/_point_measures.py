"""What the step-size pilots (:mod:`~mtbkd_jax.infer.step_size`) and the end-of-run check
(:mod:`~mtbkd_jax.infer._end_check`) measure at one point of a chain: the minibatch potential,
the product of two independent minibatch gradients (an unbiased ``|grad U|^2``), half their
squared difference (the trace of a minibatch gradient's noise covariance), Hutchinson's
estimate of the Hessian's trace, and whether the point is finite."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from mtbkd_jax.infer.psgld import _rademacher

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.gradients import GradientEstimator

__all__: list[str] = []


def _measure(estimator: GradientEstimator, position: PyTree, rng_key: jax.Array) -> dict:
    """At one point: ``U``, ``g1 . g2`` (independent minibatches), ``|g1 - g2|^2 / 2``,
    ``z . H z`` (Hutchinson), and whether the position is finite."""
    key1, key2, probe_key = jax.random.split(rng_key, 3)
    batch1, batch2 = estimator.sample_minibatch(key1), estimator.sample_minibatch(key2)
    return _measure_on(estimator, position, batch1, batch2, probe_key)


def _measure_on(
    estimator: GradientEstimator, position: PyTree, batch1: Any, batch2: Any, probe_key: jax.Array
) -> dict:
    """:func:`_measure` on two given minibatches (a streamed run's are gathered on the host)."""
    probe = _rademacher(probe_key, position)
    grad1, hvp = jax.jvp(lambda z: estimator(z, batch1), (position,), (probe,))
    grad2 = estimator(position, batch2)

    def total(f: Callable, a: PyTree, b: PyTree) -> jax.Array:
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return jnp.sum(jnp.stack([jnp.sum(f(x, y)) for x, y in pairs]))

    return {
        "potential": -estimator.logdensity(position, batch1),
        "square": total(jnp.multiply, grad1, grad2),
        "noise": total(lambda a, b: (a - b) ** 2, grad1, grad2) / 2,  # tr Cov of a minibatch grad
        "curvature": -total(jnp.multiply, probe, hvp),  # the Hessian of U = -log p
        "finite": total(lambda x, _: (~jnp.isfinite(x)).sum(), position, position) == 0,
    }
