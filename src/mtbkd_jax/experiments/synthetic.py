"""The synthetic experiment: known class probabilities, so interval coverage can be measured.

Four problems (linear and non-linear boundaries, 2 and 5 classes; 7:3:1 split) with three
teachers, each expert on one sector of the plane. Every baseline is run on each problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

from mtbkd_jax.datasets import DistillationData, SyntheticData, make_synthetic
from mtbkd_jax.datasets.synthetic import SYNTHETIC_KINDS
from mtbkd_jax.experiments._json_files import write_json
from mtbkd_jax.experiments.baselines import run_baselines
from mtbkd_jax.experiments.compare import PREDICTIONS, saved_digest, test_set_digest
from mtbkd_jax.experiments.config import SMOKE_TUNING, ExperimentConfig
from mtbkd_jax.experiments.methods import MAIN
from mtbkd_jax.experiments.provenance import read_provenance, run_provenance
from mtbkd_jax.experiments.report import complete_run, markdown_table, raise_failures, write_report
from mtbkd_jax.metrics import interval_coverage_by_probability

__all__ = [
    "CASES",
    "SyntheticConfig",
    "coverage_breakdown",
    "run_synthetic",
    "synthetic_problem",
]

CASES = (("linear", 2), ("linear", 5), ("nonlinear", 2), ("nonlinear", 5))


@dataclass(frozen=True)
class SyntheticConfig(ExperimentConfig):
    """Every case with 2,200 examples; NUTS, 2 chains x 500 draws after 400 warm-up steps;
    every method tuned on validation. The learned-trust row scores each ``beta`` by a quarter
    of that NUTS budget (under its prior NUTS builds trees of depth 9-10, so a full run per
    ``beta`` made the row 38 of a case's 44 minutes) and samples the winner in full. The smoke
    run: the first case, 440 examples."""

    num_warmup: int = 400
    num_draws: int = 500
    tune: bool = True
    trust_search_budget: float = 0.25
    prior_scale_grid: tuple = (0.3, 1.0, 3.0, 10.0)
    cases: tuple = CASES
    num_examples: int = 2200

    def __post_init__(self) -> None:
        """Refuse, when the config is made, cases and sizes ``make_synthetic`` would refuse
        only when their case is reached: a misspelt second case failed after the first had
        run (44 minutes at full size), and no cases at all wrote an empty metrics.json."""
        super().__post_init__()
        size = self.num_examples
        if isinstance(size, bool) or not (isinstance(size, Integral) and size >= 11):
            raise ValueError(f"num_examples must be an integer >= 11 (7:3:1 split), got {size!r}")
        cases = self.cases
        if not (isinstance(cases, tuple | list) and cases):
            raise ValueError(
                f"cases must be a non-empty tuple of (kind, num_classes), got {cases!r}"
            )
        for k, case in enumerate(cases):
            kind, classes = (
                tuple(case) if isinstance(case, tuple | list) and len(case) == 2 else (None, None)
            )
            fine_classes = isinstance(classes, Integral) and not isinstance(classes, bool)
            if kind not in SYNTHETIC_KINDS or not (fine_classes and classes >= 2):
                raise ValueError(
                    f"cases[{k}] must be (kind, num_classes) with kind one of {SYNTHETIC_KINDS} "
                    f"and num_classes an integer >= 2, got {case!r}"
                )

    @classmethod
    def smoke(cls, seed: int = 0) -> SyntheticConfig:
        return cls(
            seed=seed,
            map_steps=50,
            num_warmup=5,
            num_draws=5,
            num_chains=1,
            cases=CASES[:1],
            num_examples=440,
            **SMOKE_TUNING,
        )


def synthetic_problem(
    kind: str, num_classes: int, *, num_examples: int = 2200, seed: int = 0
) -> tuple[DistillationData, SyntheticData]:
    """The case's problem (named ``KIND_C``, its OOD set drawn by ``seed`` too) and the
    synthetic data it comes from."""
    data = make_synthetic(kind, num_classes, num_examples=num_examples, seed=seed)
    return data.distillation_data(ood_seed=seed), data


def _run_case(
    out: Path, kind: str, num_classes: int, config: SyntheticConfig, say: Callable[..., object]
) -> tuple[list[dict[str, Any]], str, dict[str, BaseException]]:
    """Run one case into ``out / KIND_C``; returns its rows, its part of table.md and the
    methods that failed (``run_baselines``'s ``artifacts["failures"]``)."""
    data, synthetic = synthetic_problem(
        kind, num_classes, num_examples=config.num_examples, seed=config.seed
    )
    bayes_accuracy = synthetic.bayes_accuracy
    say(
        f"[synthetic {data.name}] {len(data.y_train)} train, {len(data.y_test)} "
        f"test; Bayes accuracy on test {bayes_accuracy:.3f}"
    )

    def report(found: list[dict[str, Any]], artifacts: Mapping[str, Any]) -> Path | None:
        named = [{**r, "dataset": data.name} for r in found]
        return write_report(out / data.name, data, named, artifacts)

    rows, artifacts = run_baselines(data, config, say=say, report=report)
    rows = [{**r, "dataset": data.name} for r in rows]
    report(rows, artifacts)
    table = markdown_table(rows)
    (out / data.name / "coverage_by_probability.json").unlink(missing_ok=True)  # a former run's
    if MAIN in artifacts["summaries"]:
        breakdown = interval_coverage_by_probability(
            artifacts["summaries"][MAIN]["class_intervals"], synthetic.true_probs_test
        )
        write_json(out / data.name / "coverage_by_probability.json", breakdown)
        table += f"\n\n{MAIN}, coverage by true probability:\n\n" + _breakdown_table(breakdown)
    table = f"### {data.name}\n\nBayes accuracy on the test split: {bayes_accuracy:.3f}\n\n" + table
    return rows, table, artifacts["failures"]


def run_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    smoke: bool = False,
    seed: int = 0,
    say: Callable[..., object] = print,
    config: SyntheticConfig | None = None,
) -> list[dict[str, Any]]:
    """Run every case of ``config`` (default ``SyntheticConfig.for_run(smoke=, seed=)``); write
    one folder per case and a combined metrics.json / table.md."""
    config = config or SyntheticConfig.for_run(smoke=smoke, seed=seed)
    out = Path(out_dir)
    all_rows, tables, failures = [], [], {}
    try:
        for kind, num_classes in config.cases:
            rows, table, failed = _run_case(out, kind, num_classes, config, say)
            all_rows += rows
            tables.append(table)  # one per finished case, in the config's order
            failures.update({f"{kind}_{num_classes}: {label}": e for label, e in failed.items()})
    except BaseException as stop:  # KeyboardInterrupt: the finished cases are recorded too
        missing = [f"{k}_{c}" for k, c in config.cases[len(tables) :]]
        _write_combined(out, all_rows, tables, config, missing, stop)
        raise
    _write_combined(out, all_rows, tables, config)
    raise_failures(failures, out)
    return all_rows


def _write_combined(
    out: Path,
    rows: list[dict[str, Any]],
    tables: list[str],
    config: SyntheticConfig,
    missing: Sequence[str] = (),
    stop: BaseException | None = None,
) -> None:
    """The combined metrics.json, table.md and run.json of the cases finished; where the run
    was stopped (``stop``), ``run.json`` says ``"complete": false`` and lists the ``missing``
    cases (the one stopped among them: its folder holds its finished rows, marked partial),
    unless no case finished or ``out`` holds this run's complete outputs from before, which
    are kept (a note on ``stop`` says which)."""
    if stop is not None and (not rows or complete_run(out)):
        stop.add_note(f"{out}: no case finished, or its complete outputs from before are kept")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", rows)
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    record = {"provenance": run_provenance(config), "complete": stop is None}
    if stop is not None:
        record["missing_cases"] = list(missing)
        stop.add_note(f"the {len(rows)} row(s) of the finished cases were written to {out}")
    write_json(out / "run.json", record)


def _breakdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| true p | pairs | coverage | truth below | truth above |", "| --- |" + " ---: |" * 4]
    for k, r in enumerate(rows):
        close = "]" if k == len(rows) - 1 and r["high"] == 1.0 else ")"
        lines.append(
            f"| [{r['low']:g}, {r['high']:g}{close} | {r['count']} | {r['coverage']:.2f} | "
            f"{r['below']:.3f} | {r['above']:.3f} |"
        )
    return "\n".join(lines)


def _check_test_data(
    case_dir: Path, data: DistillationData, *, seed: int, num_examples: int
) -> None:
    """Refuse test data rebuilt otherwise than the run in ``case_dir`` built it (its
    ``predictions.npz``'s test-set digest; not checked for a run that saved none)."""
    saved = saved_digest(case_dir) if (case_dir / PREDICTIONS).is_file() else None
    if saved is None or saved == test_set_digest(data.x_test, data.y_test):
        return
    recorded = read_provenance(case_dir) or {}
    size = (recorded.get("config") or {}).get("num_examples")
    fixes = []
    if recorded.get("seed") is not None and recorded["seed"] != seed:
        fixes.append(f"--seed {recorded['seed']} (seed={recorded['seed']})")
    if size is not None and size != num_examples:
        smoke = recorded.get("smoke")
        flag = "--smoke" if smoke is True else "no --smoke" if smoke is False else ""
        fixes.append(f"{flag} (num_examples={size})".strip())
    fix = " and ".join(fixes) if fixes else "the run's --seed and --smoke"
    raise ValueError(
        f"{case_dir}: the test data rebuilt with seed={seed}, num_examples={num_examples} is not "
        f"the data the run was tested on (another test-set digest than its {PREDICTIONS}); "
        f"pass {fix}"
    )


def coverage_breakdown(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_examples: int = 2200,
    hidden: tuple[int, ...] = SyntheticConfig.hidden,
    activation: str = SyntheticConfig.activation,
) -> dict:
    """Coverage by true probability of the MT-BKD posteriors a finished run saved
    (``OUT/CASE/posterior.nc``); regenerates each case's test data from ``seed`` and its
    student from ``hidden`` and ``activation`` (a posterior sampled with another student is
    refused), and checks that test data against the digest the run saved in the case's
    ``predictions.npz``: data rebuilt with another ``seed`` or ``num_examples`` (the flags
    ``--seed`` and ``--smoke`` of ``python -m mtbkd_jax.experiments.synthetic``) is refused
    with a :class:`ValueError` that names what the run recorded."""
    from mtbkd_jax.experiments.fit import build_student
    from mtbkd_jax.infer.posterior import Posterior
    from mtbkd_jax.model import MTBKDModel
    from mtbkd_jax.uncertainty import predictive_summary

    out = {}
    for kind, num_classes in CASES:
        data, synthetic = synthetic_problem(kind, num_classes, num_examples=num_examples, seed=seed)
        path = Path(out_dir) / data.name / "posterior.nc"
        if not path.is_file():
            continue
        _check_test_data(path.parent, data, seed=seed, num_examples=num_examples)
        student = build_student(
            data, SyntheticConfig(seed=seed, hidden=hidden, activation=activation)
        )
        sampled = Posterior.load(path).settings.get("student")  # named first, then checked
        legacy = f"Student(MLP, name={student.name!r})"  # saved before the units were recorded
        if sampled not in (None, repr(student)) and not (
            sampled == legacy and activation == "tanh"
        ):
            raise ValueError(
                f"{path} was sampled with {sampled}, not {student!r}: pass the run's hidden "
                "and activation"
            )
        posterior = Posterior.load(path, logits_fn=MTBKDModel(student, None).logits)
        summary = predictive_summary(posterior, data.x_test)
        out[data.name] = interval_coverage_by_probability(
            summary["class_intervals"], synthetic.true_probs_test
        )
    return out


if __name__ == "__main__":  # python -m mtbkd_jax.experiments.synthetic OUT_DIR [--smoke]
    import argparse

    parser = argparse.ArgumentParser(description="coverage by true probability of a saved run")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    parser.add_argument("--smoke", action="store_true", help="the run was made with --smoke")
    args = parser.parse_args()
    size = SyntheticConfig.for_run(smoke=args.smoke).num_examples  # run_synthetic's size
    try:
        found = coverage_breakdown(args.out_dir, seed=args.seed, num_examples=size)
    except ValueError as error:  # a run made with other flags: one line, exit 2
        parser.exit(2, f"error: {error}\n")
    for name, rows in found.items():
        print(f"### {name}\n\n{_breakdown_table(rows)}\n")
