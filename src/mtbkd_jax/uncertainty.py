"""Predictive summaries over posterior draws ``q_s = softmax(f_theta_s(x))``, shape (S, N, C).

Pure functions of an (S, N, C) array, plus :func:`predictive_summary` and
:func:`predictive_metrics`, which evaluate a posterior on inputs in chunks of examples so that
no (S, N, C) array is ever held for all N (the latter holds no (N, C) array either).

Each public function checks its ``draw_probs`` in Python (three dimensions, at least one draw
and one class, no NaN or infinity) and then calls a jit-compiled core. Inside a user's
``jax.jit`` the values are unknown, so there only the shape is checked.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy
from numpy.typing import ArrayLike

from mtbkd_jax._checks import require_count, scalar_argument
from mtbkd_jax._information import mutual_information

__all__ = [
    "predictive_mean",
    "mean_deviance",
    "entropy_decomposition",
    "credible_threshold",
    "class_intervals",
    "kde_mode_prediction",
    "KDE_GRIDS",
    "REFERENCE_GRID_POINTS",
    "REFERENCE_GRID_MARGIN",
    "predictive_summary",
    "predictive_metrics",
]

#: The grids :func:`kde_mode_prediction` can evaluate its densities on.
KDE_GRIDS = ("unit", "reference")
#: The reference notebook's KDE grid: this many points over the draws' range ± the margin.
REFERENCE_GRID_POINTS = 600
REFERENCE_GRID_MARGIN = 0.05


class _Predictor(Protocol):
    """What :func:`predictive_summary` needs of a posterior, e.g. a
    :class:`~mtbkd_jax.Posterior`."""

    def predict(self, inputs: np.ndarray, /, *, draw_batch_size: int) -> ArrayLike: ...


def _check_draws(draw_probs: ArrayLike, *, min_draws: int = 1) -> jax.Array:
    """Return ``draw_probs`` as a JAX array of at least float32 (half-precision and integer
    arrays are widened), raising unless it is a finite (S, N, C) array.

    Raises:
        ValueError: the wrong number of dimensions, fewer than ``min_draws`` draws, no
            classes, or a NaN or infinite value (that check is one reduction per call, on
            concrete values only: a traced array inside ``jax.jit`` is checked for its shape).
    """
    shape = tuple(np.shape(draw_probs))
    if len(shape) != 3:
        raise ValueError(
            "draw_probs must have shape (S, N, C) (draws, examples, classes), "
            f"got shape {shape} ({len(shape)} dimensions)"
        )
    if shape[0] < min_draws or shape[1] < 1 or shape[2] < 1:
        raise ValueError(
            f"draw_probs must have shape (S, N, C) with S >= {min_draws} draws, N >= 1 "
            f"examples and C >= 1 classes, got shape {shape}"
        )
    array = jnp.asarray(draw_probs)
    if not isinstance(array, jax.core.Tracer) and not bool(jnp.isfinite(array).all()):
        values = np.asarray(array)
        bad = ~np.isfinite(values)
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(values[where]) else "infinite"
        raise ValueError(
            f"draw_probs must be finite; found {int(bad.sum())} NaN or infinite value(s) in "
            f"shape {shape}, the first ({kind}) at index {where}"
        )
    if not isinstance(array, jax.core.Tracer):
        _require_simplex(array, shape)
    # half precision widened (bfloat16 sums put the mutual information 11% off: a review)
    if not jnp.issubdtype(array.dtype, jnp.floating) or jnp.finfo(array.dtype).bits < 32:
        return array.astype(jnp.float32)
    return array


def _require_simplex(array: jax.Array, shape: tuple[int, ...]) -> None:
    """Raise unless every draw's row is a probability vector: non-negative, summing to 1
    within 1e-3 (or ``C`` float epsilons of a low-precision dtype), so that logits or
    percentages are refused rather than turned into NaN or negative deviances."""
    dtype = array.dtype if jnp.issubdtype(array.dtype, jnp.floating) else jnp.float32
    tolerance = max(1e-3, shape[2] * float(jnp.finfo(dtype).eps))
    lowest, worst = (float(v) for v in _simplex_gaps(array))
    if lowest < 0 or worst > tolerance:
        if lowest < 0:
            found = f"a negative value ({lowest:.4g})"
        else:
            found = f"a row whose sum is {worst:.4g} away from 1"
        raise ValueError(
            f"draw_probs must hold class probabilities (each draw's row non-negative and summing "
            f"to 1 within {tolerance:.2g}); found {found}. Logits or log-probabilities "
            "(Posterior.predict_logits) or percentages are not probabilities: pass "
            "Posterior.predict's output, or a softmax of the logits"
        )


@jax.jit
def _simplex_gaps(draw_probs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The smallest value, and the largest distance of a row's sum from 1."""
    sums = draw_probs.astype(jnp.float32).sum(-1)
    return draw_probs.min(), jnp.abs(sums - 1).max()


