"""The DeepLoc experiment: two real teachers (ESM-2 650M, ProtT5), a student on sequence
features, every baseline by MAP and SGLD, and the multi-location uncertainty check.

The data live outside the package (``--data PATH``, ``MTBKD_DEEPLOC_DIR`` or
``../shared/data/deeploc``); the experiment stops with a clear error when they are absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from mtbkd_jax.experiments._json_files import write_json
from mtbkd_jax.experiments.baselines import run_baselines
from mtbkd_jax.experiments.config import SMOKE_TUNING, ExperimentConfig
from mtbkd_jax.experiments.methods import MAIN
from mtbkd_jax.experiments.report import raise_failures, write_report

if TYPE_CHECKING:
    from mtbkd_jax.datasets.data import DistillationData
    from mtbkd_jax.datasets.deeploc import DeepLocData

__all__ = ["DeepLocConfig", "deeploc_problem", "run_deeploc"]


@dataclass(frozen=True)
class DeepLocConfig(ExperimentConfig):
    """An MLP with 128 hidden units; 2,000 MAP steps at learning rate 3e-3; SGLD, 4 chains x
    80 epochs, each chain started at a MAP fitted from its own random initialisation
    (``chain_starts="maps"``); every method tuned on validation.

    Why four chains started apart: SGLD at these step sizes explores one mode of the
    student's posterior, and the student's MAPs from different initialisations differ. On
    seed 0's validation split, MT-BKD with learned trust (``normal_prior(0.2)``, β = 0.03) had
    validation NLL 1.131 with 2 chains from one MAP and 1.062 with 4 chains from 4 MAPs
    (``models/deeploc_chain_starts.py``, docs/results.md).

    ``validation_from_test = k > 0`` tunes every method on ``k`` proteins of the test file
    (:meth:`~mtbkd_jax.datasets.deeploc.DeepLocData.held_out_validation`) and tests on the
    others, instead of on the reference's 500 proteins of the training file, which the
    teachers were trained on (with ``trust_labels="validation"`` the learned-trust rows also
    learn their trust there)."""

    hidden: tuple[int, ...] = (128,)
    validation_from_test: int = 0
    learning_rate: float = 3e-3
    bayes: str = "sgld"
    tune: bool = True
    num_chains: int = 4
    chain_starts: str = "maps"

    @classmethod
    def smoke(cls, seed: int = 0) -> DeepLocConfig:
        return cls(
            seed=seed,
            map_steps=50,
            learning_rate=1e-2,
            sgld_epochs=2,
            sgld_draws_per_epoch=2,
            num_chains=1,
            **SMOKE_TUNING,
        )


def deeploc_problem(
    data_path: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    validation_from_test: int = 0,
) -> tuple[DistillationData, DeepLocData]:
    """The problem (:meth:`DeepLocData.distillation_data`, its shuffled OOD set drawn by
    ``seed``, its validation split ``validation_from_test`` test-file proteins when that is
    above 0) and the DeepLoc data it comes from."""
    from mtbkd_jax.datasets.deeploc import load_deeploc

    data = load_deeploc(data_path)
    problem = data.distillation_data(ood_seed=seed, validation_from_test=validation_from_test)
    return problem, data


def _multilocation_rows(artifacts: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean deviance of single- (test) vs multi-location proteins, per Bayesian method."""
    rows = []
    for method, extra in artifacts["extra"].items():
        single = np.asarray(artifacts["summaries"][method]["mean_deviance"], np.float64)
        multi = np.asarray(extra["multi-location"], np.float64)  # float32 would give a float32 p
        test = stats.mannwhitneyu(multi, single, alternative="greater")
        rows.append(
            {
                "method": method,
                "inference": "deviance: multi vs single",
                "median_md_single": float(np.median(single)),
                "median_md_multi": float(np.median(multi)),
                "auc_multi_vs_single": float(test.statistic / (len(multi) * len(single))),
                "mannwhitney_p": float(test.pvalue),
            }
        )
    return rows


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = ["method", "median_md_single", "median_md_multi", "auc_multi_vs_single", "mannwhitney_p"]
    lines = ["| " + " | ".join(keys) + " |", "| --- |" + " ---: |" * (len(keys) - 1)]
    for r in rows:
        lines.append(
            "| " + " | ".join(r[k] if isinstance(r[k], str) else f"{r[k]:.3g}" for k in keys) + " |"
        )
    return "\n".join(lines)


def _deviance_figure(
    out: Path, data: DeepLocData, artifacts: Mapping[str, Mapping[str, Any]]
) -> None:
    from mtbkd_jax.plots import deviance_by_group

    groups = {"single-location (test)": artifacts["summaries"][MAIN]["mean_deviance"]}
    counts = data.multilocation.localization_count
    for count in sorted(set(counts.tolist())):
        groups[f"{count} locations"] = artifacts["extra"][MAIN]["multi-location"][counts == count]
    deviance_by_group(
        groups,
        out / "deviance_by_group.png",
        title="MT-BKD mean deviance: single- vs multi-location proteins",
    )


def run_deeploc(
    out_dir: str | os.PathLike[str],
    *,
    smoke: bool = False,
    seed: int = 0,
    data_path: str | os.PathLike[str] | None = None,
    say: Callable[..., object] = print,
    config: ExperimentConfig | None = None,
) -> list[dict[str, Any]]:
    """Run the experiment (``config``: default ``DeepLocConfig.for_run(smoke=, seed=)``) and
    write its outputs, ``multilocation.json`` included; returns the rows."""
    config = config or DeepLocConfig.for_run(smoke=smoke, seed=seed)
    held_out = getattr(config, "validation_from_test", 0)
    problem, data = deeploc_problem(data_path, seed=config.seed, validation_from_test=held_out)
    say(
        f"[deeploc] {len(problem.y_train)} train, {len(problem.y_test)} test, "
        f"{data.multilocation.num_examples} multi-location proteins, "
        f"{data.num_features} sequence features"
    )
    rows, artifacts = run_baselines(
        problem, config, say=say, report=lambda r, a: write_report(out_dir, problem, r, a)
    )
    multi = _multilocation_rows(artifacts)
    write_report(out_dir, problem, rows, artifacts)
    out = Path(out_dir)
    if MAIN in artifacts["extra"]:
        _deviance_figure(out, data, artifacts)
    write_json(out / "multilocation.json", multi)
    with open(out / "table.md", "a") as handle:
        handle.write("\n" + _table(multi) + "\n")
    raise_failures(artifacts["failures"], out)
    return rows
