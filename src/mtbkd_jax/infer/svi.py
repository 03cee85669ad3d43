"""SVI (NumPyro) on an MT-BKD model: AutoNormal, AutoLowRankMultivariateNormal, and AutoDelta
(= MAP = knowledge distillation). Optimisation runs in jitted ``lax.scan`` chunks; the host
only sees one chunk at a time (progress bar, divergence check)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO, init_to_uniform
from numpyro.infer.autoguide import AutoDelta, AutoLowRankMultivariateNormal, AutoNormal
from numpyro.optim import optax_to_numpyro
from tqdm.auto import tqdm

from mtbkd_jax._checks import require_counts, require_positive
from mtbkd_jax.infer._common import make_posterior, prepare_data
from mtbkd_jax.infer.posterior import Posterior

__all__ = ["run_svi", "run_map", "GUIDES"]

GUIDES = {"normal": AutoNormal, "lowrank": AutoLowRankMultivariateNormal, "delta": AutoDelta}


def run_svi(
    rng_key: jax.Array,
    model: Callable,
    inputs,
    labels=None,
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

    Raises:
        FloatingPointError: if the loss becomes NaN or infinite (the message says at which step).
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
    features, labels, kwargs = prepare_data(model, inputs, labels, model_kwargs)

    init_loc = init_to_uniform(radius=0.5)
    if guide == "delta":
        auto = AutoDelta(model, init_loc_fn=init_loc)
    elif guide == "lowrank":
        extra = {} if rank is None else {"rank": int(rank)}
        auto = AutoLowRankMultivariateNormal(
            model, init_loc_fn=init_loc, init_scale=init_scale, **extra
        )
    else:
        auto = AutoNormal(model, init_loc_fn=init_loc, init_scale=init_scale)
    optim = optax_to_numpyro(optimizer or optax.adam(learning_rate))
    svi = SVI(model, auto, optim, Trace_ELBO(num_particles=int(num_particles)))
    init_key, run_key, draw_key = jax.random.split(rng_key, 3)
    state = svi.init(init_key, features, labels, **kwargs)

    arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array | np.ndarray)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}

    def run_chunk(state, features, labels, arrays, length):
        def step(state, _):
            return svi.update(state, features, labels, **arrays, **static)

        return jax.lax.scan(step, state, None, length=length)

    run_chunk = jax.jit(run_chunk, static_argnums=4)
    losses = []
    bar = tqdm(total=int(num_steps), desc=f"SVI ({guide})", disable=not progress_bar, leave=False)
    done = 0
    while done < num_steps:
        length = min(int(chunk_size), int(num_steps) - done)
        state, chunk_losses = run_chunk(state, features, labels, arrays, length)
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
    params = svi.get_params(state)
    if guide == "delta":
        point = auto.median(params)
        samples = {k: jnp.asarray(v)[None, None] for k, v in point.items()}
    else:
        draws = auto.sample_posterior(draw_key, params, sample_shape=(int(num_draws),))
        samples = {k: v[None] for k, v in draws.items()}
    method = "map" if guide == "delta" else f"svi_{guide}"
    return make_posterior(
        model,
        samples,
        method=method,
        losses=np.concatenate(losses),
        labels=labels,
        features=features,
        settings={"inference": method, "num_steps": int(num_steps), "learning_rate": learning_rate},
        logits_fn=logits_fn,
    )


def run_map(rng_key: jax.Array, model: Callable, inputs, labels=None, **kwargs) -> Posterior:
    """The posterior mode by optimisation (AutoDelta): one draw, equal to KD's optimum.

    Takes the keyword arguments of :func:`run_svi` (``num_steps``, ``learning_rate``,
    ``optimizer``, ...), except ``guide`` and ``num_draws``.
    """
    for forbidden in ("guide", "num_draws"):
        if forbidden in kwargs:
            raise TypeError(f"run_map does not take {forbidden!r}")
    return run_svi(rng_key, model, inputs, labels, guide="delta", num_draws=1, **kwargs)
