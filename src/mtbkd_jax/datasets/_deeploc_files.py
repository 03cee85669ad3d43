"""Reading DeepLoc's CSV files (:mod:`mtbkd_jax.datasets.deeploc`): the protein tables and the
teachers' logits, each bad value named with its file, row and column."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtbkd_jax.teachers import TeacherBank

__all__ = ["read_proteins", "teacher_bank"]


def read_proteins(file: Path, class_names: Sequence[str]) -> dict[str, np.ndarray | list[str]]:
    """A protein table: accessions, kingdoms, sequences, labels, 0/1 location columns and each
    protein's number of locations (``localization_count``, or the columns' sum)."""
    with file.open(newline="", encoding="utf-8-sig") as handle:  # a byte-order mark is not a name
        records = list(csv.DictReader(handle))
    if not records:
        raise ValueError(f"{file} holds no proteins")
    missing = [c for c in ("ACC", "Kingdom", "Sequence", "Label", *class_names)]
    missing = [c for c in missing if c not in records[0]]
    if missing:
        raise ValueError(f"{file} lacks the columns {missing}")
    for row, record in enumerate(records, start=1):  # else unnamed, in sequence_features
        if not (record["Sequence"] or "").strip():
            raise ValueError(f"{file}, protein {row}, column Sequence: the sequence is empty")
    locations = np.stack([_integers(file, records, c) for c in class_names], axis=1)
    if not np.isin(locations, (0, 1)).all():
        row, column = np.argwhere(~np.isin(locations, (0, 1)))[0]
        raise ValueError(
            f"{file}, protein {row + 1}, column {class_names[column]}: a location column holds "
            f"0 or 1, got {locations[row, column]}"
        )
    labels = _integers(file, records, "Label")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(f"{file}: Label outside 0..{len(class_names) - 1}")
    # the label is one of the protein's locations (the first, in DeepLoc's files): a table whose
    # location columns are in another order than the labels' would pair labels and columns wrongly
    wrong = np.flatnonzero(locations[np.arange(len(labels)), labels] != 1)
    if wrong.size:
        row = int(wrong[0])
        present = [c for c, v in zip(class_names, locations[row], strict=True) if v]
        raise ValueError(
            f"{file}, protein {row + 1}: Label {labels[row]} ({class_names[labels[row]]}) is not "
            f"one of its locations {present} ({wrong.size} protein(s) so); the location columns "
            "must be the classes in label order"
        )
    if "localization_count" in records[0]:
        count = _integers(file, records, "localization_count")
    else:
        count = locations.sum(axis=1).astype(np.int32)
    return {
        "accessions": [r["ACC"] for r in records],
        "kingdoms": [r["Kingdom"] for r in records],
        "sequences": [r["Sequence"] for r in records],
        "y": labels,
        "locations": locations,
        "localization_count": count,
    }


def _integers(file: Path, records: list[dict], column: str) -> np.ndarray:
    """One integer per protein from ``column``; a value that is not one is named."""
    values = []
    for row, record in enumerate(records, start=1):
        text = record.get(column)
        try:
            values.append(int(text))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"{file}, protein {row}, column {column}: expected an integer, got {text!r}"
                + (" (a row cut short?)" if text is None else "")
            ) from None
    return np.array(values, dtype=np.int32)


def _read_logits(file: Path, header: bool, num_rows: int, num_classes: int) -> np.ndarray:
    try:
        logits = np.loadtxt(file, delimiter=",", skiprows=1 if header else 0, ndmin=2)
    except ValueError as error:  # text where a number goes, a short row: name the file
        raise ValueError(f"{file}: {error}") from None
    if not np.isfinite(logits).all():
        row = int(np.argwhere(~np.isfinite(logits))[0][0]) + (2 if header else 1)
        raise ValueError(f"{file}: the logits must be finite, got a NaN or infinity on line {row}")
    if logits.shape != (num_rows, num_classes):
        raise ValueError(
            f"{file}: expected {num_rows} rows of {num_classes} logits (row-aligned "
            f"with the proteins), got shape {logits.shape}"
        )
    if ((logits >= 0) & (logits <= 1)).all() and np.allclose(logits.sum(axis=1), 1, atol=1e-3):
        raise ValueError(
            f"{file} holds probabilities (every row in [0, 1], summing to 1), where the loader "
            "reads logits (DeepLoc's files hold logits despite their names): write their logs"
        )
    return logits


def teacher_bank(
    folder: Path, files: Sequence[str], header: bool, num_rows: int,
    class_names: Sequence[str], teacher_names: Sequence[str],
) -> TeacherBank:  # fmt: skip
    """The teachers' logits, one file each, as a bank."""
    logits = np.stack([_read_logits(folder / f, header, num_rows, len(class_names)) for f in files])
    return TeacherBank.from_logits(logits, names=teacher_names)
