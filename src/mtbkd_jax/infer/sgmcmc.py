"""Minibatch SG-MCMC on NumPyro models: SGLD, SGHMC and cyclical SGLD, with a warm start.

The potential is the NumPyro model's own (:mod:`mtbkd_jax.infer.minibatch`): the sampler draws
the minibatch indices and substitutes them into the model's subsampled plates, so the likelihood
and the teacher prior are both scaled by ``N / |B|`` and the base prior is counted once. The
update rules are BlackJAX's SGLD kernel (``z <- z + eta grad log p + sqrt(2 eta tau) xi``) and
its SGHMC diffusion, with the momentum kept across steps (:mod:`mtbkd_jax.infer.langevin`: the
same updates and random numbers, with the noise laid out for speed). Chains are vectorised with
``vmap``; epochs run inside ``lax.scan``; the host sees one chunk of epochs at a time (progress,
checkpoint, NaN check), never a single step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from mtbkd_jax.infer._common import _features, prepare_data
from mtbkd_jax.infer._devices import ChainPlacement
from mtbkd_jax.infer._draws import append_chunk, package_posterior, select_draws
from mtbkd_jax.infer._epochs import ChainState, EpochRunner
from mtbkd_jax.infer._orders import SAMPLING, EpochOrders
from mtbkd_jax.infer._plan import (
    SAMPLERS,
    check_cyclical_draws,
    check_draws_per_epoch,
    checked_arguments,
    fingerprint,
    minibatch_plan,
    step_schedules,
)
from mtbkd_jax.infer._start import divergence_cause, probe, starting_positions
from mtbkd_jax.infer.checkpoint import Checkpoint
from mtbkd_jax.infer.langevin import sghmc_update, sgld_update
from mtbkd_jax.infer.minibatch import MinibatchPotential
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.warm_start import adamw_optimizer, minibatch_optimize

__all__ = ["run_sgmcmc", "SamplerDivergedError", "SAMPLERS"]


class SamplerDivergedError(FloatingPointError):
    """A chain reached a NaN or infinite state; ``posterior`` holds every finite draw so far."""

    def __init__(self, message: str, posterior: Posterior | None):
        super().__init__(message)
        self.posterior = posterior


def run_sgmcmc(
    rng_key: jax.Array,
    model: Callable,
    inputs,
    labels=None,
    *,
    sampler: str = "sgld",
    batch_size: int | None = None,
    num_epochs: int = 80,
    num_burnin_epochs: int = 0,
    step_size: float | Callable = 1e-5,
    temperature: float = 1.0,
    draws_per_epoch: int = 6,
    random_draw_positions: bool = True,
    num_chains: int = 1,
    friction: float = 0.1,
    num_cycles: int = 4,
    exploration_fraction: float = 0.5,
    warm_start_epochs: int = 0,
    warm_start_optimizer: optax.GradientTransformation | None = None,
    init_params: dict | None = None,
    prior_batch_size: int | None = None,
    partial_last_batch: bool = False,
    keep_draws: bool = True,
    predict_inputs=None,
    chunk_epochs: int = 1,
    checkpoint_path=None,
    progress_bar: bool = True,
    model_kwargs: dict | None = None,
    logits_fn: Callable | None = None,
) -> Posterior:
    """Sample ``model(inputs, labels, **model_kwargs)`` with minibatch SG-MCMC.

    Args:
        rng_key: a JAX PRNG key.
        model: an :class:`~mtbkd_jax.MTBKDModel`, or a NumPyro model of your own that declares
            its minibatches, ``numpyro.plate(name, N, subsample_size=B)``, and indexes its data
            with the plate's indices (any plate name; several plates are fine, the first one
            entered sets the epoch). A model that declares no subsampled plate is refused.
        sampler: ``"sgld"``, ``"sghmc"`` or ``"cyclical_sgld"``.
        batch_size: minibatch size |B| of the canonical model's data plate (default 64). A
            model of your own sets its plates' ``subsample_size`` itself (``batch_size``, if
            given, must equal its first plate's).
        num_epochs: sampling epochs after burn-in (an epoch is ``N // batch_size`` steps).
        num_burnin_epochs: epochs whose draws are discarded.
        step_size: ``eta`` in ``z <- z + eta grad log p + sqrt(2 eta tau) xi``, or a schedule
            ``step -> eta`` (:mod:`mtbkd_jax.infer.schedules`: constant, polynomial decay,
            cyclical). For ``"cyclical_sgld"`` a float is the peak of the cosine cycles. For
            ``"sghmc"`` it is the time step ``h`` of BlackJAX's SGHMC diffusion.
        temperature: ``tau`` (1 = the posterior; < 1 = a cold posterior).
        draws_per_epoch: states kept per epoch (the reference keeps 6, at random steps).
        random_draw_positions: keep them at random steps (else evenly spaced: thinning).
        num_chains: chains, vectorised with ``vmap``; with several local devices (on a CPU:
            ``numpyro.set_host_device_count(n)`` at the start of the program) the chains are
            sharded over as many of them as divide ``num_chains``.
        friction: SGHMC's friction ``alpha``.
        num_cycles, exploration_fraction: cyclical SGLD: cycles over the run, and the fraction
            of each cycle run without noise and without keeping draws.
        warm_start_epochs: epochs of minibatch optimisation of the same potential first.
        warm_start_optimizer: optax transformation (default: AdamW at 3e-4 with decoupled
            weight decay 1e-5; the reference code's own, Adam with the decay coupled into the
            gradient, is :func:`~mtbkd_jax.infer.warm_start.reference_optimizer`, which
            :func:`run_paper_sgld` uses).
        init_params: one starting point (site -> array, e.g. ``posterior.point()``) for every
            chain, instead of random ones.
        prior_batch_size: minibatch size of the transfer plate (default: proportional to N).
        partial_last_batch: end each epoch with the ``N mod |B|`` examples left over as one
            smaller minibatch (scaled by ``N / (N mod |B|)``), so an epoch has
            ``ceil(N / |B|)`` steps, as the reference code's PyTorch ``DataLoader``; default:
            ``N // |B|`` equal minibatches, the rest of the shuffled order left to the next
            epoch's reshuffle. One subsampled plate only.
        keep_draws: keep the draws; with ``False`` the posterior holds only each chain's last
            state and the streamed predictions.
        predict_inputs: inputs on which the posterior-predictive mean and mean deviance are
            accumulated over draws inside the chain (``Posterior.streamed``), no draws needed.
        chunk_epochs: epochs per jitted call (between calls: progress, checkpoint, NaN check).
            A chunk's minibatch orders are ``chunk_epochs x num_chains x N`` int32 indices per
            subsampled plate, held once on the host (the next chunk's) and once on the device;
            with a plate of millions keep ``chunk_epochs`` small (an epoch is long there).
        checkpoint_path: write a checkpoint after every chunk and resume from it when present
            (the state is rewritten, the draws are appended to ``<checkpoint_path>.draws``).
            A checkpoint resumes only the run that wrote it: another model, data, setting or
            seed is refused with a :class:`~mtbkd_jax.infer.CheckpointError` naming what
            differs.
        progress_bar: show a tqdm progress bar.
        model_kwargs: further model keyword arguments (e.g. ``prior_inputs``).
        logits_fn: ``(weights, features) -> logits`` for a user's own model.

    Raises:
        SamplerDivergedError: a chain became NaN/inf; ``error.posterior`` keeps all finite draws.
    """
    temperature, friction, step_size = checked_arguments(
        rng_key=rng_key,
        sampler=sampler,
        counts={
            "num_epochs": (num_epochs, 1),
            "num_burnin_epochs": (num_burnin_epochs, 0),
            "draws_per_epoch": (draws_per_epoch, 1),
            "num_chains": (num_chains, 1),
            "num_cycles": (num_cycles, 1),
            "warm_start_epochs": (warm_start_epochs, 0),
            "chunk_epochs": (chunk_epochs, 1),
            "batch_size": (batch_size, 1),
            "prior_batch_size": (prior_batch_size, 1),
        },
        flags={
            "random_draw_positions": random_draw_positions,
            "keep_draws": keep_draws,
            "partial_last_batch": partial_last_batch,
        },
        temperature=temperature,
        friction=friction,
        step_size=step_size,
        exploration_fraction=exploration_fraction,
        warm_start_optimizer=warm_start_optimizer,
    )
    checkpoint = None if checkpoint_path is None else Checkpoint(checkpoint_path, None)
    if checkpoint is not None:
        checkpoint.check_readable()  # not a checkpoint, or truncated: refused before any compute

    features, labels, kwargs = prepare_data(model, inputs, labels, model_kwargs)
    plan = minibatch_plan(
        model, features, labels, kwargs, batch_size, prior_batch_size, partial_last_batch
    )
    plates, static, steps_per_epoch = plan.plates, plan.static, plan.steps_per_epoch
    check_draws_per_epoch(plan, draws_per_epoch)
    logits_fn = logits_fn or getattr(model, "logits", None)
    if predict_inputs is not None and logits_fn is None:
        raise ValueError("predict_inputs needs logits_fn (or an MTBKDModel)")
    if not keep_draws and predict_inputs is None:
        raise ValueError("keep_draws=False keeps nothing unless predict_inputs is given")
    predict = None
    if predict_inputs is not None:
        predict = _features(model, predict_inputs, "predict_inputs")
    data = {"args": (features, labels), "kwargs": plan.arrays, "predict": predict}

    def make_potential(data):
        return MinibatchPotential(model, data["args"], {**data["kwargs"], **static}, plates)

    total_epochs = num_burnin_epochs + num_epochs
    total_steps = total_epochs * steps_per_epoch
    schedule, exploring = step_schedules(
        sampler, step_size, total_steps, num_cycles, exploration_fraction
    )
    init_key, warm_key, sample_key, keep_key = jax.random.split(rng_key, 4)
    if sampler == "cyclical_sgld":
        check_cyclical_draws(
            keep_key,
            exploring,
            plan,
            num_burnin_epochs,
            total_epochs,
            draws_per_epoch,
            random_draw_positions,
            num_cycles,
            exploration_fraction,
        )
    settings = {
        "sampler": sampler,
        "plates": [[p.name, p.size, p.batch_size] for p in plates],
        "batch_size": plates[0].batch_size,
        "num_epochs": int(num_epochs),
        "num_burnin_epochs": int(num_burnin_epochs),
        "num_chains": int(num_chains),
        "warm_start_epochs": int(warm_start_epochs),
        "draws_per_epoch": int(draws_per_epoch),
        "random_draw_positions": random_draw_positions,
        "partial_last_batch": partial_last_batch,
        "step_size": "schedule" if callable(step_size) else step_size,
        "temperature": temperature,
        "friction": friction,
        "keep_draws": keep_draws,
        **(
            {"num_cycles": int(num_cycles), "exploration_fraction": exploration_fraction}
            if sampler == "cyclical_sgld"
            else {}
        ),
    }

    potential = make_potential(data)
    start = starting_positions(model, potential, plan, data, init_params, init_key, num_chains)
    acc = None
    if predict is not None:
        num_predict = predict.shape[0]
        num_classes = logits_fn(
            potential.constrain(jax.tree.map(lambda x: x[0], start)), predict[:1]
        ).shape[-1]
        acc = {
            "sum_probs": jnp.zeros((num_chains, num_predict, num_classes)),
            "sum_deviance": jnp.zeros((num_chains, num_predict)),
            "count": jnp.zeros((num_chains,)),
        }
    state = {"chain": ChainState(start, jax.tree.map(jnp.zeros_like, start)), "acc": acc}
    placement = ChainPlacement(num_chains)  # several local devices share out the chains
    state, data = placement.chains(state), placement.replicated(data)
    warm_optimizer = warm_start_optimizer or adamw_optimizer()

    bar = tqdm(
        total=warm_start_epochs + total_epochs,
        unit="epoch",
        desc=sampler,
        disable=not progress_bar,
        leave=False,
    )
    restored = None
    if checkpoint is not None:
        checkpoint.fingerprint = fingerprint(
            settings=settings,
            model=model,
            plan=plan,
            rng_key=rng_key,
            features=features,
            labels=labels,
            predict=predict,
            init_params=init_params,
            schedule=schedule,
            total_steps=total_steps,
            warm_start_optimizer=warm_optimizer if warm_start_epochs else None,
            warm_start_steps=warm_start_epochs * steps_per_epoch,
            probe=probe(potential, start, logits_fn, predict),
        )
        restored = checkpoint.load(like_state=state)
    if restored is None:
        position = minibatch_optimize(
            start,
            make_potential,
            plates,
            steps_per_epoch,
            int(warm_start_epochs),
            warm_optimizer,
            warm_key,
            data,
            chunk_epochs=chunk_epochs,
            on_chunk=bar.update,
            placement=placement,
            partial_last_batch=partial_last_batch,
        )
        state["chain"] = ChainState(position, jax.tree.map(jnp.zeros_like, position))
        collected, next_epoch = {}, 0
    else:
        state, collected, progress = restored
        state = jax.tree.map(jnp.asarray, state)
        next_epoch = progress["next_epoch"]
        bar.update(warm_start_epochs + next_epoch)
    state = placement.chains(state)  # every chunk sees the same shardings: one compile

    def transition(key, state, potential, batch, step):
        chain = state["chain"]
        eta = schedule(step)
        tau = jnp.where(exploring(step), 0.0, temperature)
        grad = potential.grad(chain.position, batch)
        if sampler == "sghmc":
            position, momentum = sghmc_update(
                key, chain.position, chain.momentum, grad, eta, tau, friction
            )
            return {**state, "chain": ChainState(position, momentum)}
        position = sgld_update(key, chain.position, grad, eta, tau)
        return {**state, "chain": ChainState(position, chain.momentum)}

    def observe(state, step, epoch, potential, data):
        valid = (epoch >= num_burnin_epochs) & ~exploring(step)
        acc = state["acc"]
        if acc is not None:
            weights = potential.constrain(state["chain"].position)
            probs = jax.nn.softmax(logits_fn(weights, data["predict"]), axis=-1)
            deviance = -2.0 * jax.scipy.special.xlogy(probs, probs).sum(-1)
            acc = {
                "sum_probs": acc["sum_probs"] + jnp.where(valid, probs, 0.0),
                "sum_deviance": acc["sum_deviance"] + jnp.where(valid, deviance, 0.0),
                "count": acc["count"] + valid.astype(jnp.float32),
            }
        out = {"valid": valid, "step_size": schedule(step)}
        if keep_draws:
            out["position"] = state["chain"].position
        return {**state, "acc": acc}, out

    runner = EpochRunner(
        make_potential,
        transition,
        plates,
        steps_per_epoch,
        draws_per_epoch,
        random_draw_positions,
        observe,
        partial_last_batch=partial_last_batch,
    )
    run_chunk = jax.jit(jax.vmap(runner.run_epochs, in_axes=(0, 0, None, None, 0, None)))
    constrain = jax.jit(jax.vmap(jax.vmap(potential.constrain)))
    chain_keys = placement.chains(jax.random.split(sample_key, num_chains))
    orders = EpochOrders(chain_keys, plates, SAMPLING)
    started = time.perf_counter()
    chunk_seconds = []

    def package():
        return package_posterior(
            model,
            collected,
            state,
            labels,
            features,
            logits_fn,
            sampler,
            settings,
            constrain,
            model_kwargs,
        )

    if next_epoch < total_epochs:
        next_orders = orders.take(next_epoch, min(next_epoch + chunk_epochs, total_epochs))
    try:
        while next_epoch < total_epochs:
            chunk_start = time.perf_counter()
            stop = min(next_epoch + chunk_epochs, total_epochs)
            epochs = jnp.arange(next_epoch, stop)
            current, next_orders = placement.chains(next_orders), None  # now on the device(s)
            state, observed = run_chunk(state, chain_keys, keep_key, epochs, current, data)
            state = placement.chains(state)
            del current
            if stop < total_epochs:  # drawn on the host while the device runs this chunk
                next_orders = orders.take(stop, min(stop + chunk_epochs, total_epochs))
            chunk, all_finite = select_draws(observed, state, keep_draws, constrain)
            chunk_seconds.append((len(epochs), time.perf_counter() - chunk_start))
            collected = append_chunk(collected, chunk)
            if not all_finite:
                raise SamplerDivergedError(
                    f"{sampler}: a chain reached a non-finite state in epochs "
                    f"{int(epochs[0])}..{int(epochs[-1])}; "
                    + divergence_cause(model, data, static, potential, start)
                    + ". The finite draws so far are in error.posterior",
                    package(),
                )
            next_epoch = int(epochs[-1]) + 1
            if checkpoint is not None:  # written while the device runs the next chunk
                checkpoint.save_in_background(state, chunk, {"next_epoch": next_epoch})
            bar.update(len(epochs))
        if checkpoint is not None:
            checkpoint.wait()  # the last chunk's checkpoint is written before returning
    finally:
        bar.close()
        if checkpoint is not None:
            checkpoint.wait(raise_error=False)  # never leave a write half done behind an error
    posterior = package()
    posterior.settings["sampling_seconds"] = time.perf_counter() - started
    posterior.settings["steps_per_epoch"] = steps_per_epoch
    posterior.settings["chain_devices"] = placement.num_devices
    # (epochs, seconds) per jitted chunk; the first includes compilation
    posterior.settings["chunk_seconds"] = chunk_seconds
    return posterior
