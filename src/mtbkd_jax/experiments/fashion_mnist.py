"""The image experiment on Fashion-MNIST: three teachers trained once (and cached), an MLP
student on 14x14 images, every baseline by MAP and SGLD.

The data live outside the package (``--data PATH``, ``$MTBKD_FASHION_MNIST_DIR`` or Debian's
``/usr/share/datasets/fashion-mnist``); the experiment stops with a clear error when they are
absent. The teachers' logits are cached under ``$MTBKD_FASHION_MNIST_CACHE`` (default
``~/.cache/mtbkd_jax/fashion-mnist``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from mtbkd_jax.experiments.baselines import (
    SMOKE_TUNING,
    ExperimentConfig,
    Problem,
    run_baselines,
)
from mtbkd_jax.experiments.report import write_report
from mtbkd_jax.students import MLP, Student

__all__ = ["FashionMNISTSettings", "fashion_mnist_problem", "run_fashion_mnist"]


@dataclass(frozen=True)
class FashionMNISTSettings:
    """The student's side of the experiment: data sizes, network and inference budget."""

    num_labelled: int = 2000
    num_transfer: int = 8000
    num_validation: int = 2000
    hidden: int = 32
    smoke: bool = False

    def config(self, seed: int = 0) -> ExperimentConfig:
        if self.smoke:
            return ExperimentConfig(
                seed=seed,
                map_steps=50,
                bayes="sgld",
                sgld_epochs=2,
                sgld_draws_per_epoch=2,
                num_chains=1,
                **SMOKE_TUNING,
            )
        return ExperimentConfig(
            seed=seed,
            map_steps=1500,
            learning_rate=1e-2,
            bayes="sgld",
            sgld_batch_size=64,
            sgld_epochs=40,
            sgld_step_size=1e-5,
            sgld_draws_per_epoch=4,
            num_chains=2,
            tune=True,
        )

    @classmethod
    def smoke_settings(cls) -> FashionMNISTSettings:
        return cls(num_labelled=200, num_transfer=400, num_validation=100, hidden=16, smoke=True)


def fashion_mnist_problem(
    data_path=None, *, seed: int = 0, settings=None, cache_dir=None, say=print
):
    """The :class:`Problem` and the teachers' record (training time, accuracy, cache)."""
    from mtbkd_jax.datasets.fashion_mnist import load_fashion_mnist_distillation
    from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings

    settings = settings or FashionMNISTSettings()
    data, teachers = load_fashion_mnist_distillation(
        data_path,
        seed=seed,
        num_labelled=settings.num_labelled,
        num_transfer=settings.num_transfer,
        num_validation=settings.num_validation,
        teacher_settings=TeacherSettings.smoke() if settings.smoke else TeacherSettings(),
        cache_dir=cache_dir,
        say=say,
    )
    num_features = data.x_train.shape[1]
    problem = Problem(
        name="fashion-mnist",
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        teachers_prior=data.teachers_prior,
        teachers_test=data.teachers_test,
        make_student=lambda s: Student(
            MLP(num_features, 10, hidden=(settings.hidden,), rngs=nnx.Rngs(s))
        ),
        x_transfer=data.x_transfer,
        x_val=data.x_validation,
        y_val=data.y_validation,
    )
    return problem, teachers


def run_fashion_mnist(
    out_dir, *, smoke: bool = False, seed: int = 0, data_path=None, cache_dir=None, say=print
):
    """Run the experiment and write metrics.json, table.md, teachers.json and figures."""
    settings = FashionMNISTSettings.smoke_settings() if smoke else FashionMNISTSettings()
    problem, teachers = fashion_mnist_problem(
        data_path, seed=seed, settings=settings, cache_dir=cache_dir, say=say
    )
    say(
        f"[fashion-mnist] {len(problem.y_train)} labelled, {len(problem.x_transfer)} transfer, "
        f"{len(problem.y_val)} validation, {len(problem.y_test)} test images; student MLP "
        f"{problem.x_train.shape[1]}-{settings.hidden}-10"
    )
    rows, artifacts = run_baselines(problem, settings.config(seed), say=say)
    out = write_report(out_dir, problem, rows, artifacts)
    (Path(out) / "teachers.json").write_text(json.dumps(teachers.info, indent=2) + "\n")
    return rows
