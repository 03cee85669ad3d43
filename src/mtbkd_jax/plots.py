"""Figures (this module and :mod:`mtbkd_jax.diagnostics` are the only ones importing
matplotlib / ArviZ)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import xarray as xr
    from arviz_plots import PlotCollection
    from matplotlib.figure import Figure

from mtbkd_jax.selective import reliability_bands

__all__ = [
    "reliability_diagram",
    "teacher_weights_figure",
    "deviance_by_group",
    "diagnostic_plots",
]


def _pyplot() -> ModuleType:
    # no matplotlib.use(...): in Jupyter that would replace the inline backend; on a machine
    # without a display matplotlib falls back to Agg by itself
    import matplotlib.pyplot as plt

    return plt


def _check_path(path: str | os.PathLike[str] | None, name: str = "path") -> None:
    """A folder given as the figure's path was written beside it, as ``<folder>.png``."""
    if path is not None and Path(path).is_dir():
        raise ValueError(f"{name} must be a file to write (e.g. figure.png), got a folder: {path}")


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def _check_curves(curves: Mapping[str, ArrayLike], labels: ArrayLike) -> None:
    """Each curve checked like a metric's input before anything is drawn, a refusal naming it
    (``curves['b']``); one whose number of rows differs from the labels' is blamed (the
    labels are shared: the message said ``labels must have shape (4,), got (5,)``)."""
    from mtbkd_jax.metrics import _check

    num_labels = np.shape(labels)[0] if np.ndim(labels) == 1 else None
    for name, probs in curves.items():
        curve = f"curves[{name!r}]"
        rows = np.shape(probs)[0] if np.ndim(probs) == 2 else None
        if num_labels is not None and rows is not None and rows != num_labels:
            raise ValueError(
                f"{curve} must have one row per label ({num_labels} labels), got {rows} rows "
                f"(shape {np.shape(probs)})"
            )
        _check(probs, labels, curve)


