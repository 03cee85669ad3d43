"""Full plates under substituted indices: ``numpyro.subsample`` and ``numpyro.param`` rows in
the order the model's own indexing sees.

A plate declared with ``subsample_size`` equal to its size takes every example at every step,
and SG-MCMC still substitutes that step's indices, a permutation of ``0 .. N - 1``. A model
that indexes its data by hand, ``x[idx]``, then sees its rows in that order, but NumPyro's
plate returns ``numpyro.subsample(y, event_dim)`` (and a ``numpyro.param(..., event_dim)``)
whole and unpermuted, as it does whenever nothing is subsampled: the labels would be paired
with another example's inputs, a silently wrong likelihood. :class:`FullPlateOrder` takes those
rows in the substituted order first, so every site of the plate sees the same examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp
from numpyro.primitives import _PYRO_STACK, Messenger, plate

__all__ = ["FullPlateOrder"]


class FullPlateOrder(Messenger):
    """Permute ``numpyro.subsample`` / ``numpyro.param(..., event_dim)`` values under the full
    plates ``names`` by the plate's (substituted) indices. Wraps the substituted model, so its
    ``postprocess_message`` runs before the plates' own, which then find nothing to take."""

    def __init__(self, fn: Callable | None, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        super().__init__(fn)

    def postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] not in ("subsample", "param"):
            return
        event_dim = msg["kwargs"].get("event_dim")
        if event_dim is None:
            return
        for frame in _PYRO_STACK:
            if not isinstance(frame, plate) or frame.name not in self.names or frame.dim is None:
                continue
            if frame.subsample_size != frame.size:
                continue
            dim = frame.dim - event_dim
            shape = jnp.shape(msg["value"])
            if len(shape) >= -dim and shape[dim] == frame.size:
                msg["value"] = jnp.take(msg["value"], frame._indices, dim)
