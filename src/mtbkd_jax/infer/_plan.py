"""Everything an SG-MCMC run decides before its first step: the minibatch plan read from the
model's trace, the step-size schedule, the settings, and the run's fingerprint.

The model owns its subsampling: a NumPyro model declares it with
``numpyro.plate(name, N, subsample_size=B)`` (indexing its data with the plate's indices), and
the canonical :class:`~mtbkd_jax.MTBKDModel` says which keyword arguments make it do so
(``minibatch_kwargs``). The plates come from the model's trace, so a plate of any name is
found, and a model that declares none is refused rather than run full batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import require_counts, require_key, require_nonnegative, require_positive
from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._common import is_array_tree
from mtbkd_jax.infer._epochs import keep_positions
from mtbkd_jax.infer._orders import ORDERS_SCHEME
from mtbkd_jax.infer.fingerprint import (
    RunFingerprint,
    array_digest,
    library_versions,
    optimizer_digest,
    schedule_values,
    static_value,
    tree_digest,
)
from mtbkd_jax.infer.minibatch import PlateSpec, model_structure

SAMPLERS = ("sgld", "sghmc", "cyclical_sgld")

__all__ = [
    "SAMPLERS",
    "checked_arguments",
    "MinibatchPlan",
    "minibatch_plan",
    "step_schedules",
    "count_valid_draws",
    "check_cyclical_draws",
]


@dataclass(frozen=True)
class MinibatchPlan:
    """The subsampled plates and the data the potential is built from.

    Attributes:
        plates: the subsampled plates (the first sets the epoch: ``size // batch_size`` steps).
        arrays: keyword arguments that are arrays (passed through ``jit`` as data).
        static: the other keyword arguments (compiled in).
        latent_shapes: the model's latent sites and their shapes.
    """

    plates: tuple[PlateSpec, ...]
    arrays: dict
    static: dict
    latent_shapes: dict
    partial_last_batch: bool = False
    deterministic: tuple = ()

    @property
    def steps_per_epoch(self) -> int:
        """``N // |B|`` steps, or ``ceil(N / |B|)`` with a partial last batch."""
        size, batch = self.plates[0].size, self.plates[0].batch_size
        return -(-size // batch) if self.partial_last_batch else size // batch


def minibatch_plan(
    model, features, labels, kwargs, batch_size, prior_batch_size, partial_last_batch=False
) -> MinibatchPlan:
    """Read the model's subsampled plates (see the module docstring) and split its kwargs."""
    kwargs = dict(kwargs)
    own_plan = getattr(model, "minibatch_kwargs", None)
    if callable(own_plan):
        prior_inputs = kwargs.get("prior_inputs")
        num_transfer = None if prior_inputs is None else int(prior_inputs.shape[0])
        kwargs.update(
            own_plan(
                int(features.shape[0]),
                64 if batch_size is None else batch_size,
                num_transfer,
                prior_batch_size,
            )
        )
        if kwargs.get("teacher_prior", True):
            # the prior's (N, M, C) constants go through jit as data, not compiled constants
            for name, value in getattr(model, "constant_kwargs", dict)().items():
                kwargs.setdefault(name, value)
    elif prior_batch_size is not None:
        raise ValueError(
            "prior_batch_size applies to the canonical MTBKDModel; a model of your own sets "
            "each plate's subsample_size itself"
        )
    structure = model_structure(model, (features, labels), kwargs)
    plates = list(structure.minibatched)
    # the epoch is set by the first plate that really subsamples (a plate of subsample_size N
    # takes all N at every step)
    lead = next((p for p in plates if p.batch_size < p.size), plates[0] if plates else None)
    if lead is not None:
        plates.remove(lead)
        plates.insert(0, lead)
    if not plates:
        names = [p.name for p in structure.plates]
        raise ValueError(
            "the model declares no subsampled plate, so SG-MCMC would run full batch; declare "
            "the minibatch in the model, numpyro.plate(name, N, subsample_size=B), and index "
            f"the data with the plate's indices (the model's plates: {names or 'none'})"
        )
    if batch_size is not None and not callable(own_plan) and batch_size != plates[0].batch_size:
        raise ValueError(
            f"batch_size={batch_size} but the model's plate {plates[0].name!r} takes "
            f"subsample_size={plates[0].batch_size}; a model of your own sets its minibatch "
            "size itself: leave batch_size out, or change the plate's subsample_size"
        )
    if partial_last_batch and len(plates) > 1:
        raise ValueError(
            "partial_last_batch needs a model with one subsampled plate, got "
            f"{[p.name for p in plates]}"
        )
    arrays = {k: v for k, v in kwargs.items() if is_array_tree(v)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    return MinibatchPlan(
        tuple(plates),
        arrays,
        static,
        structure.latent_shapes,
        bool(partial_last_batch),
        structure.deterministic,
    )


def checked_arguments(
    *,
    rng_key,
    sampler,
    counts,
    flags,
    temperature,
    friction,
    step_size,
    exploration_fraction,
    warm_start_optimizer,
):
    """Validate ``run_sgmcmc``'s arguments (counts given as ``name: (value, lowest)``, ``None``
    for an optional one left out); returns ``(temperature, friction, step_size)`` as floats
    (a schedule stays a callable)."""
    require_key(rng_key)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    require_counts(**{k: v for k, v in counts.items() if v[0] is not None})
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    temperature = require_nonnegative(temperature, "temperature")
    friction = require_positive(friction, "friction")
    if not callable(step_size):
        step_size = require_positive(step_size, "step_size")
    if not 0 <= exploration_fraction < 1:
        raise ValueError(f"exploration_fraction must lie in [0, 1), got {exploration_fraction}")
    if warm_start_optimizer is not None and not hasattr(warm_start_optimizer, "update"):
        raise TypeError(
            "warm_start_optimizer must be an optax GradientTransformation, got "
            f"{type(warm_start_optimizer).__name__}"
        )
    return temperature, friction, step_size


def check_draws_per_epoch(plan: MinibatchPlan, draws_per_epoch: int) -> None:
    steps = plan.steps_per_epoch
    if draws_per_epoch > steps:
        plate = plan.plates[0]
        raise ValueError(
            f"draws_per_epoch ({draws_per_epoch}) exceeds the {steps} steps of an epoch "
            f"({plate.size} examples, batch size {plate.batch_size}); pass "
            f"draws_per_epoch <= {steps}, or a batch size <= {plate.size // draws_per_epoch} "
            "for more steps per epoch"
        )


def step_schedules(sampler, step_size, total_steps, num_cycles, exploration_fraction):
    """``(schedule, exploring)``: step -> step size, and step -> in cyclical exploration."""
    cycle = max(1, total_steps // num_cycles)
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
    return schedule, exploring


def count_valid_draws(
    keep_key, exploring, plan, first_epoch, total_epochs, draws_per_epoch, random
):
    """How many draws per chain the run will keep (after burn-in, outside exploration)."""
    steps = plan.steps_per_epoch
    epochs = jnp.arange(first_epoch, total_epochs)
    kept = jax.vmap(lambda e: keep_positions(keep_key, e, steps, draws_per_epoch, random))(epochs)
    global_steps = epochs[:, None] * steps + kept
    return int(jnp.sum(~jax.vmap(jax.vmap(exploring))(global_steps)))


def check_cyclical_draws(
    keep_key,
    exploring,
    plan,
    first_epoch,
    total_epochs,
    draws_per_epoch,
    random,
    num_cycles,
    exploration_fraction,
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


def model_description(model, plan: MinibatchPlan, features) -> dict:
    """The model's identity, settings, sites, constants and base prior (by value), for the
    fingerprint."""
    out = {
        "model": static_value(model),
        "latent_shapes": {k: list(v) for k, v in plan.latent_shapes.items()},
    }
    if callable(getattr(model, "settings", None)):
        out["settings"] = static_value(model.settings())
    constants = getattr(model, "constant_kwargs", None)
    if callable(constants):
        out["constants"] = tree_digest(constants())
    student = getattr(model, "student", None)
    if student is not None and callable(getattr(student, "prior_digest", None)):
        out["base_prior"] = student.prior_digest(tuple(features.shape[1:]))
    return out


def fingerprint(
    *,
    settings: dict,
    model,
    plan: MinibatchPlan,
    rng_key,
    features,
    labels,
    predict,
    init_params,
    schedule: Callable,
    total_steps: int,
    warm_start_optimizer,
    warm_start_steps: int,
    probe: dict,
) -> RunFingerprint:
    """Everything the draws depend on (:mod:`mtbkd_jax.infer.fingerprint`)."""
    exact = {
        **{k: v for k, v in settings.items() if k != "step_size"},
        "step_size_values": schedule_values(schedule, total_steps),
        "warm_start_steps": int(warm_start_steps),
        "key": np.asarray(jax.random.key_data(rng_key)).tolist(),
        "inputs": array_digest(features),
        "labels": None if labels is None else array_digest(labels),
        "model_kwargs": {k: tree_digest(v) for k, v in sorted(plan.arrays.items())},
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
        "minibatch_orders": ORDERS_SCHEME,
    }
    return RunFingerprint(exact, probe)
