"""Minibatch optimisation of a model's potential (the SG-MCMC warm start).

The reference code runs ``torch.optim.Adam(lr=3e-4, weight_decay=1e-5)`` on the *mean* batch
loss for 120 epochs (batch 64) before sampling. Torch's ``Adam`` couples the weight decay into
the gradient (``g + 1e-5 theta``, L2 regularisation), unlike AdamW, which decays the weights
apart from Adam's moments. :func:`reference_optimizer` is that: since our potential is the sum
scaled by ``N / |B|`` (``N`` times the mean loss), it first divides the gradient by ``N``, so the
L2 term has the reference's weight. :func:`adamw_optimizer` (AdamW at the same rate and decay)
is the samplers' default warm start. Both run on the same minibatch potential the sampler uses,
vectorised over chains and scanned over epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtbkd_jax._checks import require_count
from mtbkd_jax.infer._devices import ORDERS, SHARDED
from mtbkd_jax.infer._loop import EpochLoop
from mtbkd_jax.infer._orders import WARM_START, EpochOrders

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer._devices import ChainPlacement
    from mtbkd_jax.infer.gradients import GradientEstimator
    from mtbkd_jax.infer.mesh import MeshPlacement

__all__ = ["reference_optimizer", "adamw_optimizer", "minibatch_optimize"]


def reference_optimizer(num_examples: int) -> optax.GradientTransformation:
    """The reference code's warm start: ``torch.optim.Adam(lr=3e-4, weight_decay=1e-5)`` on the
    mean batch loss (L2 coupled into the gradient), for a potential summed over
    ``num_examples`` examples (the data plate's N)."""
    num_examples = require_count(num_examples, "num_examples")
    return optax.chain(
        optax.scale(1.0 / num_examples),  # the gradient of the mean loss, as torch sees it
        optax.add_decayed_weights(1e-5),  # torch Adam's weight_decay: g + wd * theta
        optax.adam(3e-4),
    )


def adamw_optimizer() -> optax.GradientTransformation:
    """AdamW (decoupled weight decay) at the reference's rate and decay: 3e-4, 1e-5."""
    return optax.adamw(3e-4, weight_decay=1e-5)


def minibatch_optimize(
    position: PyTree,
    estimator: GradientEstimator,
    steps_per_epoch: int,
    num_epochs: int,
    optimizer: optax.GradientTransformation,
    rng_key: jax.Array,
    *,
    chunk_epochs: int = 1,
    on_chunk: Callable[[int], object] | None = None,
    placement: ChainPlacement | MeshPlacement | None = None,
    partial_last_batch: bool = False,
) -> PyTree:
    """Minimise ``-log p`` on minibatches for ``num_epochs`` epochs, for every chain.

    Args:
        position: unconstrained starting points with a leading chain axis.
        estimator: the model's :class:`~mtbkd_jax.infer.gradients.GradientEstimator`.
        steps_per_epoch: steps per epoch (the estimator's first plate sets the epoch).
        optimizer: an optax transformation.
        rng_key: key for the minibatch permutations.
        chunk_epochs: epochs per jitted call; ``on_chunk(num_epochs_done)`` runs after each.
        placement: a ``ChainPlacement`` (chains sharded over devices) or a ``MeshPlacement``
            (chains over a mesh's ``chains`` axis, each minibatch split over its ``data``
            axis); default one device.
        partial_last_batch: epochs end with the left-over examples as a smaller minibatch.

    Returns:
        The optimised positions (leading chain axis).
    """
    if num_epochs == 0:
        return position
    plates = estimator.plates if placement is None else placement.loop_plates(estimator.plates)
    loop = EpochLoop(plates, steps_per_epoch, partial_last_batch=partial_last_batch)

    def run_epochs(
        state: tuple[PyTree, optax.OptState],
        chain_key: jax.Array,
        epochs: jax.Array,
        orders: dict[str, jax.Array],
        estimator: GradientEstimator,
    ) -> tuple[PyTree, optax.OptState]:
        def step(
            key: jax.Array,
            state: tuple[PyTree, optax.OptState],
            batch: dict[str, jax.Array],
            global_step: jax.Array | int,
        ) -> tuple[tuple[PyTree, optax.OptState], None]:
            params, opt_state = state
            grads = jax.grad(lambda p: -estimator.logdensity(p, batch))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return loop.run(step, state, None, chain_key, chain_key, epochs, orders)[0]

    run: Callable
    if placement is None:
        run = jax.jit(jax.vmap(run_epochs, in_axes=(0, 0, None, 0, None)))
    else:  # on a mesh: under shard_map, each minibatch split over the "data" axis
        run = placement.program(run_epochs, (0, 0, None, ORDERS, SHARDED))
    num_chains = jax.tree.leaves(position)[0].shape[0]
    place = (lambda tree: tree) if placement is None else placement.chains
    place_orders = (lambda tree: tree) if placement is None else placement.orders
    host_keys = jax.random.split(rng_key, num_chains)
    keys = place(host_keys)
    strata = 1 if placement is None else placement.num_strata
    orders = EpochOrders(host_keys, estimator.plates, WARM_START, strata)
    state = place((position, jax.vmap(optimizer.init)(position)))
    if placement is not None:
        estimator = placement.sharded(placement.data_parallel(estimator))
    done = 0
    next_orders: dict[str, np.ndarray] | None = orders.take(0, min(chunk_epochs, num_epochs))
    while done < num_epochs:
        stop = min(done + chunk_epochs, num_epochs)
        assert next_orders is not None  # drawn during the previous chunk
        current, next_orders = place_orders(next_orders), None  # now on the device(s)
        state = run(state, keys, jnp.arange(done, stop), current, estimator)
        state = place(state)  # every chunk sees the same shardings: one compile
        del current
        if stop < num_epochs:  # drawn while the device runs this chunk
            next_orders = orders.take(stop, min(stop + chunk_epochs, num_epochs))
        jax.block_until_ready(state)
        if on_chunk is not None:
            on_chunk(stop - done)
        done = stop
    return state[0]
