"""ArviZ integration (this module and :mod:`mtbkd_jax.plots` are the only ones importing ArviZ).

Conversion to an ArviZ 1.x ``xarray.DataTree``, thin helpers that select parameters by name, so
summaries need not print every network weight, and :func:`exploration_report`: what the draws
explore, in a few numbers.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from mtbkd_jax.infer.posterior import Posterior

__all__ = ["to_datatree", "summary", "parameter_names", "exploration_report"]


LAST_STATES = (
    "the last state of each chain (keep_draws=False), not draws from the posterior; the "
    "posterior-predictive summaries are in Posterior.streamed"
)


def to_datatree(
    posterior: Posterior, *, log_likelihood: Mapping[str, ArrayLike] | None = None
) -> xr.DataTree:
    """Convert a :class:`~mtbkd_jax.Posterior` to an ArviZ ``xarray.DataTree``.

    Groups: ``posterior``, ``sample_stats`` (if any), ``observed_data`` (the labels over
    ``example``, named after the model's observed site when the log-likelihood names it),
    ``constant_data`` (``teacher_weights`` over ``teacher`` and ``prior_example``, and the
    model's fitted ``numpyro.param`` values, named in the root attr ``mtbkd_fitted_params``;
    a pytree param's arrays packed into ``mtbkd_fitted_param_bytes``, laid out in the root
    attr ``mtbkd_fitted_param_layouts``),
    ``log_likelihood`` (observed site -> (chains, draws, N)) when given, and
    ``optimization`` (the SVI/MAP loss trace) when present. The distillation settings are
    stored as JSON in the root attrs.
    """
    import arviz as az
    import xarray as xr

    from mtbkd_jax.infer._fitted_params import storable_params

    groups: dict[str, dict[str, Any]] = {
        "posterior": {k: np.asarray(v) for k, v in posterior.draws.items()}
    }
    if posterior.sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in posterior.sample_stats.items()}
    observed = dict(posterior.observed_data)
    dims = {"y": ["example"], "teacher_weights": ["teacher", "prior_example"]}
    if log_likelihood is not None:
        groups["log_likelihood"] = {k: np.asarray(v) for k, v in log_likelihood.items()}
        pointwise = [k for k, v in groups["log_likelihood"].items() if v.ndim == 3]
        dims.update(_example_dims(groups["log_likelihood"], pointwise, observed))
        if len(log_likelihood) == 1 and pointwise and "y" in observed:
            # the labels under the model's observed site's name, as ArviZ pairs the groups
            observed = {pointwise[0]: observed.pop("y"), **observed}
    if observed:
        groups["observed_data"] = observed
    # type-II ML values, among the constants
    stored = storable_params(posterior.fitted_params, taken=posterior.constant_data)
    if posterior.constant_data or stored.arrays:
        groups["constant_data"] = {**posterior.constant_data, **stored.arrays}
    coords: dict[str, list[Any]] = {}
    names = posterior.settings.get("teacher_names")
    if names and "teacher_weights" in posterior.constant_data:
        coords["teacher"] = list(names)
    last_states = posterior.settings.get("keep_draws") is False
    with warnings.catch_warnings():
        if last_states:  # one state per chain is what such a run keeps, not a transposed array
            warnings.filterwarnings("ignore", "Found chain dimension to be longer than draw")
        tree = az.from_dict(groups, dims=dims, coords=coords)
    if posterior.losses is not None and len(posterior.losses):
        tree["optimization"] = xr.DataTree(
            xr.Dataset({"loss": ("step", np.asarray(posterior.losses))})
        )
    if last_states:  # flagged where ArviZ users look
        tree["posterior"].attrs["mtbkd_draws"] = LAST_STATES
    tree.attrs["mtbkd_method"] = posterior.method
    tree.attrs["mtbkd_settings"] = json.dumps(posterior.settings, default=str)
    tree.attrs.update(stored.attrs)
    return tree


def _example_dims(
    pointwise: Mapping[str, np.ndarray], sites: list[str], observed: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Each observed site's example dim: ``example`` where it has as many rows as the labels
    (or the first site), ``<site>_example`` otherwise: ArviZ would pad sites of other lengths
    sharing one dim with NaN (and ``az.loo`` on them would be NaN)."""
    if not sites:
        return {}
    size = len(observed["y"]) if "y" in observed else pointwise[sites[0]].shape[2]
    return {k: ["example" if pointwise[k].shape[2] == size else f"{k}_example"] for k in sites}


def parameter_names(tree: xr.DataTree, pattern: str | None = None) -> list[str]:
    """Posterior variable names, optionally only those containing ``pattern``."""
    names = [str(name) for name in tree.children["posterior"].data_vars]
    return [n for n in names if pattern is None or pattern in n]


def summary(
    tree: xr.DataTree, pattern: str | None = None, **kwargs: Any
) -> pd.DataFrame | xr.Dataset:
    """``arviz.summary`` restricted to the variables whose name contains ``pattern``.

    ``kwargs`` go to ``arviz.summary``; it returns a ``pandas.DataFrame``, or an
    ``xarray.Dataset`` with ``fmt="xarray"``.
    """
    import arviz as az

    names = parameter_names(tree, pattern)
    if not names:
        raise ValueError(
            f"no posterior variable's name contains {pattern!r}; the variables are "
            f"{parameter_names(tree)[:8]}"
        )
    return az.summary(tree, var_names=names, **kwargs)


def exploration_report(
    posterior: Posterior, mode: Posterior | Mapping[str, ArrayLike] | None = None
) -> dict[str, Any]:
    """What the draws explore: agreement across chains, and how far they travel.

    Every site of ``posterior.draws`` counts; ``theta`` below is all of them flattened into one
    vector per draw (chain ``c``, draw ``s``).

    Args:
        posterior: the draws, ``(chains, draws, *shape)`` per site.
        mode: a point to measure the distance travelled from (a MAP): site -> array, or a
            :class:`~mtbkd_jax.Posterior` whose first draw is taken (``run_map``'s).

    Returns:
        A dict of plain numbers:

        * ``rhat``: site -> the largest rank-normalised split R-hat over its coordinates
          (``arviz.rhat``, Vehtari et al. 2021); near 1 when the chains agree, above ~1.01
          when they sample different regions; NaN with one chain, fewer than 4 draws per
          chain, or draws that never move. ``max_rhat``: the largest over all sites (NaN
          coordinates left out).
        * ``ess_bulk``: site -> the smallest bulk effective sample size over its coordinates
          (``arviz.ess``), ``min_ess_bulk`` the smallest overall: the number of independent
          draws the chains are worth for the posterior mean (NaN, not every draw, for a
          coordinate that never moves).
        * ``norm_rhat``, ``norm_ess_bulk``: site -> the same two numbers for the site's norm
          ``||theta_site||`` (one number per draw), ``max_norm_rhat`` and
          ``min_norm_ess_bulk`` over all sites. A norm does not change when a network's
          hidden units are permuted or their signs flipped, so two chains that sample the
          same posterior in differently labelled modes agree on it, while weight-space R-hat
          counts the relabelling as disagreement; chains that disagree on the scale of a
          layer, or are still drifting in it (a sampler started at a MAP, slow along a
          heavy-tailed direction), show here.
        * ``norm_mean``, ``norm_sd``: site -> the mean and standard deviation (``ddof=0``) of
          ``||theta_site||`` over all draws. Chains that agree can still agree on the wrong
          scale (a biased SG-MCMC step); these are what to compare between two runs, e.g. at
          a step and a quarter of it, or against NUTS on a subsample (``docs/results.md``).
        * ``within_chain_sd``: ``sqrt(sum_i mean_c var_s(theta_csi))``, how far a chain's
          draws spread around its own mean (sample variance, ``ddof=1``).
        * ``between_chain_distance``: the mean over pairs of chains of
          ``||mean_s theta_c - mean_s theta_c'||``; ``spread_to_separation`` is
          ``within_chain_sd / between_chain_distance``: well above 1 when the chains explore
          the same region, at or below 1 when each sits in its own (both ``None`` with one
          chain; NaN for draws that never move).
        * ``distance_from_mode``: the mean over draws of ``||theta - theta_mode||``;
          ``relative_distance_from_mode`` that divided by ``||theta_mode||`` (``None``
          without ``mode``; ``inf`` for a mode at the origin).
        * ``num_chains``, ``num_draws``.

        The posterior does not record where the chains started, so their initial distance
        is not reported. Non-finite draws (a diverged chain) are refused with a
        ``ValueError`` naming the site, chain and draw.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax import Posterior
        >>> from mtbkd_jax.diagnostics import exploration_report
        >>> draws = np.random.default_rng(0).normal(size=(2, 400, 3))
        >>> draws[1] += 5.0  # the second chain sits elsewhere
        >>> report = exploration_report(Posterior({"w": draws}), mode={"w": np.ones(3)})
        >>> report["max_rhat"] > 1.5, report["spread_to_separation"] < 1
        (True, True)
    """
    import arviz as az

    point = _mode_point(posterior, mode)
    num_chains = posterior.num_chains
    rhat, ess, variance, squared, means = {}, {}, 0.0, 0.0, []
    norm_rhat: dict[str, float] = {}
    norm_ess: dict[str, float] = {}
    norm_mean: dict[str, float] = {}
    norm_sd: dict[str, float] = {}
    with warnings.catch_warnings():  # constant coordinates: NaN, not a warning per site
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, value in posterior.draws.items():
            theta = np.asarray(value, np.float64).reshape(num_chains, posterior.num_draws, -1)
            _require_finite_draws(name, theta)
            rhat[name] = _nan_reduce(np.nanmax, az.rhat(theta))
            ess[name] = _nan_reduce(np.nanmin, _moving_ess(az, theta))
            norms = np.linalg.norm(theta, axis=-1, keepdims=True)  # (chains, draws, 1)
            norm_rhat[name] = _nan_reduce(np.nanmax, az.rhat(norms))
            norm_ess[name] = _nan_reduce(np.nanmin, _moving_ess(az, norms))
            norm_mean[name], norm_sd[name] = float(norms.mean()), float(norms.std())
            variance += float(theta.var(axis=1, ddof=1).mean(axis=0).sum())
            means.append(theta.mean(axis=1))
            if point is not None:
                squared = squared + ((theta - point[name].reshape(1, 1, -1)) ** 2).sum(axis=-1)
    centres = np.concatenate(means, axis=-1)
    pairs = [(a, b) for a in range(num_chains) for b in range(a + 1, num_chains)]
    between = (
        float(np.mean([np.linalg.norm(centres[a] - centres[b]) for a, b in pairs]))
        if pairs
        else None
    )
    within = float(np.sqrt(variance))
    report: dict[str, Any] = {
        "rhat": rhat,
        "max_rhat": _nan_reduce(np.nanmax, np.asarray(list(rhat.values()))),
        "ess_bulk": ess,
        "min_ess_bulk": _nan_reduce(np.nanmin, np.asarray(list(ess.values()))),
        "norm_rhat": norm_rhat,
        "max_norm_rhat": _nan_reduce(np.nanmax, np.asarray(list(norm_rhat.values()))),
        "norm_ess_bulk": norm_ess,
        "min_norm_ess_bulk": _nan_reduce(np.nanmin, np.asarray(list(norm_ess.values()))),
        "norm_mean": norm_mean,
        "norm_sd": norm_sd,
        "within_chain_sd": within,
        "between_chain_distance": between,
        "spread_to_separation": None if between is None else _ratio(within, between),
        "distance_from_mode": None,
        "relative_distance_from_mode": None,
        "num_chains": num_chains,
        "num_draws": posterior.num_draws,
    }
    if point is not None:
        distance = float(np.sqrt(squared).mean())
        norm = float(np.sqrt(sum((v**2).sum() for v in point.values())))
        report["distance_from_mode"] = distance
        report["relative_distance_from_mode"] = _ratio(distance, norm)
    return report


def _mode_point(
    posterior: Posterior, mode: Posterior | Mapping[str, ArrayLike] | None
) -> dict[str, np.ndarray] | None:
    """``mode`` as site -> float64 array, checked against the posterior's sites."""
    from mtbkd_jax.infer.posterior import Posterior

    if mode is None:
        return None
    if isinstance(mode, Posterior):
        mode = mode.point()
    if not isinstance(mode, Mapping):
        raise TypeError(f"mode must be a Posterior or a dict of site -> array, got {mode!r}")
    missing = sorted(set(posterior.draws) - set(mode))
    if missing:
        raise ValueError(f"mode lacks the posterior's sites {missing}")
    point = {}
    for name, value in posterior.draws.items():
        point[name] = np.asarray(mode[name], np.float64)
        if point[name].shape != value.shape[2:]:
            raise ValueError(
                f"mode[{name!r}] has shape {point[name].shape}, the draws {value.shape[2:]}"
            )
    return point


def _nan_reduce(reduce: Any, values: ArrayLike) -> float:
    """``reduce`` (``np.nanmax``/``np.nanmin``) over the finite-or-NaN values; NaN if all NaN."""
    values = np.asarray(values, np.float64)
    return float("nan") if np.isnan(values).all() else float(reduce(values))


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; inf for a positive numerator over 0; NaN for 0 / 0 or a NaN
    (draws that never moved are not "chains that explore the same region")."""
    if np.isnan(numerator) or np.isnan(denominator) or (numerator == 0 and denominator == 0):
        return float("nan")
    return numerator / denominator if denominator > 0 else float("inf")


def _require_finite_draws(name: str, theta: np.ndarray) -> None:
    """Raise a ``ValueError`` naming the site and its first non-finite (chain, draw): NaN draws
    would otherwise drop out of the maxima and minima, and a diverged chain read as fine."""
    bad = ~np.isfinite(theta).all(axis=-1)  # (chains, draws)
    if bad.any():
        chain, draw = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"the draws of {name!r} are not finite from chain {chain}, draw {draw} on "
            f"({int(bad.sum())} draws in all): a diverged chain; judge the others, "
            "Posterior({k: v[keep] for k, v in posterior.draws.items()})"
        )


def _moving_ess(az: Any, theta: np.ndarray) -> np.ndarray:
    """Bulk ESS per coordinate, NaN where the draws never vary (ArviZ gives a constant series
    the ESS of every draw, as if the chains were worth all of them)."""
    ess = np.asarray(az.ess(theta, method="bulk"), np.float64)
    varies = np.ptp(theta.reshape(-1, theta.shape[-1]), axis=0) > 0
    return np.where(varies, ess, np.nan)
