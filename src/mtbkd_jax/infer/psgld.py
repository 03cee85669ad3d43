"""Preconditioned SGLD (pSGLD; Li, Chen, Carlson & Carin, 2016) as a pure kernel.

An RMSprop diagonal preconditioner: ``V <- alpha V + (1 - alpha) g * g``,
``G = 1 / (lambda + sqrt(V))``; then
``z <- z + eta (G g + tau Gamma) + sqrt(2 eta tau G) xi`` (this package's ``eta`` is the
paper's ``epsilon / 2``). ``Gamma_i = dG_i / dz_i`` is the correction term that keeps a
position-dependent preconditioner's chain on the target: through ``V``'s dependence on the
current gradient, ``Gamma_i = -(1 - alpha) g_i H_ii / (sqrt(V_i) (lambda + sqrt(V_i))^2)``, with
``H_ii`` the log density's Hessian diagonal. With ``correction=True`` the kernel estimates
``H_ii`` without bias by Hutchinson's probe, ``z * (H z)`` with Rademacher ``z`` (one
Hessian-vector product per step: about twice a gradient's cost). It is left out by default, as
Li et al. do in their experiments, and ``correction=True`` is experimental: ``Gamma`` grows like
``G^2`` where gradients are small, and since ``V`` carries the chain's history it is the
derivative of the current step's preconditioner only.

``V`` starts at zero, as in Li et al.'s Algorithm 1, and the first step sets it to ``g * g``
(not ``(1 - alpha) g * g``): otherwise the first preconditioner is ``1 / sqrt(1 - alpha)``
times too large and the first step's noise throws the chain far from its start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax._checks import require_nonnegative_values
from mtbkd_jax.infer.langevin import preconditioned_sgld_update

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["PSGLDState", "PSGLDInfo", "init", "build_kernel", "psgld", "correction_term"]


class PSGLDState(NamedTuple):
    """Position and the running mean of squared gradients ``V``."""

    position: Any
    square_avg: Any


class PSGLDInfo(NamedTuple):
    """The step size and the mean preconditioner ``G`` of the transition."""

    step_size: jax.Array
    mean_preconditioner: jax.Array


def init(position: PyTree) -> PSGLDState:
    return PSGLDState(position, jax.tree.map(jnp.zeros_like, position))


def correction_term(
    grad: PyTree, hessian_diag: PyTree, square_avg: PyTree, decay: float, regularizer: float
) -> PyTree:
    """``Gamma = dG/dz`` (elementwise pytrees; see the module docstring)."""

    def gamma(g: jax.Array, h: jax.Array, v: jax.Array) -> jax.Array:
        root = jnp.sqrt(v)
        safe = jnp.where(root > 0, root, 1.0)
        out = -(1.0 - decay) * g * h / (safe * (regularizer + root) ** 2)
        return jnp.where(root > 0, out, 0.0)

    return jax.tree.map(gamma, grad, hessian_diag, square_avg)


def build_kernel(
    grad_estimator: Callable,
    decay: float = 0.99,
    regularizer: float = 1e-5,
    temperature: float = 1.0,
    correction: bool = False,
) -> Callable:
    """``step(rng_key, state, minibatch, step_size) -> (PSGLDState, PSGLDInfo)``."""
    require_nonnegative_values(temperature, "temperature")
    require_nonnegative_values(decay, "decay")
    require_nonnegative_values(regularizer, "regularizer", strictly=True)
    if not 0 <= decay < 1:
        raise ValueError(f"decay must lie in [0, 1), got {decay}")
    if not regularizer > 0:
        raise ValueError(f"regularizer must be positive, got {regularizer}")

    def step(
        rng_key: jax.Array, state: PSGLDState, minibatch: PyTree, step_size: float | jax.Array
    ) -> tuple[PSGLDState, PSGLDInfo]:
        noise_key, probe_key = jax.random.split(rng_key)
        if correction:
            probe = _rademacher(probe_key, state.position)
            grad, hvp = jax.jvp(lambda z: grad_estimator(z, minibatch), (state.position,), (probe,))
        else:
            grad = grad_estimator(state.position, minibatch)
        square_avg = jax.tree.map(  # V = 0: the first step (or a gradient never seen non-zero)
            lambda v, g: jnp.where(v == 0, g * g, decay * v + (1.0 - decay) * g * g),
            state.square_avg,
            grad,
        )
        preconditioner = jax.tree.map(lambda v: 1.0 / (regularizer + jnp.sqrt(v)), square_avg)
        if correction:
            diag = jax.tree.map(jnp.multiply, probe, hvp)
            gamma = correction_term(grad, diag, square_avg, decay, regularizer)
        else:
            gamma = jax.tree.map(jnp.zeros_like, grad)
        position = preconditioned_sgld_update(
            noise_key, state.position, grad, preconditioner, gamma, step_size, temperature
        )
        leaves = jax.tree.leaves(preconditioner)
        mean = sum(x.sum() for x in leaves) / sum(x.size for x in leaves)
        return PSGLDState(position, square_avg), PSGLDInfo(jnp.asarray(step_size), mean)

    return step


def _rademacher(rng_key: jax.Array, like: PyTree) -> PyTree:
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(rng_key, len(leaves))
    signs = [jax.random.rademacher(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, signs)


def psgld(
    grad_estimator: Callable,
    decay: float = 0.99,
    regularizer: float = 1e-5,
    temperature: float = 1.0,
    correction: bool = False,
) -> SamplingAlgorithm:
    """pSGLD with RMSprop decay ``alpha`` and regularizer ``lambda``."""
    kernel = build_kernel(grad_estimator, decay, regularizer, temperature, correction)
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(init, kernel)
