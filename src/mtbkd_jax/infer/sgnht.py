"""The stochastic gradient Nosé-Hoover thermostat (Ding et al., 2014) as a pure kernel.

SGHMC whose friction is a state variable, the thermostat ``xi``:
``z <- z + h r``; ``r <- (1 - xi h) r + h grad log p + sqrt(2 A h tau) xi_noise``;
``xi <- xi + h (r.r / d - tau)``. The thermostat rises until the mean kinetic energy per
coordinate is ``tau``, so it absorbs the minibatch gradient's noise, which SGHMC must be told
(BlackJAX's ``sgnht`` diffusion; ``A`` is its ``alpha``, the injected noise). The momentum starts
at zero and the thermostat at ``A``.

From a start far from the mode the thermostat overshoots (the large gradients heat the
momentum, so ``xi`` climbs well above ``A``) and comes back down at a rate of at most ``tau``
per unit of time: the draws of that stretch are too narrow (a posterior sd of 0.85 of the
exact one after a short run from a far start on a Gaussian mean; 0.99 from near the mode).
Warm-start (``warm_start_epochs``) or burn in long enough for ``xi`` to settle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax._checks import require_nonnegative_values
from mtbkd_jax.infer._state_fields import field_by_name, fields_only
from mtbkd_jax.infer.langevin import sgnht_update

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["SGNHTState", "SGNHTInfo", "init", "build_kernel", "sgnht"]


@fields_only
class SGNHTState(NamedTuple):
    """Position, momentum and the (scalar) thermostat."""

    position: Any
    momentum: Any
    thermostat: jax.Array

    def __getitem__(self, key: Any) -> Any:  # a missing extra_fields name, named
        return field_by_name(self, key)


class SGNHTInfo(NamedTuple):
    """The step size of the transition."""

    step_size: jax.Array


def init(position: PyTree, thermostat: float = 0.1) -> SGNHTState:
    momentum = jax.tree.map(jnp.zeros_like, position)
    dtype = jnp.result_type(*jax.tree.leaves(position))  # float64 positions: a float64 one
    return SGNHTState(position, momentum, jnp.asarray(thermostat, dtype))


def build_kernel(
    grad_estimator: Callable, noise: float = 0.1, temperature: float = 1.0
) -> Callable:
    """``step(rng_key, state, minibatch, step_size) -> (SGNHTState, SGNHTInfo)``."""
    require_nonnegative_values(temperature, "temperature")
    require_nonnegative_values(noise, "noise")

    def step(
        rng_key: jax.Array, state: SGNHTState, minibatch: PyTree, step_size: float | jax.Array
    ) -> tuple[SGNHTState, SGNHTInfo]:
        grad = grad_estimator(state.position, minibatch)
        position, momentum, thermostat = sgnht_update(
            rng_key,
            state.position,
            state.momentum,
            state.thermostat,
            grad,
            step_size,
            temperature,
            noise,
        )
        return SGNHTState(position, momentum, thermostat), SGNHTInfo(jnp.asarray(step_size))

    return step


def sgnht(
    grad_estimator: Callable, noise: float = 0.1, temperature: float = 1.0
) -> SamplingAlgorithm:
    """SGNHT with injected noise ``A`` (its thermostat starts at ``A``)."""
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(
        lambda position: init(position, noise), build_kernel(grad_estimator, noise, temperature)
    )
