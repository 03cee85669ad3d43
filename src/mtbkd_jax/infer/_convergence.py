"""Whether an optimiser had stopped moving: how much of its loss's fall came at the very end.

A MAP fitted for a fixed number of Adam steps may stop while its loss is still falling; its
point then depends on where the optimiser happened to be, and last-bit changes anywhere
upstream move its predictions (the demo's learned-trust MAP moved by 0.04 in test NLL that
way, docs/results.md). :func:`final_loss_change` measures the share of the run's whole fall of
the loss made in its last tenth, :func:`run_svi` records it in the posterior's settings, and
:func:`~mtbkd_jax.infer.run_map` warns with a :class:`ConvergenceWarning` when its size is
above :data:`MAP_TOLERANCE` and the change is more than noise (:func:`trend_z_score`): a loss
still falling, or one that rose over the last steps (Adam at too large a learning rate).

Why this scale: a share of the run's own fall is unchanged by constants in the loss (a prior's
normalisers, a ``numpyro.factor`` of a constant) and by its units, where a change relative to
the loss's size is not. Measured (``benchmarks/demo_map_convergence.py`` and session 24's
notes in docs/results.md): the README's digits MAP at its defaults 1.2e-3 (its test NLL moves by
0.004 with more steps), the demo's learned-trust MAP 1.2e-2 at 2,000 steps (test NLL 0.12-0.21
as the steps change) and 5.7e-4 at 15,000. A MAP on minibatches has a noisy loss: there the
window means differ by noise alone (z of -1.4 to 2.2 at 20,000 steps), which the z-score keeps
from warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

__all__ = [
    "ConvergenceWarning",
    "MAP_TOLERANCE",
    "final_loss_change",
    "trend_z_score",
    "warn_if_loss_rose",
    "warn_if_not_converged",
    "warn_polish_not_converged",
]

MAP_TOLERANCE = 5e-3  # share of the run's fall of the loss made in its last tenth
RISE_TOLERANCE = 1e-3  # a rise above the start smaller than this share of |start loss| is rounding
_Z_MIN = 3.0  # the last tenth's change must be this many standard errors of the loss's noise
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConvergenceWarning(UserWarning):
    """An optimiser stopped while its loss was still changing."""


def _windows(losses: np.ndarray, fraction: float) -> tuple[np.ndarray, ...] | None:
    losses = np.asarray(losses, dtype=np.float64).ravel()
    width = int(losses.size * fraction)
    if width < 10:
        return None
    return losses[:width], losses[-2 * width : -width], losses[-width:]


def final_loss_change(losses: np.ndarray, fraction: float = 0.1) -> float:
    """The share of the run's fall of the loss made in its last ``fraction`` of the steps:
    ``(mean of the tenth before - mean of the last tenth) / (mean of the first tenth - mean of
    the last tenth)`` (window means, so an oscillating or noisy loss is judged by its trend).
    Positive: still falling; negative: rising at the end. NaN with fewer than 100 steps (at the
    default ``fraction``), or when the loss did not fall over the run."""
    windows = _windows(losses, fraction)
    if windows is None:
        return float("nan")
    first, before, last = (w.mean() for w in windows)
    if not first > last:
        return float("nan")
    return float((before - last) / (first - last))


def _step_noise(losses: np.ndarray, fraction: float = 0.1) -> float:
    """The loss's step-to-step noise: ``sd(diff) / sqrt(2)`` over the last two tenths (a
    smooth trend does not inflate it)."""
    width = int(losses.size * fraction)
    return float(np.std(np.diff(losses[-2 * width :])) / np.sqrt(2.0))


def trend_z_score(losses: np.ndarray, fraction: float = 0.1) -> float:
    """The last tenth's change of the mean loss over its standard error from the loss's step to
    step noise (``sd(diff) / sqrt(2)`` over the last two tenths, which a smooth trend does not
    inflate): large for a deterministic loss that still moves, about N(0, 1) for a noisy one
    that does not. NaN with fewer than 100 steps."""
    windows = _windows(losses, fraction)
    if windows is None:
        return float("nan")
    _, before, last = windows
    noise = _step_noise(np.concatenate([before, last]), 0.5)
    error = noise * np.sqrt(2.0 / last.size)
    change = before.mean() - last.mean()
    if error == 0:  # a loss that moves without noise (or not at all)
        return 0.0 if change == 0 else float(np.copysign(np.inf, change))
    return float(change / error)


def warn_if_not_converged(change: float, z_score: float, num_steps: int, what: str = "MAP") -> None:
    """A :class:`ConvergenceWarning` naming ``num_steps`` when ``|change|`` (from
    :func:`final_loss_change`) is above :data:`MAP_TOLERANCE` and ``|z_score|`` (from
    :func:`trend_z_score`) above 3. It points at the caller's line outside this package."""
    if not (np.isfinite(change) and abs(change) > MAP_TOLERANCE and abs(z_score) > _Z_MIN):
        return
    trend = "still falling" if change > 0 else "rising again (an unstable optimiser)"
    warnings.warn(
        f"{what}: the loss was {trend} when the optimisation stopped ({abs(change):.1%} of the "
        f"run's fall of the loss came in the last tenth of its {num_steps} steps, above "
        f"{MAP_TOLERANCE:.1%}): the point is not converged and can move with small changes "
        "anywhere upstream; polish it to the mode (run_map(..., polish_steps=500)), or raise "
        "num_steps",
        ConvergenceWarning,
        skip_file_prefixes=(_PACKAGE,),
    )


