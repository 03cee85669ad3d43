"""The SG-MCMC integrators the kernels share: BlackJAX's Euler solvers, noise drawn once.

``sgld_update`` is BlackJAX's ``overdamped_langevin`` and ``sghmc_update`` its ``sghmc``
diffusion (with ``beta = 0``; the position moves after the momentum, see there), term for term
and with the same random numbers: for the same key
they return the same state up to float rounding (``tests/test_sgmcmc.py`` checks it against
BlackJAX itself). The
one change is where the noise is laid out. BlackJAX draws a flat normal vector and unravels it
into the parameter pytree; XLA then fuses the normal's ``erf_inv`` into each leaf's update and
evaluates it over the whole flat vector once per leaf. An ``optimization_barrier`` on the flat
draw makes XLA compute it once: on the 42k-parameter reference head the floor loop runs 2,441
instead of 2,144 steps/s (``benchmarks/bench.py``, "floor layouts"; run of 2026-11-28 23:38 in
docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mtbkd_jax._checks import require_nonnegative_values

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree

__all__ = [
    "gaussian_noise",
    "sgld_update",
    "sghmc_update",
    "sgnht_update",
    "preconditioned_sgld_update",
]


def gaussian_noise(rng_key: jax.Array, like: PyTree) -> PyTree:
    """Standard normal noise shaped like the pytree ``like`` (BlackJAX's random numbers)."""
    flat, unravel = ravel_pytree(like)
    draw = jax.random.normal(rng_key, flat.shape, flat.dtype)
    return unravel(jax.lax.optimization_barrier(draw))


def sgld_update(
    rng_key: jax.Array,
    position: PyTree,
    logdensity_grad: PyTree,
    step_size: float | jax.Array,
    temperature: float | jax.Array = 1.0,
) -> PyTree:
    """``z + eta * grad + sqrt(2 * tau * eta) * xi``."""
    require_nonnegative_values(step_size, "step_size")
    noise = gaussian_noise(rng_key, position)
    scale = jnp.sqrt(2 * temperature * step_size)
    return jax.tree.map(
        lambda p, g, n: p + step_size * g + scale * n, position, logdensity_grad, noise
    )


def sghmc_update(
    rng_key: jax.Array,
    position: PyTree,
    momentum: PyTree,
    logdensity_grad: PyTree,
    step_size: float | jax.Array,
    temperature: float | jax.Array,
    friction: float | jax.Array,
    damping: float | jax.Array | None = None,
) -> tuple[PyTree, PyTree]:
    """``r <- (1 - alpha h) r + h grad + sqrt(2 alpha h tau) xi``, then ``z <- z + h r``.

    The momentum moves first and the position follows with the new momentum (semi-implicit
    Euler, the order of Chen et al.'s and Ding et al.'s algorithms): for a Gaussian of
    curvature w^2 the step's determinant is ``1 - alpha h``, stable for ``h w < 2``. BlackJAX's
    ``sghmc`` diffusion moves the position with the old momentum (explicit Euler, determinant
    ``1 - alpha h + h^2 w^2``), which diverges once ``h w^2 > alpha``: with the posterior's
    curvature growing with N, at almost any step size (found by review; the momentum update
    and its random numbers are BlackJAX's). ``damping`` (default ``alpha``) replaces
    ``alpha`` in the momentum's decay only: SGNHT's thermostat."""
    require_nonnegative_values(step_size, "step_size")
    noise = gaussian_noise(rng_key, position)
    scale = jnp.sqrt(step_size * temperature * 2 * friction)
    damping = friction if damping is None else damping
    momentum = jax.tree.map(
        lambda r, g, n: (1.0 - damping * step_size) * r + step_size * g + scale * n,
        momentum,
        logdensity_grad,
        noise,
    )
    position = jax.tree.map(lambda x, r: x + step_size * r, position, momentum)
    return position, momentum


def sgnht_update(
    rng_key: jax.Array,
    position: PyTree,
    momentum: PyTree,
    thermostat: jax.Array,
    logdensity_grad: PyTree,
    step_size: float | jax.Array,
    temperature: float | jax.Array,
    noise: float | jax.Array,
) -> tuple[PyTree, PyTree, jax.Array]:
    """BlackJAX's ``sgnht`` diffusion (Ding et al., 2014; ``beta = 0``): the SGHMC step with
    the friction replaced by the thermostat ``xi``, then
    ``xi <- xi + h (r.r / d - tau)``, which drives the mean kinetic energy per coordinate to
    ``tau`` and so absorbs the minibatch gradient's unknown noise. ``noise`` is the injected
    diffusion ``A`` (BlackJAX's ``alpha``); ``sghmc_update`` checks the step."""
    position, momentum = sghmc_update(
        rng_key, position, momentum, logdensity_grad, step_size, temperature, noise, thermostat
    )
    leaves = jax.tree.leaves(momentum)
    size = sum(x.size for x in leaves)
    kinetic = sum(jnp.vdot(x, x) for x in leaves) / size
    return position, momentum, thermostat + step_size * (kinetic - temperature)


def preconditioned_sgld_update(
    rng_key: jax.Array,
    position: PyTree,
    logdensity_grad: PyTree,
    preconditioner: PyTree,
    correction: PyTree,
    step_size: float | jax.Array,
    temperature: float | jax.Array,
) -> PyTree:
    """pSGLD's step (Li et al., 2016) in this package's convention (``eta`` = their
    ``epsilon / 2``): ``z + eta (G grad + tau Gamma) + sqrt(2 eta tau G) xi``, with ``G`` the
    diagonal preconditioner and ``Gamma`` its correction term."""
    require_nonnegative_values(step_size, "step_size")
    noise = gaussian_noise(rng_key, position)
    return jax.tree.map(
        lambda p, g, c, gamma, n: (
            p
            + step_size * (c * g + temperature * gamma)
            + jnp.sqrt(2 * temperature * step_size * c) * n
        ),
        position,
        logdensity_grad,
        preconditioner,
        correction,
        noise,
    )