def reliability_diagram(
    curves: Mapping[str, ArrayLike],
    labels: ArrayLike,
    path: str | os.PathLike[str] | None = None,
    num_bins: int = 10,
    min_count: int = 5,
    *,
    bands: bool = True,
    level: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> Figure:
    """Accuracy against confidence per bin for several methods, with each bin's consistency bar
    and, in a panel below, its number of examples.

    A consistency bar (Bröcker & Smith, 2007; :func:`~mtbkd_jax.selective.reliability_bands`)
    is the range of accuracies a calibrated model would show in the bin given its examples'
    confidences: a point outside its bar is miscalibrated, one inside a wide bar may just be a
    small bin. (ArviZ's ``plot_ppc_pava`` draws PAV calibration with bands from predictive
    draws of the labels, one model and one class at a time; this figure works from the
    ``(N, C)`` probabilities of several methods at once.)

    Args:
        curves: ``{method name: predictive probabilities (N, C)}``.
        labels: true labels (N,).
        path: where to save the PNG (optional).
        num_bins: equal-width confidence bins (the last one closed on the right).
        min_count: bins with fewer examples are not drawn above (their accuracy is noise); the
            counts panel shows every bin.
        bands: draw the consistency bars.
        level: the bars' probability.
        num_resamples: simulated outcome sets per bar.
        seed: the bars' random seed (the figure is deterministic).

    Returns:
        The matplotlib figure: the reliability axes first, the counts axes (log scale) second.
    """
    from mtbkd_jax._checks import require_bin_count, require_count

    num_bins = require_bin_count(num_bins)  # before the bar width divides by it
    require_count(min_count, "min_count", 0)
    if not isinstance(curves, Mapping):
        raise TypeError(
            f"curves must be a dict of name -> (N, C) probabilities, got {type(curves).__name__}"
        )
    _check_path(path)
    _check_curves(curves, labels)
    plt = _pyplot()
    fig, (ax, counts_ax) = plt.subplots(
        2, 1, figsize=(5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    width = 1.0 / (num_bins * max(len(curves), 1))
    for m, (name, probs) in enumerate(curves.items()):
        found = reliability_bands(probs, labels, num_bins, num_resamples, level, seed)
        filled = found["count"] >= min_count
        conf, freq = found["confidence"][filled], found["frequency"][filled]
        (line,) = ax.plot(conf, freq, marker="o", ms=4, label=name)
        if bands:
            low, high = found["lower"][filled], found["upper"][filled]
            ax.vlines(conf, low, high, lw=4, alpha=0.3, color=line.get_color())
        left = found["edges"][:-1] + m * width
        counts_ax.bar(left, found["count"], width=width, align="edge", color=line.get_color())
    note = f"bins with >= {min_count} examples"
    if bands:
        note += f"; bars: {level:.0%} consistency under calibration"
    ax.text(0.98, 0.02, note, ha="right", fontsize=7)
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="Reliability diagram (test set)")
    ax.legend(fontsize=8, loc="upper left")
    counts_ax.set_yscale("symlog", linthresh=1)
    counts_ax.set(xlabel="confidence", ylabel="examples per bin", xlim=(0, 1), ylim=(0, None))
    fig.tight_layout()
    return _save(fig, path)


def teacher_weights_figure(
    weights: ArrayLike,
    entropies: ArrayLike,
    names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Per-example mixing weights against the teachers' entropies.

    Args:
        weights: (M, N) mixing weights.
        entropies: (M, N) teacher entropies (bits).
        names: the M teacher names.
        path: where to save the PNG (optional).

    Returns:
        The matplotlib figure.
    """
    weights, entropies = np.asarray(weights, np.float64), np.asarray(entropies, np.float64)
    if weights.ndim != 2 or entropies.shape != weights.shape or len(names) != weights.shape[0]:
        raise ValueError(
            f"weights and entropies must both have shape (M, N), one row per name of names, got "
            f"{weights.shape}, {entropies.shape} and {len(names)} names"
        )
    if not np.isfinite(weights).all() or weights.min() < 0 or weights.max() > 1 + 1e-6:
        raise ValueError("weights must be mixing weights in [0, 1] (they would not be drawn)")
    _check_path(path)
    plt = _pyplot()
    num_teachers = weights.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in range(num_teachers):
        axes[0].hist(weights[m], bins=30, range=(0, 1), alpha=0.5, label=names[m])
        axes[1].scatter(entropies[m], weights[m], s=4, alpha=0.4, label=names[m])
    axes[0].set(xlabel="weight w_m", ylabel="examples", title="Per-example teacher weights")
    axes[1].set(
        xlabel="teacher entropy H_m (bits)", ylabel="weight w_m", title="Weight against entropy"
    )
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def deviance_by_group(
    deviance: Mapping[str, ArrayLike],
    path: str | os.PathLike[str] | None = None,
    title: str = "Mean deviance by group",
) -> Figure:
    """Box plots of the mean deviance for each group ``{name: values}``."""
    if not isinstance(deviance, Mapping):
        raise TypeError(f"deviance must be a dict of name -> values, got {type(deviance).__name__}")
    groups = {name: np.asarray(values, np.float64) for name, values in deviance.items()}
    for name, array in groups.items():
        if array.ndim != 1:
            raise ValueError(f"deviance[{name!r}] must be a (N,) array, got shape {array.shape}")
        if not np.isfinite(array).all():  # one NaN made the group's box vanish, silently
            warnings.warn(
                f"deviance[{name!r}]: {int((~np.isfinite(array)).sum())} non-finite values "
                "left out of its box",
                UserWarning,
                stacklevel=2,
            )
            groups[name] = array[np.isfinite(array)]
    _check_path(path)
    plt = _pyplot()
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 4))
    ax.boxplot([groups[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="mean deviance", title=title)
    fig.tight_layout()
    return _save(fig, path)


def diagnostic_plots(
    tree: xr.DataTree,
    var_names: Sequence[str],
    trace_path: str | os.PathLike[str] | None = None,
    rank_path: str | os.PathLike[str] | None = None,
) -> dict[str, PlotCollection]:
    """ArviZ trace and rank plots of the chosen parameters, saved as PNG (the folders of both
    paths are made first)."""
    import arviz as az

    posterior = tree["posterior"] if "posterior" in tree.children else None
    if posterior is None or not var_names:
        raise ValueError("diagnostic_plots needs a tree with a posterior group and var_names")
    unknown = [name for name in var_names if name not in posterior.data_vars]
    if unknown:
        raise ValueError(
            f"var_names {unknown} are not in the posterior: {list(posterior.data_vars)}"
        )
    if rank_path is not None and posterior.sizes.get("chain", 1) < 2:  # before any file
        raise ValueError("rank plots compare chains: the tree has one chain (leave rank_path out)")
    for name, path in (("trace_path", trace_path), ("rank_path", rank_path)):
        _check_path(path, name)
    _pyplot()
    for path in (trace_path, rank_path):  # both folders before either figure is drawn
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, PlotCollection] = {}
    if trace_path is not None:
        pc = az.plot_trace_dist(tree, var_names=var_names, backend="matplotlib")
        pc.savefig(trace_path)
        out["trace"] = pc
    if rank_path is not None:
        pc = az.plot_rank(tree, var_names=var_names, backend="matplotlib")
        pc.savefig(rank_path)
        out["rank"] = pc
    return out
