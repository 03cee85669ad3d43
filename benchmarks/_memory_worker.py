"""One SGLD run of the reference head at a given N in a fresh process: step rate and memory.

Run by memory.py as ``python _memory_worker.py --n N --epochs E --chunk-epochs K --input I``;
prints one JSON line. ``--input device`` hands the sampler the data as a ``jax.Array`` (held
once); ``--input numpy`` as a NumPy array, which the sampler copies to the device once (XLA's CPU
client aliases only 64-byte-aligned buffers).

Memory: ``resource.getrusage`` peak RSS of this process (the whole run, including setup), plus
a 5 ms sampler of the current RSS (/proc/self/statm) giving the RSS before the
data exist, after the data exist, and the peak while the steady-state chunks run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024.0**2


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class RssSampler(threading.Thread):
    def __init__(self, period: float = 0.005):
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.running = True

    def run(self):
        while self.running:
            self.samples.append((time.perf_counter(), current_rss()))
            time.sleep(self.period)

    def peak_between(self, start: float, stop: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= stop]
        return max(inside) if inside else 0


def _args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True, help="epochs after the first chunk")
    parser.add_argument("--chunk-epochs", type=int, default=1)
    parser.add_argument(
        "--input",
        choices=["device", "numpy"],
        default="device",
        help="hand the sampler a jax.Array (the data held once) or a NumPy array (which the "
        "sampler copies to the device once)",
    )
    return parser.parse_args()


def _prior_bytes(model) -> int:
    import numpy as np

    prior = model.teacher_prior
    return (
        sum(
            np.asarray(a).nbytes
            for a in (prior.scaled_probs, prior.log_normalizer, prior.log_weights)
        )
        + np.asarray(model.teachers.log_probs).nbytes
    )


def _sample(model, features, labels, chunk_epochs: int, epochs: int):
    import jax

    import mtbkd_jax as mt

    return mt.run_sgmcmc(
        jax.random.key(0),
        model,
        features,
        labels,
        sampler="sgld",
        batch_size=64,
        step_size=1e-6,
        num_chains=1,
        num_epochs=chunk_epochs * (1 + max(1, epochs // chunk_epochs)),
        draws_per_epoch=1,
        chunk_epochs=chunk_epochs,
        progress_bar=False,
    )


def main() -> None:
    args = _args()

    import jax
    import numpy as np
    from cases import reference_model, synthetic_reference_data

    jax.block_until_ready(jax.numpy.zeros(1) + 1)
    sampler = RssSampler()
    sampler.start()
    rss_imports = current_rss()
    features, labels, teacher_logits = synthetic_reference_data(args.n, seed=0)
    model = reference_model(teacher_logits)
    del teacher_logits  # the model keeps the bank and the prior constants
    if args.input == "device":
        features = jax.block_until_ready(jax.device_put(features))
        labels = jax.block_until_ready(jax.device_put(labels))
    rss_data = current_rss()
    started = time.perf_counter()
    posterior = _sample(model, features, labels, args.chunk_epochs, args.epochs)
    finished = time.perf_counter()
    sampler.running = False
    sampler.join()
    chunks = posterior.settings["chunk_seconds"]
    steps_per_epoch = posterior.settings["steps_per_epoch"]
    steady = chunks[1:]
    # the steady chunks are the last ones of the sampling loop, which ends just before return
    steady_seconds = sum(s for _, s in steady)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    result = {
        "n": args.n,
        "input": args.input,
        "steps_per_epoch": steps_per_epoch,
        "epochs_timed": sum(e for e, _ in steady),
        "chunk_seconds": chunks,
        "steps_per_s": [e * steps_per_epoch / s for e, s in steady],
        "data_mb": (features.nbytes + labels.nbytes) / MB,
        "teacher_constants_mb": _prior_bytes(model) / MB,
        "rss_after_imports_mb": rss_imports / MB,
        "rss_with_data_mb": rss_data / MB,
        "rss_peak_setup_mb": sampler.peak_between(started, finished - steady_seconds) / MB,
        "rss_peak_steady_mb": sampler.peak_between(finished - steady_seconds - 0.05, finished) / MB,
        "peak_rss_mb": peak / MB,
        "run_seconds": finished - started,
        "finite": bool(all(np.isfinite(np.asarray(v)).all() for v in posterior.draws.values())),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
