"""mtbkd_jax: Bayesian multi-teacher knowledge distillation in JAX.

A small Flax student learns from several teachers inside a NumPyro model whose prior on the
student's tempered class probabilities is a per-example mixture, over teachers, of Dirichlets
centred on the teachers' soft labels.
"""

from mtbkd_jax.infer import (
    CheckpointError,
    Posterior,
    SamplerDivergedError,
    run_map,
    run_nuts,
    run_paper_sgld,
    run_sgmcmc,
    run_svi,
    schedules,
)
from mtbkd_jax.metrics import (
    accuracy,
    brier_score,
    classification_metrics,
    classwise_calibration_error,
    error_detection_auroc,
    expected_calibration_error,
    interval_coverage,
    negative_log_likelihood,
)
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.priors import (
    TeacherMixtureDirichlet,
    TeacherPrior,
    dirichlet_mixture_log_density,
    flat_prior,
    normal_prior,
    teacher_prior_factor,
)
from mtbkd_jax.students import CNN, MLP, LinenMLP, Student
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.tuning import SearchResult, coordinate_search
from mtbkd_jax.uncertainty import (
    class_intervals,
    credible_threshold,
    entropy_decomposition,
    kde_mode_prediction,
    mean_deviance,
    predictive_mean,
    predictive_summary,
)
from mtbkd_jax.weighting import (
    inverse_entropy_weights,
    paper_weights,
    softmax_weights,
    teacher_weights,
    uniform_weights,
)

__version__ = "0.1.0"

__all__ = [
    "CNN",
    "CheckpointError",
    "MLP",
    "LinenMLP",
    "MTBKDModel",
    "Posterior",
    "SamplerDivergedError",
    "SearchResult",
    "Student",
    "TeacherBank",
    "TeacherMixtureDirichlet",
    "TeacherPrior",
    "accuracy",
    "brier_score",
    "class_intervals",
    "classification_metrics",
    "classwise_calibration_error",
    "coordinate_search",
    "credible_threshold",
    "dirichlet_mixture_log_density",
    "entropy_decomposition",
    "error_detection_auroc",
    "expected_calibration_error",
    "flat_prior",
    "interval_coverage",
    "inverse_entropy_weights",
    "kde_mode_prediction",
    "mean_deviance",
    "negative_log_likelihood",
    "normal_prior",
    "paper_weights",
    "predictive_mean",
    "predictive_summary",
    "run_map",
    "run_nuts",
    "run_paper_sgld",
    "run_sgmcmc",
    "run_svi",
    "schedules",
    "softmax_weights",
    "teacher_prior_factor",
    "teacher_weights",
    "uniform_weights",
]
