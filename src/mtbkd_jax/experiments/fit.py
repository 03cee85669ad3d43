"""Fitting one method of a run: the student and model it builds, its MAP (tuned on validation
or not) and its posterior, sampled from that MAP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flax import nnx

from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.infer import run_map, run_nuts, run_sgmcmc
from mtbkd_jax.metrics import predictive_nll_from_logits
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.noncentred import centred_posterior, noncentred, noncentred_point
from mtbkd_jax.priors import normal_prior
from mtbkd_jax.students import MLP, Student
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.tuning import SearchResult, coordinate_search

if TYPE_CHECKING:
    import jax

    from mtbkd_jax.infer import Posterior

__all__ = [
    "build_model",
    "build_student",
    "default_settings",
    "fit_map",
    "fit_posterior",
    "settings_label",
    "tuned_map",
]


def build_student(data: DistillationData, config: ExperimentConfig) -> Student:
    """The run's student: an MLP ``D - hidden - C`` of ``config.activation`` units,
    initialised from ``config.seed``."""
    network = MLP(
        data.num_features,
        data.num_classes,
        hidden=config.hidden,
        activation=config.activation,
        rngs=nnx.Rngs(config.seed),
    )
    return Student(network)


def default_settings(config: ExperimentConfig) -> dict:
    return {
        "prior_scale": config.prior_scale,
        "concentration": config.concentration,
        "prior_power": config.prior_power,
    }


def build_model(
    data: DistillationData,
    config: ExperimentConfig,
    teachers: TeacherBank | None,
    weight_rule: str | np.ndarray | jax.Array = "paper",
    settings: Mapping[str, Any] | None = None,
) -> MTBKDModel:
    """The method's :class:`MTBKDModel` under ``settings`` (σ0, λ, β; default: the config's)."""
    settings = settings or default_settings(config)
    student = build_student(data, config)
    if settings["prior_scale"] != 1.0:
        student = student.with_prior(normal_prior(settings["prior_scale"]))
    return MTBKDModel(
        student,
        teachers,
        concentration=settings["concentration"],
        prior_power=settings["prior_power"],
        temperature=config.temperature,
        weight_rule=weight_rule,
    )


class _TunedSettings(dict[str, Any]):
    """The settings a search chose (a plain dict of them), with the search itself, so that
    :func:`settings_label` can say how each value relates to its grid."""

    search: SearchResult


def settings_label(
    settings: Mapping[str, Any],
    teachers: TeacherBank | None,
    search: SearchResult | None = None,
) -> str:
    """A row's ``settings``: ``σ0=.. λ=.. β=..`` (``σ0`` alone without teachers); a tuned value
    that came from a grid extension or is still on its grid's edge says so (``search``, by
    default the one :func:`tuned_map`'s settings carry), e.g. ``σ0=3 (grid extended)``.

    Example:
        >>> settings_label({"prior_scale": 0.5, "concentration": 10.0, "prior_power": 0.1}, None)
        'σ0=0.5'
    """
    search = search if search is not None else getattr(settings, "search", None)
    names = ["prior_scale"] + ([] if teachers is None else ["concentration", "prior_power"])
    parts = []
    for name, symbol in zip(names, ("σ0", "λ", "β"), strict=False):
        note = None if search is None else search.grid_note(name)
        parts.append(f"{symbol}={settings[name]:g}" + (f" ({note})" if note else ""))
    return " ".join(parts)


def _model_kwargs(data: DistillationData, model: MTBKDModel) -> dict:
    return {} if model.teachers is None else {"prior_inputs": data.prior_inputs}


def fit_map(
    key: jax.Array,
    data: DistillationData,
    config: ExperimentConfig,
    model: MTBKDModel,
    *,
    progress_bar: bool = False,
) -> Posterior:
    return run_map(
        key,
        model,
        data.x_train,
        data.y_train,
        num_steps=config.map_steps,
        learning_rate=config.learning_rate,
        polish_steps=config.map_polish_steps,
        progress_bar=progress_bar,
        model_kwargs=_model_kwargs(data, model),
        mesh=config.mesh,
    )


def tuned_map(
    key: jax.Array,
    data: DistillationData,
    config: ExperimentConfig,
    teachers: TeacherBank | None,
    weight_rule: str | np.ndarray | jax.Array,
) -> tuple[Posterior, MTBKDModel, SearchResult]:
    """The MAP under the settings with the lowest validation NLL; returns
    ``(mode, model, search_result)``.

    Every numeric grid of two or more values is extended beyond an edge that holds the best
    value (:func:`~mtbkd_jax.tuning.coordinate_search`, up to ``config.grid_extensions`` values per
    end); the result's
    ``best`` carries the search, so that :func:`settings_label` marks such values."""
    fits: dict[tuple[tuple[str, Any], ...], tuple[Posterior, MTBKDModel]] = {}

    def fit(settings: dict[str, Any]) -> float:
        model = build_model(data, config, teachers, weight_rule, settings)
        mode = fit_map(key, data, config, model)
        fits[tuple(sorted(settings.items()))] = (mode, model)
        # tuning needs a validation split (run_baselines checks data.has_validation first)
        x_validation = cast("np.ndarray", data.x_validation)
        # from the logits: a float32 probability that underflows to 0 would score inf
        logits = np.asarray(mode.predict_logits(x_validation))
        return predictive_nll_from_logits(logits, np.asarray(data.y_validation))

    grid = {"prior_scale": config.prior_scale_grid}
    if teachers is not None:
        grid.update(concentration=config.concentration_grid, prior_power=config.prior_power_grid)
    result = coordinate_search(
        fit,
        grid,
        default_settings(config),
        max_extensions=config.grid_extensions,
        min_improvement=config.grid_min_improvement,
    )
    mode, model = fits[tuple(sorted(result.best.items()))]
    best = _TunedSettings(result.best)
    best.search = result
    return mode, model, replace(result, best=best)


def fit_posterior(
    key: jax.Array,
    data: DistillationData,
    config: ExperimentConfig,
    model: MTBKDModel,
    mode: Posterior,
    start_keys: Sequence[jax.Array] = (),
) -> Posterior:
    """The posterior by ``config.bayes``, chain 0 started at ``mode``; with ``start_keys``
    (``chain_starts="maps"``), chain ``c`` at the MAP fitted from ``start_keys[c - 1]``."""
    start = {k: v[0, 0] for k, v in mode.draws.items()}
    init: dict | list[dict] = start
    if config.chain_starts == "maps":
        others = [fit_map(k, data, config, model) for k in start_keys]
        init = [start] + [{k: v[0, 0] for k, v in other.draws.items()} for other in others]
    common: dict[str, Any] = {
        "num_chains": config.num_chains,
        "init_params": init,
        "progress_bar": config.progress_bar,
        "model_kwargs": _model_kwargs(data, model),
        "mesh": config.mesh,
    }
    if config.bayes == "nuts":
        return run_nuts(
            key,
            model,
            data.x_train,
            data.y_train,
            num_warmup=config.num_warmup,
            num_draws=config.num_draws,
            **common,
        )
    sampled: Any = model
    if config.sgmcmc_coordinates == "noncentred":
        starts = init if isinstance(init, list) else [init]
        moved = [noncentred_point(model, p, data.x_train, data.y_train, **common["model_kwargs"])
                 for p in starts]  # fmt: skip
        if set(moved[0]) != set(starts[0]):  # a learned-scale prior: sample it non-centred
            common["init_params"] = moved if isinstance(init, list) else moved[0]
            sampled = noncentred(model)
    posterior = run_sgmcmc(
        key,
        sampled,
        data.x_train,
        data.y_train,
        sampler=config.bayes,
        batch_size=config.sgld_batch_size,
        num_epochs=config.sgld_epochs,
        num_burnin_epochs=config.sgld_burnin_epochs,
        step_size=config.sgld_step_size,
        draws_per_epoch=config.sgld_draws_per_epoch,
        shard_data=config.mesh is not None,
        **common,
    )
    return centred_posterior(posterior)
