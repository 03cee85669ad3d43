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


def test_bad_figure_inputs_are_named_before_anything_is_drawn_or_written(tmp_path):
    """Each used to fail inside matplotlib or ArviZ (an IndexError for too few names, 'list'
    has no 'items'), to write beside a folder given as the path (``<folder>.png``), to write
    the trace and then fail on a one-chain rank plot, or to drop weights out of [0, 1]."""
    import matplotlib.pyplot as plt

    from mtbkd_jax.infer import Posterior
    from mtbkd_jax.plots import (
        deviance_by_group,
        diagnostic_plots,
        reliability_diagram,
        teacher_weights_figure,
    )

    probs, labels = np.array([[0.7, 0.3]] * 10), np.array([0] * 7 + [1] * 3)
    weights, entropies = np.full((2, 5), 0.5), np.ones((2, 5))
    one_chain = Posterior({"w": np.zeros((1, 10, 2))}).to_datatree()
    figures = plt.get_fignums()
    cases = [
        (lambda: reliability_diagram([probs], labels), TypeError, "curves must be a dict"),
        (lambda: reliability_diagram({"a": probs}, labels, min_count=1.5), TypeError, "min_count"),
        (lambda: reliability_diagram({"a": probs}, labels, tmp_path), ValueError, "got a folder"),
        (lambda: teacher_weights_figure(weights, entropies, ["a"]), ValueError, "one row per name"),
        (lambda: teacher_weights_figure(weights.T, entropies, ["a", "b"]), ValueError, r"\(M, N\)"),
        (
            lambda: teacher_weights_figure(weights * 3, entropies, ["a", "b"]),
            ValueError,
            r"\[0, 1\]",
        ),
        (lambda: deviance_by_group([1.0, 2.0]), TypeError, "deviance must be a dict"),
        (lambda: diagnostic_plots(one_chain, []), ValueError, "var_names"),
        (lambda: diagnostic_plots(one_chain, ["v"]), ValueError, r"var_names \['v'\] are not"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert plt.get_fignums() == figures
    trace, rank = tmp_path / "trace.png", tmp_path / "rank.png"
    with pytest.raises(ValueError, match="rank plots compare chains"):
        diagnostic_plots(one_chain, ["w"], trace_path=trace, rank_path=rank)
    assert not trace.exists()  # nothing written before the refusal
    with pytest.warns(UserWarning, match=r"deviance\['b'\]: 1 non-finite values left out"):
        deviance_by_group({"a": [1.0, 2.0], "b": [1.0, np.nan, 3.0]})
    plt.close("all")


def test_a_curve_that_does_not_fit_is_named_before_a_figure_is_made():
    """A curve one row short was refused as 'labels must have shape (4,), got (5,)', rows not
    summing to 1 as 'probs rows must ...', neither naming the curve (found by a user-probe
    review); and the figure made before the refusal was left open."""
    import matplotlib.pyplot as plt

    from mtbkd_jax.plots import reliability_diagram

    labels = [0, 1, 0, 1, 0]
    good, short = np.full((5, 2), 0.5), np.full((4, 2), 0.5)
    unnormalised = np.full((5, 2), 0.6)
    three = np.full((5, 3), 1 / 3)
    figures = plt.get_fignums()
    cases = [
        ({"a": good, "b": short}, r"^curves\['b'\] must have one row per label \(5 labels\)"),
        ({"b": short}, r"^curves\['b'\] must have one row per label \(5 labels\), got 4 rows"),
        ({"a": good, "b": unnormalised}, r"^curves\['b'\] rows must sum to 1"),
        ({"a": good, "b": np.full(5, 0.5)}, r"^curves\['b'\] must have shape \(N, C\)"),
        ({"a": good, "b": np.full((5, 2), np.nan)}, r"^curves\['b'\] must be finite"),
    ]
    for curves, message in cases:
        with pytest.raises(ValueError, match=message):
            reliability_diagram(curves, labels)
    with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.1 \(curves\['b'\] has C = 2"):
        reliability_diagram({"a": three, "b": good}, [0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"^labels must have shape \(5,\), got \(5, 1\)"):
        reliability_diagram({"a": good}, np.zeros((5, 1), int))
    assert plt.get_fignums() == figures
    figure = reliability_diagram({"a": good, "b": three}, labels)  # fitting curves still draw
    plt.close(figure)
