"""Stochastic gradient Langevin dynamics (Welling & Teh, 2011) as a pure kernel.

``z <- z + eta grad log p(z | minibatch) + sqrt(2 eta tau) xi``: BlackJAX's ``sgld``, with the
gradient estimator bound at construction and the state a NamedTuple, so that the kernel can be
``vmap``-ped over chains, ``scan``-ned over steps and tested alone.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from mtbkd_jax.infer import sgld
    >>> grad = lambda z, batch: jax.tree.map(lambda x: -x, z)  # N(0, 1), exact gradient
    >>> kernel = sgld(grad)
    >>> state = kernel.init({"x": jnp.zeros(())})
    >>> state, info = kernel.step(jax.random.key(0), state, None, 0.01)
    >>> round(float(info.step_size), 6)
    0.01
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax._checks import require_nonnegative_values
from mtbkd_jax.infer._state_fields import field_by_name, fields_only
from mtbkd_jax.infer.langevin import sgld_update

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["SGLDState", "SGLDInfo", "init", "build_kernel", "sgld"]


@fields_only
class SGLDState(NamedTuple):
    """The chain's position (a pytree, unconstrained)."""

    position: Any

    def __getitem__(self, key: Any) -> Any:  # a missing extra_fields name, named
        return field_by_name(self, key)


class SGLDInfo(NamedTuple):
    """The step size of the transition."""

    step_size: jax.Array


def init(position: PyTree) -> SGLDState:
    return SGLDState(position)


def build_kernel(grad_estimator: Callable, temperature: float = 1.0) -> Callable:
    """``step(rng_key, state, minibatch, step_size) -> (SGLDState, SGLDInfo)``."""
    require_nonnegative_values(temperature, "temperature")

    def step(
        rng_key: jax.Array, state: SGLDState, minibatch: PyTree, step_size: float | jax.Array
    ) -> tuple[SGLDState, SGLDInfo]:
        grad = grad_estimator(state.position, minibatch)
        position = sgld_update(rng_key, state.position, grad, step_size, temperature)
        return SGLDState(position), SGLDInfo(jnp.asarray(step_size))

    return step


def sgld(grad_estimator: Callable, temperature: float = 1.0) -> SamplingAlgorithm:
    """SGLD on ``grad_estimator(position, minibatch)`` at temperature ``tau`` (1: the
    posterior; < 1: a cold posterior)."""
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(init, build_kernel(grad_estimator, temperature))
