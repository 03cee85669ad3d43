"""Where an SG-MCMC run's chains start, and what the model says when it cannot start.

Chains start from ``init_params`` (one point for every chain, or one per chain, each checked
against the model's latent sites) or from NumPyro's ``init_to_uniform(0.5)`` per chain. When
the model's log density is not finite there, or a run diverges, the sites at fault are named
(:func:`~mtbkd_jax.infer._common.nonfinite_sites`), so that a NaN prior is not mistaken for a
step size too large. The run's fingerprint probes the model at chain 0's start, on the first
minibatch at every chain's start (the first ``PROBED_CHAINS``), and at a point away from each
(``FAR_SCALE`` times the start plus a fixed Normal(0, ``FAR_SHIFT``²) draw, unconstrained): a
change to the model's code that no chain's start reaches (a clip, a bounded activation) shows
there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import log_density

from mtbkd_jax.infer._common import check_in_support, check_init_params, nonfinite_sites
from mtbkd_jax.infer._fitted_params import warn_unfitted_params
from mtbkd_jax.infer.gradients import GradientEstimator

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.gradients import MinibatchPlan

__all__ = [
    "starting_positions",
    "first_chain",
    "probe",
    "site_log_densities",
    "chain_start_log_densities",
    "prediction_probe",
    "away_from",
    "divergence_cause",
    "PROBED_CHAINS",
]

PROBED_CHAINS = 16
FAR_SCALE, FAR_SHIFT = 3.0, 0.5


def starting_positions(
    model: Callable,
    estimator: GradientEstimator,
    plan: MinibatchPlan,
    init_params: dict | Sequence[dict] | None,
    rng_key: jax.Array,
    num_chains: int,
) -> dict:
    """Unconstrained starting points with a leading chain axis: one point for every chain, one
    point per chain (a list of ``num_chains`` points, e.g. MAPs from different random starts,
    so that R-hat compares chains that began apart), or random starts."""
    if init_params is not None:
        warn_unfitted_params(plan.params, "SG-MCMC")
    if isinstance(init_params, list | tuple):
        points = [
            check_init_params(p, plan.latent_shapes, f"init_params[{c}]", plan.deterministic)
            for c, p in enumerate(init_params)
        ]
        if len(points) != num_chains:
            raise ValueError(
                f"init_params holds {len(points)} starting points for num_chains={num_chains}; "
                "pass one per chain, or one dict for every chain"
            )
        for c, p in enumerate(points):
            check_in_support(
                model, estimator.model_args, estimator.model_kwargs, p, f"init_params[{c}]"
            )
        unconstrained = [estimator.unconstrain(p) for p in points]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *unconstrained)
    if init_params is not None:
        point = check_init_params(init_params, plan.latent_shapes, derived=plan.deterministic)
        check_in_support(model, estimator.model_args, estimator.model_kwargs, point)
        point = estimator.unconstrain(point)
        return {k: jnp.broadcast_to(v, (num_chains, *v.shape)) for k, v in point.items()}
    try:
        keys = jax.random.split(rng_key, num_chains)
        starts = [estimator.initial_position(k) for k in keys]
    except RuntimeError as error:
        if "Cannot find valid initial parameters" not in str(error):
            raise
        zeros = {k: jnp.zeros(shape) for k, shape in plan.latent_shapes.items()}
        bad = nonfinite_sites(model, estimator.model_args, plan.kwargs, zeros)
        raise ValueError(
            "no starting point with a finite log density was found; at all weights zero "
            f"the log density of {bad or 'no site'} is not finite. Check the model's data "
            "and priors, or pass init_params where the model is finite"
        ) from None
    return jax.tree.map(lambda *xs: jnp.stack(xs), *starts)


def first_chain(start: PyTree) -> PyTree:
    """Chain 0's position of a state with a leading chain axis."""
    return jax.tree.map(lambda x: x[0], start)


