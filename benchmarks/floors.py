"""The reference loops the samplers are compared with: their irreducible work, jitted alone.

Every loop carries the position and updates it with the gradient (and the noise), so XLA can
neither drop the work nor hoist it out of the loop as loop-invariant.

* ``floor``: per step, the minibatch gradient of the package's public gradient estimator
  (:func:`mtbkd_jax.infer.gradients.gradient_estimator`: the same plates, static kwargs and
  teacher-prior constants as ``run_sgmcmc``'s potential; the estimator is a pytree passed
  through ``jit`` as an argument, so its arrays are data, as in the sampler) on the step's
  minibatch (indices from a fixed random permutation per plate, read with the public
  ``PlateSpec.indices`` exactly as the sampler reads them), plus ``jax.random.normal`` on the
  raveled parameter count with a key ``fold_in(key, step)`` (the default PRNG, as BlackJAX's
  SGLD kernel draws it), then the Langevin update ``z + eta g + sqrt(2 eta) xi`` (any sampler
  must write the new state). Two layouts of the same work: ``tree`` unravels the flat normal
  vector into the parameter pytree exactly as BlackJAX's ``generate_gaussian_noise`` does (XLA
  then fuses the normal's erf_inv into each leaf's update and evaluates it once per leaf on the
  whole vector); ``once`` puts an ``optimization_barrier`` on the flat vector so that it is
  computed once. The benchmark's floor is the faster of the two.
* ``raw``: the same without the noise (``z + eta g``).
* ``full_gradient``: NUTS's gradient: the full-batch gradient of NumPyro's (public)
  ``potential_energy`` of the model with the data closed over, which is what NumPyro's NUTS
  differentiates inside ``run_nuts``.
* ``epoch_shuffles``: the sampler's per-epoch orders of every plate, drawn with NumPy as the
  sampler draws them (see the function).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

STEP_SIZE = 1e-6
# How the sampler groups epochs when it draws orders on the host (mtbkd_jax's own constants):
# a block holds up to 2**18 int32 indices per chain (1 MB), at least one epoch, at most 64.
ORDERS_BLOCK_INDICES = 1 << 18
ORDERS_MAX_BLOCK_EPOCHS = 64


def _batch(plates, permutations, step_in_epoch):
    return {p.name: p.indices(permutations[p.name], step_in_epoch) for p in plates}


def minibatch_loops(steps_per_epoch: int, num_steps: int):
    """Jitted ``floors[layout](position, key, estimator, permutations)`` for layout in ("once",
    "tree") and ``raw(position, estimator, permutations)``, each running ``num_steps`` steps.
    ``estimator`` is a :class:`~mtbkd_jax.infer.gradients.GradientEstimator` (a pytree)."""
    noise_scale = math.sqrt(2.0 * STEP_SIZE)

    def floor(materialise_once: bool):
        def run(position, key, estimator, permutations):
            def body(i, z):
                batch = _batch(estimator.plates, permutations, i % steps_per_epoch)
                grad = estimator.grad(z, batch)
                flat, unravel = ravel_pytree(z)
                noise = jax.random.normal(jax.random.fold_in(key, i), flat.shape, flat.dtype)
                if materialise_once:
                    noise = jax.lax.optimization_barrier(noise)
                return jax.tree.map(
                    lambda a, g, n: a + STEP_SIZE * g + noise_scale * n, z, grad, unravel(noise)
                )

            return jax.lax.fori_loop(0, num_steps, body, position)

        return jax.jit(run)

    def raw(position, estimator, permutations):
        def body(i, z):
            grad = estimator.grad(z, _batch(estimator.plates, permutations, i % steps_per_epoch))
            return jax.tree.map(lambda a, g: a + STEP_SIZE * g, z, grad)

        return jax.lax.fori_loop(0, num_steps, body, position)

    return {"once": floor(True), "tree": floor(False)}, jax.jit(raw)


def noise_loop(num_values: int, num_steps: int):
    """The noise draw alone (for the timing split): normal(fold_in(key, i), (P,)) per step."""

    def run(z, key):
        def body(i, z):
            return z + jax.random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)

        return jax.lax.fori_loop(0, num_steps, body, z)

    return jax.jit(run), jnp.zeros(num_values, jnp.float32)


def full_gradient_loop(model, model_args: tuple, model_kwargs: dict, num_steps: int):
    """Jitted ``run(position)``: ``num_steps`` full-batch gradients of NumPyro's potential."""

    def energy(z):
        return potential_energy(model, model_args, model_kwargs, z)

    def run(position):
        def body(i, z):
            grad = jax.grad(energy)(z)
            return jax.tree.map(lambda a, g: a - STEP_SIZE * g, z, grad)

        return jax.lax.fori_loop(0, num_steps, body, position)

    return jax.jit(run)


def shuffle_block_epochs(plates) -> int:
    """Epochs per block of orders, as the sampler chooses it for these plates."""
    total = sum(p.size for p in plates)
    return max(1, min(ORDERS_MAX_BLOCK_EPOCHS, ORDERS_BLOCK_INDICES // max(total, 1)))


def epoch_shuffles(plates, num_epochs: int, entropy: tuple[int, ...] = (0, 3)):
    """``run()``: one chain's orders of every plate for ``num_epochs`` epochs (a multiple of
    :func:`shuffle_block_epochs`), drawn with NumPy directly the way the sampler draws them:
    per block of epochs a ``Generator(PCG64(SeedSequence(entropy + (purpose, block))))``
    shuffles an int32 (epochs, N) block of ``arange(N)`` rows in place, row by row
    (``permuted(rows, axis=1, out=rows)``), plate after plate, and the block is copied into
    the (chains, epochs, N) array the chunk receives. Returns ``{plate: array}``."""
    block = shuffle_block_epochs(plates)
    if num_epochs % block:
        raise ValueError(f"num_epochs={num_epochs} is not a multiple of the block ({block})")

    def run() -> dict:
        out = {p.name: np.empty((1, num_epochs, p.size), np.int32) for p in plates}
        for b in range(num_epochs // block):
            seed = np.random.SeedSequence([*entropy, 0, b])
            generator = np.random.Generator(np.random.PCG64(seed))
            for plate in plates:
                rows = np.empty((block, plate.size), np.int32)
                rows[:] = np.arange(plate.size, dtype=np.int32)
                generator.permuted(rows, axis=1, out=rows)
                out[plate.name][0, b * block : (b + 1) * block] = rows
        return out

    return run


def timed(fn, *args) -> float:
    """Seconds for one call, result blocked on."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start
