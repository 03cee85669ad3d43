"""Stochastic gradient Hamiltonian Monte Carlo (Chen et al., 2014) as a pure kernel.

BlackJAX's SGHMC diffusion (``beta = 0``): ``z <- z + h r``;
``r <- (1 - alpha h) r + h grad log p + sqrt(2 alpha h tau) xi``, with the momentum ``r`` kept
across steps (an underdamped Langevin chain; BlackJAX's own ``sghmc`` resamples it at every
call). ``h`` is the step size, ``alpha`` the friction. The momentum starts at zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax._checks import require_nonnegative_values
from mtbkd_jax.infer._state_fields import field_by_name, fields_only
from mtbkd_jax.infer.langevin import sghmc_update

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["SGHMCState", "SGHMCInfo", "init", "build_kernel", "sghmc"]


@fields_only
class SGHMCState(NamedTuple):
    """Position and momentum (pytrees of the same structure)."""

    position: Any
    momentum: Any

    def __getitem__(self, key: Any) -> Any:  # a missing extra_fields name, named
        return field_by_name(self, key)


class SGHMCInfo(NamedTuple):
    """The step size of the transition."""

    step_size: jax.Array


def init(position: PyTree) -> SGHMCState:
    return SGHMCState(position, jax.tree.map(jnp.zeros_like, position))


def build_kernel(
    grad_estimator: Callable, friction: float = 0.1, temperature: float = 1.0
) -> Callable:
    """``step(rng_key, state, minibatch, step_size) -> (SGHMCState, SGHMCInfo)``."""
    require_nonnegative_values(temperature, "temperature")
    require_nonnegative_values(friction, "friction", strictly=True)

    def step(
        rng_key: jax.Array, state: SGHMCState, minibatch: PyTree, step_size: float | jax.Array
    ) -> tuple[SGHMCState, SGHMCInfo]:
        grad = grad_estimator(state.position, minibatch)
        position, momentum = sghmc_update(
            rng_key, state.position, state.momentum, grad, step_size, temperature, friction
        )
        return SGHMCState(position, momentum), SGHMCInfo(jnp.asarray(step_size))

    return step


def sghmc(
    grad_estimator: Callable, friction: float = 0.1, temperature: float = 1.0
) -> SamplingAlgorithm:
    """SGHMC with friction ``alpha`` at temperature ``tau``."""
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(init, build_kernel(grad_estimator, friction, temperature))
