"""The main job: multi-teacher Bayesian distillation on scikit-learn's bundled digits.

A configuration of the experiment runner (:mod:`mtbkd_jax.experiments`): the METHOD §7
baselines that fit in a few CPU minutes (the student alone, averaged-teacher KD, the best
teacher by accuracy on the labelled set distilled alone, and MT-BKD with entropy weights, each
by MAP; MT-BKD and the student alone also by NUTS from their MAP). Prints a table and, with
``out_dir``, writes what every experiment writes: ``metrics.json``, ``table.md``, the MT-BKD
posterior ``posterior.nc`` (an ArviZ DataTree), ``reliability.png`` and the other figures.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from mtbkd_jax._paths import prepare_output_dir
from mtbkd_jax.datasets import load_digits_distillation
from mtbkd_jax.experiments.baselines import run_baselines
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.provenance import check_output_dir, run_provenance
from mtbkd_jax.experiments.report import markdown_table, raise_failures, write_report

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig(ExperimentConfig):
    """The demo's six methods without the teachers' rows and without tuning (σ0 = 1,
    λ = 10, β = 0.1, T = 1); each MAP 6,000 Adam steps, then up to 3,000 L-BFGS iterations to
    the mode (at 2,000 Adam steps the learned-trust MAP was still falling, and where it
    stopped moved its test NLL between 0.12 and 0.21: ``docs/results.md``); NUTS, 2 chains x
    400 draws after 400 warm-up steps, chain 1 started at a MAP from another random start. The
    smoke run: 200 Adam steps, no polish, one chain of 30 draws after 30 warm-up steps."""

    methods: str = "demo"
    teacher_rows: bool = False
    map_steps: int = 6000
    map_polish_steps: int = 3000
    num_warmup: int = 400
    num_draws: int = 400
    key_schedule: str = "maps-first"
    chain_starts: str = "maps"
    progress_bar: bool = True

    @classmethod
    def smoke(cls, seed: int = 0) -> DemoConfig:
        return cls(
            seed=seed,
            map_steps=200,
            map_polish_steps=0,
            num_warmup=30,
            num_draws=30,
            num_chains=1,
        )


def _flushed(say: Callable[..., object]) -> Callable[..., None]:
    def emit(*args: object) -> None:
        say(*args)
        sys.stdout.flush()

    return emit


def run_demo(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    smoke: bool = False,
    seed: int = 0,
    config: DemoConfig | None = None,
    progress: bool = True,
    say: Callable[..., object] = print,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run the demo and return its rows (the row format of every experiment:
    ``{method, inference, accuracy, nll, ece, brier, mean_deviance, ...}``).

    ``config`` defaults to ``DemoConfig.for_run(smoke=smoke, seed=seed)``; ``progress=False``
    turns off the progress lines and bars (the table is still printed). ``out_dir`` is created
    (parents too) if it is missing and checked for writing before any compute;
    :class:`NotADirectoryError`, :class:`PermissionError` or :class:`ValueError` say why it
    cannot be used. An ``out_dir`` that holds another run's outputs is refused (a
    :class:`ValueError`) unless ``overwrite``, which removes them first
    (:func:`~mtbkd_jax.experiments.provenance.check_output_dir`).
    """
    config = replace(config or DemoConfig.for_run(smoke=smoke, seed=seed), progress_bar=progress)
    if out_dir is not None:
        out_dir = prepare_output_dir(out_dir, "out_dir")
        check_output_dir(out_dir, run_provenance(config), overwrite=overwrite)
    say = _flushed(say) if progress else (lambda *args: None)
    start = time.perf_counter()
    say("[1/3] data: scikit-learn digits; training three teachers ...")
    data = load_digits_distillation(config.seed)
    accuracies = data.teachers_test.accuracy(data.y_test)
    for name, acc in zip(data.teachers_test.names, accuracies, strict=True):
        say(f"      teacher {name:<12} test accuracy {acc:.3f}")
    polish = " + L-BFGS to the mode" if config.map_polish_steps else ""
    say(
        f"[2/3] each method: MAP ({config.map_steps} Adam steps{polish}), then NUTS from it where "
        f"sampled ({config.num_chains} chains x {config.num_draws} draws, "
        f"{config.num_warmup} warm-up) ..."
    )
    report = None if out_dir is None else partial(write_report, out_dir, data)
    rows, artifacts = run_baselines(data, config, say=say, report=report)
    rows.sort(key=lambda row: row["inference"] != "map")  # the MAP rows first (stable)
    say(f"[3/3] done in {time.perf_counter() - start:.0f} s\n")
    print(markdown_table(rows))
    if out_dir is not None:
        write_report(out_dir, data, rows, artifacts)
        say(f"\nwrote metrics.json, table.md, posterior.nc, reliability.png, ... to {out_dir}")
    raise_failures(artifacts["failures"], out_dir)
    return rows