def _require_level(level: object) -> float:
    """``level`` as a float, raising unless it is a real number (or a 0-d array of one)
    strictly between 0 and 1."""
    level = scalar_argument(level, "level")
    real = isinstance(level, int | float | np.integer | np.floating)
    if isinstance(level, bool) or not real or not 0 < float(level) < 1:  # type: ignore[arg-type]
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)  # type: ignore[arg-type]  # a real number, checked above


def predictive_mean(draw_probs: ArrayLike) -> jax.Array:
    """The posterior predictive mean ``Q(x) = mean_s q_s``, shape (N, C)."""
    return _predictive_mean(_check_draws(draw_probs))


@jax.jit
def _predictive_mean(draw_probs: jax.Array) -> jax.Array:
    return draw_probs.mean(0)


def mean_deviance(draw_probs: ArrayLike) -> jax.Array:
    """The paper's uncertainty score ``MD(x) = mean_s sum_c -2 q_sc log q_sc``, shape (N,).

    Natural log; it lies in ``[0, 2 log C]``.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax.uncertainty import mean_deviance
        >>> draws = np.full((4, 1, 2), 0.5)  # 4 draws, 1 example, 2 classes
        >>> round(float(mean_deviance(draws)[0]), 4)  # 2 log 2, the largest for C = 2
        1.3863
    """
    return _mean_deviance(_check_draws(draw_probs))


@jax.jit
def _mean_deviance(draw_probs: jax.Array) -> jax.Array:
    return (-2.0 * xlogy(draw_probs, draw_probs).sum(-1)).mean(0)


def entropy_decomposition(draw_probs: ArrayLike) -> dict[str, jax.Array]:
    """``H(Q) = mean_s H(q_s) + MI``: total, aleatoric (expected) and epistemic (MI), (N,) each.

    The mutual information is ``mean_s KL(q_s || Q)``, with ``Q`` and each ``q_s - Q`` formed
    from the draws' differences to draw 0: never negative, exactly 0 where every draw is the
    same, small values kept in float32 (against float64 on the same 8 draws of 300 examples,
    ``tests/test_metric_audit.py``: a relative error of 1e-6 in the median and below 1e-5 at a
    draw spread of 1e-2; about 1% in the median and below 10% at 1e-6), where ``total -
    aleatoric`` cancels: where draws nearly agree it is rounding noise of either sign (off by
    about 3e5 relative at 1e-6), which then ranks OOD inputs. Half precision: taken as float32."""
    return _entropy_decomposition(_check_draws(draw_probs))


@jax.jit
def _entropy_decomposition(draw_probs: jax.Array) -> dict[str, jax.Array]:
    mean = draw_probs.mean(0)
    total = -xlogy(mean, mean).sum(-1)
    aleatoric = (-xlogy(draw_probs, draw_probs).sum(-1)).mean(0)
    return {"total": total, "aleatoric": aleatoric, "epistemic": mutual_information(draw_probs)}


def credible_threshold(
    draw_probs: ArrayLike, level: float = 0.95, num_iterations: int = 60
) -> tuple[jax.Array, jax.Array]:
    """The paper's credible threshold per example, by bisection (METHOD §6).

    Finds the largest ``u`` with ``mean_s sum_c q_sc 1[q_sc >= u] >= level``: the class
    probabilities at least ``u`` carry ``level`` of the posterior predictive mass. Its bound on
    the deviance scale is ``-2 log u``.

    Returns:
        ``(u, deviance_bound)``, each of shape (N,).
    """
    level = _require_level(level)
    num_iterations = require_count(num_iterations, "num_iterations", 1)
    return _credible_threshold(_check_draws(draw_probs), float(level), num_iterations)


