"""DeepLoc loader and sequence features (the data tests skip when the data folder is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from mtbkd_jax.datasets.deeploc import (
    DEEPLOC_CLASS_NAMES,
    DEEPLOC_FILES,
    deeploc_available,
    find_deeploc_dir,
    load_deeploc,
)
from mtbkd_jax.datasets.protein_features import (
    AMINO_ACIDS,
    FEATURE_GROUPS,
    feature_names,
    sequence_features,
)

# --------------------------------------------------------------------------- features


def _feature(sequences, name, groups=None):
    x, names = sequence_features(sequences, groups=groups)
    return x[:, names.index(name)]


def test_composition_sums_to_one_and_counts_by_hand():
    x, names = sequence_features(["ACDA", "mkkx"], groups=["composition"])
    assert names == [f"aa_{a}" for a in AMINO_ACIDS]
    assert x.shape == (2, 20) and x.dtype == np.float32
    np.testing.assert_allclose(x.sum(axis=1), 1.0, rtol=1e-6)
    assert x[0, AMINO_ACIDS.index("A")] == pytest.approx(0.5)
    # lower case is accepted and X takes no part in the composition
    assert x[1, AMINO_ACIDS.index("K")] == pytest.approx(2 / 3)


def test_c_terminal_motifs():
    body = "MSTNQGGSPEQ" * 4
    kdel = _feature([body + "KDEL", body + "HDEL", body + "KDEA"], "er_retention_kdel")
    np.testing.assert_array_equal(kdel, [1, 1, 0])
    pts1 = _feature([body + "SKL", body + "AHM", body + "CRL", body + "SKLA", body + "GKL"], "pts1")
    np.testing.assert_array_equal(pts1, [1, 1, 1, 0, 0])


def test_hydropathy_windows_poly_l_versus_poly_k():
    poly_l, poly_k = "L" * 40, "K" * 40
    tm = _feature([poly_l, poly_k], "tm_max_kd19")
    np.testing.assert_allclose(tm, [3.8, -3.9], rtol=1e-6)  # Kyte-Doolittle L and K
    signal = _feature([poly_l, poly_k], "signal_max_kd9")
    np.testing.assert_allclose(signal, [3.8, -3.9], rtol=1e-6)
    segments = _feature([poly_l, poly_k], "tm_log1p_segments")
    np.testing.assert_allclose(segments, [np.log(2.0), 0.0], rtol=1e-6)
    # one 20-residue hydrophobic helix inside a polar chain: one segment, a peak near 3.8
    helix = "S" * 50 + "L" * 20 + "S" * 50
    assert _feature([helix], "tm_log1p_segments")[0] == pytest.approx(np.log(2.0))
    assert _feature([helix], "tm_max_kd19")[0] == pytest.approx(3.8, rel=1e-6)


def test_nls_and_charges_by_hand():
    x, names = sequence_features(["MPKKKRKVEDSG" + "A" * 30])
    row = dict(zip(names, x[0], strict=True))
    assert row["log1p_nls_basic_run"] == pytest.approx(np.log(2.0))
    assert row["nterm_net_charge"] == pytest.approx(5 - 2)
    assert row["log_length"] == pytest.approx(np.log(42))


def test_every_group_is_finite_and_deterministic():
    sequences = ["M", "MK", "ACDEFGHIKLMNPQRSTVWY" * 3, "MXXXXUB", "MLLLLLLLLLLLLLLLLLLLLLLSKL"]
    a, names = sequence_features(sequences, groups=FEATURE_GROUPS)
    b, _ = sequence_features(list(sequences), groups=FEATURE_GROUPS)
    assert a.shape == (5, len(names)) and names == feature_names(FEATURE_GROUPS)
    assert len(set(names)) == len(names)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    default, default_names = sequence_features(sequences)
    assert 40 <= len(default_names) <= 150 and default.shape[1] == len(default_names)


def test_feature_argument_errors():
    with pytest.raises(TypeError, match="list of sequences"):
        sequence_features("MKT")
    with pytest.raises(ValueError, match="groups"):
        sequence_features(["MKT"], groups=["dipeptides"])
    with pytest.raises(ValueError, match="empty"):
        sequence_features(["MKT", ""])


# --------------------------------------------------------------------------- loader errors


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"seed": None}, TypeError, "seed must be an integer >= 0"),  # a new split every call
        ({"validation_size": 0.2}, TypeError, "validation_size must be an integer"),  # 500
        ({"validation_size": True}, TypeError, "validation_size must be an integer"),
        ({"feature_groups": "composition"}, TypeError, "feature_groups must be a sequence"),
    ],
)
def test_loader_arguments_are_named(tmp_path, change, error, message):
    with pytest.raises(error, match=message):  # before any file is read
        load_deeploc(tmp_path / "nowhere", **change)


def test_missing_path_raises_with_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_our_train_sample.csv") as info:
        find_deeploc_dir(tmp_path / "nowhere")
    assert all(name in str(info.value) for name in DEEPLOC_FILES)
    assert not deeploc_available(tmp_path)


def test_environment_variable_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBKD_DEEPLOC_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="MTBKD_DEEPLOC_DIR"):
        find_deeploc_dir()


# --------------------------------------------------------------------------- the data


needs_data = pytest.mark.skipif(
    not deeploc_available(), reason="DeepLoc data folder (../shared/data/deeploc) not found"
)


@pytest.fixture(scope="module")
def data():
    return load_deeploc()


@needs_data
def test_shapes_and_classes(data):
    assert data.class_names == DEEPLOC_CLASS_NAMES and data.num_classes == 10
    expected = {"train": 2000, "validation": 500, "test": 1000, "multilocation": 2000}
    for name, size in expected.items():
        split = getattr(data, name)
        assert split.x.shape == (size, data.num_features) and split.x.dtype == np.float32
        assert split.y.shape == (size,) and split.y.dtype == np.int32
        assert split.locations.shape == (size, 10)
        assert len(split.sequences) == len(split.accessions) == len(split.kingdoms) == size
        assert np.isfinite(split.x).all()
    for name in ("train", "validation", "test"):
        bank = getattr(data, name).teachers
        assert bank.names == ("esm2_650m", "prott5")
        assert (bank.num_teachers, bank.num_examples, bank.num_classes) == (
            2,
            expected[name],
            10,
        )
    assert data.multilocation.teachers is None
    assert data.localization_count.shape == (2000,)
    assert data.localization_count.min() == 2 and data.localization_count.max() == 5
    np.testing.assert_array_equal(data.localization_count, data.multilocation.locations.sum(1))
    for split in (data.train, data.validation, data.test):
        np.testing.assert_array_equal(split.localization_count, 1)


@needs_data
def test_labels_and_rows_are_aligned(data):
    folder = data.path
    train_logits = np.loadtxt(folder / "ESM_650M_probs_sample.csv", delimiter=",", skiprows=1)
    test_logits = np.loadtxt(folder / "T5_probs_test.csv", delimiter=",")
    for split, logits, teacher in (
        (data.train, train_logits, 0),
        (data.validation, train_logits, 0),
        (data.test, test_logits, 1),
    ):
        expected = logits[split.rows] - logits[split.rows].max(1, keepdims=True)
        expected -= np.log(np.exp(expected).sum(1, keepdims=True))
        np.testing.assert_allclose(
            np.asarray(split.teachers.log_probs[teacher]), expected, atol=1e-4
        )
        # the label is the one location column that is set
        np.testing.assert_array_equal(split.locations.argmax(1), split.y)
    # the train/validation rows point back into the training file, in the stored order
    first = data.train.rows[0]
    with open(folder / "data_our_train_sample.csv") as handle:
        line = handle.readlines()[first + 1]
    assert line.startswith(data.train.accessions[0] + ",")
    assert data.train.sequences[0] in line


@needs_data
def test_teacher_accuracies(data):
    y = data.test.y
    np.testing.assert_allclose(data.test.teachers.accuracy(y), [0.752, 0.761], atol=1e-3)
    assert data.test.teachers.average().accuracy(y)[0] == pytest.approx(0.766, abs=1e-3)


@needs_data
def test_split_is_reference_deterministic_and_disjoint(data):
    train, validation = data.train.rows, data.validation.rows
    assert len(np.intersect1d(train, validation)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(2500))
    # the reference's call: train_test_split(df, test_size=0.2, random_state=42)
    ref_train, ref_validation = train_test_split(np.arange(2500), test_size=0.2, random_state=42)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(validation, ref_validation)
    other = load_deeploc(seed=7, validation_size=300)
    assert (other.train.num_examples, other.validation.num_examples) == (2200, 300)
    assert len(np.intersect1d(other.train.rows, other.validation.rows)) == 0
    assert not set(other.validation.rows) <= set(validation)
    np.testing.assert_array_equal(other.test.rows, np.arange(1000))


@needs_data
def test_standardisation_uses_training_statistics(data):
    np.testing.assert_allclose(data.train.x.mean(0), 0.0, atol=1e-4)
    varying = data.feature_std != 1.0
    np.testing.assert_allclose(data.train.x.std(0)[varying], 1.0, rtol=1e-3)
    # validation and test are transformed with the training statistics, not their own
    raw, names = sequence_features(list(data.test.sequences))
    assert tuple(names) == data.feature_names
    np.testing.assert_allclose(
        data.test.x, (raw - data.feature_mean) / data.feature_std, rtol=1e-4, atol=1e-4
    )
    assert np.abs(data.validation.x.mean(0)).max() > 1e-3


@needs_data
@pytest.mark.slow
def test_deeploc_experiment_from_the_command_line_with_data(tmp_path):
    """``mtbkd experiment deeploc --smoke --data PATH``: the CLI reads the folder it is given
    and writes the experiment's rows (SGLD posteriors for the Bayesian rows)."""
    import json

    from mtbkd_jax.cli import main

    out = tmp_path / "out"
    folder = str(find_deeploc_dir())
    assert main(["experiment", "deeploc", "--smoke", "--data", folder, "--out", str(out)]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    methods = {(r["method"], r["inference"]) for r in rows}
    assert ("MT-BKD (entropy weights)", "sgld") in methods and ("averaged KD", "map") in methods
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0


@needs_data
def test_held_out_validation_splits_the_test_file_and_keeps_rows_aligned(data):
    """k test-file proteins become the validation split and the rest the test split: disjoint,
    together the whole file, the same draw every time, every field (teachers included) taken
    from the same proteins."""
    validation, test = data.held_out_validation(300)
    assert (validation.num_examples, test.num_examples) == (300, 700)
    assert len(np.intersect1d(validation.rows, test.rows)) == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([validation.rows, test.rows])), np.arange(1000)
    )
    again, _ = data.held_out_validation(300)
    np.testing.assert_array_equal(again.rows, validation.rows)
    for split in (validation, test):
        position = np.searchsorted(data.test.rows, split.rows)
        np.testing.assert_array_equal(split.y, data.test.y[position])
        np.testing.assert_array_equal(split.x, data.test.x[position])
        assert split.accessions == tuple(data.test.accessions[i] for i in position)
        np.testing.assert_array_equal(
            np.asarray(split.teachers.log_probs),
            np.asarray(data.test.teachers.log_probs)[:, position],
        )
    problem = data.distillation_data(validation_from_test=300)
    assert (problem.num_validation, len(problem.y_test), len(problem.y_train)) == (300, 700, 2000)
    np.testing.assert_array_equal(problem.y_validation, validation.y)
    np.testing.assert_array_equal(
        np.asarray(problem.teachers_validation.log_probs), np.asarray(validation.teachers.log_probs)
    )
    assert problem.ood_inputs.shape == problem.x_test.shape
    # the reference's problem carries the teachers on its validation split too
    reference = data.distillation_data()
    assert reference.teachers_validation.num_examples == reference.num_validation == 500
    # the teachers were trained on the training file: on its validation proteins they are
    # far more accurate than on the held-out test-file proteins
    held_out = problem.teachers_validation.accuracy(problem.y_validation)
    in_sample = reference.teachers_validation.accuracy(reference.y_validation)
    assert np.all(in_sample > held_out + 0.02)


@needs_data
@pytest.mark.parametrize("size", [0, 1000, -3, 2.5, True])
def test_held_out_validation_refuses_a_size_outside_the_test_file(data, size):
    with pytest.raises(ValueError, match=r"validation_from_test must be an integer in 1\.\.999"):
        data.held_out_validation(size)
