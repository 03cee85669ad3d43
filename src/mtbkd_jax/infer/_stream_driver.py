"""The host loop of a streamed run (:mod:`mtbkd_jax.infer.streaming`): chunks of steps, each
chunk's rows gathered on the host and transferred while the device runs the previous chunk.

A chunk is ``chunk_steps`` consecutive global steps (across epoch boundaries, or a part of one
epoch), one ``jit`` call of :meth:`~mtbkd_jax.infer._loop.EpochLoop.run_steps` vectorised over
chains. On a background thread the host draws the next chunk's epochs' orders (each epoch once,
:class:`~mtbkd_jax.infer._host_rows.OrdersCache`), gathers its rows into reused host arrays
(:class:`~mtbkd_jax.infer._staging.StagingBuffers`) and puts them on the device while this chunk
runs; between chunks the valid draws are kept, the chains checked for NaN and
the checkpoint written, recording the next global step.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax.infer._draws import Draws, select_draws
from mtbkd_jax.infer._driver import Carry, SamplerRun
from mtbkd_jax.infer._end_check import checked_end
from mtbkd_jax.infer._host_rows import HostRows, OrdersCache, keep_rule, kept_in_range
from mtbkd_jax.infer._loop import EpochLoop
from mtbkd_jax.infer._orders import SAMPLING, EpochOrders
from mtbkd_jax.infer._staging import StagingBuffers
from mtbkd_jax.infer.gradients import GradientEstimator

if TYPE_CHECKING:
    from collections.abc import Callable

    from tqdm.auto import tqdm

    from mtbkd_jax.infer.checkpoint import Checkpoint
    from mtbkd_jax.infer.posterior import Posterior

__all__ = ["StreamedRun", "kept_slots"]


def kept_slots(chunk_steps: int, steps_per_epoch: int, draws_per_epoch: int) -> int:
    """The most kept steps a chunk of ``chunk_steps`` steps can hold (the epochs it can touch
    times the draws per epoch, at most one per step)."""
    touched = -(-chunk_steps // steps_per_epoch) + 1
    return max(1, min(chunk_steps, touched * draws_per_epoch))


@dataclass
class StreamedRun(SamplerRun):
    """A :class:`~mtbkd_jax.infer._driver.SamplerRun` whose data are streamed from the host."""

    rows: HostRows | None = None
    chunk_steps: int = 0

    def _package(self, *args: Any) -> Posterior:
        """The posterior, holding no inputs (they stay on the host) but two training rows, on
        which :meth:`~mtbkd_jax.infer.Posterior.save` records the first draw's logits for
        :meth:`~mtbkd_jax.infer.Posterior.load` to check another network against."""
        posterior = super()._package(*args)
        if self.rows is not None:  # the model's first argument is its inputs: leaf 0
            # a copy: a view would keep the whole host array alive
            first_rows = np.array(self.rows.leaves[0][:2], dtype=self.rows.dtypes[0], copy=True)
            posterior.check_features = first_rows
        return posterior

    def _stream_program(self) -> Callable:
        """``(carry, chain_keys, first_step, kept, real, rows, estimator, predict) -> (carry,
        observed)``, jitted and vectorised over chains. ``rows`` is ``(buffers, positions)``
        (:meth:`~mtbkd_jax.infer._host_rows.HostRows.take_chunk`): per streamed leaf the
        chunk's rows (chains, S |B|, ...) and where step ``j``'s minibatch lies among them
        (chains, S, |B|); each step gathers its |B| rows, as the device-resident path does."""
        settings = self.settings
        loop = EpochLoop(
            self.plan.plates,
            self.plan.steps_per_epoch,
            settings.draws_per_epoch,
            settings.random_draw_positions,
        )

        def run_steps(
            carry: Carry,
            chain_key: jax.Array,
            first_step: jax.Array,
            kept: jax.Array,
            real: jax.Array,
            rows: tuple,
            estimator: GradientEstimator,
            predict: jax.Array | None,
        ) -> tuple[Carry, dict[str, Any]]:
            step, observe = self._step_and_observe(estimator, predict)
            buffers, positions = rows

            def gathered_step(key: jax.Array, state: Any, where: Any, number: Any) -> tuple:
                batch = tuple(buffer[at] for buffer, at in zip(buffers, where, strict=True))
                return step(key, state, batch, number)

            first = jax.tree.map(lambda at: at[0], positions)
            shapes = jax.eval_shape(gathered_step, chain_key, carry, first, 0)[1]
            info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            carry, observed = loop.run_steps(
                gathered_step, carry, info, chain_key, first_step, kept, real, positions, observe
            )
            return carry, jax.tree.map(lambda v: v[None], observed)  # (1 row, K slots, ...)

        return self.placement.program(run_steps, (0, 0, None, None, None, 0, None, None))

    def resume_or_start_streamed(
        self, checkpoint: Checkpoint | None, bar: tqdm
    ) -> tuple[Carry, Draws | None, int]:
        """``(carry, draws, first global step)``: from the checkpoint when there is one."""
        like = self._initial_carry(self.start)
        restored = None if checkpoint is None else checkpoint.load(like_state=like)
        if restored is None:
            return self._initial_carry(self.placement.chains(self.start)), None, 0
        carry, arrays, progress = restored
        spe = self.plan.steps_per_epoch
        step = int(progress.get("next_step", progress["next_epoch"] * spe))
        bar.update(step / spe)
        carry = self.placement.chains(jax.tree.map(jnp.asarray, carry))
        return carry, Draws.from_arrays(arrays), step

    def sample_streamed(
        self,
        carry: Carry,
        draws: Draws | None,
        first_step: int,
        checkpoint: Checkpoint | None,
        bar: tqdm,
    ) -> Posterior:
        """Chunks of ``chunk_steps`` steps from ``first_step`` to the end; the posterior."""
        assert self.rows is not None  # set by run_sgmcmc
        rows, spe, s = self.rows, self.plan.steps_per_epoch, self.settings
        program, constrain = self._stream_program(), self._constrain()
        chain_keys = self.placement.chains(self.chain_keys)
        predict = self.placement.replicated(self.predict)
        orders = OrdersCache(EpochOrders(self.chain_keys, self.plan.plates, SAMPLING))
        keep = keep_rule(self.keep_key, spe, s.draws_per_epoch, s.random_draw_positions)
        total = self.total_epochs * spe
        size = max(1, min(self.chunk_steps, total - first_step))  # not more than are left
        slots = kept_slots(size, spe, s.draws_per_epoch)
        bounds = [(a, min(a + size, total)) for a in range(first_step, total, size)]
        staging = StagingBuffers()  # chunk k + 2 reuses chunk k's host arrays

        def prepare(start: int, stop: int) -> tuple[Any, np.ndarray, np.ndarray]:
            tick = time.perf_counter()
            first, last = start // spe, (stop - 1) // spe
            indices = rows.step_indices(orders.take(first, last), first, start, stop)
            host_rows = rows.take_chunk(indices, staging.allocator())
            device_rows = self.placement.chains(jax.device_put(host_rows))
            jax.block_until_ready(device_rows)  # the transfer done on this thread
            self.chunk_read_seconds.append(time.perf_counter() - tick)
            kept, real = kept_in_range(keep, spe, start, stop, slots)
            return device_rows, kept, real

        started = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtbkd-stream")
        pending: Future | None = pool.submit(prepare, *bounds[0]) if bounds else None
        try:
            for k, (start, stop) in enumerate(bounds):
                tick = time.perf_counter()
                assert pending is not None  # submitted while the previous chunk ran
                chunk_rows, kept, real = pending.result()
                finished = carry  # every chain finite here: what a divergence gives back
                carry, observed = program(
                    carry, chain_keys, jnp.int32(start), kept, real, chunk_rows,
                    self.estimator, predict,
                )  # fmt: skip
                del chunk_rows
                # the next chunk's rows are gathered and transferred while this one runs
                pending = pool.submit(prepare, *bounds[k + 1]) if k + 1 < len(bounds) else None
                # chunk k's program done before chunk k + 2's rows overwrite its staging set
                # (on a CPU the device reads them in place): explicit, not left to the reads
                jax.block_until_ready((carry, observed))
                carry = self.placement.chains(carry)
                position = self.placement.to_host(carry.kernel.position)
                chunk, finite = select_draws(
                    self.placement.to_host(observed), position, s.keep_draws, constrain
                )
                self.chunk_seconds.append(((stop - start) / spe, time.perf_counter() - tick))
                draws = chunk if draws is None else draws.extend(chunk)
                if not finite:
                    epochs = (start // spe, (stop - 1) // spe + 1)
                    raise self._diverged(
                        *epochs, draws, finished, constrain, started, at_epoch=start / spe
                    )
                if checkpoint is not None:  # written while the device runs the next chunk
                    progress = {"next_epoch": stop // spe, "next_step": stop}
                    state = self.placement.to_host(carry)
                    checkpoint.save_in_background(state, chunk.to_arrays(), progress)
                bar.update((stop - start) / spe)
            if checkpoint is not None:
                checkpoint.wait_at_end()  # the last chunk's write, before returning
        finally:
            if pending is not None:
                pending.cancel()
            pool.shutdown(wait=True)
            pending = None  # a traceback kept by the caller must not hold a chunk's rows
            if checkpoint is not None:
                checkpoint.wait(raise_error=False)
        last = self.placement.to_host(carry.kernel.position)
        self.settings = checked_end(self.estimator, last, s, self.keep_key, self._host_minibatch)
        return self._package(draws, carry, constrain, started)

    def _host_minibatch(self, rng_key: jax.Array) -> tuple:
        """One minibatch of rows for the end-of-run check: the indices the device-resident
        check draws from the same key (``GradientEstimator.sample_minibatch``: uniform,
        without replacement, per plate; a streamed estimator refuses to draw on the device),
        gathered on the host, so that a streamed run and a resident one at the same last
        states measure the same quantity."""
        rows = self.rows
        assert rows is not None  # set by run_sgmcmc
        drawn = GradientEstimator.sample_minibatch(self.estimator, rng_key)
        indices = {name: np.asarray(index) for name, index in drawn.items()}
        return tuple(jnp.asarray(taken) for taken in rows.take(indices))
