"""A student's base prior by value, for run fingerprints (:meth:`mtbkd_jax.Student.prior_digest`).

A prior given as a function, a distribution or a dict has no other stable description: its
``repr`` holds a memory address. So each weight's prior log density at two fixed probe points
is hashed, with the weight's name, shape and distribution type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution

__all__ = ["prior_digest"]


def prior_digest(prior: object, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The hex digest of ``prior`` (a distribution, a ``(name, shape) -> Distribution``
    callable or a dict of path -> distribution) on the weights ``shapes`` (path -> shape)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, shape in sorted(shapes.items()):
        weight_prior: Any = prior
        if isinstance(prior, dict):
            weight_prior = prior.get(name)
        elif callable(prior) and not isinstance(prior, Distribution):
            weight_prior = prior(name, shape)
        digest.update(f"{name}{shape}{type(weight_prior).__name__}".encode())
        if weight_prior is None:  # not sampled (a dict prior without this weight)
            continue
        index = jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape)
        for probe in (0.3 * jnp.sin(index + 0.5), 2.0 * jnp.cos(index)):
            value = jnp.sum(weight_prior.log_prob(probe))
            digest.update(np.asarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()
