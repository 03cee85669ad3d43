"""Seconds per paired bootstrap comparison (one pair of rows, 2,000 resamples) by metric, and
for ECE and the classwise ECE the fixed-bin path (each resample's multiplicities times the
examples' gaps per bin) against scoring every resample in full (the same interval, checked).
Random predictors on N examples of C classes. Command::

    .venv/bin/python benchmarks/comparison_speed.py --size 10000 --classes 10
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from mtbkd_jax.comparison import METRICS, paired_bootstrap

# scored by multiplicities times per-bin gaps in fixed bins (the others: means of terms, or
# every resample in full)
BINNED = ("ece", "classwise_ece")


def _timed(a, b, y, metric):
    start = time.perf_counter()
    found = paired_bootstrap(a, b, y, metric)
    return time.perf_counter() - start, found


def _full_scoring(a, b, y, metric, num_resamples=2000, seed=0):
    """Every resample of paired_bootstrap's draw scored in full: seconds, (low, high)."""
    start = time.perf_counter()
    score = METRICS[metric]
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(y))  # paired_bootstrap's chunks of indices
    out = []
    for first in range(0, num_resamples, chunk):
        index = rng.integers(0, len(y), size=(min(chunk, num_resamples - first), len(y)))
        out += [score(a[i], y[i]) - score(b[i], y[i]) for i in index]
    low, high = np.quantile(out, [0.025, 0.975])
    return time.perf_counter() - start, (low, high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (args.size, args.classes))
    y = rng.integers(0, args.classes, args.size)
    a = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    b = np.exp(logits / 1.5) / np.exp(logits / 1.5).sum(-1, keepdims=True)
    found = {"load_average_before": os.getloadavg()[0], "seconds": {}}
    for metric in METRICS:
        seconds, fast = _timed(a, b, y, metric)
        found["seconds"][metric] = round(seconds, 2)
        if metric in BINNED:
            full_seconds, full = _full_scoring(a, b, y, metric)
            same = np.allclose([fast.low, fast.high], full, atol=1e-12, rtol=0)
            found["seconds"][f"{metric} (full scoring)"] = round(full_seconds, 2)
            found[f"{metric} same interval"] = bool(same)
        print(metric, found["seconds"], flush=True)
    found["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(found, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(found, handle, indent=1)


if __name__ == "__main__":
    main()
