"""Noise-corrected SGLD: a low-rank preconditioner from the minibatch gradient's own noise.

Plain SGLD adds the minibatch gradient's noise, of covariance ``V(z)``, to the Langevin noise
``2 eta tau I``: its chain runs hotter where ``eta V`` is large, and is pulled towards where the
noise is small (``docs/results.md``: on a tanh student with learned per-layer scales, towards
smaller output weights than NUTS's). Where ``eta V`` is known the fix is to inject less noise,
``2 eta tau I - eta^2 V``, but that is only possible while ``eta V / 2 <= tau``; in the
directions where the minibatch noise is larger, the step must shrink. This kernel does both,
in the spirit of stochastic gradient Fisher scoring (Ahn, Korattikara & Welling, 2012), which
preconditions by an online estimate of the gradient noise's covariance:

* **The noise, estimated without per-example gradients.** Each step evaluates the gradient on
  the two halves of its minibatch, ``g_a`` and ``g_b`` (``split``; for a NumPyro model
  :meth:`~mtbkd_jax.infer.GradientEstimator.half_batches`, each half an unbiased estimate), and
  moves with their mean ``g`` (the minibatch's own gradient). ``d = (g_a - g_b) / 2`` has
  ``E[d d^T] = V`` (with replacement; drawing without replacement it is ``N / (N - |B|)`` times
  ``V``, a few per cent more for ``|B| << N``, which errs towards a cooler chain). The last ``K``
  of them (``rank``) form a sketch ``D`` and ``V_hat = D^T D / K`` (``/ m`` while only ``m < K``
  rows are filled), handled through its ``K x K``
  Gram matrix: eigenvalues ``s_k``, orthonormal directions ``q_k`` in parameter space. Only
  *earlier* steps' ``d`` enter ``V_hat``, so the estimate is independent of the current noise.
* **The step.** ``P = (I + c eta V_hat / (2 tau))^-1`` (``c``: ``margin``, >= 1), i.e. ``p_k =
  1 / (1 + c eta s_k / (2 tau))`` along ``q_k`` and 1 elsewhere;
  ``z <- z + eta P g + zeta``, ``zeta ~ N(0, 2 eta tau P - eta^2 P V_hat P)``: along ``q_k`` the
  injected variance is ``eta p_k (2 tau - eta p_k s_k) >= 0``, so minibatch noise plus injected
  noise is ``2 eta tau P``, as a preconditioned Langevin step wants. Outside the sketch's span
  the step is plain SGLD's. With no gradient noise (``g_a = g_b``) it *is* SGLD, random numbers
  included.

*What the sketch misses.* Where ``V`` has rank well above ``K`` (diffuse noise in a large
network), ``V_hat``'s eigenvalues are those of a ``K``-sample covariance and overstate ``V``
along their directions: the chain is then cooler there and uncorrected elsewhere. The halves
must be random (``sample_minibatch`` and the drivers' draws are), and a site inside two
subsampled plates at once gets halves that miss the plates' cross terms (see
:meth:`~mtbkd_jax.infer.GradientEstimator.half_batches`).

*What it does not correct.* ``P`` depends on where the chain is, and the drift omits the
``Gamma = div P`` term a position-dependent preconditioner needs (as pSGLD and SGFS omit it:
``P`` is built from the chain's recent history, whose derivative is not the current step's).
In one dimension the chain's stationary density is then ``pi / p``: it over-weights where the
noise is large, the opposite of plain SGLD's bias, and smaller for moderate noise. Measured on
the synthetic learned-trust cases (``docs/results.md``, "Noise-corrected SGLD"): started at
NUTS's draws it keeps NUTS's weight scale and interval width where SGLD drifts away (a
standalone version with other random numbers overshot NUTS's output weights). Each step costs two
gradient evaluations of a half-batch duplicated to a full one (twice SGLD's) and a ``K x K``
eigendecomposition.

*Its minibatches are drawn anew every step.* ``V_hat`` is the noise of one step's minibatch
drawn on its own, so ``run_sgmcmc`` and :class:`~mtbkd_jax.infer.SGMCMC` draw each NC-SGLD
step's minibatch independently of the others, with replacement
(:class:`~mtbkd_jax.infer._orders.IndependentOrders`), not by the epochs' random reshuffling
the other samplers use. Under reshuffling the minibatch noise of one epoch's steps sums to
zero, the chain accumulates less of it than ``V_hat`` says, and subtracting ``V_hat`` takes
too much: on ``mu ~ N(0, 10)``, ``x_i ~ N(mu, 1)``, ``N = 1000``, ``|B| = 10`` at a noise ratio
``eta V / 2 tau`` of about 1 (step ``2e-5``), the posterior standard deviation came out 0.80
to 0.83 of the exact one that way, against 0.99 to 1.05 with fresh minibatches (SGLD: 1.21;
``tests/test_ncsgld.py``). An "epoch" of NC-SGLD is then ``N // |B|`` steps, not a pass that
visits every example.

*Its step size.* The preconditioner keeps the chain stable at steps far above SGLD's (9 to 27
times on linear_5), but those steps bias it (output weights 12.8 against NUTS's 19.9), so
``step_size="auto"`` pilots it as SGLD (:func:`~mtbkd_jax.infer.step_size.pilot_sampler`). With a
learned-scale prior, run it on :func:`mtbkd_jax.noncentred.noncentred`'s model: there its chains
from the MAPs reach NUTS's scales in thousands of epochs, not tens of thousands.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from mtbkd_jax.infer import ncsgld
    >>> def grad(z, key):  # N(0, 1) with a noisy gradient
    ...     return jax.tree.map(lambda x: -x + jax.random.normal(key, x.shape), z)
    >>> kernel = ncsgld(grad, split=lambda key: tuple(jax.random.split(key)), rank=4)
    >>> state = kernel.init({"x": jnp.zeros(3)})
    >>> state, info = kernel.step(jax.random.key(0), state, jax.random.key(1), 0.01)
    >>> int(state.num_steps), state.sketch["x"].shape
    (1, (4, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax._checks import require_nonnegative_values
from mtbkd_jax.infer._state_fields import field_by_name, fields_only
from mtbkd_jax.infer.langevin import gaussian_noise

if TYPE_CHECKING:
    from blackjax.base import SamplingAlgorithm

    from mtbkd_jax.infer._common import PyTree

__all__ = ["NCSGLDState", "NCSGLDInfo", "init", "build_kernel", "ncsgld", "noise_directions"]

DEFAULT_RANK = 32


@fields_only
class NCSGLDState(NamedTuple):
    """Position, the sketch of the last ``rank`` half-batch differences (each leaf with a
    leading axis of ``rank``) and the number of steps taken (``num_steps``)."""

    position: Any
    sketch: Any
    num_steps: jax.Array

    def __getitem__(self, key: Any) -> Any:  # a missing extra_fields name, named
        return field_by_name(self, key)


class NCSGLDInfo(NamedTuple):
    """The step size, and the largest minibatch-noise variance along the sketch's directions
    over the Langevin variance, ``eta max(s_k) / (2 tau)`` (above 1: the minibatch noise there
    exceeds all the noise SGLD would inject)."""

    step_size: jax.Array
    noise_ratio: jax.Array


def init(position: PyTree, rank: int = DEFAULT_RANK) -> NCSGLDState:
    sketch = jax.tree.map(lambda x: jnp.zeros((rank, *jnp.shape(x)), jnp.result_type(x)), position)
    return NCSGLDState(position, sketch, jnp.zeros((), jnp.int32))


def _rows(sketch: PyTree) -> list[jax.Array]:
    return [x.reshape(x.shape[0], -1) for x in jax.tree.leaves(sketch)]


def noise_directions(sketch: PyTree, count: jax.Array) -> tuple[jax.Array, Callable, Callable]:
    """``V_hat = D^T D / m`` (``m`` = rows filled) through its Gram matrix: its eigenvalues
    ``s`` and two maps, ``v -> Q^T v`` (coordinates along the orthonormal directions ``q_k``)
    and ``c -> Q c``, with ``Q``'s columns zero where ``s_k`` is (numerically) zero."""
    rows = _rows(sketch)
    size = rows[0].shape[0]
    filled = jnp.maximum(jnp.minimum(count, size), 1).astype(rows[0].dtype)
    gram = sum(r @ r.T for r in rows) / filled
    s, u = jnp.linalg.eigh(gram)
    s = jnp.maximum(s, 0.0)
    # float32 eigh leaves directions of s < ~1e-4 max(s) far from orthonormal; they matter little
    kept = s > jnp.maximum(1e-4 * jnp.max(s), jnp.finfo(s.dtype).tiny)
    scale = jnp.where(kept, jax.lax.rsqrt(jnp.where(kept, filled * s, 1.0)), 0.0)
    s = jnp.where(kept, s, 0.0)

    def coordinates(v: PyTree) -> jax.Array:
        dv = sum(r @ x.reshape(-1) for r, x in zip(rows, jax.tree.leaves(v), strict=True))
        return scale * (u.T @ dv)

    def combine(c: jax.Array) -> PyTree:
        w = u @ (scale * c)
        return jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1), sketch)

    return s, coordinates, combine


