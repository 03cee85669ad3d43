"""Examples per second of :mod:`mtbkd_jax.streaming_metrics` (a jitted ``lax.scan`` of
``streaming_update`` over batches) against the float64 batch metrics of
:mod:`mtbkd_jax.metrics` on the same examples held at once, with the largest difference
between the two. Random softmax predictions of C classes. Command::

    .venv/bin/python benchmarks/streaming_metrics_speed.py --batches 250 --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from mtbkd_jax import metrics
from mtbkd_jax.streaming_metrics import streaming_compute, streaming_init, streaming_update

FIGURES = ("accuracy", "nll", "brier", "ece", "classwise_ece")


def _batch() -> dict:
    return {
        "accuracy": metrics.accuracy,
        "nll": metrics.negative_log_likelihood,
        "brier": metrics.brier_score,
        "ece": metrics.expected_calibration_error,
        "classwise_ece": metrics.classwise_calibration_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.batches, args.batch_size, args.classes)
    logits = rng.normal(0, 2, shape).astype(np.float32)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    labels = rng.integers(0, args.classes, shape[:2])

    @jax.jit
    def accumulate(all_probs, all_labels):
        def body(state, batch):
            return streaming_update(state, *batch), None

        return jax.lax.scan(body, streaming_init(args.classes), (all_probs, all_labels))[0]

    found = {"load_average_before": os.getloadavg()[0], "examples": int(np.prod(shape[:2]))}
    jax.block_until_ready(accumulate(probs[:2], labels[:2]))  # compile a short scan first
    start = time.perf_counter()
    state = jax.block_until_ready(accumulate(probs, labels))
    found["streaming_seconds"] = time.perf_counter() - start  # includes the full-length compile
    start = time.perf_counter()
    state = jax.block_until_ready(accumulate(probs, labels))
    found["streaming_seconds_compiled"] = time.perf_counter() - start
    streamed = streaming_compute(state)
    flat_probs, flat_labels = probs.reshape(-1, args.classes), labels.reshape(-1)
    start = time.perf_counter()
    batch = {name: f(flat_probs, flat_labels) for name, f in _batch().items()}
    found["batch_seconds"] = time.perf_counter() - start
    found["largest_difference"] = {k: abs(streamed[k] - batch[k]) for k in FIGURES}
    found["examples_per_second_streaming"] = found["examples"] / found["streaming_seconds_compiled"]
    found["examples_per_second_batch"] = found["examples"] / found["batch_seconds"]
    found["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(found, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(found, handle, indent=1)


if __name__ == "__main__":
    main()
