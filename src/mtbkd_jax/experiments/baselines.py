"""Every baseline of METHOD §7 on one distillation problem, with one row format.

Methods: each teacher itself (for context), the student alone, vanilla KD from each teacher,
averaged multi-teacher KD, single-teacher BKD from each teacher, MT-BKD with uniform weights and
MT-BKD with entropy weights. KD rows are posterior modes (MAP = KD, METHOD §4); Bayesian rows
are sampled by NUTS (small students) or SGLD (the paper's sampler), started at their MAP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np

from mtbkd_jax.infer import run_map, run_nuts, run_sgmcmc
from mtbkd_jax.metrics import (
    classification_metrics,
    error_detection_auroc,
    interval_coverage,
    negative_log_likelihood,
)
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.priors import normal_prior
from mtbkd_jax.students import Student
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.tuning import coordinate_search
from mtbkd_jax.uncertainty import predictive_summary

__all__ = ["Problem", "ExperimentConfig", "SMOKE_TUNING", "run_baselines"]


@dataclass(frozen=True)
class Problem:
    """A distillation problem.

    Attributes:
        name: used in file names.
        x_train, y_train: labelled inputs of the student.
        x_test, y_test: evaluation data.
        teachers_prior: teacher bank on the prior's inputs (``x_train``, then ``x_transfer``).
        teachers_test: the same teachers on ``x_test``.
        make_student: ``seed -> Student``.
        x_transfer: unlabelled transfer inputs (optional).
        true_probs_test: the true class probabilities of the test inputs (synthetic data).
        extra_inputs: named further input sets scored for uncertainty (e.g. multi-location
            proteins).
        x_val, y_val: a labelled validation split, on which ``ExperimentConfig(tune=True)``
            chooses each method's hyperparameters.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    teachers_prior: TeacherBank
    teachers_test: TeacherBank
    make_student: Callable[[int], Student]
    x_transfer: np.ndarray | None = None
    true_probs_test: np.ndarray | None = None
    extra_inputs: dict = field(default_factory=dict)
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def prior_inputs(self) -> np.ndarray:
        if self.x_transfer is None:
            return self.x_train
        return np.concatenate([self.x_train, self.x_transfer], axis=0)


@dataclass(frozen=True)
class ExperimentConfig:
    """Hyperparameters and inference budget of an experiment.

    With ``tune=True`` every method chooses its base prior scale (and, with teachers, its
    ``lambda`` and ``beta``) from the grids by the validation NLL of its MAP
    (:func:`mtbkd_jax.coordinate_search`, starting from ``prior_scale``, ``concentration``,
    ``prior_power``); the posterior is then sampled once with the chosen values.
    """

    seed: int = 0
    prior_scale: float = 1.0
    tune: bool = False
    prior_scale_grid: tuple = (0.1, 0.2, 0.3, 0.5, 1.0)
    concentration_grid: tuple = (3.0, 10.0, 30.0)
    prior_power_grid: tuple = (0.03, 0.1, 0.3)
    concentration: float = 10.0
    prior_power: float = 0.1
    temperature: float = 1.0
    map_steps: int = 2000
    learning_rate: float = 1e-2
    bayes: str = "nuts"  # or "sgld"
    num_warmup: int = 300
    num_samples: int = 300
    num_chains: int = 2
    sgld_batch_size: int = 64
    sgld_epochs: int = 80
    sgld_step_size: float = 1e-5
    sgld_draws_per_epoch: int = 6


# a two-point search for smoke runs and tests: exercises the tuning path in seconds
SMOKE_TUNING = {
    "tune": True,
    "prior_scale_grid": (0.3, 1.0),
    "concentration_grid": (10.0,),
    "prior_power_grid": (0.1,),
}


def _default_settings(config) -> dict:
    return {
        "prior_scale": config.prior_scale,
        "concentration": config.concentration,
        "prior_power": config.prior_power,
    }


def _model(problem, config, teachers, weights="paper", settings=None):
    settings = settings or _default_settings(config)
    student = problem.make_student(config.seed)
    if settings["prior_scale"] != 1.0:
        student = student.with_prior(normal_prior(settings["prior_scale"]))
    return MTBKDModel(
        student,
        teachers,
        concentration=settings["concentration"],
        prior_power=settings["prior_power"],
        temperature=config.temperature,
        weights=weights,
    )


def _settings_label(settings, teachers) -> str:
    label = f"σ0={settings['prior_scale']:g}"
    if teachers is not None:
        label += f" λ={settings['concentration']:g} β={settings['prior_power']:g}"
    return label


def _tuned_map(key, problem, config, teachers, weights):
    """The MAP under the settings with the lowest validation NLL; returns
    ``(mode, model, search_result)``."""
    fits = {}

    def fit(settings):
        model = _model(problem, config, teachers, weights, settings)
        mode = _fit_map(key, problem, config, model)
        fits[tuple(sorted(settings.items()))] = (mode, model)
        probs = np.asarray(mode.predict(problem.x_val))[0]
        return negative_log_likelihood(probs, problem.y_val)

    grid = {"prior_scale": config.prior_scale_grid}
    if teachers is not None:
        grid.update(concentration=config.concentration_grid, prior_power=config.prior_power_grid)
    result = coordinate_search(fit, grid, _default_settings(config))
    mode, model = fits[tuple(sorted(result.best.items()))]
    return mode, model, result


