"""The learned-trust rows: MT-BKD with teacher trust learned from the labels, a base prior
whose per-layer scales are learned, and ``beta`` chosen by the Bayesian row's own validation
predictive.

* Trust: :func:`mtbkd_jax.trust.fit_teacher_trust` on the labelled inputs (the cut posterior),
  passed to the model at its posterior median.
* Base prior: :func:`mtbkd_jax.scale_priors.hierarchical_normal_prior` (no ``sigma0`` to tune;
  the scale of each weight array is learned).
* ``beta``, the trust's calibration and its pooling: with ``config.tune``, for each pooling of
  ``config.trust_pooling_grid`` (the paper's mixture of the teachers' Dirichlets, or their product,
  one Dirichlet on the trust-weighted average of the soft labels) in turn, every value of
  ``config.trust_calibration_grid`` (one temperature per teacher, or none: ``tau = 1``), then of
  ``config.trust_prior_power_grid`` (extended past an edge that holds the best, as every search
  here), and again over the two at the values found until a pass changes nothing (at most
  ``config.trust_search_sweeps`` passes), is fitted by MAP *and* sampled, and the setting whose
  posterior predictive has the lowest validation NLL wins (:func:`trust_search`: each pooling is
  judged at its own best ``beta``). Under the mixture the student may follow, example by example,
  the teacher easiest for it to imitate, the more so the sharper the Dirichlets; the product cannot
  (``docs/results.md``, Fashion-MNIST). A temperature calibrates a teacher over all labelled inputs,
  which blurs a teacher that is right in one region and wrong elsewhere exactly where it is right
  (``docs/results.md``, "Learned trust taken apart"); whether the problem's teachers are of that
  kind is for the validation split to say. With ``config.trust_search_budget = 1`` each value is
  sampled at the row's full budget and the winner's posterior is the row's (kept, not refitted, when
  it also scored lowest: only that one posterior is held while the search runs; otherwise it is
  sampled again with the same keys and start, which on a deterministic backend such as the CPU gives
  the draws it was scored by, and on a GPU may differ in the last bits); with a fraction ``f < 1``
  each value is scored by a posterior with ``f`` of the budget (:func:`search_budget`: NUTS warm-up
  and draws, SGLD epochs) and the winner alone is then sampled at the full budget, with the same key
  and start. The MAP row is the winner's MAP.
* SG-MCMC (``config.bayes`` not ``"nuts"``: SGLD, pSGLD or NC-SGLD): the step size is
  ``config.trust_sgld_step_size``, by default ``"auto"`` (pilot runs from the MAP,
  :func:`mtbkd_jax.infer.choose_step_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import jax
import numpy as np

from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.fit import build_student, fit_map, fit_posterior
from mtbkd_jax.infer import SamplerDivergedError, UnstableStepSizes
from mtbkd_jax.metrics import predictive_nll_from_logits
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.priors import normal_prior
from mtbkd_jax.scale_priors import hierarchical_normal_prior
from mtbkd_jax.trust import TrustHyperprior, TrustPosterior, fit_teacher_trust
from mtbkd_jax.tuning import SearchResult, profile_search

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mtbkd_jax.infer import Posterior
    from mtbkd_jax.teachers import TeacherBank

__all__ = [
    "TrustedFit",
    "fit_trusted",
    "learned_trust",
    "search_budget",
    "trusted_label",
    "trusted_model",
    "trust_search",
]


def learned_trust(
    key: jax.Array,
    data: DistillationData,
    config: ExperimentConfig,
    teachers: TeacherBank,
    calibration: str | None = None,
    pooling: str | None = None,
) -> TrustPosterior:
    """The trust posterior from the labelled inputs (the first ``len(y_train)`` of the bank),
    or with ``config.trust_labels="validation"`` from the validation split (its teachers,
    ``data.teachers_validation``, and labels), with the hyperprior's ``calibration`` and
    ``pooling`` (default ``config.trust_calibration`` and ``config.trust_pooling``)."""
    labelled, labels = teachers.take(np.arange(len(data.y_train))), data.y_train
    if config.trust_labels == "validation":
        if data.teachers_validation is None or data.y_validation is None:
            raise ValueError(
                "trust_labels='validation' needs the teachers on the validation inputs and "
                f"their labels; problem {data.name!r} has no teachers_validation or y_validation"
            )
        labelled, labels = data.teachers_validation, data.y_validation
    calibration = config.trust_calibration if calibration is None else calibration
    pooling = config.trust_pooling if pooling is None else pooling
    hyperprior = TrustHyperprior(
        concentration=config.concentration, calibration=calibration, pooling=pooling
    )
    return fit_teacher_trust(
        key,
        labelled,
        labels,
        hyperprior=hyperprior,
        temperature=config.temperature,
        num_warmup=config.trust_warmup,
        num_draws=config.trust_draws,
    )


def trusted_model(
    data: DistillationData,
    config: ExperimentConfig,
    teachers: TeacherBank,
    trust: TrustPosterior,
    prior_power: float,
) -> MTBKDModel:
    """The row's model: the run's student with a learned-scale prior (or the fixed
    ``Normal(0, config.trust_prior_scale^2)`` on every weight), the learned trust."""
    scale = config.trust_prior_scale
    prior = hierarchical_normal_prior() if scale is None else normal_prior(scale)
    student = build_student(data, config).with_prior(prior)
    return MTBKDModel(
        student, teachers, trust=trust, prior_power=prior_power, temperature=config.temperature
    )


_CALIBRATION_NOTES = {"teacher": "", "confidence": ", τ by confidence", "none": ", τ = 1"}


def trusted_label(
    prior_power: float,
    search: SearchResult | None = None,
    calibration: str = "teacher",
    pooling: str = "mixture",
    prior_scale: float | None = None,
) -> str:
    """The row's settings: ``σ learned, trust learned, β=..`` (with a grid note; ``σ0=..``
    for a fixed ``prior_scale``), the trust marked ``(τ = 1)`` or ``(τ by confidence)`` unless
    it has one temperature per teacher, and ``product`` where the teachers' Dirichlets are
    pooled as one product."""
    note = None if search is None else search.grid_note("prior_power")
    marks = _CALIBRATION_NOTES[calibration] + (", product" if pooling == "product" else "")
    trust = "trust learned" + (f" ({marks[2:]})" if marks else "")
    scale = "σ learned" if prior_scale is None else f"σ0={prior_scale:g}"
    return f"{scale}, {trust}, β={prior_power:g}" + (f" ({note})" if note else "")


def trust_search(
    score: Callable[[dict[str, Any]], float], config: ExperimentConfig
) -> SearchResult:
    """The learned-trust search over (calibration, pooling, ``beta``) of ``config`` (its grids,
    start, passes and extension rules), each setting scored by ``score``: for each pooling in
    turn, a coordinate search over the calibration and ``beta`` (:func:`profile_search`), so
    that the mixture and the product are each compared at their own best ``beta`` (the
    product's is unlike the mixture's, and one coordinate search comparing them at the
    mixture's best could stop there: DeepLoc, seed 2, ``docs/results.md``)."""

    def grid(start: str, values: tuple) -> tuple:
        return tuple(dict.fromkeys((start, *values)))

    powers = config.trust_prior_power_grid
    return profile_search(
        score,
        {
            "calibration": grid(config.trust_calibration, config.trust_calibration_grid),
            "pooling": grid(config.trust_pooling, config.trust_pooling_grid),
            "prior_power": powers,
        },
        {
            "calibration": config.trust_calibration,
            "pooling": config.trust_pooling,
            "prior_power": powers[len(powers) // 2],
        },
        over="pooling",
        sweeps=config.trust_search_sweeps,
        max_extensions=config.grid_extensions,
        min_improvement=config.grid_min_improvement,
    )


def search_budget(config: ExperimentConfig) -> ExperimentConfig:
    """The sampling settings that score one ``beta`` of the search: ``config`` with
    ``trust_search_budget`` of its NUTS warm-up and draws (at least 20 of each) and of its
    SGLD epochs (at least 1; burn-in epochs likewise, at least 0); ``config`` itself when the
    budget is 1."""
    fraction = config.trust_search_budget
    if fraction >= 1.0:
        return config

    def cut(value: int, floor: int) -> int:
        return min(value, max(floor, round(fraction * value)))

    return replace(
        config,
        num_warmup=cut(config.num_warmup, 20),
        num_draws=cut(config.num_draws, 20),
        sgld_epochs=cut(config.sgld_epochs, 1),
        sgld_burnin_epochs=cut(config.sgld_burnin_epochs, 0),
    )


class TrustedFit:
    """The chosen ``beta``'s MAP, model and posterior, with the trust and the search;
    ``unsampled``: the settings of the search (``"calibration[, product], β=.."``) that could
    not be sampled (no stable SGLD step size, or diverging chains), with the reasons."""

    def __init__(
        self,
        mode: Posterior,
        model: MTBKDModel,
        posterior: Posterior,
        trust: TrustPosterior,
        search: SearchResult | None,
        prior_scale: float | None = None,
    ) -> None:
        self.mode, self.model, self.posterior = mode, model, posterior
        self.trust, self.search, self.prior_scale = trust, search, prior_scale
        self.unsampled: dict[str, str] = {}

    @property
    def label(self) -> str:
        h = self.trust.hyperprior
        return trusted_label(
            self.model.prior_power, self.search, h.calibration, h.pooling, self.prior_scale
        )


def fit_trusted(
    keys: tuple[jax.Array, jax.Array, jax.Array],
    data: DistillationData,
    config: ExperimentConfig,
    teachers: TeacherBank,
    start_keys: Sequence[jax.Array] = (),
) -> TrustedFit:
    """Trust, then for each (calibration, pooling, ``beta``) tried a MAP and a posterior;
    returns the best by the posterior's validation NLL.

    For each ``pooling`` of ``config.trust_pooling_grid`` in turn, the search runs over the
    trust's ``calibration`` first (``config.trust_calibration_grid``, at the middle ``beta`` of
    the grid), then over ``beta``, and again at the values found, up to
    ``config.trust_search_sweeps`` passes (a pass that changes nothing ends it); the best over
    the poolings wins (:func:`trust_search`). Each (calibration, pooling) trust is fitted once,
    with the same key. A setting whose posterior has no stable SGLD step size
    (:class:`~mtbkd_jax.infer.UnstableStepSizes`), or whose chains diverge
    (:class:`~mtbkd_jax.infer.SamplerDivergedError`), scores worst, with the reason in
    ``TrustedFit.unsampled``; if every setting tried fails so, the first error (the start's) is
    raised.

    Args:
        keys: (trust, MAP, posterior) keys.
        data, config: the run.
        teachers: the bank of the prior.
        start_keys: extra chain starts (``chain_starts="maps"``).
    """
    trust_key, map_key, posterior_key = keys
    trusts: dict[tuple[str, str], TrustPosterior] = {}
    sampling = replace(config, sgld_step_size=config.trust_sgld_step_size)
    Setting = tuple[str, str, float]  # calibration, pooling, beta
    fitted: dict[Setting, tuple[Posterior, MTBKDModel]] = {}  # MAP and model of each setting

    def fit(setting: Setting, budget: ExperimentConfig) -> Posterior:
        calibration, pooling, prior_power = setting
        if (calibration, pooling) not in trusts:
            trusts[calibration, pooling] = learned_trust(
                trust_key, data, config, teachers, calibration, pooling
            )
        if setting not in fitted:
            model = trusted_model(data, config, teachers, trusts[calibration, pooling], prior_power)
            fitted[setting] = (fit_map(map_key, data, config, model), model)
        mode, model = fitted[setting]
        return fit_posterior(posterior_key, data, budget, model, mode, start_keys)

    if not config.tune:
        setting = (config.trust_calibration, config.trust_pooling, config.prior_power)
        posterior = fit(setting, sampling)
        scale = config.trust_prior_scale
        return TrustedFit(*fitted[setting], posterior, trusts[setting[:2]], None, scale)
    scoring = search_budget(sampling)

    unsampled: dict[Setting, str] = {}  # the reasons (an error holds its partial draws)
    first_failure: list[Exception] = []  # raised if every setting fails (the start's)
    # Only the lowest-scoring setting's posterior is kept (draws of a large student times
    # every setting of a search would not fit in memory), and only when it is the row's.
    kept: dict[str, Any] = {"setting": None, "posterior": None, "score": math.inf}

    def score(settings: Mapping[str, Any]) -> float:
        setting = (settings["calibration"], settings["pooling"], float(settings["prior_power"]))
        try:
            posterior = fit(setting, scoring)
        except (UnstableStepSizes, SamplerDivergedError) as error:  # not a candidate
            unsampled[setting] = str(error)
            first_failure[:] = first_failure or [error]
            return math.inf
        x_validation = cast("np.ndarray", data.x_validation)
        logits = np.asarray(posterior.predict_logits(x_validation))  # log space: no underflow
        value = predictive_nll_from_logits(logits, np.asarray(data.y_validation))
        if scoring is sampling and value < kept["score"]:
            kept.update(setting=setting, posterior=posterior, score=value)
        return value

    search = trust_search(score, config)
    best = search.best
    chosen_setting = (best["calibration"], best["pooling"], float(best["prior_power"]))
    if chosen_setting in unsampled:  # every setting tried was: the start first
        raise first_failure[0]
    mode, model = fitted[chosen_setting]
    if kept["setting"] == chosen_setting:
        posterior = kept["posterior"]
    else:  # sampled again: a cheaper score, or a lower score the search did not take
        kept.clear()
        posterior = fit(chosen_setting, sampling)  # the same keys and start
    trust = trusts[chosen_setting[:2]]
    chosen = TrustedFit(mode, model, posterior, trust, search, config.trust_prior_scale)
    chosen.unsampled = {_setting_text(*k): reason for k, reason in unsampled.items()}
    return chosen


def _setting_text(calibration: str, pooling: str, prior_power: float) -> str:
    """``"teacher, β=1"`` (``"teacher, product, β=1"`` for the product pooling)."""
    return ", ".join((calibration, *(("product",) if pooling == "product" else ()))) + (
        f", β={prior_power:g}"
    )
