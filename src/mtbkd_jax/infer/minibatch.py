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
import numpy as np
from numpyro import handlers
from numpyro.infer import init_to_uniform
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from mtbkd_jax._tracing import abstract_trace

__all__ = [
    "MinibatchPotential",
    "PlateSpec",
    "ModelStructure",
    "model_structure",
]


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


@dataclass(frozen=True)
class ModelStructure:
    """What a NumPyro model's trace says about it, read without computing anything.

    Attributes:
        plates: every plate, in the order the model enters them.
        minibatched: the plates declared with a ``subsample_size`` (a minibatch plan; the
            size may equal the plate's for a small data set).
        latent_shapes: each latent (not observed) sample site's shape.
        observed: the observed sample sites' names (factors excluded).
    """

    plates: tuple[PlateSpec, ...]
    minibatched: tuple[PlateSpec, ...]
    latent_shapes: dict
    observed: tuple[str, ...]
    deterministic: tuple[str, ...] = ()

    @property
    def subsampled(self) -> tuple[PlateSpec, ...]:
        """The plates that really subsample (``subsample_size < size``)."""
        return tuple(p for p in self.minibatched if p.batch_size < p.size)


def model_structure(model: Callable, model_args: tuple, model_kwargs: dict) -> ModelStructure:
    """Trace ``model(*model_args, **model_kwargs)`` abstractly (``jax.eval_shape``: no compute)
    and return its plates, latent sites and observed sites."""
    found: dict = {}

    def run():
        trace = abstract_trace(model, model_args, model_kwargs)
        plates, minibatched, latent, observed, deterministic = [], [], {}, [], []
        for name, site in trace.items():
            if site["type"] == "plate":
                size, subsample_size = site["args"]
                batch = size if subsample_size is None else subsample_size
                if site["value"] is not None and np.shape(site["value"])[0] == size:
                    batch = size  # all indices given (a full-batch evaluation)
                plates.append(PlateSpec(name, int(size), int(batch)))
                if subsample_size is not None:
                    minibatched.append(plates[-1])
            elif site["type"] == "sample" and not site["is_observed"]:
                latent[name] = site["value"]
            elif site["type"] == "sample" and not _is_factor(site["fn"]):
                observed.append(name)
            elif site["type"] == "deterministic":
                deterministic.append(name)
        found.update(
            plates=tuple(plates),
            minibatched=tuple(minibatched),
            observed=tuple(observed),
            deterministic=tuple(deterministic),
        )
        return latent

    shapes = jax.eval_shape(run)
    latent_shapes = {k: tuple(v.shape) for k, v in shapes.items()}
    return ModelStructure(
        found["plates"],
        found["minibatched"],
        latent_shapes,
        found["observed"],
        found["deterministic"],
    )


def _is_factor(fn) -> bool:
    """Whether a site's distribution is ``numpyro.factor``'s ``Unit`` (possibly wrapped)."""
    import numpyro.distributions as dist

    while True:
        if isinstance(fn, dist.Unit):
            return True
        inner = getattr(fn, "base_dist", None)
        if inner is None:
            return False
        fn = inner


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
