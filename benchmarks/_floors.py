"""The reference loops the samplers are compared with: their irreducible work, jitted alone.

Every loop carries the position and updates it with the gradient (and the noise), so XLA can
neither drop the work nor hoist it out of the loop as loop-invariant.

* ``floor``: per step, the minibatch gradient of the same ``MinibatchPotential`` that
  run_sgmcmc builds (same plates, same static kwargs, data passed through jit as arguments) on
  the step's minibatch (indices from a fixed random permutation per plate, read exactly as the
  sampler reads them), plus ``jax.random.normal`` on the raveled parameter count with a key
  ``fold_in(key, step)`` (the default PRNG, as BlackJAX's SGLD kernel draws it), then the
  Langevin update ``z + eta g + sqrt(2 eta) xi`` (any sampler must write the new state).
  Two layouts of the same work: ``tree`` unravels the flat normal vector into the parameter
  pytree exactly as BlackJAX's ``generate_gaussian_noise`` does (XLA then fuses the
  normal's erf_inv into each leaf's update and evaluates it once per leaf on the whole
  vector); ``once`` puts an ``optimization_barrier`` on the flat vector so that it is
  computed once. The benchmark's floor is the faster of the two.
* ``raw``: the same without the noise (``z + eta g``).
* ``full_gradient``: NUTS's gradient: the full-batch gradient of NumPyro's
  ``potential_energy`` of the model with the data closed over (as NumPyro's MCMC does).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

STEP_SIZE = 1e-6


def _batch(plates, permutations, step_in_epoch):
    return {p.name: p.indices(permutations[p.name], step_in_epoch) for p in plates}


def minibatch_loops(make_potential, plates, steps_per_epoch: int, num_steps: int):
    """Jitted ``floors[layout](position, key, data, permutations)`` for layout in ("once",
    "tree") and ``raw(position, data, permutations)``, each running ``num_steps`` steps."""
    noise_scale = math.sqrt(2.0 * STEP_SIZE)

    def floor(materialise_once: bool):
        def run(position, key, data, permutations):
            potential = make_potential(data)

            def body(i, z):
                grad = potential.grad(z, _batch(plates, permutations, i % steps_per_epoch))
                flat, unravel = ravel_pytree(z)
                noise = jax.random.normal(jax.random.fold_in(key, i), flat.shape, flat.dtype)
                if materialise_once:
                    noise = jax.lax.optimization_barrier(noise)
                return jax.tree.map(
                    lambda a, g, n: a + STEP_SIZE * g + noise_scale * n, z, grad, unravel(noise)
                )

            return jax.lax.fori_loop(0, num_steps, body, position)

        return jax.jit(run)

    def raw(position, data, permutations):
        potential = make_potential(data)

        def body(i, z):
            grad = potential.grad(z, _batch(plates, permutations, i % steps_per_epoch))
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


def timed(fn, *args) -> float:
    """Seconds for one call, result blocked on."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start
