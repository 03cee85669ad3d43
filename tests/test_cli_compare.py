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
        (["--against", "KD (map)"], "--against needs --row"),
        (["--row", "KD (map)", "--json", "/no/such/folder/x.json"], "--json: the folder"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    runs = _runs(tmp_path, 1)
    assert main(["compare", *runs, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtbkd: error: ") and message in err and err.count("\n") == 1


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
