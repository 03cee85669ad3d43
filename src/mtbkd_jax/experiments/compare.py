"""Rows of finished runs compared on their test set: each run's ``predictions.npz`` (every
row's test probabilities, written by :func:`~mtbkd_jax.experiments.write_report`) and
:func:`~mtbkd_jax.comparison.paired_bootstrap` over the test examples.

Runs compared together must share one test set (the same labels, checked, and inputs): the
seeds of DeepLoc and Fashion-MNIST do (their test files are fixed), those of digits and the
synthetic cases do not (their splits follow the seed), so compare those one seed at a time.

Example (three seeds of DeepLoc)::

    from mtbkd_jax.experiments import compare_runs, comparison_table

    found = compare_runs(
        ["out/seed0", "out/seed1", "out/seed2"],
        ("MT-BKD (learned trust)", "sgld"),
        against=[("averaged KD", "map"), ("CA-MKD", "map")],
    )
    print(comparison_table(found))
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbkd_jax.comparison import paired_bootstrap

__all__ = [
    "PREDICTIONS",
    "compare_runs",
    "comparison_table",
    "load_predictions",
    "save_predictions",
    "saved_digest",
    "test_set_digest",
]

PREDICTIONS = "predictions.npz"
Row = tuple[str, str]  # (method, inference), as in metrics.json


def test_set_digest(inputs: Any, labels: Any) -> str:
    """SHA-256 of the test inputs and labels (their dtype, shape and bytes): two runs on one
    test set have the same digest."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(inputs), np.ascontiguousarray(labels)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_predictions(
    path: str | os.PathLike[str],
    probs: Mapping[Row, Any],
    labels: Any,
    inputs: Any | None = None,
) -> Path:
    """Write every row's test probabilities (``{(method, inference): (N, C)}``, as
    ``probs_000``, ``probs_001``, ... in the mapping's order, with ``methods`` and
    ``inferences`` naming each; an experiment writes them in its ``metrics.json``'s row order),
    the test labels and, with the test ``inputs``, their :func:`test_set_digest` to ``path`` (a
    compressed ``.npz`` that loads without pickle)."""
    rows = list(probs)
    arrays: dict[str, Any] = {
        f"probs_{k:03d}": np.asarray(probs[row], np.float64) for k, row in enumerate(rows)
    }
    arrays["labels"] = np.asarray(labels)
    arrays["methods"] = np.array([m for m, _ in rows], dtype=str)
    arrays["inferences"] = np.array([i for _, i in rows], dtype=str)
    if inputs is not None:
        arrays["test_digest"] = np.array(test_set_digest(inputs, labels))
    np.savez_compressed(path, **arrays)
    return Path(path)


