"""mtbkd_jax: Bayesian multi-teacher knowledge distillation in JAX.

A small Flax student learns from several teachers inside a NumPyro model whose prior on the
student's tempered class probabilities is a per-example mixture, over teachers, of Dirichlets
centred on the teachers' soft labels.

The top level holds what a first run needs (``__all__``, about twenty names); the rest lives in
the submodules: :mod:`mtbkd_jax.metrics` (with :mod:`~mtbkd_jax.comparison`, two predictors'
metric difference with a paired bootstrap interval, :mod:`~mtbkd_jax.calibration`, the
adaptive and debiased calibration errors, and :mod:`~mtbkd_jax.streaming_metrics`, metrics
added up over mini-batches on the device), :mod:`~mtbkd_jax.uncertainty`,
:mod:`~mtbkd_jax.weighting` (with :mod:`~mtbkd_jax.camkd`), :mod:`~mtbkd_jax.trust` (teacher
trust learned from labels), :mod:`~mtbkd_jax.priors` (with :mod:`~mtbkd_jax.scale_priors`, a
base prior whose scales are learned, and :mod:`~mtbkd_jax.noncentred`, its coordinates for
SG-MCMC), :mod:`~mtbkd_jax.students`,
:mod:`~mtbkd_jax.infer` (with :mod:`~mtbkd_jax.infer.schedules`), :mod:`~mtbkd_jax.tuning`,
:mod:`~mtbkd_jax.diagnostics`, :mod:`~mtbkd_jax.plots`, :mod:`~mtbkd_jax.datasets` and
:mod:`~mtbkd_jax.experiments`. The names that used to be at the top level as well still work
there for one release, with a ``DeprecationWarning`` that names their home.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from mtbkd_jax import _numpyro_import  # noqa: F401  # first: NumPyro whole, even if lazy
from mtbkd_jax._deprecation import warn_renamed as _warn_renamed
from mtbkd_jax.infer import (
    CheckpointError,
    Posterior,
    SamplerDivergedError,
    run_map,
    run_nuts,
    run_paper_sgld,
    run_sgmcmc,
    run_svi,
)
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.priors import TeacherPrior, flat_prior, normal_prior, teacher_prior_factor
from mtbkd_jax.students import MLP, Student
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.uncertainty import mean_deviance, predictive_mean, predictive_summary
from mtbkd_jax.weighting import teacher_weights

__version__ = "0.1.0"

__all__ = [
    # the teachers and their weights
    "TeacherBank",
    "teacher_weights",
    # the prior, for the canonical model or a model of your own
    "TeacherPrior",
    "teacher_prior_factor",
    "normal_prior",
    "flat_prior",
    # the student and the model
    "Student",
    "MLP",
    "MTBKDModel",
    # inference
    "run_map",
    "run_nuts",
    "run_svi",
    "run_sgmcmc",
    "run_paper_sgld",
    "Posterior",
    "CheckpointError",
    "SamplerDivergedError",
    # the uncertainty users ask for first
    "predictive_mean",
    "mean_deviance",
    "predictive_summary",
]

# the submodules users reach for the rest (``dir(mtbkd_jax)`` lists them beside the card)
_SUBMODULES = (
    "calibration",
    "comparison",
    "datasets",
    "diagnostics",
    "experiments",
    "infer",
    "metrics",
    "model",
    "plots",
    "priors",
    "scale_priors",
    "noncentred",
    "selective",
    "streaming_metrics",
    "students",
    "camkd",
    "teachers",
    "trust",
    "tuning",
    "uncertainty",
    "weighting",
)

# former top-level names -> the module that holds them now (deprecated here for one release)
_MOVED = {
    **dict.fromkeys(
        (
            "accuracy",
            "brier_score",
            "classification_metrics",
            "classwise_calibration_error",
            "error_detection_auroc",
            "expected_calibration_error",
            "interval_coverage",
            "negative_log_likelihood",
        ),
        "mtbkd_jax.metrics",
    ),
    **dict.fromkeys(
        ("class_intervals", "credible_threshold", "entropy_decomposition", "kde_mode_prediction"),
        "mtbkd_jax.uncertainty",
    ),
    **dict.fromkeys(
        ("inverse_entropy_weights", "paper_weights", "softmax_weights", "uniform_weights"),
        "mtbkd_jax.weighting",
    ),
    **dict.fromkeys(
        ("TeacherMixtureDirichlet", "dirichlet_mixture_log_density"), "mtbkd_jax.priors"
    ),
    **dict.fromkeys(("CNN", "LinenMLP"), "mtbkd_jax.students"),
    **dict.fromkeys(("SearchResult", "coordinate_search"), "mtbkd_jax.tuning"),
    "schedules": "mtbkd_jax.infer",
}


def __getattr__(name: str) -> _typing.Any:
    """A submodule, imported on first use (``mtbkd_jax.metrics.accuracy`` works after
    ``import mtbkd_jax``), or a former top-level name, from its new home, with a
    ``DeprecationWarning``."""
    if name in _SUBMODULES:
        return _importlib.import_module(f"mtbkd_jax.{name}")
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'mtbkd_jax' has no attribute {name!r}")
    _warn_renamed(f"mtbkd_jax.{name}", f"{home}.{name}")
    return getattr(_importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES, "__version__"})
