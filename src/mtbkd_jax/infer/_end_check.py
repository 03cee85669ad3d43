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
import numpy as np

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


def end_temperature_ratio(
    estimator: GradientEstimator,
    position: Any,
    rng_key: jax.Array,
    temperature: float,
    minibatch: Minibatch | None = None,
) -> float:
    """``T / tau = sum |grad U|^2 / sum tr H / tau`` over the first ``END_CHAINS`` chains'
    positions (leading chain axis; minibatch estimates as the pilots'), NaN where the
    curvature estimate is not positive. ``minibatch(key)`` draws a minibatch where the
    estimator cannot draw it on the device (a streamed run's rows, gathered on the host)."""
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
    if not (curvature > 0 and math.isfinite(square)) or temperature == 0:
        return math.nan
    return square / curvature / temperature


def checked_end(
    estimator: GradientEstimator,
    position: Any,
    settings: SGMCMCSettings,
    rng_key: jax.Array,
    minibatch: Minibatch | None = None,
) -> SGMCMCSettings:
    """``settings`` with ``end_temperature_ratio``; a :class:`ConvergenceWarning` where it
    exceeds ``MAX_END_RATIO`` (cyclical SGLD ends at a step near 0 and is not judged)."""
    if settings.sampler == "cyclical_sgld":
        return settings
    try:
        ratio = end_temperature_ratio(estimator, position, rng_key, settings.temperature, minibatch)
    except Exception as error:  # a finished run's draws are not lost to the check
        why = str(error).splitlines()[0][:200] if str(error) else ""
        warnings.warn(
            f"{settings.sampler}: the end-of-run check could not measure the chains' "
            f"temperature ({type(error).__name__}: {why}); the draws are returned unchecked",
            UserWarning,
            stacklevel=4,
        )
        return settings
    if not np.isfinite(ratio) or ratio > MAX_END_RATIO:
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
    return replace(settings, end_temperature_ratio=round(ratio, 6) if np.isfinite(ratio) else None)
