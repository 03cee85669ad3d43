"""The NumPyro bridge for minibatch samplers and optimisers.

A NumPyro model's potential ``U(z) = -log p(z, D)`` on the unconstrained space, evaluated on a
minibatch by *substituting* the indices of the model's subsampled plates. NumPyro then scales
every site inside a plate by ``N / |B|`` (likelihood and teacher prior alike) and counts the
base prior once: exactly the SGLD potential of METHOD §5. The samplers draw the indices, a
permutation per plate per epoch (:mod:`mtbkd_jax.infer._orders`), so a step costs O(|B|), not
O(N) (NumPyro's own subsampling on the CPU shuffles all N indices at every call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.infer import init_to_uniform
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

__all__ = ["MinibatchPotential", "PlateSpec"]


@dataclass(frozen=True)
class PlateSpec:
    """A subsampled plate: its name, its full size N and the minibatch size |B|."""

    name: str
    size: int
    batch_size: int

    def __post_init__(self):
        if not 1 <= self.batch_size <= self.size:
            raise ValueError(
                f"batch size of plate {self.name!r} must lie in 1..{self.size}, "
                f"got {self.batch_size}"
            )

    def indices(self, permutation: jax.Array, step_in_epoch) -> jax.Array:
        """The minibatch at a step: the next |B| entries of this epoch's permutation."""
        start = step_in_epoch * self.batch_size
        return jnp.take(permutation, jnp.mod(start + jnp.arange(self.batch_size), self.size))


class MinibatchPotential:
    """``logdensity(z, batch)`` and its gradient for a NumPyro model on minibatches.

    Args:
        model: the NumPyro model.
        model_args, model_kwargs: its data (arrays are passed through jit as arguments).
        plates: the subsampled plates (their names in the model).
    """

    def __init__(self, model: Callable, model_args: tuple, model_kwargs: dict, plates):
        self.model = model
        self.model_args = model_args
        self.model_kwargs = model_kwargs
        self.plates = tuple(plates)
        if not self.plates:
            raise ValueError("plates must name at least one subsampled plate")

    def _substituted(self, batch: dict):
        return handlers.substitute(self.model, data=batch)

    def logdensity(self, position: dict, batch: dict) -> jax.Array:
        """``log p(z, D)`` estimated on the minibatch ``batch`` (plate name -> indices)."""
        return -potential_energy(
            self._substituted(batch), self.model_args, self.model_kwargs, position
        )

    def grad(self, position: dict, batch: dict) -> dict:
        """The minibatch gradient of the log density (BlackJAX's ``grad_estimator``)."""
        return jax.grad(self.logdensity)(position, batch)

    def full_batch(self) -> dict:
        """Indices covering every example of every plate."""
        return {p.name: jnp.arange(p.size) for p in self.plates}

    def first_batch(self) -> dict:
        return {p.name: jnp.arange(p.batch_size) for p in self.plates}

    def initial_position(self, rng_key: jax.Array, init_strategy=None) -> dict:
        """A starting point on the unconstrained space (default ``init_to_uniform(0.5)``)."""
        info = initialize_model(
            rng_key,
            self._substituted(self.first_batch()),
            init_strategy=init_strategy or init_to_uniform(radius=0.5),
            model_args=self.model_args,
            model_kwargs=self.model_kwargs,
        )
        return info.param_info.z

    def constrain(self, position: dict) -> dict:
        """Map unconstrained values to the model's sample sites (identity for real weights)."""
        return constrain_fn(
            self._substituted(self.first_batch()), self.model_args, self.model_kwargs, position
        )
