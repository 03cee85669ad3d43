"""The jitted epoch loop that drives a kernel (SG-MCMC) or an optimiser (the warm start).

One *epoch* is ``steps_per_epoch`` steps over a fresh order of every subsampled plate (drawn on
the host by :class:`~mtbkd_jax.infer._orders.EpochOrders` and passed in with the chunk). Per
step the noise key is ``fold_in(fold_in(fold_in(chain_key, 1), epoch), step)``, so results do
not depend on how epochs are grouped into host-visible chunks (checkpoints resume
bit-for-bit). Within an epoch the chain runs between kept steps in ``fori_loop`` segments and
hands the state out only at the kept steps: no per-step host round trip and no per-step buffer
writes.

A step is ``step_fn(rng_key, state, minibatch, global_step) -> (state, info)``: a kernel's
``step`` with its step size looked up from the schedule, or an optimiser's update.

:meth:`EpochLoop.run_steps` runs any range of global steps instead of whole epochs, each step's
minibatch given (a streamed run's rows, gathered on the host: :mod:`mtbkd_jax.infer.streaming`),
with the same noise keys, the same kept steps and the same global step numbers as :meth:`run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from mtbkd_jax.infer.minibatch import PlateSpec

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree

    # step_fn(rng_key, state, minibatch, global_step) -> (state, info)
    StepFn = Callable[[jax.Array, Any, dict[str, jax.Array], Any], tuple[Any, Any]]
    # observe(state, info, epoch[, real]) -> (state, out); real=False: a padded slot, not valid
    ObserveFn = Callable[..., tuple[Any, Any]]

__all__ = ["EpochLoop", "keep_positions", "epoch_noise_key"]

_NOISE = 1  # noise keys fold in 1 (0 tagged the former on-device permutations)


def batch_at(
    permutations: Mapping[str, jax.Array],
    plates: Sequence[PlateSpec],
    step_in_epoch: jax.Array | int,
) -> dict[str, jax.Array]:
    return {p.name: p.indices(permutations[p.name], step_in_epoch) for p in plates}


def epoch_noise_key(chain_key: jax.Array, epoch: jax.Array | int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(chain_key, _NOISE), epoch)


def _varying_axes(leaf: Any) -> frozenset:
    """The ``shard_map`` mesh axes over which ``leaf``'s value varies (empty outside one)."""
    aval = jax.typeof(leaf)
    manual = getattr(aval, "manual_axis_type", None)  # JAX 0.12; earlier: ``aval.vma``
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def varying_like(tree: PyTree, like: PyTree) -> PyTree:
    """``tree`` with every leaf made to vary over each ``shard_map`` axis that a leaf of
    ``like`` (a chain's state) varies over (``lax.pcast``); outside ``shard_map`` ``tree``
    itself. A loop carry must keep its types leaf by leaf, and a kernel's info mixes leaves
    computed from the chain's state (varying over ``chains``) with others that are not (a
    schedule's step size), so no invariant placeholder could match them all."""
    axes = frozenset().union(*(_varying_axes(leaf) for leaf in jax.tree.leaves(like)))
    if not axes:
        return tree

    def cast(leaf: Any) -> Any:
        missing = tuple(sorted(axes - _varying_axes(leaf)))
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree.map(cast, tree)


def _info_like_state(step_fn: StepFn) -> StepFn:
    """``step_fn`` whose info varies like its state (:func:`varying_like`)."""

    def step(key: jax.Array, state: Any, batch: dict[str, jax.Array], n: Any) -> tuple:
        state, info = step_fn(key, state, batch, n)
        return state, varying_like(info, state)

    return step


def keep_positions(
    keep_key: jax.Array,
    epoch: jax.Array | int,
    steps_per_epoch: int,
    draws_per_epoch: int,
    random: bool,
) -> jax.Array:
    """Sorted step indices (draws_per_epoch,) kept in this epoch, the same for every chain."""
    if random:
        key = jax.random.fold_in(keep_key, epoch)
        chosen = jax.random.choice(key, steps_per_epoch, (draws_per_epoch,), replace=False)
        return jnp.sort(chosen)
    spacing = steps_per_epoch // draws_per_epoch
    return (jnp.arange(draws_per_epoch) + 1) * spacing - 1