def loss_rise(losses: np.ndarray, fraction: float = 0.1) -> float:
    """How far the whole last ``fraction`` of the run stayed above the loss of its first step:
    ``min(last tenth) - losses[0]``, positive only when every step of the last tenth ended
    worse than where the optimiser started. NaN with fewer than 100 steps (at the default
    ``fraction``) or a loss that is not finite at the start.

    :func:`final_loss_change` cannot see this: it measures the end against the run's own fall,
    and a loss that never fell (or blew up first, then levelled off far above its start) has
    no fall to measure against."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    width = int(losses.size * fraction)
    if width < 10 or not np.isfinite(losses[0]):
        return float("nan")
    return float(losses[-width:].min() - losses[0])


def warn_if_loss_rose(
    losses: np.ndarray,
    num_steps: int,
    what: str = "MAP",
    paired: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """A :class:`ConvergenceWarning` when the optimiser made the point worse than its start,
    typically a learning rate too large for the model (a loss that turns NaN or infinite, or
    parameters the last step made so, are an error of ``run_svi`` already; a paired loss that is
    not finite at the end is one here). It points at the caller's line outside this package.
    Under 100 steps nothing is judged.

    A loss without noise is judged by its record: every loss of the run's last tenth above the
    first step's by more than :data:`RISE_TOLERANCE` of the first loss's size (a difference
    that size is float32 rounding of a loss at its mode, where a warm start begins).

    A noisy loss (a minibatch MAP's: its step-to-step noise over the last two tenths,
    :func:`trend_z_score`'s estimate, is above that tolerance) cannot be judged by its record:
    its first value is one draw of a minibatch, and a MAP that blows up has noise that grows
    with its loss (measured: Adam at learning rates 10-1e6 on a logistic regression in
    minibatches of 10 ended 1.2-10^5 times above its start's loss, and the record's rule warned
    about none of them). ``paired()`` gives the loss at the start's and at the end's parameters
    on the same draws of every minibatch (64 in ``run_map``; one exact loss at each end for a
    model that does not subsample, whose record oscillated); the warning comes when their mean
    difference is above the tolerance and 3 standard errors of the pairs' differences. On that
    regression it warned about every run at learning rates 30-1e6 (3 seeds each) and one of
    three at 10 (20-90% above the start), none at 1 or below. Without ``paired`` a noisy loss is
    not judged."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    rise = loss_rise(losses)  # NaN (no warning) under 100 steps
    if not np.isfinite(rise):
        return
    tolerance = RISE_TOLERANCE * max(1.0, abs(float(losses[0])))
    if _step_noise(losses) > tolerance:  # over the last two tenths: a converged fit's is ~0
        if paired is None:
            return
        start, end = (np.asarray(x, dtype=np.float64) for x in paired())
        if not np.isfinite(end).all():
            raise FloatingPointError(
                f"{what}: the loss at the fitted point is not finite (its parameters are); "
                "lower learning_rate or check the data"
            )
        change = end - start
        rise = float(change.mean())
        error = float(change.std(ddof=1) / np.sqrt(change.size)) if change.size > 1 else 0.0
        tolerance = RISE_TOLERANCE * max(1.0, abs(float(start.mean())))
        if not (rise > tolerance and rise > _Z_MIN * error):
            return
        where = (
            f"on the same {change.size} draws of its minibatches, the fitted point's loss is "
            f"{rise:.6g} ± {error:.2g} above the starting point's {float(start.mean()):.6g}"
            if change.size > 1
            else f"the fitted point's loss is {float(end.mean()):.6g}, the starting point's "
            f"{float(start.mean()):.6g}"
        )
    elif not rise > tolerance:
        return
    else:
        where = (
            f"every step of the last tenth of its {num_steps} steps above the first step's "
            f"{float(losses[0]):.6g}; the last step's is {float(losses[-1]):.6g}"
        )
    warnings.warn(
        f"{what}: the loss ended above where it started ({where}): the optimiser made the fit "
        "worse, typically a learning rate too large for the model; lower learning_rate",
        ConvergenceWarning,
        skip_file_prefixes=(_PACKAGE,),
    )


def warn_polish_not_converged(steps: int, losses: np.ndarray) -> None:
    """A :class:`ConvergenceWarning`: the L-BFGS polish of a MAP ran its ``steps`` iterations
    without an iteration that lowered the loss by less than its tolerance (``losses`` ends
    with the polish's)."""
    window = min(10, len(losses) - 1)
    fall = float(losses[-1 - window] - losses[-1]) if window > 0 else float("nan")
    warnings.warn(
        f"MAP: the L-BFGS polish stopped after its {steps} iterations before meeting its "
        f"tolerance (the loss fell by {fall:.3g} over the last {window}): the point is not "
        "converged; raise polish_steps",
        ConvergenceWarning,
        skip_file_prefixes=(_PACKAGE,),
    )
