"""Reading a NumPyro model's structure without computing (a trace with latent sites as zeros),
and the handler that gives a lifted network's sites ArviZ-friendly names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.primitives import Messenger

__all__ = ["abstract_trace", "full_batch", "DotDivider"]


def _zeros_for_latents(msg: dict[str, Any]) -> jax.Array | None:
    if msg["type"] != "sample" or msg.get("is_observed"):
        return None
    shape = tuple(msg["kwargs"].get("sample_shape", ())) + tuple(msg["fn"].shape())
    return jnp.zeros(shape, dtype=jnp.result_type(float))


def abstract_trace(
    model: Callable[..., Any], model_args: tuple[Any, ...], model_kwargs: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The model's trace with every latent site set to zeros (no draw from the prior, which
    an improper prior such as :func:`~mtbkd_jax.flat_prior` cannot give). Call it inside
    ``jax.eval_shape`` to compute nothing."""
    conditioned = handlers.substitute(handlers.seed(model, 0), substitute_fn=_zeros_for_latents)
    return handlers.trace(conditioned).get_trace(*model_args, **model_kwargs)


def _all_indices(msg: dict[str, Any]) -> jax.Array | None:
    return jnp.arange(msg["args"][0]) if msg["type"] == "plate" else None


def full_batch(model: Callable[..., Any]) -> Callable[..., Any]:
    """The model with every plate given all its indices, whatever its ``subsample_size`` (for
    the pointwise log-likelihood of every example; NumPyro warns that the subsample size does
    not match, which the callers silence)."""
    return handlers.substitute(model, substitute_fn=_all_indices)


class DotDivider(Messenger):
    """Rewrite the '/' that NumPyro's flax scope puts in site names as '.'."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix + "/"
        super().__init__()

    def process_message(self, msg: dict[str, Any]) -> None:
        name = msg.get("name")
        if name and name.startswith(self.prefix):
            msg["name"] = name.replace("/", ".")
