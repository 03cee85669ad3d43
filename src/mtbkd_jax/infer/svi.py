"""SVI (NumPyro) on an MT-BKD model: AutoNormal, AutoLowRankMultivariateNormal, and AutoDelta
(= MAP = knowledge distillation). Optimisation runs in jitted ``lax.scan`` chunks; the host
only sees one chunk at a time (progress bar, divergence check). The compiled chunk runners
are kept between calls (:mod:`mtbkd_jax.infer._svi_runners`), so a second fit of a model is
not traced and compiled again."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from mtbkd_jax._checks import (
    refuse_slashed_sites,
    require_counts,
    require_key,
    require_positive,
)
from mtbkd_jax.infer._common import is_array_tree, make_posterior, nonfinite_sites, prepare_data
from mtbkd_jax.infer._convergence import (
    final_loss_change,
    trend_z_score,
    warn_if_loss_rose,
    warn_if_not_converged,
    warn_polish_not_converged,
)
from mtbkd_jax.infer._fitted_params import fitted_params
from mtbkd_jax.infer._polish import polish_point
from mtbkd_jax.infer._svi_runners import (
    GUIDES,
    SortedTraceELBO,
    _discard,
    _Settings,
    _svi_runner,
    _unconstrained_latents,
)
from mtbkd_jax.infer.mesh import full_batch_data
from mtbkd_jax.infer.minibatch import model_structure
from mtbkd_jax.infer.posterior import Posterior

if TYPE_CHECKING:
    from jax.sharding import Mesh
    from numpy.typing import ArrayLike
    from numpyro.infer.svi import SVIState

    from mtbkd_jax.infer._svi_runners import _Runner

__all__ = ["run_svi", "run_map", "GUIDES", "SortedTraceELBO"]


def run_svi(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    guide: str = "normal",
    num_steps: int = 2000,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    num_draws: int = 500,
    num_particles: int = 1,
    init_scale: float = 0.1,
    rank: int | None = None,
    chunk_size: int = 100,
    progress_bar: bool = True,
    model_kwargs: dict | None = None,
    logits_fn: Callable | None = None,
    mesh: Mesh | None = None,
    polish_steps: int = 0,
    polish_tolerance: float = 1e-7,
) -> Posterior:
    """Fit a guide by SVI and return draws from it as a :class:`Posterior`.

    Args:
        rng_key: a JAX PRNG key.
        model: an :class:`~mtbkd_jax.MTBKDModel` or a NumPyro model
            ``model(inputs, labels=None, **kwargs)``.
        guide: ``"normal"`` (AutoNormal), ``"lowrank"`` (AutoLowRankMultivariateNormal) or
            ``"delta"`` (AutoDelta: the posterior mode, one draw).
        num_steps: optimisation steps (full batch unless ``model_kwargs`` subsamples).
        learning_rate: Adam's step size when ``optimizer`` is not given.
        optimizer: any optax transformation.
        num_draws: draws taken from the fitted guide (1 for ``"delta"``).
        num_particles: ELBO particles per step.
        init_scale: initial scale of the Gaussian guides.
        rank: rank of the low-rank guide (NumPyro's default when ``None``).
        chunk_size: steps per jitted chunk (progress updates between chunks).
        progress_bar: show a tqdm progress bar.
        model_kwargs: further keyword arguments of the model (e.g. ``prior_inputs``).
        logits_fn: ``(weights, features) -> logits`` for a user's own model.
        mesh: a :class:`jax.sharding.Mesh` with axes ``("chains", "data")``
            (:mod:`mtbkd_jax.infer.mesh`): the inputs, the labels and the teacher bank's
            constants (every array with the length of ``inputs`` or ``prior_inputs``) sharded
            over ``data``, ``jit`` partitioning the ELBO's sums over it; the guide's
            parameters replicated (there are no chains: the ``chains`` axis only replicates).
            The ``data`` axis must divide the number of examples (no padding). The fit
            equals the one without a mesh to float32 rounding (sums in another order).
        polish_steps: for a MAP (``guide="delta"``) on the full data, at most this many
            L-BFGS iterations after the ``num_steps`` Adam steps, on the same objective
            (``optax.lbfgs``, zoom line search), stopping once an iteration lowers the loss
            by less than ``polish_tolerance * max(|loss|, 1)``: the mode itself rather than
            wherever Adam stopped. Refused with a mesh or a model that subsamples.
        polish_tolerance: the polish's stopping rule (relative decrease per iteration; float32
            resolves about 6e-8).

    The compiled optimisation program is kept for later calls with the same model object,
    guide, optimiser (the same object, or Adam with the same ``learning_rate``),
    ``num_particles``, ``init_scale``, ``rank``, static ``model_kwargs`` and data shapes: a
    second fit is neither traced nor compiled again, and gives the same result as a first one.
    A model is therefore assumed not to change in place between fits (MTBKDModel's settings
    cannot; its student's module, and a global a model reads, keep their first fit's values).

    The posterior's ``settings["final_loss_change"]`` is the share of the run's fall of the
    loss made in its last tenth of the steps
    (:func:`~mtbkd_jax.infer._convergence.final_loss_change`); a MAP (``guide="delta"``)
    whose loss still fell, or rose, by more than 0.5% of that fall there, by more than its
    noise, gets a :class:`~mtbkd_jax.infer.ConvergenceWarning`.

    A model's own ``numpyro.param`` sites are fitted with the guide (type-II maximum
    likelihood) and kept in the posterior's ``fitted_params`` (once, not per draw;
    :mod:`~mtbkd_jax.infer._fitted_params`), so its log-likelihood, predictions and files
    describe the fitted model.

    Raises:
        FloatingPointError: if the loss becomes NaN or infinite (the message says at which step).
        ValueError: if no starting point has a finite log density (the message names the
            model's sites that are not finite with every weight zero), as in ``run_nuts``.
    """
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {sorted(GUIDES)}, got {guide!r}")
    require_counts(
        num_steps=(num_steps, 1),
        num_draws=(num_draws, 1),
        chunk_size=(chunk_size, 1),
        num_particles=(num_particles, 1),
    )
    learning_rate = require_positive(learning_rate, "learning_rate")
    _check_polish(guide, polish_steps, polish_tolerance, mesh)
    require_key(rng_key)
    init_scale = require_positive(init_scale, "init_scale")
    if rank is not None:
        require_counts(rank=(rank, 1))
    _check_optimizer(optimizer)
    features, labels, kwargs = prepare_data(model, inputs, labels, model_kwargs)
    if mesh is None:
        arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array | np.ndarray)}
    else:  # the teacher prior's constants become arguments too (pytrees of arrays)
        features, labels, kwargs = full_batch_data(model, features, labels, kwargs, mesh)
        arrays = {k: v for k, v in kwargs.items() if is_array_tree(v)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    settings = _Settings(
        guide=guide,
        optimizer=optimizer,
        learning_rate=None if optimizer is not None else learning_rate,
        num_particles=int(num_particles),
        init_scale=float(init_scale),
        rank=None if rank is None else int(rank),
        static=tuple(sorted((k, (type(v), v)) for k, v in static.items())),
    )
    runner = _svi_runner(model, settings, features, labels, arrays)
    init_key, run_key, draw_key = jax.random.split(rng_key, 3)
    with runner.lock:  # two threads' first fits must not set up the same guide at once
        svi, auto, own = runner.fit_objects()
        try:
            state = svi.init(init_key, features, labels, **kwargs)
        except Exception as error:
            if own:  # its guide may be half set up: a later fit must not trace with it
                _discard(runner)
            if not _no_valid_start(error):
                raise
            state = None
        else:
            runner.fresh = False
    if state is None:  # diagnosed outside the lock: it traces the model again
        raise _no_start_error(model, (features, labels), kwargs) from None
    _refuse_slashed_latents(auto)  # before the fit, not after it
    if own and not _unconstrained_latents(auto):
        _discard(runner)  # constrained latents: this runner serves this fit only
    start, data = state, (features, labels, arrays)
    state, losses = _optimize(runner, state, data, num_steps, chunk_size, progress_bar, guide)
    polished = None
    params = svi.get_params(state)
    if guide == "delta":
        point = auto.median(params)
        if polish_steps:
            polish = (polish_steps, polish_tolerance, progress_bar)
            point, params, losses, polished = _polished(
                model, (point, params), (features, labels, arrays), static, polish, losses
            )
        samples = {k: jnp.asarray(v)[None, None] for k, v in point.items()}
    else:
        draws = auto.sample_posterior(draw_key, params, sample_shape=(int(num_draws),))
        samples = {k: v[None] for k, v in draws.items()}
    method = "map" if guide == "delta" else f"svi_{guide}"
    paired = partial(runner.paired_losses, start, state, data)  # called if the loss is noisy
    return make_posterior(
        model,
        samples,
        method=method,
        losses=losses,
        labels=labels,
        features=features,
        settings=_fit_settings(method, num_steps, learning_rate, losses, polished, paired),
        logits_fn=logits_fn,
        model_kwargs=model_kwargs,
        fitted_params=fitted_params(model, (features, labels), {**arrays, **static}, params),
    )


def _refuse_slashed_latents(guide: Any) -> None:
    """The guide's latent sites (its prototype trace, set up by ``svi.init``) without '/'."""
    trace = getattr(guide, "prototype_trace", None) or {}
    latent = (n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"])
    refuse_slashed_sites(latent)


def _fit_settings(
    method: str,
    num_steps: int,
    learning_rate: float,
    losses: np.ndarray,
    polished: dict[str, Any] | None = None,
    paired: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """The posterior's settings, with the loss's final change
    (:func:`~mtbkd_jax.infer._convergence.final_loss_change`); a MAP's is warned about when it
    is not converged. A polished MAP (``polished``: the L-BFGS iterations run and whether
    they met the tolerance) is judged by its polish alone. ``paired``: the losses at the
    start and at the end on the same minibatches, for a noisy loss
    (:func:`~mtbkd_jax.infer._convergence.warn_if_loss_rose`)."""
    settings = {"inference": method, "num_steps": int(num_steps), "learning_rate": learning_rate}
    if method == "map":  # a polished MAP's end is the polish's (full batch): not paired
        warn_if_loss_rose(losses, num_steps, paired=paired if polished is None else None)
    if polished is None:
        change = final_loss_change(losses)
        if method == "map":
            warn_if_not_converged(change, trend_z_score(losses), num_steps)
        return {**settings, "final_loss_change": change}
    steps = polished["polish_steps_run"]
    change = final_loss_change(losses[len(losses) - steps :])  # NaN under 100 iterations
    if not polished["polish_converged"]:
        warn_polish_not_converged(steps, losses)
    return {**settings, "final_loss_change": change, **polished}


def _check_optimizer(optimizer: object) -> None:
    """``None`` or an optax transformation (anything with ``init`` and ``update``)."""
    if optimizer is not None and not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "optimizer must be an optax GradientTransformation (e.g. optax.adam(1e-2)), got "
            f"{optimizer!r} ({type(optimizer).__name__})"
        )


def _check_polish(guide: str, steps: object, tolerance: float, mesh: Mesh | None) -> None:
    """``polish_steps`` is a count (0: no polish) for a MAP without a mesh; its tolerance is
    positive."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"polish_steps must be an integer >= 0, got {steps!r}")
    require_positive(tolerance, "polish_tolerance")
    if steps and guide != "delta":
        raise ValueError(f"polish_steps polishes a MAP (guide='delta'), not guide={guide!r}")
    if steps and mesh is not None:
        raise ValueError("polish_steps runs on one device: it cannot be combined with mesh=")


def _polished(
    model: Callable,
    fit: tuple[dict[str, Any], dict[str, Any]],
    data: tuple[jax.Array, jax.Array | None, dict[str, Any]],
    static: dict[str, Any],
    polish: tuple[int, float, bool],
    losses: np.ndarray,
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, dict[str, Any]]:
    """The MAP's point polished by L-BFGS (:mod:`mtbkd_jax.infer._polish`; ``fit``: the point
    and SVI's parameters), SVI's parameters with the model's params polished alongside, the
    Adam and polish losses one after the other, and what the polish did."""
    point, params = fit
    structure = model_structure(model, data[:2], {**data[2], **static})
    if structure.subsampled:
        raise ValueError(
            "polish_steps needs the exact loss, but the model subsamples the plate "
            f"{structure.subsampled[0].name!r} (a minibatch MAP): L-BFGS's line search cannot "
            "work on a noisy loss; polish on the full data"
        )
    steps, tolerance, progress_bar = polish
    optimised, polish_losses, converged, grad_norm = polish_point(
        model,
        point,
        params,
        data,
        static,
        max_steps=steps,
        tolerance=tolerance,
        progress_bar=progress_bar,
    )
    polished = {
        "polish_steps_run": len(polish_losses),
        "polish_converged": converged,
        "polish_grad_norm": grad_norm,
    }
    latent = {name: optimised[name] for name in point}
    return latent, {**params, **optimised}, np.concatenate([losses, polish_losses]), polished


def _no_valid_start(error: Exception) -> bool:
    """Whether ``error`` is NumPyro's "no starting point with a finite log density"."""
    return isinstance(error, RuntimeError) and "Cannot find valid initial parameters" in str(error)


def _no_start_error(model: Callable, args: tuple, kwargs: dict[str, Any]) -> ValueError:
    """``run_nuts``'s diagnosis of a model that cannot start: the sites whose log density is
    not finite with every weight zero (:func:`~mtbkd_jax.infer._common.nonfinite_sites`)."""
    shapes = model_structure(model, args, kwargs).latent_shapes
    bad = nonfinite_sites(model, args, kwargs, {k: jnp.zeros(s) for k, s in shapes.items()})
    detail = (
        f"at all weights zero the log density of {bad} is not finite"
        if bad
        else "the log density is finite at all weights zero but not where SVI started"
    )
    return ValueError(
        f"SVI found no starting point with a finite log density: {detail}. Check the model's "
        "data and priors (a NaN teacher prior, a teacher prior built for other inputs, labels "
        "out of range, a zero-probability observation)"
    )


def _optimize(
    runner: _Runner,
    state: SVIState,
    data: tuple[jax.Array, jax.Array | None, dict[str, Any]],
    num_steps: int,
    chunk_size: int,
    progress_bar: bool,
    guide: str,
) -> tuple[SVIState, np.ndarray]:
    """``num_steps`` SVI steps in jitted chunks; returns the state and the losses, refusing
    a non-finite loss where it appears, and parameters the last step made non-finite."""
    losses = []
    bar = tqdm(total=int(num_steps), desc=f"SVI ({guide})", disable=not progress_bar, leave=False)
    done = 0
    while done < num_steps:
        length = min(int(chunk_size), int(num_steps) - done)
        state, chunk_losses = runner.run_chunk(state, *data, length)
        chunk_losses = np.asarray(chunk_losses)
        losses.append(chunk_losses)
        if not np.isfinite(chunk_losses).all():
            bad = done + int(np.argmin(np.isfinite(chunk_losses)))
            bar.close()
            raise FloatingPointError(
                f"SVI loss became non-finite at step {bad}; lower learning_rate or check the data"
            )
        done += length
        bar.update(length)
        bar.set_postfix(loss=f"{chunk_losses[-1]:.4g}")
    bar.close()
    params = jax.tree.leaves(runner.svi.optim.get_params(state.optim_state))
    if not all(bool(jnp.isfinite(leaf).all()) for leaf in params):  # the last step's update
        raise FloatingPointError(
            "SVI's parameters became non-finite at its last step; lower learning_rate or check "
            "the data"
        )
    return state, np.concatenate(losses)


def run_map(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    **kwargs: Any,
) -> Posterior:
    """The posterior mode by optimisation (AutoDelta): one draw, equal to KD's optimum.

    Takes the keyword arguments of :func:`run_svi` (``num_steps``, ``learning_rate``,
    ``optimizer``, ``polish_steps``, ...), except ``guide`` and ``num_draws``. With
    ``polish_steps`` the Adam fit is polished to the mode by L-BFGS; its settings then record
    ``polish_steps_run``, ``polish_converged`` and ``polish_grad_norm`` (the gradient's norm
    at the point, in unconstrained coordinates), and a polish that ran out of iterations is
    warned about (:class:`~mtbkd_jax.infer.ConvergenceWarning`). As :func:`run_svi`, it keeps
    the compiled program for later fits of the same model object: a model must not change in
    place between fits (an :class:`~mtbkd_jax.MTBKDModel`'s settings refuse to).

    Example (a MAP that is the mode, not where Adam stopped):

        mode = run_map(key, model, x, y, num_steps=2000, polish_steps=2000)
    """
    for forbidden in ("guide", "num_draws"):
        if forbidden in kwargs:
            raise TypeError(f"run_map does not take {forbidden!r}")
    return run_svi(rng_key, model, inputs, labels, guide="delta", num_draws=1, **kwargs)
