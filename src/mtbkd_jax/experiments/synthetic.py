"""The synthetic experiment: known class probabilities, so interval coverage can be measured.

Four problems (linear and non-linear boundaries, 2 and 5 classes; 7:3:1 split) with three
teachers, each expert on one sector of the plane. Every baseline is run on each problem.
"""

from __future__ import annotations

import json
from pathlib import Path

from flax import nnx

from mtbkd_jax.datasets import make_synthetic
from mtbkd_jax.experiments.baselines import (
    SMOKE_TUNING,
    ExperimentConfig,
    Problem,
    run_baselines,
)
from mtbkd_jax.experiments.report import markdown_table, write_report
from mtbkd_jax.students import MLP, Student

__all__ = ["synthetic_problem", "run_synthetic", "CASES"]

CASES = (("linear", 2), ("linear", 5), ("nonlinear", 2), ("nonlinear", 5))


def synthetic_problem(kind: str, num_classes: int, *, num_examples: int = 2200, seed: int = 0):
    data = make_synthetic(kind, num_classes, num_examples=num_examples, seed=seed)
    num_features = data.x_train.shape[1]
    return Problem(
        name=f"{kind}_{num_classes}",
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        teachers_prior=data.teachers_train,
        teachers_test=data.teachers_test,
        make_student=lambda s: Student(
            MLP(num_features, num_classes, hidden=(16,), rngs=nnx.Rngs(s))
        ),
        true_probs_test=data.true_probs_test,
        x_val=data.x_validation,
        y_val=data.y_validation,
    ), data


def run_synthetic(out_dir, *, smoke: bool = False, seed: int = 0, say=print):
    """Run every case; write one folder per case and a combined metrics.json / table.md."""
    out = Path(out_dir)
    cases = CASES[:1] if smoke else CASES
    if smoke:
        config = ExperimentConfig(
            seed=seed,
            map_steps=50,
            num_warmup=5,
            num_samples=5,
            num_chains=1,
            **SMOKE_TUNING,
        )
    else:
        config = ExperimentConfig(
            seed=seed,
            num_warmup=400,
            num_samples=500,
            tune=True,
            prior_scale_grid=(0.3, 1.0, 3.0, 10.0),
        )
    all_rows, tables = [], []
    for kind, num_classes in cases:
        problem, data = synthetic_problem(
            kind, num_classes, num_examples=440 if smoke else 2200, seed=seed
        )
        say(
            f"[synthetic {problem.name}] {len(problem.y_train)} train, {len(problem.y_test)} "
            f"test; Bayes accuracy on test {data.bayes_accuracy:.3f}"
        )
        rows, artifacts = run_baselines(problem, config, say=say)
        bayes = {
            "method": "Bayes classifier (true probabilities)",
            "inference": "truth",
            "accuracy": data.bayes_accuracy,
        }
        rows = [{**r, "dataset": problem.name} for r in rows]
        write_report(out / problem.name, problem, rows, artifacts)
        all_rows += rows
        tables.append(
            f"### {problem.name}\n\nBayes accuracy on the test split: "
            f"{bayes['accuracy']:.3f}\n\n" + markdown_table(rows)
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(all_rows, indent=2) + "\n")
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    return all_rows
