"""compare_runs: rows of finished runs (their predictions.npz) paired on one test set."""

from __future__ import annotations

import numpy as np
import pytest

from mtbkd_jax.comparison import paired_bootstrap
from mtbkd_jax.experiments import compare_runs, comparison_table, load_predictions
from mtbkd_jax.experiments.compare import save_predictions


def _run(folder, seed, labels, inputs=None):
    rng = np.random.default_rng(seed)
    probs = {
        (name, inference): rng.dirichlet(np.ones(3), len(labels))
        for name, inference in (("KD", "map"), ("MT-BKD", "sgld"), ("MT-BKD", "map"))
    }
    folder.mkdir()
    save_predictions(folder / "predictions.npz", probs, labels, inputs)
    return probs


def test_saved_predictions_load_back_exactly(tmp_path):
    labels = np.array([0, 2, 1, 1])
    probs = _run(tmp_path / "a", 0, labels)
    loaded, loaded_labels = load_predictions(tmp_path / "a")
    assert list(loaded) == list(probs)
    for key in probs:
        np.testing.assert_array_equal(loaded[key], probs[key])
    np.testing.assert_array_equal(loaded_labels, labels)


def test_runs_are_stacked_and_compared_on_their_shared_test_set(tmp_path):
    labels = np.random.default_rng(9).integers(0, 3, 120)
    runs = [_run(tmp_path / f"seed{s}", s, labels) for s in range(3)]
    dirs = [tmp_path / f"seed{s}" for s in range(3)]
    found = compare_runs(dirs, ("MT-BKD", "sgld"), metrics=["nll", "ece"], num_resamples=300)
    assert [(f["against"], f["metric"]) for f in found] == [
        ("KD (map)", "nll"),
        ("KD (map)", "ece"),
        ("MT-BKD (map)", "nll"),
        ("MT-BKD (map)", "ece"),
    ]
    direct = paired_bootstrap(
        np.stack([r[("MT-BKD", "sgld")] for r in runs]),
        np.stack([r[("KD", "map")] for r in runs]),
        labels,
        "ece",
        num_resamples=300,
    )
    assert found[1] == {"row": "MT-BKD (sgld)", "against": "KD (map)"} | direct.as_dict()
    table = comparison_table(found)
    assert table.count("\n") == 5 and "| MT-BKD (sgld) | KD (map) | ece |" in table


def test_runs_on_different_test_sets_or_without_the_row_are_refused(tmp_path):
    labels = np.array([0, 1, 2, 0] * 3)
    _run(tmp_path / "a", 0, labels)
    _run(tmp_path / "b", 1, labels[::-1])
    with pytest.raises(ValueError, match="other test labels"):
        compare_runs([tmp_path / "a", tmp_path / "b"], ("KD", "map"))
    missing = r"row 'KD \(nuts\)' is not in the predictions of .*rows of .*KD \(map\)"
    with pytest.raises(ValueError, match=missing):
        compare_runs([tmp_path / "a"], ("KD", "nuts"))
    x = np.arange(24.0).reshape(12, 2)
    _run(tmp_path / "c", 2, labels, x)
    _run(tmp_path / "d", 3, labels, x + 1)
    _run(tmp_path / "e", 4, labels, x.copy())
    assert len(compare_runs([tmp_path / "c", tmp_path / "e"], ("KD", "map"), num_resamples=100))
    with pytest.raises(ValueError, match="other test inputs"):
        compare_runs([tmp_path / "c", tmp_path / "d"], ("KD", "map"))
    with pytest.raises(ValueError, match="other test inputs"):  # a digest against none
        compare_runs([tmp_path / "c", tmp_path / "a"], ("KD", "map"))
    with pytest.raises(FileNotFoundError, match="has no predictions.npz"):
        compare_runs([tmp_path], ("KD", "map"))
    with pytest.raises(ValueError, match="at least one run folder"):
        compare_runs([], ("KD", "map"))
