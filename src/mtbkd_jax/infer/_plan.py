"""What an SG-MCMC run decides before its first step, beyond the model's minibatch plan
(:mod:`mtbkd_jax.infer.gradients`): its arguments checked, the step-size schedule, the draws
it will keep, and the run's fingerprint."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import require_counts, require_key, require_nonnegative, require_positive
from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._loop import keep_positions
from mtbkd_jax.infer._orders import orders_scheme
from mtbkd_jax.infer._samplers import (
    SAMPLERS,
    check_friction,
    check_sampler_options,
    with_unused_at_default,
)
from mtbkd_jax.infer.fingerprint import (
    RunFingerprint,
    array_digest,
    library_versions,
    model_description,
    optimizer_digest,
    schedule_values,
    static_value,
    tree_digest,
)
from mtbkd_jax.infer.gradients import MinibatchPlan

if TYPE_CHECKING:
    import optax

__all__ = [
    "SAMPLERS",
    "checked_arguments",
    "step_schedules",
    "check_schedule",
    "count_valid_draws",
    "check_cyclical_draws",
]


# run_sgmcmc's counts, with the least value each may take (None: an optional one left out)
_COUNTS = {
    "num_epochs": 1,
    "num_burnin_epochs": 0,
    "draws_per_epoch": 1,
    "num_chains": 1,
    "num_cycles": 1,
    "warm_start_epochs": 0,
    "chunk_epochs": 1,
    "batch_size": 1,
    "prior_batch_size": 1,
    "chunk_steps": 1,
}
_FLAGS = ("random_draw_positions", "keep_draws", "partial_last_batch", "stream")


def checked_arguments(arguments: dict) -> dict:
    """``run_sgmcmc``'s arguments (by name) validated; returns them with ``temperature``,
    ``friction`` and ``step_size`` as floats (a schedule stays a callable) and
    ``sampler_options`` checked against the sampler."""
    out = dict(arguments)
    require_key(out["rng_key"])
    sampler = out["sampler"]
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    counts = {k: (out[k], least) for k, least in _COUNTS.items() if out[k] is not None}
    require_counts(**counts)
    for name in _FLAGS:
        if not isinstance(out[name], bool):
            raise TypeError(f"{name} must be True or False, got {out[name]!r}")
    out["temperature"] = require_nonnegative(out["temperature"], "temperature")
    out["friction"] = check_friction(sampler, out["friction"], stacklevel=4)
    if not callable(out["step_size"]):
        out["step_size"] = require_positive(out["step_size"], "step_size")
    fraction = out["exploration_fraction"]
    if not 0 <= fraction < 1:
        raise ValueError(f"exploration_fraction must lie in [0, 1), got {fraction}")
    optimizer = out["warm_start_optimizer"]
    if optimizer is not None and not hasattr(optimizer, "update"):
        raise TypeError(
            "warm_start_optimizer must be an optax GradientTransformation, got "
            f"{type(optimizer).__name__}"
        )
    out["sampler_options"] = check_sampler_options(sampler, out["sampler_options"])
    if sampler == "ncsgld":
        _check_half_batches(out)
    return out


def _check_half_batches(arguments: dict) -> None:
    """NC-SGLD splits each minibatch in two (``GradientEstimator.half_batches``)."""
    for flag in ("stream", "shard_data", "partial_last_batch"):
        if arguments.get(flag):
            raise ValueError(
                "sampler 'ncsgld' splits every minibatch into two halves, which needs the "
                f"in-memory data path and whole batches: not with {flag}=True"
            )
    if arguments["temperature"] == 0:
        raise ValueError("sampler 'ncsgld' needs temperature > 0 (it corrects injected noise)")


def check_draws_per_epoch(
    plan: MinibatchPlan, draws_per_epoch: int, batch_size: int | None = None
) -> None:
    """Refuse more draws per epoch than its steps; ``batch_size`` is the one asked for, named
    where the data is smaller (the canonical model's plate takes all ``N`` then)."""
    steps = plan.steps_per_epoch
    if draws_per_epoch > steps:
        plate = plan.plates[0]
        asked = (
            f", batch_size={batch_size} above the data's size"
            if (batch_size or 0) > plate.size
            else ""
        )
        raise ValueError(
            f"draws_per_epoch ({draws_per_epoch}) exceeds the {steps} steps of an epoch "
            f"({plate.size} examples, batch size {plate.batch_size}{asked}); pass "
            f"draws_per_epoch <= {steps}, or a batch size <= {plate.size // draws_per_epoch} "
            "for more steps per epoch"
        )


def step_schedules(
    sampler: str,
    step_size: float | Callable,
    total_steps: int,
    num_cycles: int,
    exploration_fraction: float,
) -> tuple[Callable, Callable, int]:
    """``(schedule, exploring, cycle_length)``: step -> the step size handed to the kernel
    (cyclical SGLD's peak, which its kernel shapes into cosine cycles), step -> in cyclical
    exploration, and the cycle's length in steps. A schedule ``step_size`` is checked first at
    a few steps (:func:`check_schedule`). A cycle is ``ceil(total_steps / num_cycles)`` steps,
    Zhang et al.'s ``ceil(K / M)``: the last is cut short where they do not divide the steps
    (and where a cycle is only a few steps, the run can hold fewer: 9 steps in 4 cycles make 3
    cycles of 3); a floored length would open one more cycle, at the peak step, at the end."""
    cycle = max(1, -(-total_steps // num_cycles))
    if callable(step_size):
        check_schedule(step_size, total_steps)
    schedule = step_size if callable(step_size) else schedules.constant(step_size)
    if sampler == "cyclical_sgld":
        exploring = schedules.cyclical_exploration(cycle, exploration_fraction)
    else:
        exploring = lambda step: jnp.zeros((), bool)  # noqa: E731
    return schedule, exploring, cycle


def check_schedule(
    schedule: Callable, total_steps: int, name: str = "step_size", allow_all_zero: bool = False
) -> None:
    """Evaluate a step-size schedule at the run's first and last steps and five between
    (an int32 step, as the samplers pass it), refusing a value that is not one finite number
    >= 0 (for cyclical SGLD, the cycle's peak), with the step, and a schedule that is 0 at
    every step checked. A step of 0 is allowed: a warm-up from 0 (``optax.linear_schedule(0,
    eta, n)``), or a cyclical schedule's last step, which float32 can round to 0."""
    last = max(int(total_steps), 1) - 1
    steps = sorted({int(k) for k in np.linspace(0, last, 7).round()})
    values = []
    for step in steps:
        value = schedule(jnp.asarray(step, jnp.int32))
        where = f"{name} (a schedule) at step {step}"
        if np.ndim(value) != 0:
            raise ValueError(f"{where} must return a scalar, got shape {np.shape(value)}")
        values.append(require_nonnegative(value, where))
    if max(values) == 0 and not allow_all_zero:
        raise ValueError(f"{name} (a schedule) is 0 at every step checked ({steps}): no step moves")
    try:  # the samplers call it inside jit, on a traced step (values checked above)
        jax.eval_shape(schedule, jax.ShapeDtypeStruct((), jnp.int32))
    except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerIntegerConversionError,
        jax.errors.TracerArrayConversionError,
    ) as error:
        raise ValueError(
            f"{name} (a schedule) must be a JAX function of the step, which the samplers trace "
            "inside jit: use jnp.where, jnp.interp or optax's schedules, not Python if/int() or "
            f"NumPy on the step ({type(error).__name__})"
        ) from None


def count_valid_draws(
    keep_key: jax.Array,
    exploring: Callable,
    plan: MinibatchPlan,
    first_epoch: int,
    total_epochs: int,
    draws_per_epoch: int,
    random: bool,
) -> int:
    """How many draws per chain the run will keep (after burn-in, outside exploration)."""
    steps = plan.steps_per_epoch
    epochs = jnp.arange(first_epoch, total_epochs)
    kept = jax.vmap(lambda e: keep_positions(keep_key, e, steps, draws_per_epoch, random))(epochs)
    global_steps = epochs[:, None] * steps + kept
    return int(jnp.sum(~jax.vmap(jax.vmap(exploring))(global_steps)))


def check_cyclical_draws(
    keep_key: jax.Array,
    exploring: Callable,
    plan: MinibatchPlan,
    first_epoch: int,
    total_epochs: int,
    draws_per_epoch: int,
    random: bool,
    num_cycles: int,
    exploration_fraction: float,
) -> None:
    """Refuse a cyclical-SGLD setting that would keep no draw at all."""
    kept = count_valid_draws(
        keep_key, exploring, plan, first_epoch, total_epochs, draws_per_epoch, random
    )
    if kept == 0:
        raise ValueError(
            f"cyclical SGLD would keep no draw: every kept step after burn-in falls in an "
            f"exploration stage (num_cycles={num_cycles}, exploration_fraction="
            f"{exploration_fraction}, num_burnin_epochs={first_epoch}); lower "
            "exploration_fraction, or raise num_epochs or draws_per_epoch"
        )


# model: Any, as its optional methods (settings, constant_kwargs) are looked up by name
def fingerprint(
    *,
    settings: dict,
    model: Callable,
    plan: MinibatchPlan,
    rng_key: jax.Array,
    features: jax.Array | np.ndarray,
    labels: jax.Array | np.ndarray | None,
    predict: jax.Array | None,
    init_params: dict[str, Any] | list[dict[str, Any]] | None,
    schedule: Callable,
    total_steps: int,
    warm_start_optimizer: optax.GradientTransformation | None,
    warm_start_steps: int,
    probe: dict,
    num_strata: int = 1,
    streamed: bool = False,
) -> RunFingerprint:
    """Everything the draws depend on (:mod:`mtbkd_jax.infer.fingerprint`).

    ``num_strata``: D, the data shards a ``shard_data`` run stratifies its minibatches over.
    The stratified draws depend on D, so D is recorded (when above 1, so that earlier
    checkpoints still resume) and a resume with another D is refused. They do not depend on
    how the D shards are spread over processes and devices (to float rounding), and neither
    does the fingerprint: the data are digested as D row blocks (``array_digest(...,
    blocks=D)``), the same value whether one process holds every row or each process only
    its own; the mesh's ``chains`` axis and the number of processes are left out. So a run
    checkpointed by 2 processes x 2 devices resumes in 1 process x 4 devices, and the
    reverse.

    A cyclical run's cycle length is recorded where ``num_cycles`` does not divide the steps:
    there it was the floor of their ratio before b02be69, so such a checkpoint written before is
    refused rather than resumed on other cycles (the others still resume).

    ``friction`` is recorded as given for the samplers that use it (SGHMC, SGNHT) and at its
    default for the others (:func:`~mtbkd_jax.infer._samplers.with_unused_at_default`, which
    the checkpoint applies to the fingerprint it stored too): a value they ignore (warned) does
    not refuse a resume, and the checkpoints written before, which recorded it, still resume.

    ``streamed``: a ``stream=True`` run (recorded when true; its probe reads one minibatch,
    :func:`~mtbkd_jax.infer.streaming.streamed_probe`), resumed only by a streamed run."""
    exact = {
        **with_unused_at_default({k: v for k, v in settings.items() if k != "step_size"}),
        "step_size_values": schedule_values(schedule, total_steps),
        "warm_start_steps": int(warm_start_steps),
        "key": np.asarray(jax.random.key_data(rng_key)).tolist(),
        # a streamed run's host files as the device holds them (the stream's dtypes)
        "inputs": array_digest(features, num_strata, np.float32 if streamed else None),
        "labels": None
        if labels is None
        else array_digest(labels, num_strata, np.int32 if streamed else None),
        "model_kwargs": {k: tree_digest(v, num_strata) for k, v in sorted(plan.arrays.items())},
        "static_model_kwargs": {k: static_value(v) for k, v in sorted(plan.static.items())},
        "predict_inputs": None if predict is None else array_digest(predict),
        "init_params": None if init_params is None else tree_digest(init_params),
        "warm_start_optimizer": (
            None
            if warm_start_optimizer is None
            else optimizer_digest(warm_start_optimizer, warm_start_steps)
        ),
        "model": model_description(model, plan, features),
        "versions": library_versions(),
        "jax_enable_x64": bool(jax.config.read("jax_enable_x64")),  # named, not only its effects
        # the random bits of every key: each flips every draw (named, as x64)
        "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "jax_default_prng_impl": str(jax.config.jax_default_prng_impl),
        "minibatch_orders": orders_scheme(settings["sampler"]),
    }
    cycles = settings.get("num_cycles")
    if cycles and total_steps % cycles:  # recorded where b02be69's ceil moved it from the floor
        exact["cycle_length"] = -(-int(total_steps) // int(cycles))
    if num_strata > 1:
        exact["minibatch_strata"] = int(num_strata)
    if streamed:
        exact["streamed"] = True
    return RunFingerprint(exact, probe)