def _fit_map(key, problem, config, model):
    kwargs = {} if model.teachers is None else {"prior_inputs": problem.prior_inputs}
    return run_map(
        key,
        model,
        problem.x_train,
        problem.y_train,
        num_steps=config.map_steps,
        learning_rate=config.learning_rate,
        progress_bar=False,
        model_kwargs=kwargs,
    )


def _fit_bayes(key, problem, config, model, mode):
    kwargs = {} if model.teachers is None else {"prior_inputs": problem.prior_inputs}
    start = {k: v[0, 0] for k, v in mode.draws.items()}
    if config.bayes == "nuts":
        return run_nuts(
            key,
            model,
            problem.x_train,
            problem.y_train,
            num_warmup=config.num_warmup,
            num_samples=config.num_samples,
            num_chains=config.num_chains,
            init_params=start,
            progress_bar=False,
            model_kwargs=kwargs,
        )
    return run_sgmcmc(
        key,
        model,
        problem.x_train,
        problem.y_train,
        sampler="sgld",
        batch_size=config.sgld_batch_size,
        num_epochs=config.sgld_epochs,
        step_size=config.sgld_step_size,
        draws_per_epoch=config.sgld_draws_per_epoch,
        num_chains=config.num_chains,
        init_params=start,
        progress_bar=False,
        model_kwargs=kwargs,
    )


def _row(method, inference, probs, problem, summary=None, seconds=None):
    row = {
        "method": method,
        "inference": inference,
        **classification_metrics(probs, problem.y_test),
        "mean_deviance": None,
    }
    if summary is not None:
        errors = summary["predictive_mean"].argmax(-1) != problem.y_test
        row["mean_deviance"] = float(summary["mean_deviance"].mean())
        row["error_auroc_md"] = error_detection_auroc(summary["mean_deviance"], errors)
        if problem.true_probs_test is not None:
            row["coverage_95"] = interval_coverage(
                summary["class_intervals"], problem.true_probs_test
            )
    if seconds is not None:
        row["seconds"] = round(seconds, 2)
    return row


def run_baselines(problem: Problem, config: ExperimentConfig, *, say=print):
    """Fit every baseline; returns ``(rows, artifacts)``.

    ``artifacts`` holds, per Bayesian method, its posterior and per-example summary on the test
    set (and on ``extra_inputs``), for figures.
    """
    key = jax.random.key(config.seed)
    teachers = problem.teachers_prior
    rows = []
    artifacts = {"posteriors": {}, "summaries": {}, "extra": {}, "map_probs": {}, "tuning": {}}
    for m, name in enumerate(problem.teachers_test.names):
        probs = np.exp(np.asarray(problem.teachers_test.log_probs[m], np.float64))
        rows.append(_row(f"teacher {name}", "teacher", probs, problem))

    # (MAP row label, Bayesian row label or None, teachers, weight rule); a single-teacher
    # model's MAP is vanilla KD and its posterior is single-teacher BKD
    plan = [("student alone", "student alone", None, "paper")]
    plan += [(f"KD ({n})", f"BKD ({n})", teachers.select([n]), "paper") for n in teachers.names]
    plan += [("averaged KD", None, teachers.average(), "paper")]
    plan += [
        ("MT-BKD (uniform weights)", "MT-BKD (uniform weights)", teachers, "uniform"),
        ("MT-BKD (entropy weights)", "MT-BKD (entropy weights)", teachers, "paper"),
    ]
    tune = config.tune
    if tune and (problem.x_val is None or problem.y_val is None):
        raise ValueError(f"config.tune needs a validation split; problem {problem.name!r} has none")
    for map_label, bayes_label, bank, weights in plan:
        key, map_key, bayes_key = jax.random.split(key, 3)
        start = time.perf_counter()
        settings = _default_settings(config)
        if tune:
            mode, model, search = _tuned_map(map_key, problem, config, bank, weights)
            settings = search.best
            artifacts["tuning"][map_label] = search.evaluated
        else:
            model = _model(problem, config, bank, weights, settings)
            mode = _fit_map(map_key, problem, config, model)
        probs = np.asarray(mode.predict(problem.x_test))[0]
        # with tuning, a MAP row's seconds include every fit of its search
        rows.append(_row(map_label, "map", probs, problem, seconds=time.perf_counter() - start))
        rows[-1]["settings"] = _settings_label(settings, bank)
        artifacts["map_probs"][map_label] = probs
        say(
            f"  {map_label:<28} map   accuracy {rows[-1]['accuracy']:.3f} nll {rows[-1]['nll']:.3f}"
        )
        if bayes_label is None:
            continue
        start = time.perf_counter()
        posterior = _fit_bayes(bayes_key, problem, config, model, mode)
        summary = predictive_summary(posterior, problem.x_test)
        rows.append(
            _row(
                bayes_label,
                config.bayes,
                summary["predictive_mean"],
                problem,
                summary,
                seconds=time.perf_counter() - start,
            )
        )
        rows[-1]["settings"] = _settings_label(settings, bank)
        artifacts["posteriors"][bayes_label] = posterior
        artifacts["summaries"][bayes_label] = summary
        artifacts["extra"][bayes_label] = {
            name: predictive_summary(posterior, inputs)["mean_deviance"]
            for name, inputs in problem.extra_inputs.items()
        }
        say(
            f"  {bayes_label:<28} {config.bayes:<5} accuracy {rows[-1]['accuracy']:.3f} "
            f"nll {rows[-1]['nll']:.3f} md {rows[-1]['mean_deviance']:.3f}"
        )
    return rows, artifacts
