"""NUTS (NumPyro) on an MT-BKD model: full batch, several chains, jit-compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_uniform

from mtbkd_jax._checks import require_counts, require_key
from mtbkd_jax._deprecation import renamed_keywords
from mtbkd_jax.infer._common import (
    check_init_params,
    make_posterior,
    nonfinite_sites,
    prepare_data,
    unconstrained_start,
)
from mtbkd_jax.infer._fitted_params import warn_unfitted_params
from mtbkd_jax.infer.mesh import check_mesh, full_batch_data, mcmc_chain_method
from mtbkd_jax.infer.minibatch import ModelStructure, model_structure
from mtbkd_jax.infer.posterior import Posterior

if TYPE_CHECKING:
    from jax.sharding import Mesh
    from numpy.typing import ArrayLike

__all__ = ["run_nuts"]

_EXTRA_FIELDS = (
    "diverging",
    "num_steps",
    "accept_prob",
    "energy",
    "potential_energy",
    "adapt_state.step_size",
)
_ARVIZ_NAMES = {
    "diverging": "diverging",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
    "energy": "energy",
    "adapt_state.step_size": "step_size",
}


@renamed_keywords("mtbkd_jax.run_nuts", num_samples="num_draws")
def run_nuts(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_warmup: int = 500,
    num_draws: int = 500,
    num_chains: int = 2,
    chain_method: str | None = None,
    thinning: int = 1,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init_strategy: Callable | None = None,
    init_params: dict | list[dict] | None = None,
    progress_bar: bool = True,
    model_kwargs: dict | None = None,
    logits_fn: Callable | None = None,
    mesh: Mesh | None = None,
) -> Posterior:
    """Sample the posterior of ``model(inputs, labels, **model_kwargs)`` with NUTS.

    Args:
        rng_key: a JAX PRNG key.
        model: an :class:`~mtbkd_jax.MTBKDModel` or any NumPyro model with the signature
            ``model(inputs, labels=None, **kwargs)``.
        inputs: the student's inputs (N, ...); a frozen feature extractor is applied once.
        labels: class labels (N,).
        num_warmup, num_chains, thinning: the usual MCMC settings.
        num_draws: draws per chain after warmup, as ``run_svi(num_draws=)`` and
            :attr:`Posterior.num_draws` (with thinning, ``num_draws // thinning`` are kept).
            ``num_samples=``, its former name, still works with a ``DeprecationWarning``.
        chain_method: ``"sequential"``, ``"vectorized"`` or ``"parallel"``; by default
            parallel when there are enough devices, else sequential.
        target_accept_prob, max_tree_depth, dense_mass: NUTS settings.
        init_strategy: a NumPyro init strategy (default ``init_to_uniform(radius=0.5)``).
        init_params: a starting point (site -> array) shared by every chain, e.g. a MAP, or
            a list with one starting point per chain (e.g. MAPs from different seeds, so that
            R-hat compares chains that began apart). Values are in the model's own space
            (``posterior.point()``; a scale as a positive number), checked against each
            site's support and moved to NumPyro's unconstrained space here.
        progress_bar: show NumPyro's progress bar.
        model_kwargs: further keyword arguments of the model (e.g. ``prior_inputs``).
        logits_fn: ``(weights, features) -> logits`` for prediction with a user's own model.
        mesh: a :class:`jax.sharding.Mesh` with axes ``("chains", "data")``
            (:mod:`mtbkd_jax.infer.mesh`): the inputs, the labels and the teacher bank's
            constants (every array with the length of ``inputs`` or ``prior_inputs``) sharded
            over ``data``, ``jit`` partitioning the potential's sums over it (the model's
            arguments are then arguments of the compiled program, NumPyro's
            ``jit_model_args``); the chains split over ``chains``, each shard running its
            chains as ``chain_method`` says (``"sequential"`` by default; ``"parallel"`` is
            refused, the mesh places the chains). The ``data`` axis must divide the number of
            examples (no padding) and the ``chains`` axis ``num_chains``. The potential and
            its gradient equal the one-device ones to float32 rounding; NUTS's discrete
            choices (tree doubling, U-turn, acceptance) amplify such last-bit differences, so
            a long run's draws may follow another, equally valid, trajectory.

    Returns:
        A :class:`Posterior` with ArviZ-named sampler statistics.
    """
    require_key(rng_key)
    require_counts(
        num_warmup=(num_warmup, 0),
        num_draws=(num_draws, 1),
        num_chains=(num_chains, 1),
        thinning=(thinning, 1),
    )
    if num_draws < thinning:  # NumPyro's own message would name its num_samples
        raise ValueError(
            f"num_draws must be >= thinning (one draw kept per chain at least), got "
            f"num_draws={num_draws} and thinning={thinning}"
        )
    require_counts(max_tree_depth=(max_tree_depth, 1))
    if mesh is not None:
        mesh, chain_method = _checked_mesh(mesh, int(num_chains), chain_method)
    chain_method = _checked_settings(target_accept_prob, chain_method, dense_mass, num_chains)
    features, labels, kwargs = prepare_data(model, inputs, labels, model_kwargs)
    structure = _full_batch_structure(model, (features, labels), kwargs)
    starts = None  # the starting points as given (the model's own, constrained, space)
    if init_params is not None:
        starts = _checked_starts(init_params, structure, int(num_chains))
        # NumPyro's HMC takes init_params in its unconstrained space, as they are
        init_params = _broadcast_init(
            _map_starts(
                lambda p: unconstrained_start(model, (features, labels), kwargs, p), starts
            ),
            int(num_chains),
        )
    if mesh is not None:
        features, labels, kwargs = full_batch_data(model, features, labels, kwargs, mesh)
    kernel = NUTS(
        model,
        target_accept_prob=target_accept_prob,
        max_tree_depth=int(max_tree_depth),
        dense_mass=dense_mass,
        init_strategy=init_strategy or init_to_uniform(radius=0.5),
    )
    mcmc = MCMC(
        kernel,
        num_warmup=int(num_warmup),
        num_samples=int(num_draws),
        num_chains=int(num_chains),
        thinning=int(thinning),
        chain_method=chain_method if mesh is None else mcmc_chain_method(mesh, chain_method),
        progress_bar=progress_bar,
        jit_model_args=mesh is not None,  # the sharded data enter the program as arguments
    )
    try:
        mcmc.run(
            rng_key, features, labels, extra_fields=_EXTRA_FIELDS, init_params=init_params, **kwargs
        )
    except RuntimeError as error:
        if "Cannot find valid initial parameters" not in str(error):
            raise
        raise _no_valid_start(model, features, labels, kwargs, starts, structure) from None
    samples = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = _sample_stats(extra)
    return make_posterior(
        model,
        samples,
        method="nuts",
        sample_stats=stats,
        labels=labels,
        features=features,
        settings={
            "inference": "nuts",
            "num_warmup": int(num_warmup),
            "num_draws": int(num_draws),
            "thinning": int(thinning),
            "max_tree_depth": int(max_tree_depth),
            "num_chains": int(num_chains),
            "target_accept_prob": target_accept_prob,
            "chain_method": chain_method,
        },
        logits_fn=logits_fn,
        model_kwargs=model_kwargs,
    )


def _checked_mesh(mesh: object, num_chains: int, chain_method: str | None) -> tuple[Mesh, str]:
    """``mesh`` checked (:func:`~mtbkd_jax.infer.mesh.check_mesh`) and how each of its devices
    runs its chains (``"sequential"`` unless ``"vectorized"`` is asked for)."""
    checked = check_mesh(mesh, num_chains=num_chains)
    if chain_method == "parallel":
        raise ValueError(
            "chain_method='parallel' cannot be combined with mesh: the mesh's 'chains' axis "
            "places the chains; pass 'sequential' or 'vectorized' (how each device runs "
            "its chains)"
        )
    return checked, chain_method or "sequential"


def _checked_settings(
    target_accept_prob: float, chain_method: str | None, dense_mass: bool, num_chains: int
) -> str:
    """The NUTS settings checked; returns the chain method (chosen when ``None``)."""
    if isinstance(target_accept_prob, bool) or not isinstance(
        target_accept_prob, int | float | np.integer | np.floating
    ):
        raise TypeError(
            f"target_accept_prob must be a number in (0, 1), got {target_accept_prob!r} "
            f"({type(target_accept_prob).__name__})"
        )
    if not 0 < target_accept_prob < 1:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains > 1 else "sequential"
    if chain_method not in ("sequential", "vectorized", "parallel"):
        raise ValueError(
            f"chain_method must be 'sequential', 'vectorized' or 'parallel', got {chain_method!r}"
        )
    if not isinstance(dense_mass, bool):
        raise TypeError(f"dense_mass must be True or False, got {dense_mass!r}")
    return chain_method


def _full_batch_structure(
    model: Callable, model_args: tuple, kwargs: dict[str, Any]
) -> ModelStructure:
    """The model's structure; refused when a plate subsamples or nothing is latent."""
    structure = model_structure(model, model_args, kwargs)
    if structure.subsampled:
        plate = structure.subsampled[0]
        raise ValueError(
            f"run_nuts needs the full-batch model, but plate {plate.name!r} subsamples "
            f"{plate.batch_size} of {plate.size} (subsample_size); NUTS's accept step is wrong "
            "on minibatches. Leave subsample_size out of model_kwargs, or use run_sgmcmc / "
            "run_svi for minibatches"
        )
    if not structure.latent_shapes:
        raise ValueError("the model has no latent sample site to sample")
    return structure


