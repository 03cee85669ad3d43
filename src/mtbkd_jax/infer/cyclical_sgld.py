"""Cyclical SGLD (Zhang et al., 2020) as a pure kernel.

The step size follows cosine cycles of ``cycle_length`` steps,
``eta_t = eta_0 / 2 (cos(pi (t mod L) / L) + 1)``; the first ``exploration_fraction`` of each
cycle takes noise-free steps (an optimiser moving to a new mode: no draws are kept there,
``info.exploring``), the rest are SGLD steps. The state counts the steps, so the kernel needs
no schedule from outside: ``step_size`` is the peak ``eta_0`` (a driver may still vary it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtbkd_jax._checks import require_count, require_nonnegative_values
from mtbkd_jax.infer._state_fields import field_by_name, fields_only
from mtbkd_jax.infer.langevin import sgld_update

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["CyclicalSGLDState", "CyclicalSGLDInfo", "init", "build_kernel", "cyclical_sgld"]


@fields_only
class CyclicalSGLDState(NamedTuple):
    """Position and the number of steps taken."""

    position: Any
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count; results rely on the name

    def __getitem__(self, key: Any) -> Any:  # a missing extra_fields name, named
        return field_by_name(self, key)


class CyclicalSGLDInfo(NamedTuple):
    """The step size used, and whether the step was in an exploration stage."""

    step_size: jax.Array
    exploring: jax.Array


def init(position: PyTree) -> CyclicalSGLDState:
    return CyclicalSGLDState(position, jnp.zeros((), jnp.int32))


def build_kernel(
    grad_estimator: Callable,
    cycle_length: int,
    exploration_fraction: float = 0.5,
    temperature: float = 1.0,
) -> Callable:
    """``step(rng_key, state, minibatch, peak_step_size) -> (state, info)``."""
    if isinstance(cycle_length, bool) or int(np.asarray(cycle_length)) != np.asarray(cycle_length):
        raise TypeError(f"cycle_length must be an integer >= 1, got {cycle_length!r}")
    cycle_length = require_count(int(np.asarray(cycle_length)), "cycle_length")
    require_nonnegative_values(temperature, "temperature")
    if not 0 <= exploration_fraction < 1:
        raise ValueError(f"exploration_fraction must lie in [0, 1), got {exploration_fraction}")
    cosine = optax.cosine_decay_schedule(1.0, cycle_length, alpha=0.0)

    def step(
        rng_key: jax.Array,
        state: CyclicalSGLDState,
        minibatch: PyTree,
        step_size: float | jax.Array,
    ) -> tuple[CyclicalSGLDState, CyclicalSGLDInfo]:
        require_nonnegative_values(step_size, "step_size")  # the peak, as the user gave it
        phase = jnp.mod(state.count, cycle_length)
        eta = cosine(phase) * step_size
        exploring = phase < exploration_fraction * cycle_length
        tau = jnp.where(exploring, 0.0, temperature)
        grad = grad_estimator(state.position, minibatch)
        position = sgld_update(rng_key, state.position, grad, eta, tau)
        return (
            CyclicalSGLDState(position, state.count + 1),
            CyclicalSGLDInfo(eta, exploring),
        )

    return step


def cyclical_sgld(
    grad_estimator: Callable,
    cycle_length: int,
    exploration_fraction: float = 0.5,
    temperature: float = 1.0,
) -> SamplingAlgorithm:
    """Cyclical SGLD with cycles of ``cycle_length`` steps."""
    kernel = build_kernel(grad_estimator, cycle_length, exploration_fraction, temperature)
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(init, kernel)
