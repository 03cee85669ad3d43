"""The chunked host loop behind ``run_sgmcmc``: start or resume, then chunks of epochs.

A chunk is one ``jit`` call: ``vmap`` over chains of the epoch loop
(:class:`~mtbkd_jax.infer._loop.EpochLoop`) driving the kernel's ``step``. Between chunks the
host keeps the valid draws, checks that every chain is finite, writes the checkpoint on a
background thread and draws the next chunk's minibatch orders while the device runs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._devices import ORDERS, SHARDED, ChainPlacement
from mtbkd_jax.infer._draws import Draws, StreamedPredictive, package_posterior, select_draws
from mtbkd_jax.infer._end_check import checked_end
from mtbkd_jax.infer._loop import EpochLoop
from mtbkd_jax.infer._orders import sampling_orders
from mtbkd_jax.infer._records import SGMCMCSettings, SGMCMCTimings
from mtbkd_jax.infer._start import divergence_cause
from mtbkd_jax.infer.gradients import GradientEstimator, MinibatchPlan
from mtbkd_jax.infer.mesh import MeshPlacement
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.step_size import pilot_sampler, select_step_size
from mtbkd_jax.infer.warm_start import minibatch_optimize

if TYPE_CHECKING:
    import optax
    from tqdm.auto import tqdm

    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.checkpoint import Checkpoint

__all__ = ["Carry", "SamplerRun", "SamplerDivergedError"]


class SamplerDivergedError(FloatingPointError):
    """A chain reached a NaN or infinite state; ``posterior`` holds every finite draw so far,
    and its streamed predictive (with ``keep_draws=False``, its last states too) is that at
    the end of the last chunk in which every chain stayed finite; ``None`` when no draw had
    been kept (the divergence came in burn-in)."""

    def __init__(self, message: str, posterior: Posterior | None) -> None:
        super().__init__(message)
        self.posterior = posterior


class Carry(NamedTuple):
    """What a chain carries from step to step: the kernel's state and the streamed sums."""

    kernel: Any
    stream: StreamedPredictive | None


