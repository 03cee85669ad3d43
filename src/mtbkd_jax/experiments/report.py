"""Writing a run's outputs: metrics.json (one row format for every experiment and the demo), a
markdown table, the MT-BKD posterior and figures."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtbkd_jax.experiments._json_files import write_json
from mtbkd_jax.experiments.compare import PREDICTIONS, save_predictions
from mtbkd_jax.experiments.methods import MAIN

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from mtbkd_jax.datasets.data import DistillationData

__all__ = [
    "ExperimentFailed",
    "INPUT_ERRORS",
    "REPORT_FILES",
    "complete_run",
    "markdown_table",
    "raise_failures",
    "write_partial",
    "write_report",
]

# the files write_report writes (removed first, so that none of an earlier run's stays)
REPORT_FILES = (
    "metrics.json",
    "table.md",
    PREDICTIONS,
    "tuning.json",
    "trust.json",
    "trust_fit.json",
    "search_unsampled.json",
    "exploration.json",
    "own_maps.json",
    "run.json",
    "failures.json",
    "reliability.png",
    "teacher_weights.png",
    "deviance_by_class.png",
    "deviance_by_group.png",
    "posterior.nc",
    "trace.png",
    "rank.png",
)

_COLUMNS = [
    ("method", "method"),
    ("inference", "inference"),
    ("settings", "σ0 / λ / β"),
    ("accuracy", "accuracy"),
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("brier", "Brier"),
    ("aurc", "AURC"),
    ("accuracy_at_90", "acc@90"),
    ("mean_deviance", "mean dev."),
    ("error_auroc_md", "AUROC(err, MD)"),
    ("ood_auroc_entropy", "OOD AUROC (H)"),
    ("ood_auroc_mi", "OOD AUROC (MI)"),
    ("coverage_95", "95% coverage"),
]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of the rows (columns present in any row; a missing or ``None`` value
    shows as "–"): the classification metrics, AURC and accuracy at 90% coverage (``acc@90``),
    the mean deviance and its error-detection AUROC, the OOD-detection AUROCs by predictive
    entropy (H) and mutual information (MI), and the 95% interval coverage."""
    columns = [(k, title) for k, title in _COLUMNS if any(k in r for r in rows)]
    lines = [
        "| " + " | ".join(t for _, t in columns) + " |",
        "| "
        + " | ".join("---" if k in ("method", "inference") else "---:" for k, _ in columns)
        + " |",
    ]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if value is None:
                cells.append("–")
            elif isinstance(value, float):
                cells.append("nan" if np.isnan(value) else f"{value:.3f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class ExperimentFailed(RuntimeError):
    """Some methods of an experiment failed; the others' results were written first."""


# errors of a method that come from its input or settings, not from a bug (the CLI's too)
INPUT_ERRORS = (ValueError, TypeError, FloatingPointError, OSError)


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def raise_failures(failures: Mapping[str, BaseException], out: object = None) -> None:
    """Raise :class:`ExperimentFailed` if ``failures`` (label -> exception:
    ``artifacts["failures"]`` of :func:`~mtbkd_jax.experiments.run_baselines`) is not empty,
    from the first failure that is a bug, else from the first; call it after the report is
    written. ``out``: where the report is, for the message."""
    if not failures:
        return
    listed = "; ".join(f"{label}: {_described(e)}" for label, e in failures.items())
    where = f" (the other methods' results are in {out})" if out is not None else ""
    # raised from the first that is a bug (not an error of the input), if any: its traceback
    bugs = [e for e in failures.values() if not isinstance(e, INPUT_ERRORS)]
    cause = bugs[0] if bugs else next(iter(failures.values()))
    raise ExperimentFailed(f"{len(failures)} method(s) failed{where}: {listed}") from cause


def write_partial(
    report: Callable[[list[dict[str, Any]], Any], object] | None,
    rows: list[dict[str, Any]],
    artifacts: Mapping[str, dict[Any, Any]],
    missing: Sequence[str],
    stop: BaseException,
) -> None:
    """Write the rows a run finished before ``stop`` escaped it (``report(rows, artifacts)``,
    its :func:`write_report`, which returns the folder), with ``run.json`` saying
    ``"complete": false`` and the ``missing`` methods; a note on ``stop`` says what was written
    where (or why nothing could be). ``report`` ``None`` (no output folder): nothing is
    written."""
    artifacts["run"].update(complete=False, missing=list(missing))
    if report is None:
        return
    try:
        where = report(rows, artifacts)
    except Exception as error:  # the interruption is what the caller reports
        stop.add_note(f"the finished rows could not be written: {_described(error)}")
        return
    if where is None:
        stop.add_note(
            "nothing was written: no method had finished, or the output folder holds this "
            "run's complete outputs from before, which are kept"
        )
        return
    stop.add_note(
        f"the {len(rows)} finished row(s) were written to {where}, marked partial (run.json: "
        f'"complete": false; missing methods: {", ".join(missing) or "none"})'
    )


def complete_run(out: Path) -> bool:
    """Whether ``out`` holds a run's complete outputs (its ``run.json`` says so)."""
    try:
        return json.loads((out / "run.json").read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def _write_failures(out: Path, errors: Mapping[str, BaseException]) -> None:
    """``failures.json`` (each failed method's error) and their list under ``table.md``."""
    failures = {label: _described(e) for label, e in errors.items()}
    write_json(out / "failures.json", failures)
    lines = [f"- {label}: {text}" for label, text in failures.items()]
    with (out / "table.md").open("a") as table_file:
        table_file.write("\nFailed methods (their other rows are above):\n\n")
        table_file.write("\n".join(lines) + "\n")


def _in_row_order(
    probs: Mapping[tuple[str, str], Any], rows: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, str], Any]:
    """``probs`` in the order of ``rows`` (metrics.json's and table.md's), any others after:
    ``predictions.npz``'s ``probs_000``, ``probs_001``, ... are then the table's rows."""
    order = [(row["method"], row["inference"]) for row in rows]
    ordered = {key: probs[key] for key in order if key in probs}
    return ordered | {key: value for key, value in probs.items() if key not in ordered}


def write_report(
    out_dir: str | os.PathLike[str],
    data: DistillationData,
    rows: Sequence[Mapping[str, Any]],
    artifacts: Mapping[str, Mapping[Any, Any]],
    *,
    extra_rows: Sequence[Mapping[str, Any]] | None = None,
    groups: Mapping[str, ArrayLike] | None = None,
) -> Path | None:
    """Write metrics.json, table.md, predictions.npz (every row's test probabilities, for
    :func:`~mtbkd_jax.experiments.compare_runs`), posterior.nc and the figures into
    ``out_dir``; a partial run's (``artifacts["run"]["complete"]`` false) rows are not written
    (``None`` is returned) where there are none, or where ``out_dir`` holds a complete earlier
    run (the same run's: another's is refused before it starts), which they would replace by a
    part of itself.

    ``data`` is the run's :class:`~mtbkd_jax.datasets.DistillationData` and ``rows`` and
    ``artifacts`` what :func:`~mtbkd_jax.experiments.run_baselines` returned for it. The files
    it writes are removed first, so that none of an earlier run's (``failures.json`` after a
    clean rerun, say) stays beside the new ones.
    """
    from mtbkd_jax.plots import (
        deviance_by_group,
        diagnostic_plots,
        reliability_diagram,
        teacher_weights_figure,
    )
    from mtbkd_jax.weighting import teacher_weights

    out = Path(out_dir)
    if artifacts.get("run", {}).get("complete") is False and (not rows or complete_run(out)):
        return None
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    write_json(out / "metrics.json", rows)
    table = markdown_table(rows)
    if extra_rows:
        table += "\n\n" + markdown_table(extra_rows)
    (out / "table.md").write_text(table + "\n")
    if artifacts.get("test_probs"):  # every row's test probabilities, for compare_runs
        probs = _in_row_order(artifacts["test_probs"], rows)
        save_predictions(out / PREDICTIONS, probs, data.y_test, data.x_test)
    if artifacts.get("tuning"):
        write_json(out / "tuning.json", artifacts["tuning"])
    for name in ("trust", "trust_fit", "search_unsampled", "exploration", "own_maps", "run"):
        if artifacts.get(name):
            write_json(out / f"{name}.json", artifacts[name])
    if artifacts.get("failures"):
        _write_failures(out, artifacts["failures"])
    if artifacts["curves"]:  # none in a run interrupted before its first such row
        reliability_diagram(artifacts["curves"], data.y_test, out / "reliability.png")
    bank = data.teachers_prior
    teacher_weights_figure(
        teacher_weights(bank, "paper"), bank.entropies(), bank.names, out / "teacher_weights.png"
    )
    if MAIN in artifacts["summaries"]:
        deviance = artifacts["summaries"][MAIN]["mean_deviance"]
        by_class = {f"class {c}": deviance[data.y_test == c] for c in np.unique(data.y_test)}
        deviance_by_group(
            by_class,
            out / "deviance_by_class.png",
            title="MT-BKD mean deviance by true class (test)",
        )
        if groups:
            deviance_by_group(
                groups, out / "deviance_by_group.png", title="MT-BKD mean deviance by group"
            )
        posterior = artifacts["posteriors"][MAIN]
        posterior.save(out / "posterior.nc")
        tree = posterior.to_datatree(log_likelihood=False)
        names = [n for n in tree["posterior"].data_vars if n.endswith("bias")]
        last = sorted(names)[-1:]
        if last and posterior.num_draws > 3:
            rank = out / "rank.png" if posterior.num_chains > 1 else None  # needs 2+ chains
            diagnostic_plots(tree, last, out / "trace.png", rank)
    return out
