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
import numpy as np
import optax
from tqdm.auto import tqdm

from mtbkd_jax._checks import require_counts, require_nonnegative, require_positive
from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._common import prepare_data
from mtbkd_jax.infer._devices import ChainPlacement
from mtbkd_jax.infer._draws import append_chunk, package_posterior, select_draws
from mtbkd_jax.infer._epochs import ChainState, EpochRunner
from mtbkd_jax.infer._orders import ORDERS_SCHEME, SAMPLING, EpochOrders
from mtbkd_jax.infer.checkpoint import load_checkpoint, save_checkpoint
from mtbkd_jax.infer.langevin import sghmc_update, sgld_update
from mtbkd_jax.infer.minibatch import MinibatchPotential, PlateSpec
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.warm_start import minibatch_optimize, reference_optimizer
from mtbkd_jax.priors import TeacherPrior

__all__ = ["run_sgmcmc", "run_paper_sgld", "SamplerDivergedError", "SAMPLERS"]

SAMPLERS = ("sgld", "sghmc", "cyclical_sgld")


class SamplerDivergedError(FloatingPointError):
    """A chain reached a NaN or infinite state; ``posterior`` holds every finite draw so far."""

    def __init__(self, message: str, posterior: Posterior | None):
        super().__init__(message)
        self.posterior = posterior


def _is_canonical(model) -> bool:
    from mtbkd_jax.model import MTBKDModel

    return isinstance(model, MTBKDModel)