class EpochLoop:
    """Epochs of a step function for one chain (``vmap`` it for several).

    Args:
        plates, steps_per_epoch: the minibatching (the first plate sets the epoch).
        draws_per_epoch, random_draws: the keep rule (0 draws: run only).
        partial_last_batch: end each epoch with the examples left over, ``N mod |B|`` of them,
            as one smaller minibatch (the plate then scales it by ``N / (N mod |B|)``), as
            PyTorch's ``DataLoader`` does by default; ``steps_per_epoch`` must then be
            ``ceil(N / |B|)``. One subsampled plate only.
    """

    def __init__(
        self,
        plates: tuple[PlateSpec, ...],
        steps_per_epoch: int,
        draws_per_epoch: int = 0,
        random_draws: bool = False,
        partial_last_batch: bool = False,
    ) -> None:
        self.plates = tuple(plates)
        self.steps_per_epoch = int(steps_per_epoch)
        self.draws_per_epoch = int(draws_per_epoch)
        self.random_draws = random_draws
        plate = self.plates[0]
        self.full_steps = plate.size // plate.batch_size
        self.partial = bool(partial_last_batch) and plate.size % plate.batch_size > 0
        if partial_last_batch and len(self.plates) > 1:
            raise ValueError(
                "partial_last_batch needs a model with one subsampled plate, got "
                f"{[p.name for p in self.plates]}"
            )
        expected = self.full_steps + int(self.partial)
        if self.steps_per_epoch != expected:
            raise ValueError(f"steps_per_epoch must be {expected}, got {self.steps_per_epoch}")

    def _advance(
        self,
        step_fn: StepFn,
        carry: tuple[PyTree, PyTree],
        noise_key: jax.Array,
        epoch: jax.Array,
        permutations: Mapping[str, jax.Array],
        start: jax.Array | int,
        stop: jax.Array | int,
    ) -> tuple[PyTree, PyTree]:
        """Steps ``start .. stop - 1`` of an epoch; ``carry`` is ``(state, last info)``."""

        def body(i: jax.Array, carry: tuple[PyTree, PyTree]) -> tuple[PyTree, PyTree]:
            batch = batch_at(permutations, self.plates, i)
            key = jax.random.fold_in(noise_key, i)  # the step's noise key
            return step_fn(key, carry[0], batch, epoch * self.steps_per_epoch + i)

        if not self.partial:
            return jax.lax.fori_loop(start, stop, body, carry)
        carry = jax.lax.fori_loop(start, jnp.minimum(stop, self.full_steps), body, carry)
        last = self.full_steps

        def partial_step(carry: tuple[PyTree, PyTree]) -> tuple[PyTree, PyTree]:
            plate = self.plates[0]
            batch = {plate.name: permutations[plate.name][last * plate.batch_size :]}
            key = jax.random.fold_in(noise_key, last)
            with warnings.catch_warnings():  # the plate's declared size is the full batch's
                warnings.filterwarnings("ignore", message="subsample_size does not match")
                return step_fn(key, carry[0], batch, epoch * self.steps_per_epoch + last)

        covers_last = (start <= last) & (stop > last)
        return jax.lax.cond(covers_last, partial_step, lambda carry: carry, carry)

    def run(
        self,
        step_fn: StepFn,
        state: PyTree,
        info: PyTree,
        chain_key: jax.Array,
        keep_key: jax.Array,
        epochs: jax.Array,
        orders: Mapping[str, jax.Array],
        observe: ObserveFn | None = None,
    ) -> tuple[PyTree, PyTree]:
        """Run ``epochs`` (an int array) for one chain, visiting each plate in
        ``orders[plate name][e]`` in epoch ``epochs[e]``. ``info`` is a placeholder of the
        step's info (its shapes; under ``shard_map`` it and every step's info are made to vary
        like the state, :func:`varying_like`). At every kept step ``observe(state, info,
        epoch) -> (state, out)``; returns ``(state, outs)`` with outs stacked as (num_epochs,
        draws_per_epoch, ...)."""
        step_fn, info = _info_like_state(step_fn), varying_like(info, state)  # on a mesh
        kept_steps = None
        if self.draws_per_epoch > 0:  # the kept steps of every epoch of the chunk at once
            kept_steps = jax.vmap(
                lambda epoch: keep_positions(
                    keep_key, epoch, self.steps_per_epoch, self.draws_per_epoch, self.random_draws
                )
            )(epochs)

        def epoch_fn(
            state: PyTree, xs: tuple[jax.Array, Mapping[str, jax.Array], Any]
        ) -> tuple[PyTree, PyTree]:
            epoch, permutations, kept = xs
            noise_key = epoch_noise_key(chain_key, epoch)
            advance = lambda carry, start, stop: self._advance(  # noqa: E731
                step_fn, carry, noise_key, epoch, permutations, start, stop
            )
            if self.draws_per_epoch == 0:
                state, _ = advance((state, info), 0, self.steps_per_epoch)
                return state, None
            starts = jnp.concatenate([jnp.zeros(1, kept.dtype), kept[:-1] + 1])

            def segment(
                state: PyTree, bounds: tuple[jax.Array, jax.Array]
            ) -> tuple[PyTree, PyTree]:
                state, last_info = advance((state, info), *bounds)
                assert observe is not None  # kept draws need it (trace time only)
                return observe(state, last_info, epoch)

            state, observed = jax.lax.scan(segment, state, (starts, kept + 1))
            state, _ = advance((state, info), kept[-1] + 1, self.steps_per_epoch)
            return state, observed

        return jax.lax.scan(epoch_fn, state, (epochs, orders, kept_steps))

    def run_steps(
        self,
        step_fn: StepFn,
        state: PyTree,
        info: PyTree,
        chain_key: jax.Array,
        first_step: jax.Array,
        kept: jax.Array,
        real: jax.Array,
        batches: PyTree,
        observe: ObserveFn,
    ) -> tuple[PyTree, PyTree]:
        """Run global steps ``first_step .. first_step + S - 1`` for one chain, step ``j``'s
        minibatch being ``batches``' entry ``j`` (every leaf has a leading axis of length S).

        ``kept`` (K,) holds the kept steps' positions within the range, sorted; entries where
        ``real`` is false are padding (equal to the last real entry, or -1 where there is none)
        and observed as not valid. Step ``g`` of epoch ``e = g // steps_per_epoch`` takes the
        noise key and global step of :meth:`run`'s step ``g - e * steps_per_epoch`` of that
        epoch. Returns ``(state, outs)``, outs stacked as (K, ...). Not with
        ``partial_last_batch``."""
        if self.partial:
            raise ValueError("run_steps does not support partial_last_batch")
        num_steps = jax.tree.leaves(batches)[0].shape[0]
        step_fn, info = _info_like_state(step_fn), varying_like(info, state)  # on a mesh

        def body(j: jax.Array, carry: tuple[PyTree, PyTree]) -> tuple[PyTree, PyTree]:
            step = first_step + j
            epoch = step // self.steps_per_epoch
            in_epoch = step - epoch * self.steps_per_epoch
            key = jax.random.fold_in(epoch_noise_key(chain_key, epoch), in_epoch)
            batch = jax.tree.map(lambda rows: rows[j], batches)
            return step_fn(key, carry[0], batch, step)  # the global step, as run's

        def segment(
            state: PyTree, xs: tuple[jax.Array, jax.Array, jax.Array]
        ) -> tuple[PyTree, PyTree]:
            start, stop, is_real = xs
            state, last_info = jax.lax.fori_loop(start, stop, body, (state, info))
            epoch = (first_step + stop - 1) // self.steps_per_epoch
            return observe(state, last_info, epoch, is_real)

        starts = jnp.concatenate([jnp.zeros(1, kept.dtype), kept[:-1] + 1])
        state, observed = jax.lax.scan(segment, state, (starts, kept + 1, real))
        state, _ = jax.lax.fori_loop(kept[-1] + 1, num_steps, body, (state, info))
        return state, observed
