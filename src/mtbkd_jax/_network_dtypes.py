"""The dtypes at a student network's two ends: the front-ends pass every input as float32 (a
network of integer ids must cast them back), and logits are taken in at least float32."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["at_least_float32", "integer_ids_error", "takes_integers"]

_PACKAGE = str(Path(__file__).parent)  # warnings point at the user's line, outside it


def at_least_float32(net: Callable[[jax.Array], Any]) -> Callable[[jax.Array], Any]:
    """``net`` with bfloat16 / float16 logits given as float32: the likelihood and the teacher
    prior summed over a batch in half precision step by nats (a staircase potential)."""

    def apply(x: jax.Array) -> Any:
        out = net(x)
        dtype = getattr(out, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            return out
        if jnp.finfo(dtype).bits < 32:  # traced, not per step; once per calling line
            warnings.warn(
                f"the student network computes its logits in {jnp.dtype(dtype).name}: the "
                "likelihood and teacher prior are taken in float32, but at that precision the "
                "logits, so the potential NUTS and SG-MCMC follow, move in steps; build the "
                "network with dtype=float32 for inference",
                UserWarning,
                skip_file_prefixes=(_PACKAGE,),
            )
        return out.astype(jnp.promote_types(dtype, jnp.float32))

    return apply


def takes_integers(logits: Callable[[jax.Array], Any], shape: tuple[int, ...]) -> bool:
    """Whether ``logits``, which refused float32 inputs of ``shape``, takes integer ids."""
    try:
        jax.eval_shape(logits, jax.ShapeDtypeStruct(shape, jnp.int32))
    except Exception:  # noqa: BLE001 - any failure: not an integer-taking network either
        return False
    return True


def integer_ids_error(argument: str) -> ValueError:
    """What a network of integer ids is told (it was told a feature width it does not have)."""
    return ValueError(
        f"{argument}: the student network takes integer ids (e.g. nnx.Embed), but the "
        "inference front-ends pass every input as float32; cast them back in the network "
        "(x.astype(jnp.int32): exact for ids below 2**24), or give the embedding as a frozen "
        "feature_extractor"
    )