@dataclass
class SamplerRun:
    """One SG-MCMC run, everything decided: model, estimator, kernel, schedule, chains."""

    model: Callable
    estimator: GradientEstimator
    plan: MinibatchPlan
    make_kernel: Callable  # estimator -> SamplingAlgorithm
    schedule: Callable  # global step -> step size handed to the kernel
    settings: SGMCMCSettings
    logits_fn: Callable | None
    predict: jax.Array | None
    labels: Any
    features: Any
    model_kwargs: dict | None
    start: dict
    placement: ChainPlacement | MeshPlacement
    keep_key: jax.Array
    chain_keys: jax.Array
    total_epochs: int
    chunk_seconds: list = field(default_factory=list)
    chunk_read_seconds: list = field(default_factory=list)

    # ------------------------------------------------------------------ the device program
    def _initial_carry(self, position: PyTree) -> Carry:
        kernel = jax.vmap(self.make_kernel(self.estimator).init)(position)
        stream = None
        if self.predict is not None:
            assert self.logits_fn is not None  # predict needs it (checked by run_sgmcmc)
            point = self.estimator.constrain(jax.tree.map(lambda x: x[0], position))
            num_classes = self.logits_fn(point, self.predict[:1]).shape[-1]
            stream = StreamedPredictive.zeros(
                self.settings.num_chains, self.predict.shape[0], num_classes
            )
        return self.placement.chains(Carry(kernel, stream))

    def _chunk_program(self) -> Callable:
        """``(carry, chain_keys, keep_key, epochs, orders, estimator, predict) -> (carry,
        observed)``, jitted and vectorised over chains (on a mesh: under ``shard_map``, the
        estimator's minibatch split over the ``data`` axis)."""
        settings = self.settings
        loop = EpochLoop(
            self.placement.loop_plates(self.plan.plates),  # a device's own rows, if sharded
            self.plan.steps_per_epoch,
            settings.draws_per_epoch,
            settings.random_draw_positions,
            settings.partial_last_batch,
        )

        def run_epochs(
            carry: Carry,
            chain_key: jax.Array,
            keep_key: jax.Array,
            epochs: jax.Array,
            orders: dict[str, jax.Array],
            estimator: GradientEstimator,
            predict: jax.Array | None,
        ) -> tuple[Carry, dict[str, Any]]:
            step, observe = self._step_and_observe(estimator, predict)
            batch = estimator.first_batch()
            shapes = jax.eval_shape(step, chain_key, carry, batch, 0)[1]
            info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return loop.run(step, carry, info, chain_key, keep_key, epochs, orders, observe)

        return self.placement.program(run_epochs, (0, 0, None, None, ORDERS, SHARDED, None))

    def _step_and_observe(
        self, estimator: GradientEstimator, predict: jax.Array | None
    ) -> tuple[Callable, Callable]:
        """One chain's ``step(key, carry, minibatch, global_step) -> (carry, info)`` (the
        kernel's step at the schedule's step size) and ``observe(carry, info, epoch, real=True)
        -> (carry, out)`` at a kept step (``real=False``: a padded slot, never valid)."""
        settings, schedule, logits_fn = self.settings, self.schedule, self.logits_fn
        kernel = self.make_kernel(estimator)

        def step(
            key: jax.Array, carry: Carry, batch: Any, global_step: jax.Array | int
        ) -> tuple[Carry, PyTree]:
            state, info = kernel.step(key, carry.kernel, batch, schedule(global_step))
            return carry._replace(kernel=state), info

        def observe(
            carry: Carry, info: PyTree, epoch: jax.Array, real: jax.Array | bool = True
        ) -> tuple[Carry, dict[str, Any]]:
            exploring = getattr(info, "exploring", jnp.zeros((), bool))
            valid = (epoch >= settings.num_burnin_epochs) & ~exploring & real
            position = carry.kernel.position
            stream = carry.stream
            if stream is not None:
                assert logits_fn is not None  # a stream needs it (checked by run_sgmcmc)
                with warnings.catch_warnings():  # a sharded estimator's plates: local rows
                    warnings.filterwarnings("ignore", message="subsample_size does not match")
                    params = estimator.constrain(position)
                logits = logits_fn(params, predict)
                stream = stream.update(logits, valid)
            out = {"valid": valid, "step_size": info.step_size}
            if settings.keep_draws:
                out["position"] = position
            return carry._replace(stream=stream), out

        return step, observe

    # ------------------------------------------------------------------ the host loop
    def resume_or_start(
        self,
        checkpoint: Checkpoint | None,
        optimizer: optax.GradientTransformation,
        warm_key: jax.Array,
        warm_epochs: int,
        chunk_epochs: int,
        bar: tqdm,
    ) -> tuple[Carry, Draws | None, int]:
        """``(carry, draws, first epoch)``: from the checkpoint when there is one, else after
        the warm start."""
        like = self._initial_carry(self.start)
        restored = None if checkpoint is None else checkpoint.load(like_state=like)
        if restored is not None:
            carry, arrays, progress = restored
            bar.update(self.settings.warm_start_epochs + progress["next_epoch"])
            carry = self.placement.chains(jax.tree.map(jnp.asarray, carry))
            return carry, Draws.from_arrays(arrays), progress["next_epoch"]
        position = minibatch_optimize(
            self.placement.chains(self.start),
            self.estimator,
            self.plan.steps_per_epoch,
            int(warm_epochs),
            optimizer,
            warm_key,
            chunk_epochs=chunk_epochs,
            on_chunk=bar.update,
            placement=self.placement,
            partial_last_batch=self.plan.partial_last_batch,
        )
        return self._initial_carry(position), None, 0

    def choose_step_size(self, position: PyTree, rng_key: jax.Array) -> None:
        """``step_size="auto"``: pilots from ``position`` (the chains after the warm start)
        choose the run's constant step size (cyclical SGLD's peak), recorded in its settings
        (:func:`~mtbkd_jax.infer.step_size.select_step_size`, default ladder and margin)."""
        s = self.settings
        make_kernel = pilot_sampler(
            s.sampler, temperature=s.temperature, friction=s.friction, options=s.sampler_options
        )
        choice = select_step_size(
            self.estimator, make_kernel, position, rng_key, sampler=s.sampler,
            temperature=s.temperature,
        )  # fmt: skip
        self.schedule = schedules.constant(choice.step_size)
        self.settings = replace(s, step_size=choice.step_size, step_size_choice=choice.as_dict())

    def sample(
        self,
        carry: Carry,
        draws: Draws | None,
        first_epoch: int,
        chunk_epochs: int,
        checkpoint: Checkpoint | None,
        bar: tqdm,
    ) -> Posterior:
        """Chunks of epochs from ``first_epoch`` to the end; the posterior."""
        run_chunk = self._chunk_program()
        constrain = self._constrain()
        chain_keys = self.placement.chains(self.chain_keys)
        estimator = self.placement.data_parallel(self.estimator)  # a mesh splits minibatches
        data = (self.placement.sharded(estimator), self.placement.replicated(self.predict))
        orders = sampling_orders(
            self.settings.sampler, self.chain_keys, self.plan.plates, self.plan.steps_per_epoch,
            self.placement.num_strata,
        )  # fmt: skip
        started, epoch, total = time.perf_counter(), first_epoch, self.total_epochs
        next_orders = (
            orders.take(epoch, min(epoch + chunk_epochs, total)) if epoch < total else None
        )
        try:
            while epoch < total:
                tick, stop = time.perf_counter(), min(epoch + chunk_epochs, total)
                assert next_orders is not None  # drawn during the previous chunk
                current, next_orders = self.placement.orders(next_orders), None  # on device
                epochs = jnp.arange(epoch, stop)
                finished = carry  # every chain finite here: what a divergence gives back
                carry, observed = run_chunk(
                    carry, chain_keys, self.keep_key, epochs, current, *data
                )
                carry = self.placement.chains(carry)
                del current
                if stop < total:  # drawn on the host while the device runs this chunk
                    next_orders = orders.take(stop, min(stop + chunk_epochs, total))
                position = self.placement.to_host(carry.kernel.position)
                chunk, finite = select_draws(
                    self.placement.to_host(observed), position, self.settings.keep_draws, constrain
                )
                self.chunk_seconds.append((stop - epoch, time.perf_counter() - tick))
                draws = chunk if draws is None else draws.extend(chunk)
                if not finite:
                    raise self._diverged(epoch, stop, draws, finished, constrain, started)
                epoch = stop
                if checkpoint is not None:  # written while the device runs the next chunk
                    state = self.placement.to_host(carry)  # all processes; process 0 writes
                    checkpoint.save_in_background(state, chunk.to_arrays(), {"next_epoch": epoch})
                bar.update(len(epochs))
            if checkpoint is not None:
                checkpoint.wait_at_end()  # the last chunk's write, before returning
        finally:
            if checkpoint is not None:
                checkpoint.wait(raise_error=False)  # never leave a write half done
        last = self.placement.to_host(carry.kernel.position)  # every process holds them
        self.settings = checked_end(self.estimator, last, self.settings, self.keep_key)
        return self._package(draws, carry, constrain, started)

    def _constrain(self) -> Callable:
        """``(chains, draws, ...)`` unconstrained positions -> the model's sites, on the
        host where several processes hold them (the estimator an argument, not a constant:
        its data may span processes)."""
        constrain = jax.jit(lambda estimator, z: jax.vmap(jax.vmap(estimator.constrain))(z))
        return lambda z: self.placement.to_host(constrain(self.estimator, z))

    def _diverged(
        self,
        epoch: int,
        stop: int,
        draws: Draws | None,
        finished: Carry,
        constrain: Callable,
        started: float,
        at_epoch: float | None = None,
    ) -> SamplerDivergedError:
        """The error for a divergence in epochs ``epoch..stop - 1``, with the posterior of the
        finite draws kept and of ``finished``, the carry (at epoch ``at_epoch``, default
        ``epoch``) before the diverged chunk: its streamed sums and last states are finite.
        ``None`` when nothing was kept or streamed and ``finished`` is still in burn-in."""
        cause = divergence_cause(self.model, self.estimator, self.start)
        kept = 0 if draws is None or not draws.sites else next(iter(draws.sites.values())).shape[1]
        stream = self.placement.to_host(finished.stream)
        streamed = 0.0 if stream is None else float(jnp.sum(stream.count))
        if stream is not None and not streamed:  # a sum of no draws is no predictive
            finished = finished._replace(stream=None)
        at_epoch = epoch if at_epoch is None else at_epoch
        if kept == 0 and not streamed and at_epoch <= self.settings.num_burnin_epochs:
            where, posterior = "no draw was kept (error.posterior is None)", None
        else:
            where = "the finite draws so far are in error.posterior"
            posterior = self._package(draws, finished, constrain, started)
        return SamplerDivergedError(
            f"{self.settings.sampler}: a chain reached a non-finite state in epochs "
            f"{epoch}..{stop - 1}; {cause}. {where[0].upper()}{where[1:]}",
            posterior,
        )

    def _package(
        self, draws: Draws | None, carry: Carry, constrain: Callable, started: float
    ) -> Posterior:
        timings = SGMCMCTimings(
            sampling_seconds=time.perf_counter() - started,
            steps_per_epoch=self.plan.steps_per_epoch,
            chain_devices=self.placement.num_devices,
            data_devices=self.placement.data_devices,
            chunk_seconds=list(self.chunk_seconds),
            chunk_read_seconds=list(self.chunk_read_seconds),
        )
        carry = self.placement.to_host(carry)
        return package_posterior(
            self.model,
            draws,
            carry.kernel.position,
            carry.stream,
            constrain=constrain,
            labels=self.labels,
            features=self.features,
            logits_fn=self.logits_fn,
            method=self.settings.sampler,
            settings={**self.settings.as_dict(), **timings.as_dict()},
            model_kwargs=self.model_kwargs,
        )
