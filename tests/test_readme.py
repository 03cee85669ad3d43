"""The README's code blocks run, in order, as a user would paste them (so they cannot drift)."""

import ast
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import mtbkd_jax

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_the_blocks_this_test_expects():
    blocks = _python_blocks()
    assert len(blocks) == 7, [b.splitlines()[0] for b in blocks]


def test_the_readme_uses_only_the_top_level_card_and_submodules():
    """Every ``mk.NAME`` in the blocks is on the card (``mtbkd_jax.__all__``) or a submodule:
    no name that left the top level (those still work, with a DeprecationWarning)."""
    used = {
        node.attr
        for block in _python_blocks()
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "mk"
    }
    assert used, "the blocks no longer use mk.NAME"
    assert not used - set(dir(mtbkd_jax)), sorted(used - set(dir(mtbkd_jax)))


@pytest.mark.slow
def test_the_readme_code_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the SG-MCMC block writes its checkpoint here
    namespace: dict = {}
    for number, block in enumerate(_python_blocks()):
        try:
            with warnings.catch_warnings():  # no spelling the package has deprecated
                warnings.filterwarnings(
                    "error", message=r"mtbkd_jax\..* is deprecated", category=DeprecationWarning
                )
                exec(compile(block, f"README.md block {number}", "exec"), namespace)
        except Exception as error:  # report which block broke
            raise AssertionError(f"README block {number} failed: {error!r}\n{block}") from error
    # what the blocks claim
    probs = np.asarray(namespace["probs"])
    assert probs.shape == (400, 1197, 10)
    assert np.isfinite(probs).all()
    assert "log_likelihood" in namespace["tree"].children
    assert (tmp_path / "run.ckpt.npz").exists()
    assert namespace["labels"].shape == (4 * 80 * 6, 1197)  # SG-MCMC's draws, all chains
    assert namespace["paper"].num_draws == 80 * 6
    samples = namespace["mcmc"].get_samples()  # the NumPyro adapter's 200 draws
    assert all(v.shape[0] == 200 and np.isfinite(v).all() for v in samples.values())
    assert int(namespace["state"].thermostat.size) == 1  # the kernel stepped on its own
    for name in ("mode", "post", "vi", "sg", "paper"):
        assert all(np.isfinite(v).all() for v in namespace[name].draws.values()), name
