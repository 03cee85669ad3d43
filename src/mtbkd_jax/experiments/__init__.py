"""The paper's experiments (METHOD §7) and the demo, each runnable as
``mtbkd experiment NAME --out DIR [--smoke]``.

Each experiment is a configuration of one runner: a problem (a
:class:`~mtbkd_jax.datasets.DistillationData`), an :class:`ExperimentConfig` subclass (its full
run; ``.smoke()`` its tiny one), :func:`run_baselines` and :func:`write_report`, which writes
``metrics.json``, ``table.md``, the MT-BKD posterior and figures. :data:`EXPERIMENTS` is the
registry the ``mtbkd`` command takes its choices from.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mtbkd_jax._paths import prepare_output_dir, require_input_dir
from mtbkd_jax.experiments.baselines import run_baselines
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.methods import Method
from mtbkd_jax.experiments.report import markdown_table, write_report

__all__ = [
    "DATA_EXPERIMENTS",
    "EXPERIMENTS",
    "Experiment",
    "ExperimentConfig",
    "Method",
    "markdown_table",
    "run_baselines",
    "run_experiment",
    "write_report",
]


@dataclass(frozen=True)
class Experiment:
    """An entry of the registry.

    Attributes:
        name: the ``mtbkd experiment`` choice.
        summary: one line for ``mtbkd experiment --help``.
        runner: ``"module:function"``, a function ``(out_dir, *, smoke, seed, say[, data_path])
            -> rows``, imported when the experiment runs.
        takes_data: whether it reads a data folder (``data_path``, ``--data``).
    """

    name: str
    summary: str
    runner: str
    takes_data: bool = False

    def run(
        self,
        out_dir: str | os.PathLike[str],
        *,
        smoke: bool = False,
        seed: int = 0,
        data_path: str | os.PathLike[str] | None = None,
        say: Callable[..., object] = print,
    ) -> list[dict[str, Any]]:
        module, function = self.runner.split(":")
        run = getattr(importlib.import_module(module), function)
        kwargs = {"data_path": data_path} if self.takes_data else {}
        return run(out_dir, smoke=smoke, seed=seed, say=say, **kwargs)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "digits",
            "every baseline on scikit-learn's digits, tuned on a validation split",
            "mtbkd_jax.experiments.digits:run_digits",
        ),
        Experiment(
            "synthetic",
            "every baseline on four problems with known class probabilities (coverage)",
            "mtbkd_jax.experiments.synthetic:run_synthetic",
        ),
        Experiment(
            "deeploc",
            "protein localisation, two real teachers, SGLD, the multi-location check",
            "mtbkd_jax.experiments.deeploc:run_deeploc",
            takes_data=True,
        ),
        Experiment(
            "fashion-mnist",
            "three image teachers trained once, an MLP student on 14x14 images, SGLD",
            "mtbkd_jax.experiments.fashion_mnist:run_fashion_mnist",
            takes_data=True,
        ),
        Experiment(
            "demo",
            "the main job, also `mtbkd demo`: three teachers distilled into an MLP on digits",
            "mtbkd_jax.demo:run_demo",
        ),
    )
}
# the experiments that read a data folder (``data_path``, ``--data``)
DATA_EXPERIMENTS = tuple(name for name, e in EXPERIMENTS.items() if e.takes_data)


def run_experiment(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    smoke: bool = False,
    seed: int = 0,
    data_path: str | os.PathLike[str] | None = None,
    say: Callable[..., object] = print,
) -> list[dict]:
    """Run experiment ``name`` of :data:`EXPERIMENTS` and write its outputs to ``out_dir``;
    returns the rows.

    The arguments are checked before any data is loaded: ``data_path`` must be an existing
    folder (and is taken only by :data:`DATA_EXPERIMENTS`), and ``out_dir`` is created if it is
    missing and must be writable.

    Raises:
        ValueError: an unknown ``name``, or ``data_path`` for an experiment without data.
        FileNotFoundError: ``data_path`` does not exist (or the data files are missing).
        NotADirectoryError: ``data_path`` or ``out_dir`` is a file.
        PermissionError: ``out_dir`` cannot be created or written.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"name must be one of {tuple(EXPERIMENTS)}, got {name!r}")
    if data_path is not None:
        if name not in DATA_EXPERIMENTS:
            raise ValueError(
                f"data_path is taken only by the experiments {DATA_EXPERIMENTS}, "
                f"got data_path={str(data_path)!r} for {name!r}"
            )
        require_input_dir(data_path, "data_path")
    prepare_output_dir(out_dir, "out_dir")
    return EXPERIMENTS[name].run(out_dir, smoke=smoke, seed=seed, data_path=data_path, say=say)
