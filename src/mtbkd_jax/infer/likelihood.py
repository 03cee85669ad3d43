"""Pointwise log-likelihood of a NumPyro model's observed sites, for every posterior draw.

What ArviZ's ``loo`` / ``waic`` need: ``log p(y_i | theta_s)`` for each observed site, computed
from the model's own sites (whatever their distribution: a tempered likelihood, a user's own),
not from a formula that assumes one. It is ``numpyro.infer.log_likelihood`` in substance
(``site["fn"].log_prob(site["value"])`` of every observed site, without the plates' scales),
with three differences: factors (``numpyro.factor``, such as the teacher prior) are left out,
as they are no likelihood; subsampled plates are given all their indices, so the result covers
every example; and draws are evaluated ``draw_batch_size`` at a time inside one jitted
``lax.map``, so memory holds a batch of draws, never all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from mtbkd_jax._tracing import full_batch
from mtbkd_jax.infer.minibatch import _is_factor, model_structure

__all__ = ["pointwise_log_likelihood", "has_observed_sites"]


def has_observed_sites(model: Callable, model_args: tuple, model_kwargs: dict | None) -> bool:
    """Whether the model has an observed sample site (a likelihood written as a
    ``numpyro.factor`` is not one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        structure = model_structure(full_batch(model), model_args, dict(model_kwargs or {}))
    return bool(structure.observed)


def pointwise_log_likelihood(
    model: Callable,
    draws: dict,
    model_args: tuple,
    model_kwargs: dict | None = None,
    *,
    draw_batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """``log p(site | theta_s)`` of every observed site for every draw.

    Args:
        model: the NumPyro model.
        draws: site name -> array ``(S, *shape)`` (draws flattened over chains).
        model_args, model_kwargs: the data the model is evaluated on.
        draw_batch_size: draws evaluated together.

    Returns:
        Observed site name -> array ``(S, *site shape)`` (float32 NumPy).
    """
    kwargs = dict(model_kwargs or {})
    model = full_batch(model)  # every example, whatever the plates' subsample_size
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        structure = model_structure(model, model_args, kwargs)
    if not structure.observed:
        raise ValueError(
            "the model has no observed sample site (obs=...); there is no likelihood to "
            "evaluate pointwise"
        )
    missing = sorted(set(structure.latent_shapes) - set(draws))
    if missing:
        raise ValueError(
            f"draws has no values for the model's latent sites {missing}; they would be drawn "
            "from the prior instead"
        )
    is_array = [isinstance(a, jax.Array | np.ndarray) for a in model_args]
    traced_args = tuple(a for a, flag in zip(model_args, is_array, strict=True) if flag)
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array | np.ndarray)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}

    def merge(traced: tuple[jax.Array, ...]) -> tuple[Any, ...]:
        it = iter(traced)
        return tuple(next(it) if flag else a for a, flag in zip(model_args, is_array, strict=True))

    def one(
        draw: dict[str, jax.Array], traced: tuple[jax.Array, ...], arrays: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        args = merge(traced)
        conditioned = handlers.substitute(model, data=draw)
        with warnings.catch_warnings():  # all indices of a plate declared with subsample_size
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            trace = handlers.trace(handlers.seed(conditioned, 0)).get_trace(
                *args, **arrays, **static
            )
        return {
            name: site["fn"].log_prob(site["value"])
            for name, site in trace.items()
            if site["type"] == "sample" and site["is_observed"] and not _is_factor(site["fn"])
        }

    @jax.jit
    def run(
        draws: dict[str, jax.Array], traced: tuple[jax.Array, ...], arrays: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        return jax.lax.map(lambda d: one(d, traced, arrays), draws, batch_size=draw_batch_size)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        out = run({k: jnp.asarray(v) for k, v in draws.items()}, traced_args, arrays)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
