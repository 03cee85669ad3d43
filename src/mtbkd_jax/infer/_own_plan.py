"""A model's own subsampling plan (the protocol of :mod:`mtbkd_jax.infer.gradients`): the
keyword arguments that make it subsample, from the sampler's ``batch_size`` and
``prior_batch_size``, checked against any ``subsample_size`` the caller passed itself."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from mtbkd_jax._checks import require_count

__all__ = ["DEFAULT_BATCH_SIZE", "with_own_plan"]

DEFAULT_BATCH_SIZE = 64  # the canonical model's data plate when no batch size is given


def with_own_plan(
    model: Callable,
    model_args: tuple,
    kwargs: dict,
    batch_size: int | None,
    prior_batch_size: int | None,
) -> dict:
    """The keyword arguments after the model's own subsampling plan."""
    own_plan = getattr(model, "minibatch_kwargs", None)
    if not callable(own_plan):
        if prior_batch_size is not None:
            raise ValueError(
                "prior_batch_size applies to a model with its own subsampling plan (the "
                "canonical MTBKDModel); a model of your own sets each plate's subsample_size "
                "itself"
            )
        return kwargs
    if batch_size is not None:
        batch_size = require_count(batch_size, "batch_size")
    if prior_batch_size is not None:
        prior_batch_size = require_count(prior_batch_size, "prior_batch_size")
    prior_inputs = kwargs.get("prior_inputs")
    num_transfer = None if prior_inputs is None else int(prior_inputs.shape[0])
    planned = own_plan(
        int(model_args[0].shape[0]),
        DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        num_transfer,
        prior_batch_size,
    )
    _refuse_overridden_plan(model, kwargs, planned)
    kwargs.update(planned)
    if kwargs.get("teacher_prior", True):
        # the model's array constants go through jit as data, not compiled constants
        for name, value in getattr(model, "constant_kwargs", dict)().items():
            kwargs.setdefault(name, value)
    return kwargs


_PLAN_ARGUMENTS = {"subsample_size": "batch_size", "prior_subsample_size": "prior_batch_size"}


def _refuse_overridden_plan(model: Callable, kwargs: dict, planned: dict) -> None:
    """A model with its own plan sets its plates' ``subsample_size`` from ``batch_size``; one
    the caller put in the model's keyword arguments (``MCMC.run(..., subsample_size=32)``)
    would be replaced without a word, or disagree with the plates the kernel steps through."""
    for key, value in planned.items():
        given = kwargs.get(key)
        if given is None or isinstance(given, jax.core.Tracer) or np.size(given) != 1:
            continue  # traced (a streamed run's plan, MCMC's jit_model_args): not a user value
        if int(np.asarray(given)) != int(value):
            argument = _PLAN_ARGUMENTS.get(key, key)
            raise ValueError(
                f"model_kwargs[{key!r}] = {given!r}, but {type(model).__name__} sets {key} "
                f"itself, from the sampler's {argument} and the plate's size ({value} here): "
                f"pass {argument}= to the sampler (run_sgmcmc, SGMCMC, gradient_estimator) "
                f"instead of {key}"
            )
