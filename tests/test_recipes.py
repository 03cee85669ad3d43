"""The recipes in models/ run in their --smoke setting (as NumPyro's test_examples does)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

RECIPES = sorted((Path(__file__).parents[1] / "models").glob("*.py"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_smoke(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reason = getattr(module, "skip_reason", lambda: None)()  # recipes on outside data
    if reason:
        pytest.skip(reason)
    rows = module.main(["--smoke"])
    for metrics in rows.values():
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["nll"] > 0


def _recipe(name):
    path = Path(__file__).parents[1] / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trust_sgmcmc_recipe_options():
    """``--base-prior`` builds the prior it names; ``@nuts`` starts need a NUTS run first and
    take the last and the middle draw of each NUTS chain."""
    module = _recipe("synthetic_trust_sgmcmc")
    assert module.base_prior("learned").description["groups"] == "parameter"
    assert module.base_prior("learned:network").description["groups"] == "network"
    assert float(module.base_prior("2")("w", (3,)).scale) == 2.0

    class Draws:
        num_draws = 7
        num_chains = 2

        def point(self, chain=0, draw=0):
            return (chain, draw)

    assert module.typical_starts(Draws()) == [(0, -1), (1, -1), (0, 3), (1, 3)]
    Draws.num_chains = 1  # SVI's independent draws: the first four
    assert module.typical_starts(Draws()) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    with pytest.raises(ValueError, match="no nuts run precedes it"):
        module.main(["--smoke", "--runs", "sgld:1:240@nuts"])
    with pytest.raises(ValueError, match="no svi run precedes it"):
        module.main(["--smoke", "--runs", "nuts,sgld:1:240@svi"])
    with pytest.raises(ValueError, match="must start '@nuts', '@svi' or at the MAPs"):
        module.main(["--smoke", "--runs", "nuts,sgld:1:240@map"])


@pytest.mark.slow
def test_trust_sgmcmc_recipe_runs_sgmcmc_non_centred(capsys):
    """``--noncentred``: the SG-MCMC runs sample the non-centred model from the MAPs moved into
    its coordinates, and report the weights (the same arrays as NUTS's rows)."""
    module = _recipe("synthetic_trust_sgmcmc")
    rows = module.main(["--smoke", "--noncentred", "--runs", "nuts,ncsgld:1:240@nuts,sgld:1:240"])
    assert set(rows) == {"nuts", "ncsgld:1:240@nuts", "sgld:1:240"}
    for row in rows.values():
        assert list(row["array_norms"]) == list(rows["nuts"]["array_norms"])
        assert 0.0 <= row["coverage_95"] <= 1.0 and np.isfinite(row["weight_norm"])


def test_coverage_over_datasets_recipe_summary():
    """The band count and the standard error of the mean coverage, against hand figures; a
    malformed or empty ``--seeds`` is refused naming the option."""
    module = _recipe("synthetic_coverage_over_datasets")
    coverages = [0.90, 0.92, 0.95, 0.98, 0.981, 1.00]  # the band's edges count as inside
    result = module.summary(coverages)
    assert result["in_band"] == 3
    np.testing.assert_allclose(result["mean"], np.mean(coverages))
    np.testing.assert_allclose(
        result["standard_error"], np.std(coverages, ddof=1) / np.sqrt(len(coverages))
    )
    assert list(module.parse_seeds("3:6")) == [3, 4, 5]
    assert list(module.parse_seeds("4")) == [4]
    for bad in ("5:5", "a:b", "6:3"):
        with pytest.raises(ValueError, match="--seeds must be 'a:b'"):
            module.parse_seeds(bad)


def test_trust_sgmcmc_recipe_takes_the_students_architecture(monkeypatch, capsys):
    """``--hidden``/``--activation`` build the student they name, and with NUTS runs alone the
    step-size pilots (for SG-MCMC runs only) are not run."""
    module = _recipe("synthetic_trust_sgmcmc")

    def no_pilot(*args, **kwargs):
        raise AssertionError("the pilots ran for NUTS alone")

    monkeypatch.setattr(module, "pilot", no_pilot)
    rows = module.main(["--smoke", "--hidden", "4", "--activation", "relu", "--runs", "nuts"])
    assert "student 2-4-5 relu" in capsys.readouterr().out
    assert sorted(rows["nuts"]["array_norms"]) == [
        "layers.0.bias", "layers.0.kernel", "layers.1.bias", "layers.1.kernel"
    ]  # fmt: skip
    rows = module.main(["--smoke", "--hidden", "", "--runs", "nuts"])
    assert sorted(rows["nuts"]["array_norms"]) == ["layers.0.bias", "layers.0.kernel"]
