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
