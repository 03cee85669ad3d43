"""The demo (the README's main command) runs end to end in its quick setting."""

import json

import xarray as xr

from mtbkd_jax.cli import main


def test_demo_quick_writes_its_outputs(tmp_path):
    assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())
    methods = {(r["method"], r["inference"]) for r in rows}
    assert ("MT-BKD (entropy weights)", "nuts") in methods
    assert ("student alone", "map") in methods
    assert ("averaged-teacher KD", "map") in methods
    for row in rows:
        assert set(row) >= {"method", "inference", "accuracy", "nll", "ece", "mean_deviance"}
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0
        assert (row["mean_deviance"] is None) == (row["inference"] == "map")
    tree = xr.open_datatree(tmp_path / "posterior.nc")
    assert "posterior" in tree.children and "sample_stats" in tree.children
    assert (tmp_path / "reliability.png").stat().st_size > 1000
