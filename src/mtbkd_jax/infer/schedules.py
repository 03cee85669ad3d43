"""Step-size schedules for SG-MCMC: pure functions ``step (int array) -> step size``.

Constant and cosine pieces come from optax; the Welling-Teh polynomial decay and the cyclical
cosine of cyclical SGLD (Zhang et al., 2020) are written here because optax has neither form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax.numpy as jnp
import optax

from mtbkd_jax._checks import require_count, require_nonnegative, require_positive

if TYPE_CHECKING:
    from jax.typing import ArrayLike

__all__ = ["constant", "polynomial_decay", "cyclical", "cyclical_exploration"]

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def constant(step_size: float) -> Schedule:
    """The same step size at every step."""
    return optax.constant_schedule(require_positive(step_size, "step_size"))


def polynomial_decay(a: float, b: float = 1.0, gamma: float = 0.55) -> Schedule:
    """Welling & Teh (2011): ``eta_t = a (b + t)^(-gamma)``, with ``gamma`` in (0.5, 1]."""
    a = require_positive(a, "a")
    b = require_positive(b, "b")
    if not 0.5 < gamma <= 1.0:
        raise ValueError(f"gamma must lie in (0.5, 1] for the SGLD conditions, got {gamma}")

    def schedule(step: ArrayLike) -> jnp.ndarray:
        return a * (b + jnp.asarray(step, jnp.float32)) ** (-gamma)

    return schedule


def cyclical(initial_step_size: float, cycle_length: int) -> Schedule:
    """Cyclical cosine (Zhang et al., 2020): ``eta_0/2 (cos(pi (t mod L) / L) + 1)``."""
    initial_step_size = require_positive(initial_step_size, "initial_step_size")
    cycle_length = require_count(cycle_length, "cycle_length")  # 2.5 was cut to 2 silently
    one_cycle = optax.cosine_decay_schedule(initial_step_size, cycle_length, alpha=0.0)

    def schedule(step: ArrayLike) -> jnp.ndarray:
        return one_cycle(jnp.mod(step, cycle_length))

    return schedule


def cyclical_exploration(cycle_length: int, exploration_fraction: float) -> Callable:
    """``step -> True`` in the exploration stage (the first fraction of each cycle), where
    cyclical SGLD takes noise-free steps and keeps no draws."""
    cycle_length = require_count(cycle_length, "cycle_length")
    fraction = require_nonnegative(exploration_fraction, "exploration_fraction")
    if fraction >= 1:
        raise ValueError(f"exploration_fraction must lie in [0, 1), got {fraction}")

    def is_exploring(step: ArrayLike) -> jnp.ndarray:
        return jnp.mod(step, cycle_length) < fraction * cycle_length

    return is_exploring
