"""Figures (this module and :mod:`mtbkd_jax.diagnostics` are the only ones importing
matplotlib / ArviZ)."""

from __future__ import annotations

from pathlib import Path

from mtbkd_jax.metrics import reliability_bins

__all__ = ["reliability_diagram"]


def reliability_diagram(curves: dict, labels, path=None, num_bins: int = 10, min_count: int = 5):
    """Accuracy against confidence per bin for several methods.

    Args:
        curves: ``{method name: predictive probabilities (N, C)}``.
        labels: true labels (N,).
        path: where to save the PNG (optional).
        num_bins: equal-width confidence bins (the last one closed on the right).
        min_count: bins with fewer examples are not drawn (their accuracy is noise).

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for name, probs in curves.items():
        edges, counts, conf, acc = reliability_bins(probs, labels, num_bins)
        filled = counts >= min_count
        ax.plot(conf[filled], acc[filled], marker="o", ms=4, label=name)
    ax.text(0.98, 0.02, f"bins with >= {min_count} examples", ha="right", fontsize=7)
    ax.set(
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Reliability diagram (test set)",
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
