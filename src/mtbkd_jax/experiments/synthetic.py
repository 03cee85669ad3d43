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
from mtbkd_jax.metrics import interval_coverage_by_probability
from mtbkd_jax.students import MLP, Student

__all__ = ["synthetic_problem", "run_synthetic", "coverage_breakdown", "CASES"]

CASES = (("linear", 2), ("linear", 5), ("nonlinear", 2), ("nonlinear", 5))
MAIN = "MT-BKD (entropy weights)"


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
        table = markdown_table(rows)
        if MAIN in artifacts["summaries"]:
            breakdown = interval_coverage_by_probability(
                artifacts["summaries"][MAIN]["class_intervals"], problem.true_probs_test
            )
            (out / problem.name / "coverage_by_probability.json").write_text(
                json.dumps(breakdown, indent=2) + "\n"
            )
            table += f"\n\n{MAIN}, coverage by true probability:\n\n" + _breakdown_table(breakdown)
        tables.append(
            f"### {problem.name}\n\nBayes accuracy on the test split: "
            f"{bayes['accuracy']:.3f}\n\n" + table
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(all_rows, indent=2) + "\n")
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    return all_rows


def _breakdown_table(rows) -> str:
    lines = ["| true p | pairs | coverage | truth below | truth above |", "| --- |" + " ---: |" * 4]
    for k, r in enumerate(rows):
        close = "]" if k == len(rows) - 1 and r["high"] == 1.0 else ")"
        lines.append(
            f"| [{r['low']:g}, {r['high']:g}{close} | {r['count']} | {r['coverage']:.2f} | "
            f"{r['below']:.3f} | {r['above']:.3f} |"
        )
    return "\n".join(lines)


def coverage_breakdown(out_dir, *, seed: int = 0, num_examples: int = 2200) -> dict:
    """Coverage by true probability of the MT-BKD posteriors a finished run saved
    (``OUT/CASE/posterior.nc``); regenerates each case's test data from ``seed``."""
    from mtbkd_jax.infer.posterior import Posterior
    from mtbkd_jax.model import MTBKDModel
    from mtbkd_jax.uncertainty import predictive_summary

    out = {}
    for kind, num_classes in CASES:
        problem, _ = synthetic_problem(kind, num_classes, num_examples=num_examples, seed=seed)
        path = Path(out_dir) / problem.name / "posterior.nc"
        if not path.is_file():
            continue
        logits = MTBKDModel(problem.make_student(seed), None).logits
        summary = predictive_summary(Posterior.load(path, logits_fn=logits), problem.x_test)
        out[problem.name] = interval_coverage_by_probability(
            summary["class_intervals"], problem.true_probs_test
        )
    return out


if __name__ == "__main__":  # python -m mtbkd_jax.experiments.synthetic OUT_DIR [--smoke]
    import argparse

    parser = argparse.ArgumentParser(description="coverage by true probability of a saved run")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    parser.add_argument("--smoke", action="store_true", help="the run was made with --smoke")
    args = parser.parse_args()
    size = 440 if args.smoke else 2200  # run_synthetic's sizes
    for name, rows in coverage_breakdown(args.out_dir, seed=args.seed, num_examples=size).items():
        print(f"### {name}\n\n{_breakdown_table(rows)}\n")
