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

**The preconditioner stops adapting after ``adapt_steps`` steps.** A preconditioner that keeps
following the chain is a function of where the chain has just been, and the chain then samples
``p(z) / G(z)``, not ``p(z)``, to the extent ``V`` forgets faster than the chain moves: on
N(0, 1) with exact gradients (``decay=0.99``, a memory of 100 steps) the variance was 1.10 at
``eta = 0.1``, 1.33 at 0.01 and 1.58 at 0.003, towards 2 (``E|z|^3 / E|z|``, ``G ~ 1/|z|``);
``correction=True`` does not remove it. With ``V`` fixed the chain is SGLD in rescaled
coordinates and samples the target, up to the discretisation. :func:`~mtbkd_jax.infer.run_sgmcmc`
adapts during the burn-in epochs (one epoch without burn-in), :class:`~mtbkd_jax.infer.SGMCMC`
during NumPyro's warm-up; ``adapt_steps=None`` adapts at every step, as Li et al. do.

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
from mtbkd_jax.infer._state_fields import field_by_name, fields_only
from mtbkd_jax.infer.langevin import preconditioned_sgld_update

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["PSGLDState", "PSGLDInfo", "init", "build_kernel", "psgld", "correction_term"]


@fields_only
class PSGLDState(NamedTuple):
    """Position, the running mean of squared gradients ``V`` and the steps taken."""

    position: Any
    square_avg: Any
    count: Any = 0

    def __getitem__(self, key: Any) -> Any:  # a missing extra_fields name, named
        return field_by_name(self, key)


class PSGLDInfo(NamedTuple):
    """The step size and the mean preconditioner ``G`` of the transition."""

    step_size: jax.Array
    mean_preconditioner: jax.Array


def init(position: PyTree) -> PSGLDState:
    zeros = jax.tree.map(jnp.zeros_like, position)
    return PSGLDState(position, zeros, jnp.zeros((), jnp.int32))


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
    adapt_steps: int | None = None,
) -> Callable:
    """``step(rng_key, state, minibatch, step_size) -> (PSGLDState, PSGLDInfo)``; ``V`` is
    updated in the first ``adapt_steps`` steps only (``None``: at every step)."""
    require_nonnegative_values(temperature, "temperature")
    if adapt_steps is not None and (
        isinstance(adapt_steps, bool) or not isinstance(adapt_steps, int) or adapt_steps < 1
    ):
        raise ValueError(f"adapt_steps must be None or an integer >= 1, got {adapt_steps!r}")
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
        adapting = True if adapt_steps is None else state.count < adapt_steps
        square_avg = jax.tree.map(  # V = 0: the first step (or a gradient never seen non-zero)
            lambda v, g: jnp.where(
                adapting, jnp.where(v == 0, g * g, decay * v + (1.0 - decay) * g * g), v
            ),
            state.square_avg,
            grad,
        )
        preconditioner = jax.tree.map(lambda v: 1.0 / (regularizer + jnp.sqrt(v)), square_avg)
        if correction:
            diag = jax.tree.map(jnp.multiply, probe, hvp)
            gamma = correction_term(grad, diag, square_avg, decay, regularizer)
            gamma = jax.tree.map(lambda x: jnp.where(adapting, x, 0.0), gamma)  # G fixed: 0
        else:
            gamma = jax.tree.map(jnp.zeros_like, grad)
        position = preconditioned_sgld_update(
            noise_key, state.position, grad, preconditioner, gamma, step_size, temperature
        )
        leaves = jax.tree.leaves(preconditioner)
        mean = sum(x.sum() for x in leaves) / sum(x.size for x in leaves)
        count = jnp.asarray(state.count, jnp.int32) + 1
        return PSGLDState(position, square_avg, count), PSGLDInfo(jnp.asarray(step_size), mean)

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
    adapt_steps: int | None = None,
) -> SamplingAlgorithm:
    """pSGLD with RMSprop decay ``alpha`` and regularizer ``lambda``, its preconditioner
    adapting in the first ``adapt_steps`` steps (``None``: always; see the module notes)."""
    kernel = build_kernel(grad_estimator, decay, regularizer, temperature, correction, adapt_steps)
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(init, kernel)
