"""The recipes in models/ run in their --smoke setting (as NumPyro's test_examples does)."""

import importlib.util
from pathlib import Path

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

        def point(self, chain, draw):
            return (chain, draw)

    assert module.typical_starts(Draws()) == [(0, -1), (1, -1), (0, 3), (1, 3)]
    with pytest.raises(ValueError, match="no nuts run precedes it"):
        module.main(["--smoke", "--runs", "sgld:1:240@nuts"])