@jax.jit(static_argnums=(1, 2))
def _credible_threshold(
    draw_probs: jax.Array, level: float, num_iterations: int
) -> tuple[jax.Array, jax.Array]:
    def mass_above(u: jax.Array) -> jax.Array:  # (N,)
        return jnp.where(draw_probs >= u[None, :, None], draw_probs, 0.0).sum(-1).mean(0)

    def body(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds
        mid = 0.5 * (low + high)
        enough = mass_above(mid) >= level
        return jnp.where(enough, mid, low), jnp.where(enough, high, mid)

    num_examples = draw_probs.shape[1]
    low, _ = jax.lax.fori_loop(
        0, num_iterations, body, (jnp.zeros(num_examples), jnp.ones(num_examples))
    )
    return low, -2.0 * jnp.log(low)


def class_intervals(draw_probs: ArrayLike, level: float = 0.95) -> jax.Array:
    """Equal-tailed credible intervals of each class probability, shape (N, C, 2).

    The bounds are the posterior quantiles ``(1 - level) / 2`` and ``(1 + level) / 2`` of the
    draws ``q_sc`` (linear interpolation between order statistics); ``[..., 0]`` is the lower.
    """
    level = _require_level(level)
    return _class_intervals(_check_draws(draw_probs), float(level))


@jax.jit(static_argnums=1)
def _class_intervals(draw_probs: jax.Array, level: float) -> jax.Array:
    tail = (1.0 - level) / 2.0
    bounds = jnp.quantile(draw_probs, jnp.array([tail, 1.0 - tail]), axis=0)
    return jnp.moveaxis(bounds, 0, -1)


def kde_mode_prediction(
    draw_probs: ArrayLike, num_grid: int | None = None, grid: str = "unit"
) -> jax.Array:
    """The reference notebook's point prediction: per class, the mode of a Gaussian KDE of the S
    draws ``q_sc`` (Scott's bandwidth, as ``scipy.stats.gaussian_kde``), renormalised.

    The density is evaluated on a grid and its mode is the grid point of highest density (the
    first, on a tie). Where the draws of a class are all equal the mode is their value.

    Args:
        draw_probs: (S, N, C) class probabilities of S posterior draws (with one draw, a
            MAP's, the result is that draw).
        num_grid: the number of grid points (>= 2); by default 512 with ``grid="unit"`` and
            :data:`REFERENCE_GRID_POINTS` (600) with ``grid="reference"``.
        grid: ``"unit"`` (the default): the same ``num_grid`` points on [0, 1] for every
            example and class. ``"reference"``: as the reference notebook, per example and
            class, points spanning the draws' range widened by 0.05 on each side and clipped
            to [0, 1], i.e. ``[max(min_s q_sc - 0.05, 0), min(max_s q_sc + 0.05, 1)]``.

    Returns:
        Probabilities (N, C); take ``argmax`` for the class.
    """
    if grid not in KDE_GRIDS:
        raise ValueError(f"grid must be one of {KDE_GRIDS}, got {grid!r}")
    if num_grid is None:
        num_grid = 512 if grid == "unit" else REFERENCE_GRID_POINTS
    num_grid = require_count(num_grid, "num_grid", 2)
    draws = _check_draws(draw_probs)
    if draws.shape[0] == 1:  # one draw (a MAP): its own probabilities are the mode
        return draws[0] / draws[0].sum(-1, keepdims=True)
    return _kde_mode(draws, num_grid, grid == "reference")


@jax.jit(static_argnums=(1, 2))
def _kde_mode(draw_probs: jax.Array, num_grid: int, reference: bool) -> jax.Array:
    num_draws = draw_probs.shape[0]
    steps = jnp.linspace(0.0, 1.0, num_grid)
    if reference:  # (G, N, C): per example and class
        low = jnp.maximum(draw_probs.min(0) - REFERENCE_GRID_MARGIN, 0.0)
        high = jnp.minimum(draw_probs.max(0) + REFERENCE_GRID_MARGIN, 1.0)
        grid = low[None] + (high - low)[None] * steps[:, None, None]
    else:  # (G, 1, 1): shared
        grid = steps[:, None, None]
    # Scott's rule as in scipy.stats.gaussian_kde: bandwidth = sd * S^(-1/5), sd with ddof=1
    sd = jnp.std(draw_probs, axis=0, ddof=1)
    bandwidth = jnp.maximum(sd * num_draws ** (-1.0 / 5.0), 1e-12)  # (N, C)
    log_kernel = -0.5 * ((grid[:, None] - draw_probs[None]) / bandwidth[None, None]) ** 2
    # (G, S, N, C); shifted so that the largest term is exp(0) = 1 for each example and class:
    # a bandwidth far below the grid's spacing would otherwise underflow every grid point's
    # density to 0 (and the argmax to the first grid point); common factors are dropped
    peak = log_kernel.max(axis=(0, 1))
    density = jnp.exp(log_kernel - peak[None, None]).sum(1)  # (G, N, C)
    best = jnp.argmax(density, axis=0)  # (N, C)
    grid = jnp.broadcast_to(grid, density.shape)
    mode = jnp.take_along_axis(grid, best[None], axis=0)[0]  # (N, C)
    # all draws equal: no density (SciPy raises); the mode is their value. Tested on the range,
    # not on sd, which float32 rounding can leave slightly above 0 for equal draws
    degenerate = draw_probs.max(0) == draw_probs.min(0)
    mode = jnp.where(degenerate, draw_probs[0], mode)
    return mode / mode.sum(-1, keepdims=True)


def predictive_summary(
    posterior: _Predictor,
    inputs: ArrayLike,
    *,
    level: float = 0.95,
    example_batch_size: int = 512,
    draw_batch_size: int = 64,
    kde_mode: bool = False,
    kde_grid: str = "unit",
) -> dict[str, np.ndarray]:
    """Every per-example summary of a posterior on ``inputs``, computed in chunks of examples.

    Memory is ``S * example_batch_size * C`` at a time, never ``S * N * C``.

    Args:
        posterior: anything with ``predict(inputs, draw_batch_size=...) -> (S, n, C)``.
        inputs: (N, ...) inputs.
        level: the credible level of the threshold and the intervals.
        example_batch_size: examples per chunk.
        draw_batch_size: passed on to ``posterior.predict``.
        kde_mode: also compute :func:`kde_mode_prediction`.
        kde_grid: its ``grid`` (``"unit"`` or ``"reference"``).

    Returns:
        A dict of NumPy arrays: ``predictive_mean`` (N, C), ``mean_deviance``,
        ``credible_threshold``, ``deviance_bound``, ``total_entropy``, ``aleatoric``,
        ``epistemic`` (N,), ``class_intervals`` (N, C, 2), and ``kde_mode`` (N, C) if asked.
    """
    example_batch_size = require_count(example_batch_size, "example_batch_size", 1)
    level = _require_level(level)
    if kde_mode and kde_grid not in KDE_GRIDS:
        raise ValueError(f"kde_grid must be one of {KDE_GRIDS}, got {kde_grid!r}")
    inputs = np.asarray(inputs)
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must hold at least one example, got shape {inputs.shape}")
    parts = []
    for start in range(0, inputs.shape[0], example_batch_size):
        probs = posterior.predict(
            inputs[start : start + example_batch_size], draw_batch_size=draw_batch_size
        )
        probs = _check_draws(probs)  # once per chunk; the cores below skip the checks
        u, bound = _credible_threshold(probs, float(level), 60)
        entropies = _entropy_decomposition(probs)
        part = {
            "predictive_mean": _predictive_mean(probs),
            "mean_deviance": _mean_deviance(probs),
            "credible_threshold": u,
            "deviance_bound": bound,
            "total_entropy": entropies["total"],
            "aleatoric": entropies["aleatoric"],
            "epistemic": entropies["epistemic"],
            "class_intervals": _class_intervals(probs, float(level)),
        }
        if kde_mode:
            part["kde_mode"] = kde_mode_prediction(probs, grid=kde_grid)
        parts.append({k: np.asarray(v) for k, v in part.items()})
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def predictive_metrics(
    posterior: _Predictor,
    inputs: ArrayLike,
    labels: ArrayLike,
    *,
    example_batch_size: int = 512,
    draw_batch_size: int = 64,
    num_bins: int = 15,
) -> dict[str, float]:
    """Accuracy, NLL, Brier score, ECE and classwise ECE of the posterior predictive mean on
    ``(inputs, labels)``, accumulated chunk by chunk
    (:mod:`mtbkd_jax.streaming_metrics`): memory is ``S * example_batch_size * C`` at a time
    plus a state of ``C * num_bins`` numbers, so a test set of any size (a memory-mapped
    ``.npy``, say) can be scored. The figures are those five of
    :func:`~mtbkd_jax.metrics.classification_metrics` on the whole predictive mean, to
    float32 rounding (its equal-mass and selective figures need every example at once).

    Args:
        posterior: anything with ``predict(inputs, draw_batch_size=...) -> (S, n, C)``.
        inputs: (N, ...) inputs.
        labels: (N,) integer class indices.
        example_batch_size: examples per chunk.
        draw_batch_size: passed on to ``posterior.predict``.
        num_bins: the ECEs' equal-width bins.

    Returns:
        ``streaming_compute``'s dict: ``examples``, ``accuracy``, ``nll``, ``brier``, ``ece``,
        ``classwise_ece``.
    """
    from mtbkd_jax.streaming_metrics import streaming_compute, streaming_init, streaming_update

    example_batch_size = require_count(example_batch_size, "example_batch_size", 1)
    x = np.asarray(inputs)  # a memory map stays one: chunks are read as they are scored
    y = np.asarray(labels)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"inputs must hold at least one example, got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match inputs, got {y.shape}")
    state = None
    for start in range(0, x.shape[0], example_batch_size):
        stop = start + example_batch_size
        probs = _check_draws(posterior.predict(x[start:stop], draw_batch_size=draw_batch_size))
        if state is None:
            state = streaming_init(probs.shape[-1], num_bins)
        state = streaming_update(state, _predictive_mean(probs), y[start:stop])
    assert state is not None  # at least one chunk, checked above
    return streaming_compute(state)
