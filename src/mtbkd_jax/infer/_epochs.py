"""The jitted epoch loops behind SG-MCMC and minibatch warm starts.

One *epoch* is ``steps_per_epoch`` steps over a fresh permutation of every subsampled plate.
Per step the key is ``fold_in(fold_in(chain_key, epoch), step)``, so results do not depend on
how epochs are grouped into host-visible chunks (checkpoints resume bit-for-bit). Within an
epoch the chain runs between kept steps in ``fori_loop`` segments and emits the state only at
the kept steps: no per-step host round trip and no per-step buffer writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax.infer.minibatch import MinibatchPotential, PlateSpec

_PERMUTATION, _NOISE = 0, 1
_BATCHED_INDICES = 1 << 20  # draw a chunk's permutations at once up to 4 MB of indices


class ChainState(NamedTuple):
    """Per-chain sampler state (a pytree): position and momentum (unconstrained)."""

    position: dict
    momentum: dict


def epoch_batches(chain_key, epoch, plates: tuple[PlateSpec, ...]):
    """This epoch's permutation of every plate."""
    key = jax.random.fold_in(jax.random.fold_in(chain_key, _PERMUTATION), epoch)
    keys = jax.random.split(key, len(plates))
    return {p.name: jax.random.permutation(k, p.size) for p, k in zip(plates, keys, strict=True)}


def batch_at(permutations: dict, plates, step_in_epoch) -> dict:
    return {p.name: p.indices(permutations[p.name], step_in_epoch) for p in plates}


def epoch_noise_key(chain_key, epoch):
    return jax.random.fold_in(jax.random.fold_in(chain_key, _NOISE), epoch)


def step_key(chain_key, epoch, step_in_epoch):
    return jax.random.fold_in(epoch_noise_key(chain_key, epoch), step_in_epoch)


def keep_positions(keep_key, epoch, steps_per_epoch: int, draws_per_epoch: int, random: bool):
    """Sorted step indices (draws_per_epoch,) kept in this epoch, the same for every chain."""
    if random:
        key = jax.random.fold_in(keep_key, epoch)
        chosen = jax.random.choice(key, steps_per_epoch, (draws_per_epoch,), replace=False)
        return jnp.sort(chosen)
    spacing = steps_per_epoch // draws_per_epoch
    return (jnp.arange(draws_per_epoch) + 1) * spacing - 1


class EpochRunner:
    """Runs epochs of a per-step transition for one chain (vmap it for several).

    Args:
        make_potential: ``data -> MinibatchPotential`` (built inside jit from traced data).
        transition: ``(key, state, potential, batch, global_step) -> state``.
        plates, steps_per_epoch: the minibatching.
        draws_per_epoch, random_draws: the keep rule (0 draws: run only).
        observe: ``(state, global_step, epoch, potential, data) -> (state, pytree)`` at kept
            steps: it emits the draw and statistics and may update accumulators in the state.
    """

    def __init__(
        self,
        make_potential: Callable[..., MinibatchPotential],
        transition: Callable,
        plates,
        steps_per_epoch: int,
        draws_per_epoch: int = 0,
        random_draws: bool = False,
        observe: Callable | None = None,
    ):
        self.make_potential = make_potential
        self.transition = transition
        self.plates = tuple(plates)
        self.steps_per_epoch = int(steps_per_epoch)
        self.draws_per_epoch = int(draws_per_epoch)
        self.random_draws = random_draws
        self.observe = observe

    def _advance(self, state, noise_key, epoch, permutations, potential, start, stop):
        def body(i, state):
            batch = batch_at(permutations, self.plates, i)
            global_step = epoch * self.steps_per_epoch + i
            key = jax.random.fold_in(noise_key, i)  # = step_key(chain_key, epoch, i)
            return self.transition(key, state, potential, batch, global_step)

        return jax.lax.fori_loop(start, stop, body, state)

    def _epoch_plans(self, chain_key, keep_key, epochs):
        """Each epoch's permutations and kept steps. For small plates they are drawn for the
        whole chunk at once (batched sorts instead of a few tiny sorts per epoch, which cost
        as much as the steps of a 4-step epoch); for large plates epoch by epoch, so that the
        index memory stays one epoch's worth."""
        batched = len(epochs) * sum(p.size for p in self.plates) <= _BATCHED_INDICES
        keep = self.draws_per_epoch > 0

        def plan(epoch):
            permutations = epoch_batches(chain_key, epoch, self.plates)
            kept = (
                keep_positions(
                    keep_key, epoch, self.steps_per_epoch, self.draws_per_epoch, self.random_draws
                )
                if keep
                else None
            )
            return permutations, kept

        if batched:
            return jax.vmap(plan)(epochs), plan
        return None, plan

    def run_epochs(self, state, chain_key, keep_key, epochs, data):
        """Run the given epochs (an int array) for one chain; returns (state, observations)
        with observations stacked as (num_epochs, draws_per_epoch, ...)."""
        potential = self.make_potential(data)
        plans, plan = self._epoch_plans(chain_key, keep_key, epochs)

        def epoch_fn(state, xs):
            epoch, planned = xs
            permutations, kept = plan(epoch) if planned is None else planned
            noise_key = epoch_noise_key(chain_key, epoch)
            if self.draws_per_epoch == 0:
                state = self._advance(
                    state, noise_key, epoch, permutations, potential, 0, self.steps_per_epoch
                )
                return state, None
            starts = jnp.concatenate([jnp.zeros(1, kept.dtype), kept[:-1] + 1])

            def segment(state, bounds):
                start, stop = bounds
                state = self._advance(state, noise_key, epoch, permutations, potential, start, stop)
                global_step = epoch * self.steps_per_epoch + stop - 1
                return self.observe(state, global_step, epoch, potential, data)

            state, observed = jax.lax.scan(segment, state, (starts, kept + 1))
            state = self._advance(
                state, noise_key, epoch, permutations, potential, kept[-1] + 1, self.steps_per_epoch
            )
            return state, observed

        return jax.lax.scan(epoch_fn, state, (epochs, plans))