def _sample_stats(extra: dict) -> dict:
    """NUTS's extra fields under ArviZ's names, with ``lp`` and ``tree_depth``."""
    stats = {_ARVIZ_NAMES[k]: v for k, v in extra.items() if k in _ARVIZ_NAMES}
    stats["lp"] = -np.asarray(extra["potential_energy"])
    # a tree of depth d has at most 2^d - 1 leapfrog steps; NUTS may stop inside the last one
    stats["tree_depth"] = np.ceil(np.log2(np.asarray(extra["num_steps"]) + 1)).astype(np.int64)
    return stats


def _no_valid_start(
    model: Callable,
    features: jax.Array,
    labels: Any,
    kwargs: dict[str, Any],
    init_params: Any,
    structure: ModelStructure,
) -> ValueError:
    """A clear error for NumPyro's "Cannot find valid initial parameters": which sites of the
    model have a non-finite log density at the start (or at zeros)."""
    import jax.numpy as jnp

    if init_params is not None:
        point = init_params[0] if isinstance(init_params, list | tuple) else init_params
        where = "init_params"
    else:
        point = {k: jnp.zeros(shape) for k, shape in structure.latent_shapes.items()}
        where = "all weights zero"
    bad = nonfinite_sites(model, (features, labels), kwargs, point)
    detail = (
        f"at {where} the log density of {bad} is not finite"
        if bad
        else f"the log density is finite at {where} but not where NUTS started"
    )
    return ValueError(
        f"NUTS found no starting point with a finite log density: {detail}. Check the model's "
        "data and priors (a NaN teacher prior, labels out of range, a zero-probability "
        "observation), or pass init_params where the model is finite"
    )


