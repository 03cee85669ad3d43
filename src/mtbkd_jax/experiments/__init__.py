"""The paper's experiments (METHOD §7), each runnable as ``mtbkd experiment NAME --out DIR``.

Each experiment builds a :class:`Problem`, runs every baseline with :func:`run_baselines` and
writes ``metrics.json`` (the demo's row format), ``table.md``, the MT-BKD posterior and figures.
"""

from __future__ import annotations

from mtbkd_jax._paths import prepare_output_dir, require_input_dir
from mtbkd_jax.experiments.baselines import ExperimentConfig, Problem, run_baselines
from mtbkd_jax.experiments.report import markdown_table, write_report

__all__ = [
    "DATA_EXPERIMENTS",
    "EXPERIMENTS",
    "ExperimentConfig",
    "Problem",
    "markdown_table",
    "run_baselines",
    "run_experiment",
    "write_report",
]

EXPERIMENTS = ("digits", "synthetic", "deeploc", "fashion-mnist")
# the experiments that read a data folder (``data_path``, ``--data``)
DATA_EXPERIMENTS = ("deeploc", "fashion-mnist")


def run_experiment(
    name: str, out_dir, *, smoke: bool = False, seed: int = 0, data_path=None, say=print
) -> list[dict]:
    """Run experiment ``name`` and write its outputs to ``out_dir``; returns the rows.

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
        raise ValueError(f"name must be one of {EXPERIMENTS}, got {name!r}")
    if data_path is not None:
        if name not in DATA_EXPERIMENTS:
            raise ValueError(
                f"data_path is taken only by the experiments {DATA_EXPERIMENTS}, "
                f"got data_path={str(data_path)!r} for {name!r}"
            )
        require_input_dir(data_path, "data_path")
    prepare_output_dir(out_dir, "out_dir")
    if name == "digits":
        from mtbkd_jax.experiments.digits import digits_config, digits_problem

        problem, config = digits_problem(seed), digits_config(smoke, seed)
        say(
            f"[digits] {len(problem.y_train)} labelled, {len(problem.x_transfer)} transfer, "
            f"{len(problem.y_val)} validation, {len(problem.y_test)} test digits"
        )
        rows, artifacts = run_baselines(problem, config, say=say)
        write_report(out_dir, problem, rows, artifacts)
        return rows
    if name == "synthetic":
        from mtbkd_jax.experiments.synthetic import run_synthetic

        return run_synthetic(out_dir, smoke=smoke, seed=seed, say=say)
    if name == "fashion-mnist":
        from mtbkd_jax.experiments.fashion_mnist import run_fashion_mnist

        return run_fashion_mnist(out_dir, smoke=smoke, seed=seed, data_path=data_path, say=say)
    from mtbkd_jax.experiments.deeploc import run_deeploc

    return run_deeploc(out_dir, smoke=smoke, seed=seed, data_path=data_path, say=say)
