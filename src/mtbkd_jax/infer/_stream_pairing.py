"""A streamed run's start-up check that the model pairs each streamed row with its own.

Under ``stream=True`` a step's model sees the minibatch's gathered rows, and its subsampled
plates hand out the indices ``0 .. |B| - 1`` of those rows
(:class:`~mtbkd_jax.infer.streaming.StreamedPlates`). An array the model reaches any other way
(one it closes over, a ``numpyro.param`` without ``event_dim``) and indexes with the plate's
indices gets its rows ``0 .. |B| - 1`` at every step, whatever examples the minibatch holds: a
silently wrong log density. No handler sees such an array, but its effect can be seen: reorder
the rows of one minibatch, every streamed array by the same permutation per plate, and a model
that pairs rows only with each other computes the same per-example terms in another order;
one that pairs them with a fixed array computes other terms.

The check runs each sample site's elementwise log density at the first chain's start on the
first minibatch and on its rows shifted by one place (a permutation that moves every row), and
compares the two as sorted values (a sum in another order would move the last bits, and a
large prior could hide a small likelihood's change in the total). Terms that depend on their
whole minibatch symmetrically (a batch mean) pass, as they should.

*What it cannot see.* The check sees only the closed-over array's rows ``0 .. |B| - 1``, the
rows every streamed step would read. Where those rows are all equal it passes, though the
array differs further down: data stored sorted (by class, by group) with a per-class weight
closed over is such a case (a review's logistic regression with class-balancing weights and
sorted labels passed, and its streamed intercept came out 7.7 posterior sds from the
device-resident run's). Per-example arrays belong in the model's arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from numpyro.handlers import substitute, trace

from mtbkd_jax.infer.streaming import StreamedPlates

if TYPE_CHECKING:
    from mtbkd_jax.infer.streaming import StreamedEstimator

__all__ = ["check_row_pairing"]

_RTOL = 1e-4  # float32 terms computed for the same rows in another batch position


def _site_terms(estimator: StreamedEstimator, params: dict, minibatch: tuple) -> dict:
    """Each sample site's elementwise log density on ``minibatch`` (gathered rows)."""
    args, arrays = estimator.rows.assemble(minibatch, estimator.resident)
    model = substitute(StreamedPlates(estimator.model, estimator.plates), data=params)
    sites = trace(model).get_trace(*args, **arrays, **estimator.static)
    return {
        name: site["fn"].log_prob(site["value"])
        for name, site in sites.items()
        if site["type"] == "sample"
    }


def _differs(first: Any, moved: Any) -> bool:
    a, b = np.sort(np.ravel(first)), np.sort(np.ravel(moved))
    if a.shape != b.shape:
        return True
    scale = max(1.0, float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)))
    return not np.allclose(a, b, rtol=_RTOL, atol=_RTOL * scale, equal_nan=True)


def check_row_pairing(estimator: StreamedEstimator, position: dict) -> None:
    """Refuse a streamed model whose log density pairs its minibatch's rows with something
    that does not move with them (module docstring).

    Args:
        estimator: the run's streamed estimator.
        position: one chain's unconstrained start.

    Raises:
        ValueError: naming the sites whose terms changed and what to do.
    """
    if all(p.batch_size < 2 for p in estimator.plates):
        return  # one row a step: nothing to reorder
    shifted = {p.name: np.roll(np.arange(p.batch_size), 1) for p in estimator.plates}
    moved = tuple(jax.numpy.asarray(r) for r in estimator.rows.take(shifted))
    params = estimator.constrain(position)
    terms = jax.jit(lambda rows: _site_terms(estimator, params, rows))
    first, other = jax.device_get(terms(estimator.first)), jax.device_get(terms(moved))
    changed = [name for name in first if _differs(first[name], other[name])]
    if changed:
        raise ValueError(
            "stream=True: the log density of site(s) "
            + ", ".join(repr(n) for n in changed)
            + " changed when the rows of one minibatch were reordered together, so the model "
            "pairs its streamed rows with something that does not move with them: most likely "
            "a per-example array it closes over (or a numpyro.param without event_dim) indexed "
            "by the plate's indices, which under stream=True are 0 .. |B| - 1 of the minibatch. "
            "Pass such arrays in model_kwargs (they are then streamed with the rows), or run "
            "without stream=True"
        )