def build_kernel(
    grad_estimator: Callable,
    split: Callable,
    temperature: float = 1.0,
    margin: float = 1.0,
) -> Callable:
    """``step(rng_key, state, minibatch, step_size) -> (NCSGLDState, NCSGLDInfo)``;
    ``split(minibatch) -> (half_a, half_b)``, each an unbiased minibatch of its own."""
    if not margin >= 1:
        raise ValueError(
            f"margin must be at least 1 (the injected variance stays >= 0), got {margin}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    def step(
        rng_key: jax.Array, state: NCSGLDState, minibatch: PyTree, step_size: float | jax.Array
    ) -> tuple[NCSGLDState, NCSGLDInfo]:
        require_nonnegative_values(step_size, "step_size")
        half_a, half_b = split(minibatch)
        grad_a = grad_estimator(state.position, half_a)
        grad_b = grad_estimator(state.position, half_b)
        grad = jax.tree.map(lambda a, b: (a + b) / 2, grad_a, grad_b)
        spread = jax.tree.map(lambda a, b: (a - b) / 2, grad_a, grad_b)
        s, coordinates, combine = noise_directions(state.sketch, state.num_steps)
        h, tau = step_size, temperature
        p = 1.0 / (1.0 + margin * h * s / (2 * tau))
        injected = jnp.maximum(h * p * (2 * tau - h * p * s), 0.0)
        noise = gaussian_noise(rng_key, state.position)
        langevin = jnp.sqrt(2 * tau * h)
        along = h * (p - 1.0) * coordinates(grad) + (jnp.sqrt(injected) - langevin) * coordinates(
            noise
        )
        position = jax.tree.map(
            lambda z, g, n, a: z + h * g + langevin * n + a,
            state.position,
            grad,
            noise,
            combine(along),
        )
        slot = state.num_steps % jax.tree.leaves(state.sketch)[0].shape[0]
        sketch = jax.tree.map(lambda rows, d: rows.at[slot].set(d), state.sketch, spread)
        info = NCSGLDInfo(jnp.asarray(step_size), h * jnp.max(s) / (2 * tau))
        return NCSGLDState(position, sketch, state.num_steps + 1), info

    return step


def ncsgld(
    grad_estimator: Callable,
    split: Callable,
    temperature: float = 1.0,
    rank: int = DEFAULT_RANK,
    margin: float = 1.0,
) -> SamplingAlgorithm:
    """Noise-corrected SGLD (module docstring) with a sketch of ``rank`` half-batch
    differences and preconditioning margin ``c``."""
    if not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    from blackjax.base import SamplingAlgorithm  # lazily: importing BlackJAX starts JAX

    return SamplingAlgorithm(
        partial(init, rank=rank), build_kernel(grad_estimator, split, temperature, margin)
    )
