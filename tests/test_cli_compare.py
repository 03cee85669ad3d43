"""``mtbkd compare``: the rows of finished runs compared from the shell (its table is
compare_runs's, its errors one line with exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtbkd_jax._cli_compare import parse_row
from mtbkd_jax.cli import main
from mtbkd_jax.experiments import compare_runs, comparison_table
from mtbkd_jax.experiments.compare import save_predictions

ROWS = (("KD", "map"), ("MT-BKD (learned trust)", "sgld"), ("averaged KD", "map"))


def _runs(tmp_path, count=2):
    labels = np.random.default_rng(0).integers(0, 3, 150)
    folders = []
    for seed in range(count):
        rng = np.random.default_rng(seed + 1)
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        probs = {row: rng.dirichlet(np.ones(3), len(labels)) for row in ROWS}
        save_predictions(folder / "predictions.npz", probs, labels)
        folders.append(str(folder))
    return folders


def test_the_table_is_compare_runs_and_the_json_its_records(tmp_path, capsys):
    runs = _runs(tmp_path)
    out = tmp_path / "found.json"
    argv = ["compare", *runs, "--row", "MT-BKD (learned trust) (sgld)", "--against", "KD (map)"]
    argv += ["--metrics", "nll,ece", "--resamples", "200", "--seed", "3", "--json", str(out)]
    assert main(argv) == 0
    expected = compare_runs(
        runs,
        ("MT-BKD (learned trust)", "sgld"),
        [("KD", "map")],
        ["nll", "ece"],
        num_resamples=200,
        seed=3,
    )
    assert capsys.readouterr().out.strip() == comparison_table(expected)
    assert json.loads(out.read_text()) == expected


def test_json_never_overwrites_a_file_it_did_not_write(tmp_path, capsys):
    """``--json seed0/predictions.npz`` replaced the run's predictions with the comparison
    (exit 0); a file that is not a comparison ``--json`` wrote is refused, unchanged, and a
    comparison written before is rewritten."""
    runs = _runs(tmp_path, 1)
    argv = ["compare", *runs, "--row", "KD (map)", "--metrics", "nll", "--resamples", "100"]
    predictions = tmp_path / "seed0" / "predictions.npz"
    metrics = tmp_path / "seed0" / "metrics.json"
    metrics.write_text('{"KD (map)": {"nll": 1.0}}')
    for target in (predictions, metrics):
        before = target.read_bytes()
        assert main([*argv, "--json", str(target)]) == 2
        err = capsys.readouterr().err
        assert "is not a comparison mtbkd compare wrote" in err and str(target) in err
        assert target.read_bytes() == before
    found = tmp_path / "found.json"
    assert main([*argv, "--json", str(found)]) == 0
    assert main([*argv, "--json", str(found), "--seed", "1"]) == 0  # its own file: rewritten
    assert json.loads(found.read_text())[0]["row"] == "KD (map)"


def test_a_row_with_nothing_to_compare_it_with_is_an_error_not_an_empty_table(tmp_path, capsys):
    labels = np.zeros(20, int)
    save_predictions(tmp_path / "predictions.npz", {("KD", "map"): np.eye(3)[labels]}, labels)
    assert main(["compare", str(tmp_path), "--row", "KD (map)"]) == 2
    out, err = capsys.readouterr()
    assert "the runs hold no other row to compare it with" in err and out == ""


def test_without_a_row_the_rows_are_listed(tmp_path, capsys):
    runs = _runs(tmp_path, 1)
    assert main(["compare", *runs]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("3 rows, 150 test examples")
    assert [line.strip() for line in listed[1:]] == [f"{m} ({i})" for m, i in ROWS]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--row", "MT-BKD"], "must be written 'METHOD (INFERENCE)'"),
        (["--row", "MT-BKD (nuts)"], "row 'MT-BKD (nuts)' is not in the predictions"),
        (["--row", "KD (map)", "--metrics", "nll,f1"], "--metrics must be"),
        (["--row", "KD (map)", "--level", "95"], "--level must lie strictly between 0 and 1"),
        (["--row", "KD (map)", "--resamples", "10"], "--resamples must be at least 100"),
        (["--against", "KD (map)"], "--against: only with --row"),
        (["--metrics", "nll", "--json", "x.json"], "--metrics, --json: only with --row"),
        (["--row", "KD (map)", "--json", "/no/such/folder/x.json"], "--json: the folder"),
        (["--row", "KD (map)", "--json", "{tmp}"], "is a folder, expected a file name"),
        (["--row", "KD (map)", "--seed", "-1"], "--seed: must be a non-negative integer"),
        (["--row", "KD (map)", "--metrics", "nll,,nll"], "--metrics must be a comma-separated"),
        (["--row", "KD (map)", "--metrics", "nll,nll"], "list of distinct names"),
        (["{tmp}/seed0/.", "--row", "KD (map)"], "RUN: each run folder once"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_any_output(tmp_path, capsys, extra, message):
    runs = _runs(tmp_path, 1)
    extra = [part.replace("{tmp}", str(tmp_path)) for part in extra]
    assert main(["compare", *runs, *extra]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("mtbkd: error: ") and message in err and err.count("\n") == 1
    assert out == ""


def test_a_truncated_predictions_file_is_named_not_a_traceback(tmp_path, capsys):
    runs = _runs(tmp_path, 1)
    path = tmp_path / "seed0" / "predictions.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert main(["compare", *runs]) == 2
    err = capsys.readouterr().err
    assert "is not a readable predictions.npz" in err and str(path) in err


def test_runs_with_other_rows_are_listed_one_by_one(tmp_path, capsys):
    runs = _runs(tmp_path, 2)
    assert main(["compare", *runs]) == 0
    assert "(the same in the 1 other runs)" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    labels = np.zeros(5, int)
    save_predictions(other / "predictions.npz", {("KD", "map"): np.eye(3)[labels]}, labels)
    assert main(["compare", runs[0], str(other)]) == 0
    listed = capsys.readouterr().out
    assert f"3 rows, 150 test examples, in {runs[0]}:" in listed
    assert f"1 row, 5 test examples, in {other}:" in listed
    assert main(["compare", runs[0], str(tmp_path / "missing")]) == 2


def test_a_folder_without_predictions_is_named(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--row", "KD (map)"]) == 2
    assert f"run folder {str(tmp_path)!r} has no predictions.npz" in capsys.readouterr().err


_WORDS = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1).map(str.strip)


@given(
    method=_WORDS.filter(bool),
    inference=_WORDS.filter(lambda w: w and "(" not in w and ")" not in w),
)
def test_a_row_printed_as_the_tables_print_it_parses_back(method, inference):
    assert parse_row(f"{method} ({inference})") == (method, inference)
