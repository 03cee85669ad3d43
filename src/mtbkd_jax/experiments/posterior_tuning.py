"""The base prior's scale chosen by the Bayesian row's own validation predictive (issue 12).

With ``tune=True`` a method's ``sigma0`` (and ``lambda``, ``beta``) is chosen by the
validation NLL of its *MAP*, and its posterior is then sampled at that ``sigma0``. What suits
a mode does not suit a posterior: a ``Normal(0, sigma0^2)`` prior broad enough for the best
MAP lets the posterior spread over functions that disagree, and its predictive comes out
underconfident (on digits, MT-BKD by NUTS at the MAP's ``sigma0`` had a higher test NLL and ECE
than its own MAP). With ``config.posterior_tuning`` the Bayesian row's ``sigma0`` is chosen
again, from ``prior_scale_grid`` (extended beyond an edge that holds the best, as the MAP
search's), by the validation NLL of the *posterior predictive* (``log mean_s p(y | x,
theta_s)``, from the logits): each value's MAP is fitted and its posterior sampled from it, at
the full sampling budget. ``lambda`` and ``beta`` stay at the MAP search's choice (they shape
the teacher prior, which the MAP judges as well as the posterior does; searching them too would
multiply the cost by the grids' sizes). The MAP row keeps its own ``sigma0``: it is KD, and KD
is tuned as a practitioner would tune it. A value whose SG-MCMC posterior has no stable step or
diverges scores worst (as in the learned-trust search).

The MAP of the chosen posterior's own model (the chain start, at the posterior's ``sigma0``)
is kept too (``own_maps.json``), so that "the posterior is no worse than its MAP" can be judged
on the same model, beside the comparison with the MAP row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mtbkd_jax.experiments.fit import _TunedSettings, build_model, fit_map, fit_posterior
from mtbkd_jax.infer import SamplerDivergedError, UnstableStepSizes
from mtbkd_jax.metrics import predictive_nll_from_logits
from mtbkd_jax.tuning import SearchResult, coordinate_search

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mtbkd_jax.datasets.data import DistillationData
    from mtbkd_jax.experiments.config import ExperimentConfig
    from mtbkd_jax.experiments.keys import MethodKeys
    from mtbkd_jax.experiments.methods import Method
    from mtbkd_jax.infer import Posterior

__all__ = ["TunedPosterior", "tuned_posterior"]


@dataclass(frozen=True)
class TunedPosterior:
    """The posterior at the ``sigma0`` of lowest validation NLL, the MAP it started from (its
    own model's), the settings (with the search, for :func:`settings_label`) and the search."""

    posterior: Posterior
    mode: Posterior
    settings: dict[str, Any]
    search: SearchResult


def tuned_posterior(
    keys: MethodKeys,
    data: DistillationData,
    config: ExperimentConfig,
    method: Method,
    map_settings: Mapping[str, Any],
) -> TunedPosterior:
    """Search ``sigma0`` by the posterior predictive's validation NLL, ``lambda`` and ``beta``
    held at ``map_settings`` (the MAP search's choice, where the search starts); every value
    is sampled with the method's own keys, as the row without this search would be. Only the
    best posterior is kept in memory."""
    posterior_key = keys.posterior
    if posterior_key is None:
        raise ValueError(f"method {method.label!r} has no posterior row to tune")
    x_validation = cast("np.ndarray", data.x_validation)  # run_baselines checked the split
    y_validation = np.asarray(data.y_validation)
    kept: dict[str, Any] = {"score": math.inf}

    def score(settings: dict[str, Any]) -> float:
        model = build_model(data, config, method.teachers, method.weight_rule, settings)
        mode = fit_map(keys.map, data, config, model)
        try:
            posterior = fit_posterior(posterior_key, data, config, model, mode, keys.starts)
        except (UnstableStepSizes, SamplerDivergedError):  # SG-MCMC: not a candidate
            return math.inf  # the worst score (a search where every value fails raises)
        logits = np.asarray(posterior.predict_logits(x_validation))  # log space: no underflow
        value = predictive_nll_from_logits(logits, y_validation)
        if value < kept["score"]:  # ties keep the earlier, as the search does
            kept.update(score=value, posterior=posterior, mode=mode, settings=dict(settings))
        return value

    start = {k: map_settings[k] for k in ("prior_scale", "concentration", "prior_power")}
    search = coordinate_search(
        score,
        {"prior_scale": config.prior_scale_grid},
        start,
        max_extensions=config.grid_extensions,
        min_improvement=config.grid_min_improvement,
    )
    if kept["settings"] != search.best:  # an extension lowered the score by too little
        kept["score"] = math.inf
        score(dict(search.best))  # refit the search's choice (the same keys: the same fit)
    settings = _TunedSettings(search.best)
    settings.search = search
    return TunedPosterior(kept["posterior"], kept["mode"], settings, search)
