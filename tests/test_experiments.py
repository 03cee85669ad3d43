"""The experiments run from the CLI in their smoke setting and write their outputs."""

import json

import pytest

from mtbkd_jax.cli import main
from mtbkd_jax.experiments import markdown_table


@pytest.mark.slow
def test_digits_experiment_smoke(tmp_path):
    assert main(["experiment", "digits", "--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())
    methods = {(r["method"], r["inference"]) for r in rows}
    expected = {
        ("teacher logreg", "teacher"),
        ("student alone", "map"),
        ("student alone", "nuts"),
        ("KD (forest)", "map"),
        ("BKD (forest)", "nuts"),
        ("averaged KD", "map"),
        ("MT-BKD (uniform weights)", "nuts"),
        ("MT-BKD (entropy weights)", "nuts"),
    }
    assert expected <= methods
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0 and row["ece"] >= 0
        assert (row["mean_deviance"] is None) == (row["inference"] in ("map", "teacher"))
    for name in (
        "reliability.png",
        "teacher_weights.png",
        "deviance_by_class.png",
        "trace.png",
        "posterior.nc",
        "table.md",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    assert tuning, "the digits experiment chooses its prior settings on validation"


def test_digits_validation_split_is_held_out_and_keeps_the_test_set():
    import numpy as np

    from mtbkd_jax.datasets import load_digits_distillation

    plain = load_digits_distillation(0)
    held = load_digits_distillation(0, num_transfer=300, num_validation=150)
    assert plain.x_validation is None and plain.y_validation is None
    assert held.x_validation.shape == (150, 64) and held.y_validation.shape == (150,)
    np.testing.assert_array_equal(held.x_test, plain.x_test)  # the same 397 test digits
    np.testing.assert_array_equal(held.x_train, plain.x_train)
    # the validation digits are the demo's last 150 transfer digits: no split sees them twice
    np.testing.assert_array_equal(held.x_validation, plain.x_transfer[300:])
    np.testing.assert_array_equal(held.x_transfer, plain.x_transfer[:300])
    assert held.teachers_prior.num_examples == 450  # labelled + transfer, not validation
    with pytest.raises(ValueError, match="num_validation"):
        load_digits_distillation(0, num_validation=-1)
    with pytest.raises(ValueError, match="less than 1797"):
        load_digits_distillation(0, num_validation=1000)


def test_markdown_table_formats_missing_and_nan():
    table = markdown_table(
        [
            {"method": "a", "inference": "map", "accuracy": 0.5, "nll": 1.0, "mean_deviance": None},
            {
                "method": "b",
                "inference": "nuts",
                "accuracy": 0.25,
                "nll": float("nan"),
                "mean_deviance": 0.1,
            },
        ]
    )
    lines = table.splitlines()
    assert lines[0].startswith("| method | inference | accuracy | NLL | mean dev.")
    assert "| a | map | 0.500 | 1.000 | – |" in lines
    assert "| b | nuts | 0.250 | nan | 0.100 |" in lines


@pytest.mark.slow
def test_synthetic_experiment_smoke_reports_coverage(tmp_path):
    assert main(["experiment", "synthetic", "--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())
    bayesian = [r for r in rows if r["inference"] == "nuts"]
    assert bayesian and all(0 <= r["coverage_95"] <= 1 for r in bayesian)
    assert all(r["dataset"] == "linear_2" for r in rows)
    assert (tmp_path / "linear_2" / "reliability.png").exists()
    # the coverage breakdown partitions the test pairs and pools to the row's coverage
    breakdown = json.loads((tmp_path / "linear_2" / "coverage_by_probability.json").read_text())
    main_row = next(r for r in bayesian if r["method"] == "MT-BKD (entropy weights)")
    pairs = sum(b["count"] for b in breakdown)
    pooled = sum(b["coverage"] * b["count"] for b in breakdown) / pairs
    assert abs(pooled - main_row["coverage_95"]) < 1e-9
    from mtbkd_jax.experiments.synthetic import coverage_breakdown

    again = coverage_breakdown(tmp_path, num_examples=440)["linear_2"]
    assert [b["count"] for b in again] == [b["count"] for b in breakdown]
    assert abs(sum(b["coverage"] * b["count"] for b in again) / pairs - pooled) < 1e-6
