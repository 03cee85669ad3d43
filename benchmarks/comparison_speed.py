"""Seconds per paired bootstrap comparison (one pair of rows, 2,000 resamples) by metric, and
for ECE and the classwise ECE the bincount path against scoring every resample in full (the
same interval, checked). Random predictors on N examples of C classes. Command::

    .venv/bin/python benchmarks/comparison_speed.py --size 10000 --classes 10
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import mtbkd_jax.comparison as comparison


def _timed(a, b, y, metric):
    start = time.perf_counter()
    found = comparison.paired_bootstrap(a, b, y, metric)
    return time.perf_counter() - start, found


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
    for metric in comparison.METRICS:
        seconds, fast = _timed(a, b, y, metric)
        found["seconds"][metric] = round(seconds, 2)
        if metric in comparison._BINNED:
            saved = dict(comparison._BINNED)
            comparison._BINNED.clear()
            try:
                full_seconds, full = _timed(a, b, y, metric)
            finally:
                comparison._BINNED.update(saved)
            same = np.allclose([fast.low, fast.high], [full.low, full.high], atol=1e-12, rtol=0)
            found["seconds"][f"{metric} (full scoring)"] = round(full_seconds, 2)
            found[f"{metric} same interval"] = bool(same and fast.p_value == full.p_value)
        print(metric, found["seconds"], flush=True)
    found["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(found, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(found, handle, indent=1)


if __name__ == "__main__":
    main()
