"""The paper's experiments (METHOD §7) and the demo, each runnable as
``mtbkd experiment NAME --out DIR [--smoke]``.

Each experiment is a configuration of one runner: a problem (a
:class:`~mtbkd_jax.datasets.DistillationData`), an :class:`ExperimentConfig` subclass (its full
run; ``.smoke()`` its tiny one), :func:`run_baselines` and :func:`write_report`, which writes
``metrics.json``, ``table.md``, ``predictions.npz``, the MT-BKD posterior and figures;
:func:`compare_runs` compares two rows of finished runs with a paired bootstrap.
:data:`EXPERIMENTS` is the registry the ``mtbkd`` command takes its choices from.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mtbkd_jax._paths import prepare_output_dir, require_input_dir
from mtbkd_jax.experiments.baselines import run_baselines
from mtbkd_jax.experiments.compare import compare_runs, comparison_table, load_predictions
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.methods import Method
from mtbkd_jax.experiments.provenance import check_experiment_output
from mtbkd_jax.experiments.report import markdown_table, write_report

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = [
    "DATA_EXPERIMENTS",
    "EXPERIMENTS",
    "Experiment",
    "ExperimentConfig",
    "Method",
    "compare_runs",
    "comparison_table",
    "load_predictions",
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
        runner: ``"module:function"``, a function ``(out_dir, *, smoke, seed, say, config[,
            data_path]) -> rows``, imported when the experiment runs.
        config: ``"module:Class"``, the runner's :class:`ExperimentConfig` subclass.
        takes_data: whether it reads a data folder (``data_path``, ``--data``).
        platform: the JAX platform ``mtbkd`` runs it on unless ``--platform`` or
            ``JAX_PLATFORMS`` says otherwise; ``None``: JAX's choice (a GPU if there is one).
            ``"cpu"`` for the experiments whose students are too small to gain from an
            accelerator (:mod:`mtbkd_jax._cli_platform`).
    """

    name: str
    summary: str
    runner: str
    config: str
    takes_data: bool = False
    platform: str | None = None

    def run(
        self,
        out_dir: str | os.PathLike[str],
        *,
        smoke: bool = False,
        seed: int = 0,
        data_path: str | os.PathLike[str] | None = None,
        say: Callable[..., object] = print,
        mesh: Mesh | None = None,
    ) -> list[dict[str, Any]]:
        """The runner with ``config_class.for_run(smoke=, seed=)``, its fits on ``mesh``
        (:class:`ExperimentConfig`'s ``mesh``)."""
        config = replace(self.config_class().for_run(smoke=smoke, seed=seed), mesh=mesh)
        kwargs: dict[str, Any] = {"data_path": data_path} if self.takes_data else {}
        return _imported(self.runner)(
            out_dir, smoke=smoke, seed=seed, say=say, config=config, **kwargs
        )

    def config_class(self) -> type[ExperimentConfig]:
        """The runner's configuration class (imported)."""
        return _imported(self.config)


def _imported(name: str) -> Any:
    """``"module:attribute"``'s attribute."""
    module, attribute = name.split(":")
    return getattr(importlib.import_module(module), attribute)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "digits",
            "every baseline on scikit-learn's digits, tuned on a validation split",
            "mtbkd_jax.experiments.digits:run_digits",
            "mtbkd_jax.experiments.digits:DigitsConfig",
            platform="cpu",
        ),
        Experiment(
            "synthetic",
            "every baseline on four problems with known class probabilities (coverage)",
            "mtbkd_jax.experiments.synthetic:run_synthetic",
            "mtbkd_jax.experiments.synthetic:SyntheticConfig",
            platform="cpu",
        ),
        Experiment(
            "deeploc",
            "protein localisation, two real teachers, SGLD, the multi-location check",
            "mtbkd_jax.experiments.deeploc:run_deeploc",
            "mtbkd_jax.experiments.deeploc:DeepLocConfig",
            takes_data=True,
        ),
        Experiment(
            "fashion-mnist",
            "three image teachers trained once, an MLP student on 14x14 images, SGLD",
            "mtbkd_jax.experiments.fashion_mnist:run_fashion_mnist",
            "mtbkd_jax.experiments.fashion_mnist:FashionMNISTConfig",
            takes_data=True,
        ),
        Experiment(
            "demo",
            "the main job, also `mtbkd demo`: three teachers distilled into an MLP on digits",
            "mtbkd_jax.demo:run_demo",
            "mtbkd_jax.demo:DemoConfig",
            platform="cpu",
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
    mesh: Mesh | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Run experiment ``name`` of :data:`EXPERIMENTS` and write its outputs to ``out_dir``;
    returns the rows. With ``mesh``, every student fit runs on it (:class:`ExperimentConfig`'s
    ``mesh``; with several processes, start the same call in each after
    :func:`mtbkd_jax.infer.multiprocess.initialize`).

    The arguments are checked before any data is loaded: ``data_path`` must be an existing
    folder (and is taken only by :data:`DATA_EXPERIMENTS`), and ``out_dir`` is created if it is
    missing and must be writable; if it holds the outputs of another run (another experiment,
    seed, smoke flag or config: the provenance record of its ``run.json``), it is refused
    unless ``overwrite``, which removes them (the files the package writes, no others).

    Raises:
        ValueError: an unknown ``name``, ``data_path`` for an experiment without data, or an
            ``out_dir`` that holds another run's outputs.
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
    check_experiment_output(out_dir, name, smoke, seed, overwrite)
    return EXPERIMENTS[name].run(
        out_dir, smoke=smoke, seed=seed, data_path=data_path, say=say, mesh=mesh
    )
