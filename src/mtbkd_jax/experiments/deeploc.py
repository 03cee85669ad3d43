"""The DeepLoc experiment: two real teachers (ESM-2 650M, ProtT5), a student on sequence
features, every baseline by MAP and SGLD, and the multi-location uncertainty check.

The data live outside the package (``--data PATH``, ``MTBKD_DEEPLOC_DIR`` or
``../shared/data/deeploc``); the experiment stops with a clear error when they are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import nnx
from scipy import stats

from mtbkd_jax.experiments.baselines import (
    SMOKE_TUNING,
    ExperimentConfig,
    Problem,
    run_baselines,
)
from mtbkd_jax.experiments.report import write_report
from mtbkd_jax.students import MLP, Student

__all__ = ["deeploc_problem", "run_deeploc"]


def deeploc_problem(data_path=None, *, hidden: int = 128):
    from mtbkd_jax.datasets.deeploc import load_deeploc

    data = load_deeploc(data_path)
    num_features = data.num_features
    problem = Problem(
        name="deeploc",
        x_train=data.train.x,
        y_train=data.train.y,
        x_test=data.test.x,
        y_test=data.test.y,
        teachers_prior=data.train.teachers,
        teachers_test=data.test.teachers,
        make_student=lambda s: Student(
            MLP(num_features, data.num_classes, hidden=(hidden,), rngs=nnx.Rngs(s))
        ),
        extra_inputs={"multi-location": data.multilocation.x},
        x_val=data.validation.x,
        y_val=data.validation.y,
    )
    return problem, data


def _multilocation_rows(artifacts):
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


def _table(rows) -> str:
    keys = ["method", "median_md_single", "median_md_multi", "auc_multi_vs_single", "mannwhitney_p"]
    lines = ["| " + " | ".join(keys) + " |", "| --- |" + " ---: |" * (len(keys) - 1)]
    for r in rows:
        lines.append(
            "| " + " | ".join(r[k] if isinstance(r[k], str) else f"{r[k]:.3g}" for k in keys) + " |"
        )
    return "\n".join(lines)


def run_deeploc(out_dir, *, smoke: bool = False, seed: int = 0, data_path=None, say=print):
    problem, data = deeploc_problem(data_path)
    if smoke:
        config = ExperimentConfig(
            seed=seed,
            map_steps=50,
            bayes="sgld",
            sgld_epochs=2,
            sgld_step_size=1e-5,
            sgld_draws_per_epoch=2,
            num_chains=1,
            **SMOKE_TUNING,
        )
    else:
        config = ExperimentConfig(
            seed=seed,
            map_steps=2000,
            learning_rate=3e-3,
            bayes="sgld",
            sgld_batch_size=64,
            sgld_epochs=80,
            sgld_step_size=1e-5,
            sgld_draws_per_epoch=6,
            num_chains=2,
            tune=True,
        )
    say(
        f"[deeploc] {len(problem.y_train)} train, {len(problem.y_test)} test, "
        f"{data.multilocation.num_examples} multi-location proteins, "
        f"{data.num_features} sequence features"
    )
    rows, artifacts = run_baselines(problem, config, say=say)
    multi = _multilocation_rows(artifacts)
    out = write_report(out_dir, problem, rows, artifacts)
    main = "MT-BKD (entropy weights)"
    if main in artifacts["extra"]:
        from mtbkd_jax.plots import deviance_by_group

        groups = {"single-location (test)": artifacts["summaries"][main]["mean_deviance"]}
        counts = data.multilocation.localization_count
        for count in sorted(set(counts.tolist())):
            groups[f"{count} locations"] = artifacts["extra"][main]["multi-location"][
                counts == count
            ]
        deviance_by_group(
            groups,
            Path(out) / "deviance_by_group.png",
            title="MT-BKD mean deviance: single- vs multi-location proteins",
        )
    (Path(out) / "multilocation.json").write_text(json.dumps(multi, indent=2) + "\n")
    with open(Path(out) / "table.md", "a") as handle:
        handle.write("\n" + _table(multi) + "\n")
    return rows
