"""The image experiment on Fashion-MNIST: three teachers trained once (and cached), an MLP
student on 14x14 images, every baseline by MAP and SGLD.

The data live outside the package (``--data PATH``, ``$MTBKD_FASHION_MNIST_DIR`` or Debian's
``/usr/share/datasets/fashion-mnist``); the experiment stops with a clear error when they are
absent. The teachers' logits are cached under ``$MTBKD_FASHION_MNIST_CACHE`` (default
``~/.cache/mtbkd_jax/fashion-mnist``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbkd_jax.experiments._json_files import write_json
from mtbkd_jax.experiments.baselines import run_baselines
from mtbkd_jax.experiments.config import SMOKE_TUNING, ExperimentConfig
from mtbkd_jax.experiments.report import raise_failures, write_report

if TYPE_CHECKING:
    from mtbkd_jax.datasets.data import DistillationData
    from mtbkd_jax.datasets.fashion_mnist_teachers import FashionMNISTTeachers, TeacherSettings

__all__ = ["FashionMNISTConfig", "fashion_mnist_problem", "run_fashion_mnist"]


@dataclass(frozen=True)
class FashionMNISTConfig(ExperimentConfig):
    """Data sizes, teachers, student and inference budget: 2,000 labelled, 8,000 transfer and
    2,000 validation images; an MLP with 32 hidden units; 1,500 MAP steps; SGLD, 4 chains x
    40 epochs, each chain started at a MAP fitted from its own random initialisation
    (``chain_starts="maps"``, as in :class:`~mtbkd_jax.experiments.deeploc.DeepLocConfig`: chains
    from one MAP explore one mode and agree with each other while doing so); every method
    tuned on validation. ``teachers`` are the teachers' training settings (``None``:
    :class:`~mtbkd_jax.datasets.fashion_mnist_teachers.TeacherSettings`'s defaults with
    ``held_out`` the student's 12,000 images: the teachers train on the other 48,000, so that
    their predictions on the student's labelled images are out of sample, as the learned
    trust, which is fitted to those labels, needs: a teacher is judged on images it did not
    learn, as on the test set)."""

    num_labelled: int = 2000
    num_transfer: int = 8000
    num_validation: int = 2000
    teachers: TeacherSettings | None = None
    hidden: tuple[int, ...] = (32,)
    map_steps: int = 1500
    bayes: str = "sgld"
    sgld_epochs: int = 40
    sgld_draws_per_epoch: int = 4
    num_chains: int = 4
    chain_starts: str = "maps"
    tune: bool = True

    @classmethod
    def smoke(cls, seed: int = 0) -> FashionMNISTConfig:
        """200 / 400 / 100 images, tiny teachers (``TeacherSettings.smoke()``), 16 hidden
        units, 50 MAP steps, one SGLD chain of 2 epochs."""
        from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings

        return cls(
            seed=seed,
            num_labelled=200,
            num_transfer=400,
            num_validation=100,
            teachers=replace(TeacherSettings.smoke(), held_out=700),  # the student's
            hidden=(16,),
            map_steps=50,
            sgld_epochs=2,
            sgld_draws_per_epoch=2,
            num_chains=1,
            **SMOKE_TUNING,
        )


def fashion_mnist_problem(
    data_path: str | os.PathLike[str] | None = None,
    *,
    config: FashionMNISTConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    say: Callable[..., object] = print,
) -> tuple[DistillationData, FashionMNISTTeachers]:
    """The problem and the teachers' record (training time, accuracy, cache)."""
    from mtbkd_jax.datasets.fashion_mnist import load_fashion_mnist_distillation

    config = config or FashionMNISTConfig()
    total = config.num_labelled + config.num_transfer + config.num_validation
    return load_fashion_mnist_distillation(
        data_path,
        seed=config.seed,
        num_labelled=config.num_labelled,
        num_transfer=config.num_transfer,
        num_validation=config.num_validation,
        teacher_settings=config.teachers or _held_out_teachers(total),
        cache_dir=cache_dir,
        say=say,
    )


def _held_out_teachers(num_images: int) -> TeacherSettings:
    """The default teachers, which do not train on the student's ``num_images`` images."""
    from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings

    return TeacherSettings(held_out=num_images)


def run_fashion_mnist(
    out_dir: str | os.PathLike[str],
    *,
    smoke: bool = False,
    seed: int = 0,
    data_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    say: Callable[..., object] = print,
    config: FashionMNISTConfig | None = None,
) -> list[dict[str, Any]]:
    """Run the experiment (``config``: default ``FashionMNISTConfig.for_run(smoke=, seed=)``)
    and write metrics.json, table.md, teachers.json and figures; returns the rows."""
    config = config or FashionMNISTConfig.for_run(smoke=smoke, seed=seed)
    data, teachers = fashion_mnist_problem(data_path, config=config, cache_dir=cache_dir, say=say)
    say(
        f"[fashion-mnist] {len(data.y_train)} labelled, {data.num_transfer} transfer, "
        f"{data.num_validation} validation, {len(data.y_test)} test images; student MLP "
        f"{data.num_features}-{'-'.join(map(str, config.hidden))}-10 {config.activation}"
    )
    rows, artifacts = run_baselines(
        data, config, say=say, report=lambda r, a: write_report(out_dir, data, r, a)
    )
    write_report(out_dir, data, rows, artifacts)
    out = Path(out_dir)
    write_json(out / "teachers.json", teachers.info)
    raise_failures(artifacts["failures"], out)
    return rows
