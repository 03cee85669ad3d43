"""The digits experiment: three scikit-learn teachers, an MLP student, every baseline.

The experiment holds out 150 of the demo's 450 transfer digits as a labelled validation set
(the teachers' training digits and the 397 test digits are the demo's), and every method
chooses its prior settings by validation NLL.
"""

from __future__ import annotations

from flax import nnx

from mtbkd_jax.datasets import load_digits_distillation
from mtbkd_jax.experiments.baselines import SMOKE_TUNING, ExperimentConfig, Problem
from mtbkd_jax.students import MLP, Student

__all__ = ["digits_problem", "digits_config"]


NUM_VALIDATION = 150


def digits_problem(seed: int = 0) -> Problem:
    data = load_digits_distillation(
        seed, num_transfer=450 - NUM_VALIDATION, num_validation=NUM_VALIDATION
    )
    return Problem(
        name="digits",
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        teachers_prior=data.teachers_prior,
        teachers_test=data.teachers_test,
        make_student=lambda s: Student(MLP(64, 10, hidden=(16,), rngs=nnx.Rngs(s))),
        x_transfer=data.x_transfer,
        x_val=data.x_validation,
        y_val=data.y_validation,
    )


def digits_config(smoke: bool = False, seed: int = 0) -> ExperimentConfig:
    if smoke:
        return ExperimentConfig(
            seed=seed, map_steps=100, num_warmup=10, num_samples=10, num_chains=1, **SMOKE_TUNING
        )
    # the default σ0 grid stops at 1, and with it every method chose σ0 = 1; this student on
    # 64 pixels wants broader weights, so its grid goes on to 2 and 4
    return ExperimentConfig(
        seed=seed, tune=True, prior_scale_grid=(0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0)
    )