def _plates_for(model, features, kwargs, batch_size, prior_batch_size):
    """Subsampled plates and the static model kwargs that switch subsampling on."""
    num_examples = int(features.shape[0])
    plates = [PlateSpec("data", num_examples, min(batch_size, num_examples))]
    static = {}
    if _is_canonical(model):
        static["subsample_size"] = plates[0].batch_size
        prior_inputs = kwargs.get("prior_inputs")
        if prior_inputs is not None and model.teachers is not None:
            num_transfer = int(prior_inputs.shape[0])
            if prior_batch_size is None:  # both plates finish an epoch together
                prior_batch_size = -(-plates[0].batch_size * num_transfer // num_examples)
            plates.append(PlateSpec("transfer", num_transfer, min(prior_batch_size, num_transfer)))
            static["prior_subsample_size"] = plates[1].batch_size
    return tuple(plates), static


def run_sgmcmc(
    rng_key: jax.Array,
    model: Callable,
    inputs,
    labels=None,
    *,
    sampler: str = "sgld",
    batch_size: int = 64,
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
        model: an :class:`~mtbkd_jax.MTBKDModel` or a NumPyro model whose data plate is named
            ``"data"`` and which indexes its data with the plate's indices.
        sampler: ``"sgld"``, ``"sghmc"`` or ``"cyclical_sgld"``.
        batch_size: minibatch size |B| of the data plate.
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
        warm_start_optimizer: optax transformation (default: the reference's AdamW, 3e-4, 1e-5).
        init_params: one starting point (site -> array) for every chain, instead of random ones.
        prior_batch_size: minibatch size of the transfer plate (default: proportional to N).
        keep_draws: keep the draws; with ``False`` the posterior holds only each chain's last
            state and the streamed predictions.
        predict_inputs: inputs on which the posterior-predictive mean and mean deviance are
            accumulated over draws inside the chain (``Posterior.streamed``), no draws needed.
        chunk_epochs: epochs per jitted call (between calls: progress, checkpoint, NaN check).
            A chunk's minibatch orders are ``chunk_epochs x num_chains x N`` int32 indices per
            subsampled plate, held once on the host (the next chunk's) and once on the device;
            with a plate of millions keep ``chunk_epochs`` small (an epoch is long there).
        checkpoint_path: write a checkpoint after every chunk and resume from it when present.
        progress_bar: show a tqdm progress bar.
        model_kwargs: further model keyword arguments (e.g. ``prior_inputs``).
        logits_fn: ``(weights, features) -> logits`` for a user's own model.

    Raises:
        SamplerDivergedError: a chain became NaN/inf; ``error.posterior`` keeps all finite draws.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    require_counts(
        batch_size=(batch_size, 1),
        num_epochs=(num_epochs, 1),
        num_burnin_epochs=(num_burnin_epochs, 0),
        draws_per_epoch=(draws_per_epoch, 1),
        num_chains=(num_chains, 1),
        num_cycles=(num_cycles, 1),
        warm_start_epochs=(warm_start_epochs, 0),
        chunk_epochs=(chunk_epochs, 1),
    )
    temperature = require_nonnegative(temperature, "temperature")
    friction = require_positive(friction, "friction")
    if not callable(step_size):
        step_size = require_positive(step_size, "step_size")

    features, labels, kwargs = prepare_data(model, inputs, labels, model_kwargs)
    plates, static = _plates_for(model, features, kwargs, int(batch_size), prior_batch_size)
    steps_per_epoch = plates[0].size // plates[0].batch_size
    if draws_per_epoch > steps_per_epoch:
        raise ValueError(
            f"draws_per_epoch ({draws_per_epoch}) exceeds the {steps_per_epoch} steps of an epoch"
        )
    logits_fn = logits_fn or getattr(model, "logits", None)
    if predict_inputs is not None and logits_fn is None:
        raise ValueError("predict_inputs needs logits_fn (or an MTBKDModel)")
    if not keep_draws and predict_inputs is None:
        raise ValueError("keep_draws=False keeps nothing unless predict_inputs is given")
    if (
        _is_canonical(model)
        and model.teacher_prior is not None
        and kwargs.get("teacher_prior", True)
    ):
        # the prior's (N, M, C) constants go through jit as data, not as compiled constants
        # (only the canonical model takes ``prior_constants``; a user's model closes over its own)
        kwargs.setdefault("prior_constants", model.teacher_prior)
    arrays = {
        k: v for k, v in kwargs.items() if isinstance(v, jax.Array | np.ndarray | TeacherPrior)
    }
    static.update({k: v for k, v in kwargs.items() if k not in arrays})
    featurize = getattr(model, "featurize", None)
    predict = None
    if predict_inputs is not None:
        predict = featurize(predict_inputs) if featurize else jnp.asarray(predict_inputs)
    data = {"args": (features, labels), "kwargs": arrays, "predict": predict}

    def make_potential(data):
        return MinibatchPotential(model, data["args"], {**data["kwargs"], **static}, plates)

    total_epochs = num_burnin_epochs + num_epochs
    cycle = max(1, total_epochs * steps_per_epoch // num_cycles)
    if callable(step_size):
        schedule = step_size
    elif sampler == "cyclical_sgld":
        schedule = schedules.cyclical(step_size, cycle)
    else:
        schedule = schedules.constant(step_size)
    if sampler == "cyclical_sgld":
        exploring = schedules.cyclical_exploration(cycle, exploration_fraction)
    else:
        exploring = lambda step: jnp.zeros((), bool)  # noqa: E731
    init_key, warm_key, sample_key, keep_key = jax.random.split(rng_key, 4)
    fingerprint = {
        "sampler": sampler,
        "batch_size": int(batch_size),
        "num_epochs": int(num_epochs),
        "num_burnin_epochs": int(num_burnin_epochs),
        "num_chains": int(num_chains),
        "warm_start_epochs": int(warm_start_epochs),
        "draws_per_epoch": int(draws_per_epoch),
        "step_size": repr(step_size),
        "temperature": temperature,
        "friction": friction,
        "key": np.asarray(jax.random.key_data(rng_key)).tolist(),
        "plates": [[p.name, p.size, p.batch_size] for p in plates],
        # a cheap fingerprint of the data, summed on the device (no float64 host copy of N x F)
        "data_sum": round(float(jnp.sum(features, dtype=jnp.float32)), 3),
        "keep_draws": bool(keep_draws),
        # the minibatch orders' generator: a checkpoint resumes bit-for-bit only under the same one
        "minibatch_orders": ORDERS_SCHEME,
    }

    potential = make_potential(data)
    if init_params is not None:
        point = _unconstrain(potential, init_params)
        start = {k: jnp.broadcast_to(v, (num_chains, *v.shape)) for k, v in point.items()}
    else:
        starts = [potential.initial_position(k) for k in jax.random.split(init_key, num_chains)]
        start = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
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

    bar = tqdm(
        total=warm_start_epochs + total_epochs,
        unit="epoch",
        desc=sampler,
        disable=not progress_bar,
        leave=False,
    )
    restored = None
    if checkpoint_path is not None:
        restored = load_checkpoint(checkpoint_path, fingerprint=fingerprint, like_state=state)
    if restored is None:
        position = minibatch_optimize(
            start,
            make_potential,
            plates,
            steps_per_epoch,
            int(warm_start_epochs),
            warm_start_optimizer or reference_optimizer(),
            warm_key,
            data,
            chunk_epochs=chunk_epochs,
            on_chunk=bar.update,
            placement=placement,
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
    )
    run_chunk = jax.jit(jax.vmap(runner.run_epochs, in_axes=(0, 0, None, None, 0, None)))
    constrain = jax.jit(jax.vmap(jax.vmap(potential.constrain)))
    chain_keys = placement.chains(jax.random.split(sample_key, num_chains))
    orders = EpochOrders(chain_keys, plates, SAMPLING)
    started = time.perf_counter()
    chunk_seconds = []
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
                    f"{int(epochs[0])}..{int(epochs[-1])}; lower step_size. The finite draws "
                    "so far are in error.posterior",
                    package_posterior(
                        model,
                        collected,
                        state,
                        labels,
                        features,
                        logits_fn,
                        sampler,
                        fingerprint,
                        constrain,
                    ),
                )
            next_epoch = int(epochs[-1]) + 1
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_path,
                    fingerprint=fingerprint,
                    state=state,
                    collected=collected,
                    progress={"next_epoch": next_epoch},
                )
            bar.update(len(epochs))
    finally:
        bar.close()
    posterior = package_posterior(
        model, collected, state, labels, features, logits_fn, sampler, fingerprint, constrain
    )
    posterior.settings["sampling_seconds"] = time.perf_counter() - started
    posterior.settings["steps_per_epoch"] = steps_per_epoch
    posterior.settings["chain_devices"] = placement.num_devices
    # (epochs, seconds) per jitted chunk; the first includes compilation
    posterior.settings["chunk_seconds"] = chunk_seconds
    return posterior


def run_paper_sgld(rng_key, model, inputs, labels=None, **overrides) -> Posterior:
    """The reference code's schedule (METHOD §5) in one call.

    AdamW warm start (learning rate 3e-4, weight decay 1e-5, batch 64, 120 epochs), then 80
    epochs of SGLD with ``eta = 8e-8`` (``sqrt(2 eta) = 4e-4``), temperature 1, keeping 6
    states at random steps of each epoch: 480 draws. Any argument of :func:`run_sgmcmc` can be
    overridden.
    """
    settings = dict(
        sampler="sgld",
        batch_size=64,
        warm_start_epochs=120,
        warm_start_optimizer=reference_optimizer(),
        num_epochs=80,
        num_burnin_epochs=0,
        step_size=8e-8,
        temperature=1.0,
        draws_per_epoch=6,
        random_draw_positions=True,
    )
    settings.update(overrides)
    return run_sgmcmc(rng_key, model, inputs, labels, **settings)


# --------------------------------------------------------------------------- helpers
def _unconstrain(potential: MinibatchPotential, params: dict) -> dict:
    from numpyro.infer.util import unconstrain_fn

    return unconstrain_fn(
        potential._substituted(potential.first_batch()),
        potential.model_args,
        potential.model_kwargs,
        {k: jnp.asarray(v) for k, v in params.items()},
    )
