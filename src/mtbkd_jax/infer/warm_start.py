"""Minibatch optimisation of a model's potential (the SG-MCMC warm start).

The reference code runs AdamW (learning rate 3e-4, weight decay 1e-5, batch 64) for 120 epochs
before sampling; this is that, on the same minibatch potential the sampler uses, vectorised over
chains and scanned over epochs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtbkd_jax.infer._epochs import EpochRunner
from mtbkd_jax.infer._orders import WARM_START, EpochOrders

__all__ = ["reference_optimizer", "minibatch_optimize"]


def reference_optimizer() -> optax.GradientTransformation:
    """AdamW with the reference code's settings (learning rate 3e-4, weight decay 1e-5)."""
    return optax.adamw(3e-4, weight_decay=1e-5)


def minibatch_optimize(
    position,
    make_potential,
    plates,
    steps_per_epoch: int,
    num_epochs: int,
    optimizer: optax.GradientTransformation,
    rng_key,
    data,
    *,
    chunk_epochs: int = 1,
    on_chunk=None,
    placement=None,
):
    """Minimise ``-log p`` on minibatches for ``num_epochs`` epochs, for every chain.

    Args:
        position: unconstrained starting points with a leading chain axis.
        make_potential: ``data -> MinibatchPotential``.
        plates, steps_per_epoch: the minibatching.
        optimizer: an optax transformation.
        rng_key: key for the minibatch permutations.
        data: the model's data pytree.
        chunk_epochs: epochs per jitted call; ``on_chunk(num_epochs_done)`` runs after each.
        placement: a ``ChainPlacement`` (chains sharded over devices); default one device.

    Returns:
        The optimised positions (leading chain axis).
    """
    if num_epochs == 0:
        return position

    def transition(key, state, potential, batch, global_step):
        params, opt_state = state
        grads = jax.grad(lambda p: -potential.logdensity(p, batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    runner = EpochRunner(make_potential, transition, plates, steps_per_epoch)
    run = jax.jit(jax.vmap(runner.run_epochs, in_axes=(0, 0, None, None, 0, None)))
    num_chains = jax.tree.leaves(position)[0].shape[0]
    place = (lambda tree: tree) if placement is None else placement.chains
    keys = place(jax.random.split(rng_key, num_chains))
    orders = EpochOrders(keys, plates, WARM_START)
    state = place((position, jax.vmap(optimizer.init)(position)))
    done = 0
    next_orders = orders.take(0, min(chunk_epochs, num_epochs))
    while done < num_epochs:
        stop = min(done + chunk_epochs, num_epochs)
        current, next_orders = place(next_orders), None  # now on the device(s)
        state, _ = run(state, keys, keys[0], jnp.arange(done, stop), current, data)
        state = place(state)  # every chunk sees the same shardings: one compile
        del current
        if stop < num_epochs:  # drawn while the device runs this chunk
            next_orders = orders.take(stop, min(stop + chunk_epochs, num_epochs))
        jax.block_until_ready(state)
        if on_chunk is not None:
            on_chunk(stop - done)
        done = stop
    return state[0]
