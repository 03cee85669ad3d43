"""Whether an optimiser had stopped moving: the change of its loss over the last steps.

A MAP fitted for a fixed number of Adam steps may stop while its loss is still falling; its
point then depends on where the optimiser happened to be, and last-bit changes anywhere
upstream move its predictions (the demo's learned-trust MAP moved by 0.04 in test NLL that
way, docs/results.md). :func:`final_loss_change` measures that fall, :func:`run_svi` records
it in the posterior's settings, and :func:`~mtbkd_jax.infer.run_map` warns with a
:class:`ConvergenceWarning` when its size is above :data:`MAP_TOLERANCE`: a loss still falling,
or one that rose over the last steps (Adam at too large a learning rate, oscillating).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["ConvergenceWarning", "MAP_TOLERANCE", "final_loss_change", "warn_if_not_converged"]

MAP_TOLERANCE = 1e-3  # relative change of the loss over the last tenth of the steps


class ConvergenceWarning(UserWarning):
    """An optimiser stopped while its loss was still changing."""


def final_loss_change(losses: np.ndarray, fraction: float = 0.1) -> float:
    """The loss's relative fall over the last ``fraction`` of the steps: the mean over the
    tenth before minus the mean over the last tenth, over ``max(1, |mean of the last|)``
    (window means, so a loss that oscillates or is noisy, as an ELBO is, is judged by its
    trend). Positive: still falling. NaN when there are fewer than 20 steps."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    width = int(losses.size * fraction)
    if width < 10:
        return float("nan")
    last, before = losses[-width:].mean(), losses[-2 * width : -width].mean()
    return float((before - last) / max(1.0, abs(last)))


def warn_if_not_converged(change: float, num_steps: int, what: str = "MAP") -> None:
    """A :class:`ConvergenceWarning` naming ``num_steps`` when ``|change|`` (from
    :func:`final_loss_change`) is above :data:`MAP_TOLERANCE`."""
    if np.isfinite(change) and abs(change) > MAP_TOLERANCE:
        trend = "still falling" if change > 0 else "rising again (an unstable optimiser)"
        warnings.warn(
            f"{what}: the loss was {trend} when the optimisation stopped (by {abs(change):.1e} "
            f"of itself over the last tenth of its {num_steps} steps, above {MAP_TOLERANCE:g}): "
            "the point is not converged and can move with small changes anywhere upstream; "
            "raise num_steps, or pass an optimizer whose learning rate decays",
            ConvergenceWarning,
            stacklevel=3,
        )