def _checked_starts(init_params: Any, structure: ModelStructure, num_chains: int) -> Any:
    """Validate a shared starting point or a list with one per chain (and warn of the
    model's params, which NUTS keeps at their initial values)."""
    warn_unfitted_params(structure.params, "NUTS")
    expected, derived = structure.latent_shapes, structure.deterministic
    if isinstance(init_params, list | tuple):
        if len(init_params) != num_chains:
            raise ValueError(
                f"init_params has {len(init_params)} starting points for {num_chains} chains"
            )
        return [
            check_init_params(point, expected, f"init_params[{i}]", derived)
            for i, point in enumerate(init_params)
        ]
    return check_init_params(init_params, expected, derived=derived)


def _map_starts(fn: Callable[[dict], dict], starts: Any) -> Any:
    """``fn`` on a shared starting point or on each of a list of them."""
    return [fn(p) for p in starts] if isinstance(starts, list | tuple) else fn(starts)


def _broadcast_init(init_params: Any, num_chains: int) -> dict:
    """Starting points with a leading chain axis (a shared one is repeated), as the default
    float type: float32 starts (a MAP's) under ``jax_enable_x64`` made NumPyro's tree
    building fail ("cond branches must have equal output types")."""
    import jax.numpy as jnp

    float_type = jnp.result_type(float)

    def as_array(value: Any) -> Any:
        array = jnp.asarray(value)
        return array.astype(float_type) if jnp.issubdtype(array.dtype, jnp.floating) else array

    if isinstance(init_params, list | tuple):
        stacked = {k: jnp.stack([as_array(p[k]) for p in init_params]) for k in init_params[0]}
        return {k: v[0] for k, v in stacked.items()} if num_chains == 1 else stacked
    if num_chains == 1:
        return {k: as_array(v) for k, v in init_params.items()}
    return {
        k: jnp.broadcast_to(as_array(v), (num_chains, *jnp.shape(v)))
        for k, v in init_params.items()
    }
