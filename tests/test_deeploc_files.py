"""DeepLoc's CSV files read by ``datasets/_deeploc_files.py``: a bad value is one error that
names its file, protein and column (it was "invalid literal for int() with base 10: '2.0'"),
a byte-order mark is not part of the first column's name, a location value other than 0/1 and
a teacher file of probabilities (read as logits, a silent wrong prior) are refused."""

from __future__ import annotations

import numpy as np
import pytest

from mtbkd_jax.datasets._deeploc_files import read_proteins, teacher_bank
from mtbkd_jax.datasets.deeploc import DEEPLOC_CLASS_NAMES, DEEPLOC_TEACHER_NAMES

HEADER = ["ACC", "Kingdom", "Sequence", "Label", *DEEPLOC_CLASS_NAMES]


def _table(path, rows, prefix=""):
    lines = [",".join(HEADER)] + [",".join(map(str, row)) for row in rows]
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _protein(label=2, locations=None):
    locations = locations or [int(i == label) for i in range(len(DEEPLOC_CLASS_NAMES))]
    return ["P1", "Eukaryota", "MKV", label, *locations]


def test_a_table_is_read_and_a_byte_order_mark_is_not_a_column_name(tmp_path):
    read = read_proteins(_table(tmp_path / "a.csv", [_protein(2), _protein(5)], "\ufeff"),
                         DEEPLOC_CLASS_NAMES)  # fmt: skip
    np.testing.assert_array_equal(read["y"], [2, 5])
    np.testing.assert_array_equal(read["localization_count"], [1, 1])
    assert read["accessions"] == ["P1", "P1"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_protein(2)[:3] + ["2.0"] + _protein(2)[4:],
         r"a.csv, protein 2, column Label: expected an integer, got '2.0'"),
        (_protein(2)[:5], r"protein 2, column .*: expected an integer, got None \(a row cut short"),
        (_protein(2, [0, 0, 7, 0, 0, 0, 0, 0, 0, 0]),
         r"protein 2, column .*: a location column holds 0 or 1, got 7"),
        # was "sequence_features: got an empty sequence", no file or row
        (_protein(2)[:2] + [" "] + _protein(2)[3:],
         r"a.csv, protein 2, column Sequence: the sequence is empty"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_file_protein_and_column(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        read_proteins(_table(tmp_path / "a.csv", [_protein(1), row]), DEEPLOC_CLASS_NAMES)


def test_a_label_that_is_not_one_of_the_proteins_locations_is_refused(tmp_path):
    """Location columns in another order than the labels' (or a Label off by one) were read
    without a word: each protein's label paired with another class's location column."""
    shifted = _protein(3, [int(i == 4) for i in range(len(DEEPLOC_CLASS_NAMES))])
    with pytest.raises(ValueError, match=r"protein 2: Label 3 \(Cell membrane\) is not one of "
                       r"its locations \['Mitochondrion'\] \(1 protein"):  # fmt: skip
        read_proteins(_table(tmp_path / "a.csv", [_protein(1), shifted]), DEEPLOC_CLASS_NAMES)
    both = _protein(3, [int(i in (0, 3)) for i in range(len(DEEPLOC_CLASS_NAMES))])
    read = read_proteins(_table(tmp_path / "b.csv", [both]), DEEPLOC_CLASS_NAMES)
    np.testing.assert_array_equal(read["localization_count"], [2])  # several locations: taken


def test_teacher_files_of_logits_are_read_and_of_probabilities_refused(tmp_path):
    logits = np.random.default_rng(0).normal(size=(4, len(DEEPLOC_CLASS_NAMES)))
    for name, values in (("a.csv", logits), ("b.csv", logits + 1)):
        np.savetxt(tmp_path / name, values, delimiter=",")
    bank = teacher_bank(tmp_path, ["a.csv", "b.csv"], False, 4, DEEPLOC_CLASS_NAMES,
                        DEEPLOC_TEACHER_NAMES)  # fmt: skip
    assert bank.names == DEEPLOC_TEACHER_NAMES and bank.num_examples == 4
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.savetxt(tmp_path / "p.csv", probs, delimiter=",")
    with pytest.raises(ValueError, match=r"p.csv holds probabilities .* write their logs"):
        teacher_bank(tmp_path, ["a.csv", "p.csv"], False, 4, DEEPLOC_CLASS_NAMES,
                     DEEPLOC_TEACHER_NAMES)  # fmt: skip


def test_a_broken_teacher_file_is_named():
    """A NaN, a word or a short row in a teacher file gave "logits must be finite ... at index
    (0, 5, 0)" or NumPy's "could not convert string 'abc'", naming no file."""
    import tempfile
    from pathlib import Path

    classes = len(DEEPLOC_CLASS_NAMES)
    rows = [",".join(["0.5"] * classes)] * 3
    for bad, message in (
        (",".join(["nan"] + ["0.5"] * (classes - 1)), r"b.csv: the logits must be finite, got a "
         r"NaN or infinity on line 3"),
        (",".join(["abc"] + ["0.5"] * (classes - 1)), r"b.csv: could not convert string"),
        (",".join(["0.5"] * (classes - 1)), r"b.csv: .*number of columns changed"),
    ):  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "a.csv").write_text("\n".join(rows + rows[:1]) + "\n")
            Path(folder, "b.csv").write_text("\n".join([*rows[:2], bad, rows[0]]) + "\n")
            with pytest.raises(ValueError, match=message):
                teacher_bank(Path(folder), ["a.csv", "b.csv"], False, 4, DEEPLOC_CLASS_NAMES,
                             DEEPLOC_TEACHER_NAMES)  # fmt: skip
