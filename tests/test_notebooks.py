"""The notebooks run top to bottom in their smoke setting (MTBKD_SMOKE=1)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _deeploc_data_present() -> bool:
    """The notebook's own rule: $MTBKD_DEEPLOC_DIR if set, else ../../shared or ../shared
    (data/deeploc) relative to notebooks/."""
    from mtbkd_jax.datasets.deeploc import deeploc_available

    if os.environ.get("MTBKD_DEEPLOC_DIR"):
        return deeploc_available()
    return any(
        deeploc_available(NOTEBOOK_DIR / up / "shared" / "data" / "deeploc")
        for up in ("../..", "..")
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    if path.stem == "deeploc" and not _deeploc_data_present():
        pytest.skip("DeepLoc data absent (set MTBKD_DEEPLOC_DIR or see notebooks/deeploc.ipynb)")
    monkeypatch.setenv("MTBKD_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; strip them"
    )
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert os.environ["MTBKD_SMOKE"] == "1"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_spell_the_smoke_switch_as_the_rest(path):
    """One smoke switch: ``--smoke`` on the command lines, ``MTBKD_SMOKE=1`` for notebooks."""
    text = path.read_text()
    assert "MTBKD_SMOKE" in text and "QUICK" not in text