def load_predictions(run_dir: str | os.PathLike[str]) -> tuple[dict[Row, np.ndarray], np.ndarray]:
    """``({(method, inference): test probabilities}, test labels)`` of a run folder (its
    test-set digest: :func:`saved_digest`).

    Raises:
        FileNotFoundError: the folder has no ``predictions.npz`` (runs before it was written
            have none).
        ValueError: the file is not one :func:`save_predictions` wrote (truncated, empty, or
            without its arrays).
    """
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} has no {PREDICTIONS}")
    try:
        with np.load(path, allow_pickle=False) as saved:
            rows = zip(saved["methods"].tolist(), saved["inferences"].tolist(), strict=True)
            probs = {(str(m), str(i)): saved[f"probs_{k:03d}"] for k, (m, i) in enumerate(rows)}
            return probs, saved["labels"]
    except (EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable {PREDICTIONS} (truncated, or not written by "
            f"save_predictions): {error}"
        ) from None


def saved_digest(run_dir: str | os.PathLike[str]) -> str | None:
    """The test-set digest a run folder's ``predictions.npz`` holds, or ``None``."""
    with np.load(Path(run_dir) / PREDICTIONS, allow_pickle=False) as saved:
        return str(saved["test_digest"]) if "test_digest" in saved.files else None


def _stacked_runs(
    runs: Sequence[tuple[dict[Row, np.ndarray], np.ndarray]], row: Row, run_dirs: Sequence[Any]
) -> np.ndarray:
    missing = [str(d) for (probs, _), d in zip(runs, run_dirs, strict=True) if row not in probs]
    if missing:
        rows = "; ".join(f"{m} ({i})" for m, i in runs[0][0])
        raise ValueError(
            f"row '{row[0]} ({row[1]})' is not in the predictions of {', '.join(missing)} (rows of "
            f"{str(run_dirs[0])!r}: {rows})"
        )
    return np.stack([probs[row] for probs, _ in runs])


def _check_same_experiment(run_dirs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse runs of different experiments or configs (but the seed), by their provenance
    records; warn about runs without one."""
    from mtbkd_jax.experiments.provenance import config_differences, read_provenance

    records = [read_provenance(d) for d in run_dirs]
    unknown = [str(d) for d, r in zip(run_dirs, records, strict=True) if r is None]
    if unknown and len(run_dirs) > 1:  # one run is not pooled with another
        warnings.warn(
            f"run_dirs: {', '.join(map(repr, unknown))} record no provenance (run.json of an "
            "older version): not checked to be runs of one experiment and config",
            stacklevel=3,
        )
    known = [(d, r) for d, r in zip(run_dirs, records, strict=True) if r is not None]
    for d, record in known[1:]:
        fields = config_differences(known[0][1], record)
        if fields:
            raise ValueError(
                f"run_dirs: {str(d)!r} is not a run of the experiment and config of "
                f"{str(known[0][0])!r} (they differ in {', '.join(fields)}); only seeds of "
                "one experiment and config are compared together"
            )


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    row: Row,
    against: Sequence[Row] | None = None,
    metrics: Sequence[str] = ("nll", "accuracy", "ece", "aurc"),
    *,
    level: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Row ``row`` against each row of ``against`` (default: every other row) on the runs'
    shared test set: per metric, the difference ``row - other`` of the metric's mean over the
    runs, with its paired bootstrap interval and p-value
    (:func:`~mtbkd_jax.comparison.paired_bootstrap`).

    Returns:
        One dict per (other row, metric): ``row``, ``against`` (``"method (inference)"``) and
        the fields of :class:`~mtbkd_jax.comparison.Difference`.

    Raises:
        ValueError: no run folders, runs on different test sets (other labels, or another
            :func:`test_set_digest` of the inputs), runs of different experiments or of configs
            that differ in more than the seed (their ``run.json`` provenance records; runs
            without one, written before it was, are compared with a warning), or a row
            missing from a run.
        FileNotFoundError: a run without ``predictions.npz``.
    """
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run folder")
    runs = [load_predictions(d) for d in run_dirs]
    _check_same_experiment(run_dirs)
    labels = runs[0][1]
    digest = saved_digest(run_dirs[0])
    for (_, their_labels), d in zip(runs[1:], run_dirs[1:], strict=True):
        same = their_labels.shape == labels.shape and np.array_equal(their_labels, labels)
        if not same or saved_digest(d) != digest:
            what = "test labels" if not same else "test inputs"
            raise ValueError(
                f"run_dirs: {str(d)!r} has other {what} than {str(run_dirs[0])!r}; "
                "a paired comparison needs one test set"
            )
    row = (str(row[0]), str(row[1]))
    if against is None:
        against = [r for r in runs[0][0] if r != row]
    ours = _stacked_runs(runs, row, run_dirs)
    found = []
    for given in against:
        other = (str(given[0]), str(given[1]))
        theirs = _stacked_runs(runs, other, run_dirs)
        for metric in metrics:
            difference = paired_bootstrap(
                ours, theirs, labels, metric, level=level, num_resamples=num_resamples, seed=seed
            )
            found.append(
                {"row": f"{row[0]} ({row[1]})", "against": f"{other[0]} ({other[1]})"}
                | difference.as_dict()
            )
    return found


def comparison_table(found: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of :func:`compare_runs`'s results: one line per (row, other row,
    metric), the difference, its interval, p-value and verdict (``row`` better, worse or
    level: :attr:`~mtbkd_jax.comparison.Difference.verdict`)."""
    lines = [
        "| row | against | metric | difference | interval | p | verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for f in found:
        level = f"{100 * f['level']:g}%"
        interval = f"{level} [{f['low']:+.4f}, {f['high']:+.4f}]"
        lines.append(
            f"| {f['row']} | {f['against']} | {f['metric']} | {f['estimate']:+.4f} | "
            f"{interval} | {f['p_value']:.3g} | {f['verdict']} |"
        )
    return "\n".join(lines)
