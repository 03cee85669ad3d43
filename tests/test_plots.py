"""Figures (mtbkd_jax.plots): arguments checked before anything is drawn or written."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


@pytest.mark.parametrize("num_bins", [0, -1, 2.5, True])
def test_a_bad_bin_count_is_refused_before_a_figure_is_made(num_bins):
    """``num_bins=0`` used to fail with a ZeroDivisionError (the bar width divides by it), and
    the other bad counts after the figure was made."""
    import matplotlib.pyplot as plt

    from mtbkd_jax.plots import reliability_diagram

    probs, labels = np.array([[0.7, 0.3]] * 10), np.array([0] * 7 + [1] * 3)
    figures = plt.get_fignums()
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        reliability_diagram({"a": probs}, labels, num_bins=num_bins)
    assert plt.get_fignums() == figures


def test_diagnostic_plots_make_the_folders_of_both_paths(tmp_path):
    """The rank plot's folder used to be left to exist: a FileNotFoundError after the trace
    was written."""
    import matplotlib.pyplot as plt

    from mtbkd_jax.infer import Posterior
    from mtbkd_jax.plots import diagnostic_plots

    tree = Posterior({"w": np.random.default_rng(0).normal(size=(2, 50, 3))}).to_datatree()
    trace, rank = tmp_path / "out" / "t" / "trace.png", tmp_path / "out" / "r" / "rank.png"
    found = diagnostic_plots(tree, ["w"], trace_path=trace, rank_path=rank)
    assert set(found) == {"trace", "rank"}
    assert trace.stat().st_size > 0 and rank.stat().st_size > 0
    plt.close("all")
