"""``run_sgmcmc``: the host driver of minibatch SG-MCMC on NumPyro models.

It composes three pieces that stand alone: the model's minibatch gradient estimator
(:mod:`mtbkd_jax.infer.gradients`: the likelihood and the teacher prior scaled by ``N / |B|``,
the base prior counted once), a kernel (:data:`SAMPLERS`) and the epoch loop
(:mod:`mtbkd_jax.infer._loop`). The driver adds what a long run needs: a warm start,
minibatch orders drawn on the host ahead of the device, chains vectorised with ``vmap`` and
sharded over local devices (or over a mesh's ``chains`` axis, each minibatch split over its
``data`` axis: :mod:`mtbkd_jax.infer.mesh`), chunks of epochs inside one ``jit`` call (between
chunks: progress, checkpoint, NaN check), thinning, and the posterior predictive streamed over
draws. With ``stream=True`` the data stay on the host and each chunk's minibatch rows are
streamed to the device (:mod:`mtbkd_jax.infer.streaming`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from mtbkd_jax.infer._common import _features, prepare_data
from mtbkd_jax.infer._devices import ChainPlacement
from mtbkd_jax.infer._driver import SamplerDivergedError, SamplerRun
from mtbkd_jax.infer._layout import check_data_layout
from mtbkd_jax.infer._plan import (
    check_cyclical_draws,
    check_draws_per_epoch,
    checked_arguments,
    fingerprint,
    step_schedules,
)
from mtbkd_jax.infer._records import SGMCMCSettings
from mtbkd_jax.infer._samplers import DEFAULT_FRICTION, SAMPLERS, build_sampler
from mtbkd_jax.infer._start import first_chain, probe, starting_positions
from mtbkd_jax.infer._stream_driver import StreamedRun
from mtbkd_jax.infer._stream_pairing import check_row_pairing
from mtbkd_jax.infer.checkpoint import Checkpoint
from mtbkd_jax.infer.gradients import GradientEstimator, MinibatchPlan, minibatch_plan
from mtbkd_jax.infer.mesh import MeshPlacement, check_mesh
from mtbkd_jax.infer.multiprocess import require_addressable
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.stratified import (
    ShardedDataPlacement,
    check_sharded_plates,
    data_on_mesh,
)
from mtbkd_jax.infer.streaming import (
    StreamedEstimator,
    check_stream_arguments,
    streamed_data,
    streamed_probe,
)
from mtbkd_jax.infer.warm_start import adamw_optimizer

if TYPE_CHECKING:
    import os

    from jax.sharding import Mesh
    from numpy.typing import ArrayLike

__all__ = ["run_sgmcmc", "SamplerDivergedError", "SAMPLERS"]


def run_sgmcmc(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    sampler: str = "sgld",
    batch_size: int | None = None,
    num_epochs: int = 80,
    num_burnin_epochs: int = 0,
    step_size: float | Callable | str = 1e-5,
    temperature: float = 1.0,
    draws_per_epoch: int = 6,
    random_draw_positions: bool = True,
    num_chains: int = 1,
    friction: float = DEFAULT_FRICTION,
    num_cycles: int = 4,
    exploration_fraction: float = 0.5,
    warm_start_epochs: int = 0,
    warm_start_optimizer: optax.GradientTransformation | None = None,
    init_params: dict | list[dict] | None = None,
    prior_batch_size: int | None = None,
    partial_last_batch: bool = False,
    keep_draws: bool = True,
    predict_inputs: ArrayLike | None = None,
    chunk_epochs: int = 1,
    checkpoint_path: str | os.PathLike[str] | None = None,
    progress_bar: bool = True,
    sampler_options: dict | None = None,
    model_kwargs: dict | None = None,
    logits_fn: Callable | None = None,
    mesh: Mesh | None = None,
    shard_data: bool = False,
    stream: bool = False,
    chunk_steps: int | None = None,
) -> Posterior:
    """Sample ``model(inputs, labels, **model_kwargs)`` with minibatch SG-MCMC.

    The inputs are taken as float32 and the chains run in float32, with ``jax_enable_x64`` too
    (:class:`~mtbkd_jax.infer.SGMCMC` under NumPyro's ``MCMC`` samples in float64 there).

    Args:
        rng_key: a JAX PRNG key.
        model: an :class:`~mtbkd_jax.MTBKDModel`, or a NumPyro model of your own that declares
            its minibatches, ``numpyro.plate(name, N, subsample_size=B)``, and indexes its data
            with the plate's indices (any plate name; several plates are fine, the first one
            entered sets the epoch). A model that declares no subsampled plate is refused.
        sampler: ``"sgld"``, ``"sghmc"``, ``"cyclical_sgld"``, ``"sgnht"``, ``"psgld"`` or
            ``"ncsgld"`` (the kernels :mod:`~mtbkd_jax.infer.sgld`,
            :mod:`~mtbkd_jax.infer.sghmc`, :mod:`~mtbkd_jax.infer.cyclical_sgld`,
            :mod:`~mtbkd_jax.infer.sgnht`, :mod:`~mtbkd_jax.infer.psgld`,
            :mod:`~mtbkd_jax.infer.ncsgld`: SGLD corrected for the minibatch noise, two
            half-batch gradients per step; it needs an even batch size and the in-memory data
            path, not ``stream``, ``shard_data`` or ``partial_last_batch``). Each epoch visits
            every example once in a fresh random order, except under ``"ncsgld"``, which draws
            every step's minibatch anew, with replacement (its noise correction needs
            independent minibatches: :mod:`~mtbkd_jax.infer.ncsgld`).
        batch_size: minibatch size ``|B|`` of the canonical model's data plate (default 64;
            above ``N``, the full batch). A model of your own sets its plates'
            ``subsample_size`` itself (``batch_size``, if given, must equal its first plate's).
        num_epochs: sampling epochs after burn-in (an epoch is ``N // batch_size`` steps).
        num_burnin_epochs: epochs whose draws are discarded.
        step_size: ``eta`` in ``z <- z + eta grad log p + sqrt(2 eta tau) xi``, or a schedule
            ``step -> eta`` (:mod:`mtbkd_jax.infer.schedules`: constant, polynomial decay,
            cyclical). For ``"cyclical_sgld"`` it is the peak of the cosine cycles (a schedule
            sets each step's peak). For ``"sghmc"`` and ``"sgnht"`` it is the time step ``h``.
            ``"auto"``: chosen by pilot runs of the sampler from the chains after the warm
            start (:func:`~mtbkd_jax.infer.choose_step_size`'s rule: half the largest stable
            step of a ladder; a random start is judged on its transient, so warm-start or pass
            ``init_params``); the choice and its evidence are in the posterior's
            ``settings["step_size"]`` and ``settings["step_size_choice"]``. Not with
            ``checkpoint_path``. It buys stability, not accuracy (the stiffest variance up to
            1.8 times the posterior's): where variances matter, use a fraction. Any step is
            judged at the run's end (``settings["end_temperature_ratio"]``, warned above 10).
        temperature: ``tau`` (1 = the posterior; < 1 = a cold posterior; 0 = no noise).
        draws_per_epoch: states kept per epoch (the reference keeps 6, at random steps).
        random_draw_positions: keep them at random steps (else evenly spaced: thinning).
        num_chains: chains, vectorised with ``vmap``; with several local devices (on a CPU:
            ``numpyro.set_host_device_count(n)`` at the start of the program) the chains are
            sharded over as many of them as divide ``num_chains``.
        friction: SGHMC's friction ``alpha``; SGNHT's injected noise ``A`` (its thermostat
            starts there); the other samplers ignore it (a warning says so).
        sampler_options: further settings of a kernel, e.g. pSGLD's
            ``{"decay": 0.99, "regularizer": 1e-5, "correction": False, "adapt_steps": n}``
            (default: adapting in the burn-in, or the first epoch); NC-SGLD's ``rank``, ``margin``.
        num_cycles, exploration_fraction: cyclical SGLD: cycles in the run (``ceil(steps /
            num_cycles)`` steps each), and the fraction of each cycle without noise or draws.
        warm_start_epochs: epochs of minibatch optimisation of the same potential first.
        warm_start_optimizer: optax transformation (default: AdamW at 3e-4 with decoupled
            weight decay 1e-5; the reference code's own, Adam with the decay coupled into the
            gradient, is :func:`~mtbkd_jax.infer.warm_start.reference_optimizer`, which
            :func:`run_paper_sgld` uses).
        init_params: one starting point (site -> array, e.g. ``posterior.point()``) for every
            chain, or a list of ``num_chains`` points (one per chain, e.g. MAPs fitted from
            different random starts), instead of random ones.
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
        checkpoint_path: a checkpoint after every chunk (state rewritten, draws appended to
            ``<checkpoint_path>.draws``), resumed when present. It resumes only the run that
            wrote it: another model, data, setting, seed or number of epochs is refused with a
            :class:`~mtbkd_jax.infer.CheckpointError` naming what differs. Not checkpointed:
            the warm start (restarted). One run per path: two at once overwrite each other.
        progress_bar: show a tqdm progress bar.
        model_kwargs: further model keyword arguments (e.g. ``prior_inputs``).
        logits_fn: ``(weights, features) -> logits`` for a user's own model.
        mesh: a :class:`jax.sharding.Mesh` with axes ``("chains", "data")``
            (:mod:`mtbkd_jax.infer.mesh`): the chains split over ``chains``; every step's
            minibatch (each subsampled plate's, the transfer plate's too) split over
            ``data``, each device evaluating its part of the potential, one all-reduce of
            the gradient per step; the data replicated on every device. The ``chains`` axis
            must divide ``num_chains`` and the ``data`` axis every plate's minibatch size
            (with ``partial_last_batch``, the left-over batch's too). The draws equal the
            run without a mesh to float32 rounding (``rtol=1e-5, atol=1e-6`` in the tests;
            sums in another order), so a checkpoint written with one mesh resumes with
            another or none (its fingerprint leaves the mesh out). Default: chains sharded
            over as many local devices as divide them, as described under ``num_chains``.
        shard_data: with ``mesh``, shard the data over its ``data`` axis instead of
            replicating them (:mod:`mtbkd_jax.infer.stratified`): the inputs, the labels and
            every array with a subsampled plate's length (transfer inputs, the teacher
            prior's constants) split into ``D`` shards of consecutive rows, each device
            reading only its own, and every minibatch *stratified*: ``|B| / D`` rows from each
            shard, in each shard's own random order per epoch. Unbiased, but other draws
            than ``shard_data=False`` (the same draws for any number of processes with the
            same ``D``). The data may be global arrays of which this process holds only its
            rows (several processes: :mod:`mtbkd_jax.infer.multiprocess`). ``D`` must divide
            every plate's length and minibatch size; not with ``partial_last_batch``.
        stream: stream the data from the host (:mod:`mtbkd_jax.infer.streaming`): ``inputs``,
            ``labels`` and every array keyword argument with a subsampled plate's length stay
            where they are (NumPy arrays, or ``np.load(path, mmap_mode="r")`` memory maps of
            files larger than memory); each chunk's minibatch rows are gathered on the host
            and transferred while the device runs the previous chunk, so the device holds two
            chunks' rows, never N. The same draws as without it (to float32 rounding; equal
            in the tests). The inputs must be the student's features (no feature extractor).
            Not with ``mesh``, ``shard_data``, ``warm_start_epochs``, ``partial_last_batch``
            or ``step_size="auto"``; the posterior holds no training inputs (its pointwise
            log-likelihood would need every row), and its checkpoint resumes only a streamed
            run. Only the model's arguments are streamed: a per-example array the model
            closes over and indexes by hand (``prior.take(idx)``) would get rows ``0 .. |B|-1``
            at every step; pass it as a keyword argument instead. The run checks this at
            its start: each site's terms on the first minibatch are compared with those on the
            same rows reordered, and a model whose terms change is refused, naming the site
            (it sees the array's first ``|B|`` rows only: where those agree, as in data
            sorted by class, it cannot tell).
        chunk_steps: with ``stream``, steps per jitted call (default ``chunk_epochs`` epochs'
            steps); it may end inside an epoch (an epoch of millions of rows needs that), and
            a checkpoint then records the next step. Device memory per chunk: ``2 x
            num_chains x chunk_steps x |B|`` rows of every streamed array.

    Raises:
        SamplerDivergedError: a chain became NaN/inf; ``error.posterior``: the finite draws.
    """
    check_stream_arguments(**locals())
    auto = _auto_step_size(step_size, checkpoint_path)
    arguments = checked_arguments({**locals(), "step_size": 1.0 if auto else step_size})
    checkpoint = None if checkpoint_path is None else Checkpoint(checkpoint_path, None)
    if checkpoint is not None:
        checkpoint.check_readable()  # not a checkpoint, or truncated: refused before any compute
    if shard_data:
        inputs, labels, model_kwargs = data_on_mesh(inputs, labels, model_kwargs, mesh)
    else:
        require_addressable(
            {"inputs": inputs, "labels": labels, "model_kwargs": model_kwargs},
            "pass mesh= (a mesh over every process's devices) and shard_data=True",
        )
    features, labels, plan, streamed = _prepared(
        model, inputs, labels, model_kwargs, batch_size, prior_batch_size, partial_last_batch,
        stream,
    )  # fmt: skip
    check_draws_per_epoch(plan, draws_per_epoch, batch_size)
    placement = _placement(mesh, shard_data, num_chains, plan)
    logits_fn, predict = _prediction_inputs(model, logits_fn, predict_inputs, keep_draws)
    settings = SGMCMCSettings.from_arguments(arguments, plan.plates)
    estimator = streamed or GradientEstimator(model, (features, labels), plan.kwargs, plan.plates)
    estimator = placement.sharded(estimator) if shard_data else estimator
    total_steps = settings.total_epochs * plan.steps_per_epoch
    schedule, exploring, cycle = step_schedules(
        sampler, arguments["step_size"], total_steps, num_cycles, exploration_fraction
    )
    make_kernel = partial(
        build_sampler,
        sampler,
        temperature=settings.temperature,
        friction=settings.friction,
        cycle_length=cycle,
        exploration_fraction=exploration_fraction,
        options=settings.sampler_options,
    )
    init_key, warm_key, sample_key, keep_key = jax.random.split(rng_key, 4)
    if sampler == "cyclical_sgld":
        check_cyclical_draws(
            keep_key, exploring, plan, num_burnin_epochs, settings.total_epochs, draws_per_epoch,
            random_draw_positions, num_cycles, exploration_fraction,
        )  # fmt: skip
    start = starting_positions(model, estimator, plan, init_params, init_key, num_chains)
    if isinstance(placement, ShardedDataPlacement):  # is every array where the model needs it?
        check_data_layout(placement, estimator, first_chain(placement.to_host(start)))
    if streamed is not None:  # are the model's rows paired with each other only?
        check_row_pairing(streamed, first_chain(start))
    run = (StreamedRun if stream else SamplerRun)(
        model=model, estimator=estimator, plan=plan, make_kernel=make_kernel,
        schedule=schedule, settings=settings, logits_fn=logits_fn, predict=predict,
        labels=labels, features=None if stream else features, model_kwargs=model_kwargs,
        start=start, placement=placement, keep_key=keep_key,
        chain_keys=jax.random.split(sample_key, num_chains), total_epochs=settings.total_epochs,
    )  # fmt: skip
    warm_optimizer = warm_start_optimizer or adamw_optimizer()
    if checkpoint is not None:
        checkpoint.fingerprint = fingerprint(
            settings=settings.as_dict(), model=model, plan=plan, rng_key=rng_key,
            features=features, labels=labels, predict=predict, init_params=init_params,
            schedule=schedule, total_steps=total_steps,
            warm_start_optimizer=warm_optimizer if warm_start_epochs else None,
            warm_start_steps=warm_start_epochs * plan.steps_per_epoch,
            probe=(streamed_probe if stream else probe)(estimator, start, logits_fn, predict),
            num_strata=placement.num_strata, streamed=stream,
        )  # fmt: skip
    with _progress(warm_start_epochs + settings.total_epochs, sampler, progress_bar) as bar:
        if isinstance(run, StreamedRun) and streamed is not None:
            run.rows, run.chunk_steps = (
                streamed.rows,
                chunk_steps or chunk_epochs * plan.steps_per_epoch,
            )
            return run.sample_streamed(
                *run.resume_or_start_streamed(checkpoint, bar), checkpoint, bar
            )
        carry, draws, first_epoch = run.resume_or_start(
            checkpoint, warm_optimizer, warm_key, warm_start_epochs, chunk_epochs, bar
        )
        if auto:  # the pilots' key leaves the run's own keys as they were
            run.choose_step_size(carry.kernel.position, jax.random.fold_in(rng_key, 0x5EED))
        return run.sample(carry, draws, first_epoch, chunk_epochs, checkpoint, bar)


def _progress(total: int, sampler: str, shown: bool) -> tqdm:
    """The run's progress bar, in epochs."""
    return tqdm(total=total, unit="epoch", desc=sampler, disable=not shown, leave=False)


def _prepared(
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None,
    model_kwargs: dict | None,
    batch_size: int | None,
    prior_batch_size: int | None,
    partial_last_batch: bool,
    stream: bool,
) -> tuple[
    jax.Array | np.ndarray, jax.Array | np.ndarray | None, MinibatchPlan, StreamedEstimator | None
]:
    """``(features, labels, plan, streamed estimator)``: the data checked and featurized on the
    device, or checked and left on the host for a streamed run (then with its estimator)."""
    if stream:
        features, host_labels, plan, _, streamed = streamed_data(
            model, inputs, labels, model_kwargs, batch_size, prior_batch_size
        )
        return features, host_labels, plan, streamed
    on_device, device_labels, kwargs = prepare_data(model, inputs, labels, model_kwargs)
    plan = minibatch_plan(
        model, (on_device, device_labels), kwargs, batch_size, prior_batch_size, partial_last_batch
    )
    return on_device, device_labels, plan, None


def _placement(
    mesh: Mesh | None, shard_data: bool, num_chains: int, plan: MinibatchPlan
) -> ChainPlacement | MeshPlacement:
    """Where the chains (and with ``shard_data``, the data) live."""
    if mesh is None:
        return ChainPlacement(num_chains)
    checked = check_mesh(mesh, num_chains=num_chains, batch_sizes=_split(plan))
    if not shard_data:
        return MeshPlacement(checked)
    check_sharded_plates(plan.plates, checked.shape["data"], plan.partial_last_batch)
    return ShardedDataPlacement(checked, [p.size for p in plan.plates])


def _split(plan: MinibatchPlan) -> dict[str, int]:
    """The minibatches a mesh's ``data`` axis splits at every step, by name."""
    sizes = {f"the minibatch of plate {p.name!r}": p.batch_size for p in plan.plates}
    lead = plan.plates[0]
    if plan.partial_last_batch and lead.size % lead.batch_size:
        sizes[f"the partial last batch of plate {lead.name!r}"] = lead.size % lead.batch_size
    return sizes


def _auto_step_size(step_size: object, checkpoint_path: object) -> bool:
    """Whether ``step_size`` is ``"auto"`` (refused with a checkpoint: a resumed run could not
    redo the pilots from the warm start it skips)."""
    if not isinstance(step_size, str):
        return False
    if step_size != "auto":
        raise TypeError(f"step_size must be a number, a schedule or 'auto', got {step_size!r}")
    if checkpoint_path is not None:
        raise ValueError(
            "step_size='auto' cannot be combined with checkpoint_path: choose the step size "
            "first (mtbkd_jax.infer.choose_step_size) and pass the number"
        )
    return True


def _prediction_inputs(
    model: Callable,
    logits_fn: Callable | None,
    predict_inputs: ArrayLike | None,
    keep_draws: bool,
) -> tuple[Callable | None, jax.Array | None]:
    """``(logits_fn, predict features)``, checked."""
    if logits_fn is not None and not callable(logits_fn):
        raise TypeError(
            "logits_fn must be a function (constrained draws, inputs) -> logits, got "
            f"{type(logits_fn).__name__}"
        )
    logits_fn = logits_fn or getattr(model, "logits", None)
    if predict_inputs is not None and logits_fn is None:
        raise ValueError("predict_inputs needs logits_fn (or an MTBKDModel)")
    if not keep_draws and predict_inputs is None:
        raise ValueError("keep_draws=False keeps nothing unless predict_inputs is given")
    predict = None if predict_inputs is None else _features(model, predict_inputs, "predict_inputs")
    return logits_fn, predict
