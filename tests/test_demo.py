"""The demo (the README's main command) runs end to end in its smoke setting (``--smoke``)."""

import json

import pytest
import xarray as xr

from mtbkd_jax.cli import main


@pytest.mark.slow
def _refuse(token):
    raise ValueError(f"metrics.json holds {token}, which is not JSON")


def test_demo_smoke_writes_its_outputs(tmp_path):
    """The demo's claims (docs/results.md) that already hold at the smoke settings (200 MAP
    steps, one NUTS chain of 30 draws): the teacher prior lowers the test NLL, by MAP and by
    NUTS, and the mean deviance. Measured over seeds 0..5, MT-BKD / student alone was
    0.50..0.68 for the MAP NLL, 0.48..0.53 for the NUTS NLL and 0.48..0.57 for the mean
    deviance; the bounds below (0.8, 0.8, 0.7) leave a margin of several seed-to-seed spreads.
    (Accuracy is not asserted: at these settings MT-BKD was below the student alone at seed 3.)
    """
    assert main(["demo", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())
    by_key = {(r["method"], r["inference"]): r for r in rows}
    assert len(by_key) == len(rows) == 9
    assert [r["inference"] for r in rows] == ["map"] * 6 + ["nuts"] * 3  # MAP rows first
    assert {method for method, _ in by_key} >= {
        "student alone",
        "averaged-teacher KD",
        "CA-MKD",
        "MT-BKD (entropy weights)",
        "MT-BKD (learned trust)",
    }
    assert any(method.startswith("single-teacher BKD (") for method, _ in by_key)
    for row in rows:
        assert set(row) >= {"method", "inference", "accuracy", "nll", "ece", "mean_deviance"}
    # each MAP row records its convergence (200 Adam steps, no polish at the smoke settings),
    # in strict JSON (a NaN would be written as the non-standard token NaN)
    strict = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=_refuse)
    for row in strict[:6]:
        assert isinstance(row["map_final_loss_change"], float)
        assert "map_polish_converged" not in row
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0
        assert (row["mean_deviance"] is None) == (row["inference"] == "map")
    for inference in ("map", "nuts"):
        student = by_key[("student alone", inference)]
        mt_bkd = by_key[("MT-BKD (entropy weights)", inference)]
        assert mt_bkd["nll"] < 0.8 * student["nll"], (inference, mt_bkd["nll"], student["nll"])
    student = by_key[("student alone", "nuts")]["mean_deviance"]
    mt_bkd = by_key[("MT-BKD (entropy weights)", "nuts")]["mean_deviance"]
    assert 0 < mt_bkd < 0.7 * student, (mt_bkd, student)

    tree = xr.open_datatree(tmp_path / "posterior.nc")
    assert "posterior" in tree.children and "sample_stats" in tree.children
    draws = tree["posterior"].dataset.sizes
    assert draws["chain"] == 1 and draws["draw"] == 30  # the smoke settings' one chain
    assert (tmp_path / "reliability.png").stat().st_size > 1000
    # the demo writes what every experiment writes (the same runner and report)
    for name in ("table.md", "teacher_weights.png", "deviance_by_class.png", "trace.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_demo_is_a_configuration_of_the_runner():
    """The demo's config differs from the runner's defaults only in what makes it the demo,
    and its smoke run only in its budget."""
    from dataclasses import fields

    from mtbkd_jax.demo import DemoConfig
    from mtbkd_jax.experiments import EXPERIMENTS, ExperimentConfig

    assert EXPERIMENTS["demo"].runner == "mtbkd_jax.demo:run_demo"
    full, smoke, base = DemoConfig(), DemoConfig.smoke(seed=3), ExperimentConfig()
    changed = {f.name for f in fields(base) if getattr(full, f.name) != getattr(base, f.name)}
    assert changed == {
        "methods",
        "teacher_rows",
        "num_warmup",
        "num_draws",
        "key_schedule",
        "chain_starts",
        "progress_bar",
        "map_steps",
        "map_polish_steps",
    }
    assert (full.map_steps, full.map_polish_steps, full.num_warmup, full.num_draws) == (
        6000,
        3000,
        400,
        400,
    )
    assert full.num_chains == 2
    assert (smoke.seed, smoke.map_steps, smoke.num_warmup, smoke.num_draws) == (3, 200, 30, 30)
    assert smoke.map_polish_steps == 0
    assert smoke.num_chains == 1 and not smoke.tune
    assert DemoConfig.for_run(smoke=True, seed=3) == smoke
