"""Where an SG-MCMC run ended, judged by the step-size pilots' diagnostic
(:mod:`~mtbkd_jax.infer.step_size`): the configurational temperature ``T / tau`` at the chains'
last states. A step the user gave past the stability limit made draws of 1e9 on a posterior of
sd 0.1 without a word (only a non-finite state stopped a run); ``T / tau`` is about 1 at the
posterior, and far above the pilots' limit where the chains spread wider than it in its stiff
directions, or have not reached it."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import jax

from mtbkd_jax.infer._convergence import ConvergenceWarning
from mtbkd_jax.infer._point_measures import _measure, _measure_on

if TYPE_CHECKING:
    from mtbkd_jax.infer._records import SGMCMCSettings
    from mtbkd_jax.infer.gradients import GradientEstimator

__all__ = ["END_CHAINS", "MAX_END_RATIO", "checked_end"]

END_CHAINS = 8  # chains whose last state is measured
MAX_END_RATIO = 10.0  # the pilots' default max_temperature_ratio
_MEASURE = jax.jit(_measure)  # one wrapper: compiled once per model, not once per run
_MEASURE_ON = jax.jit(_measure_on)

Minibatch = Callable[[jax.Array], Any]  # key -> one minibatch, drawn off the device


def end_measures(
    estimator: GradientEstimator,
    position: Any,
    rng_key: jax.Array,
    minibatch: Minibatch | None = None,
) -> tuple[float, float]:
    """``(sum |grad U|^2, sum tr H)`` over the first ``END_CHAINS`` chains' positions (leading
    chain axis; minibatch estimates as the pilots'): ``T / tau`` is their ratio over ``tau``.
    ``minibatch(key)`` draws a minibatch where the estimator cannot draw it on the device (a
    streamed run's rows, gathered on the host)."""
    num_chains = jax.tree.leaves(position)[0].shape[0]
    square = curvature = 0.0
    for chain in range(min(num_chains, END_CHAINS)):  # one chain at a time, as the probe
        point = jax.tree.map(lambda x, c=chain: x[c], position)
        key = jax.random.fold_in(rng_key, chain)
        if minibatch is None:
            found = _MEASURE(estimator, point, key)
        else:  # the keys _measure would draw its two minibatches and its probe from
            first_key, second_key, probe_key = jax.random.split(key, 3)
            first, second = minibatch(first_key), minibatch(second_key)
            found = _MEASURE_ON(estimator, point, first, second, probe_key)
        square += float(found["square"])
        curvature += float(found["curvature"])
    return square, curvature


def checked_end(
    estimator: GradientEstimator,
    position: Any,
    settings: SGMCMCSettings,
    rng_key: jax.Array,
    minibatch: Minibatch | None = None,
) -> SGMCMCSettings:
    """``settings`` with ``end_temperature_ratio``; a :class:`ConvergenceWarning` where it
    exceeds ``MAX_END_RATIO``, where the gradient there is not finite, or where the ratio cannot
    be measured (a curvature estimate that is not positive: the message says so, and does not
    blame the step); a ``UserWarning`` where the check itself fails. Cyclical SGLD ends at a
    step near 0 and a run at ``temperature = 0`` optimises: neither is judged."""
    if settings.sampler == "cyclical_sgld" or settings.temperature == 0:
        return settings
    try:
        square, curvature = end_measures(estimator, position, rng_key, minibatch)
    except Exception as error:  # a finished run's draws are not lost to the check
        why = str(error).splitlines()[0][:200] if str(error) else ""
        warnings.warn(
            f"{settings.sampler}: the end-of-run check could not measure the chains' "
            f"temperature ({type(error).__name__}: {why}); the draws are returned unchecked",
            UserWarning,
            stacklevel=4,
        )
        return settings
    if not math.isfinite(square):
        warnings.warn(
            f"{settings.sampler}: at the run's end the potential's gradient at the chains' last "
            f"states is not finite ({square:.3g} summed over their squares): the chains have "
            f"left the posterior, typically at a step size ({settings.step_size}) past the "
            "stability limit. Choose the step with step_size='auto', or test it with "
            "mtbkd_jax.infer.check_step_size",
            ConvergenceWarning,
            stacklevel=4,
        )
        return settings
    if math.isnan(curvature) or curvature <= 0:
        warnings.warn(
            f"{settings.sampler}: at the run's end the chains' configurational temperature "
            "T / tau could not be measured: the estimate of the potential's curvature (the "
            f"trace of its Hessian) at their last states is {curvature:.3g}, not positive, as "
            "at a saddle, where the potential is not convex, or far out where a network's "
            f"units saturate (the squared gradient there: {square:.3g}). The step size "
            f"({settings.step_size}) is unchecked: test it with "
            "mtbkd_jax.infer.check_step_size, or choose it with step_size='auto'",
            ConvergenceWarning,
            stacklevel=4,
        )
        return settings
    ratio = square / curvature / settings.temperature
    if ratio > MAX_END_RATIO:
        warnings.warn(
            f"{settings.sampler}: at the run's end the chains' configurational temperature "
            f"T / tau is {ratio:.3g} (about 1 at the posterior; the step-size pilots refuse "
            f"above {MAX_END_RATIO:g}): either the step size ({settings.step_size}) is past "
            "the stability limit and the draws spread far wider than the posterior, or it is "
            "too small for the chains to have reached the posterior from their start. Choose "
            "the step with step_size='auto', test it with mtbkd_jax.infer.check_step_size, or "
            "run longer",
            ConvergenceWarning,
            stacklevel=4,
        )
    return replace(settings, end_temperature_ratio=round(ratio, 6))