def probe(
    estimator: GradientEstimator,
    start: PyTree,
    logits_fn: Callable | None,
    predict: jax.Array | None,
) -> dict:
    """The model at chain 0's start, for the fingerprint (it sees constants a closure hides):
    its log density on minibatches covering every example of every plate, summed into at most
    64 groups of consecutive minibatches; its gradient norm on the first minibatch; and the
    streamed predictions' log probabilities there."""
    point = first_chain(start)
    first = estimator.first_batch()
    # the estimator an argument, not a constant: its data may span processes
    grad = jax.jit(lambda e, p, b: jax.grad(e.logdensity)(p, b))(estimator, point, first)
    norm = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grad)))
    num_steps = max(-(-p.size // p.batch_size) for p in estimator.plates)

    def values_at(estimator: GradientEstimator, steps: jax.Array) -> jax.Array:
        orders = {p.name: jnp.arange(p.size) for p in estimator.plates}

        def at(step: jax.Array) -> jax.Array:
            batch = {p.name: p.indices(orders[p.name], step) for p in estimator.plates}
            return estimator.logdensity(point, batch)

        return jax.lax.map(at, steps)

    values = np.asarray(jax.jit(values_at)(estimator, jnp.arange(num_steps)))
    groups = np.array_split(values.astype(np.float64), min(64, num_steps))
    out = {
        "logdensity_at_start": [float(g.sum()) for g in groups],
        "gradient_norm_at_start": float(norm),
        **site_log_densities(estimator, point, first),
        **chain_start_log_densities(estimator, start, first),
    }
    return {**out, **prediction_probe(estimator, point, logits_fn, predict)}


def prediction_probe(
    estimator: GradientEstimator, point: PyTree, logits_fn: Callable | None, predict: Any
) -> dict:
    """The streamed predictions' summed log probabilities on ``predict[:8]`` at chain 0's
    start (``predictions_at_start``) and away from it (``predictions_away_from_start``, the
    point :func:`chain_start_log_densities` probes): a ``logits_fn`` changed only where the
    logits are large (a clip) is unchanged at a start near zero. Empty without ``predict``."""
    if predict is None:
        return {}
    assert logits_fn is not None  # predict needs it (checked by run_sgmcmc)

    def summed(at: PyTree) -> float:
        logits = logits_fn(estimator.constrain(at), predict[:8])
        return float(jnp.sum(jax.nn.log_softmax(logits, -1)))

    return {
        "predictions_at_start": summed(point),
        "predictions_away_from_start": summed(away_from(point)),
    }


def away_from(point: PyTree) -> PyTree:
    """``FAR_SCALE * point + FAR_SHIFT * z`` (unconstrained), ``z`` a fixed standard Normal
    draw per site (key 0), so that no class or unit is moved alike."""
    leaves, tree = jax.tree.flatten(point)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    draws = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(
        tree, [FAR_SCALE * x + FAR_SHIFT * z for x, z in zip(leaves, draws, strict=True)]
    )


def site_log_densities(estimator: GradientEstimator, point: PyTree, batch: Any) -> dict:
    """Each sample site's log density (latent, observed and factor sites, scaled as in the
    minibatch estimate) on ``batch`` at the unconstrained ``point``, named
    ``log_density_at_start.<site>``: a change to one prior (a hyperprior's scale) shows in its
    own site, where in the total it can hide under a likelihood that grows with N."""

    def run(e: GradientEstimator, p: PyTree, b: Any) -> dict:
        model, args, kwargs = e.batch_model(b)
        _, trace = log_density(model, args, kwargs, e.constrain(p))
        out = {}
        for name, site in trace.items():
            if site["type"] == "sample":
                value = site["fn"].log_prob(site["value"])
                out[name] = jnp.sum(value if site["scale"] is None else site["scale"] * value)
        return out

    values = jax.jit(run)(estimator, point, batch)  # the estimator an argument, as in probe
    return {f"log_density_at_start.{name}": float(v) for name, v in values.items()}


def chain_start_log_densities(estimator: GradientEstimator, start: PyTree, batch: Any) -> dict:
    """The log density on ``batch`` at each chain's start (``logdensity_at_chain_starts``) and
    at a point away from it (``logdensity_away_from_starts``: ``FAR_SCALE * start + FAR_SHIFT *
    z`` in unconstrained space, ``z`` a fixed standard Normal draw per site, so that no class
    or unit is moved alike), for the first ``PROBED_CHAINS`` chains. Chain 0's start alone
    misses a change the model makes only where its activations or logits are large (a
    ``relu`` become ``relu6``, a clip added), which the chains' later draws would reach."""
    num_chains = jax.tree.leaves(start)[0].shape[0]
    at = jax.jit(lambda e, p, b: e.logdensity(p, b))  # the estimator an argument, as in probe
    near, away = [], []
    for chain in range(min(num_chains, PROBED_CHAINS)):  # one chain at a time, as first_chain
        point = jax.tree.map(lambda x, c=chain: x[c], start)
        near.append(float(at(estimator, point, batch)))
        away.append(float(at(estimator, away_from(point), batch)))
    return {"logdensity_at_chain_starts": near, "logdensity_away_from_starts": away}


def divergence_cause(model: Callable, estimator: GradientEstimator, start: PyTree) -> str:
    """Whether the model was already non-finite where the chains started (then the step size
    is not to blame), or the step size is the suspect."""
    point = estimator.constrain(first_chain(start))
    bad = nonfinite_sites(model, estimator.model_args, estimator.model_kwargs, point)
    if bad:
        return (
            f"the model's log density is already non-finite where the chains started (sites "
            f"{bad}): check the model, its data and the teacher prior; the step size is not "
            "the cause"
        )
    return "lower step_size"
