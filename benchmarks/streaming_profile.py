"""Where a streamed chunk's time goes (issue 13, part 3): the workload of
``benchmarks/streaming.py`` (MLP 64-128-10, SGLD, batch 256, N rows memory-mapped), one mode per
process, printing one JSON line.

Modes:

* ``resident``: the device-resident path on the same rows (in memory), 4 epochs;
* ``overlap``: the streamed run as users get it, with each chunk's host time (reading its rows
  and putting them on the device, on the prefetch thread: ``settings["chunk_read_seconds"]``);
* ``alloc``: fresh 16 MB and 131 MB arrays (``np.ones``), 30 of each: what faulting in new
  memory costs on this machine.

Steps/s: the median over the chunks after the first (which compiles).

    .venv/bin/python benchmarks/streaming_profile.py overlap            # N = 10^6, ~30 s
    taskset -c 0 .venv/bin/python benchmarks/streaming_profile.py resident   # on one core
    .venv/bin/python benchmarks/streaming_profile.py alloc
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from streaming import HIDDEN, NUM_CLASSES, write_data

MODES = ("resident", "overlap", "alloc")


def allocation_costs() -> dict:
    out = {}
    for megabytes in (16, 131):
        seconds = []
        for _ in range(30):
            start = time.perf_counter()
            array = np.ones(megabytes * 2**20 // 4, np.float32)
            seconds.append(time.perf_counter() - start)
            del array
        out[f"{megabytes} MB"] = {"median_s": float(np.median(seconds)), "max_s": max(seconds)}
    return out


def profile(mode: str, directory: Path, num_examples: int, chunk_steps: int) -> dict:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from flax import nnx

    import mtbkd_jax as mt

    x = np.load(directory / "x.npy", mmap_mode="r")
    y = np.load(directory / "y.npy", mmap_mode="r")
    if mode == "resident":
        x, y = np.array(x), np.array(y)
    student = mt.MLP(x.shape[1], NUM_CLASSES, hidden=(HIDDEN,), activation="relu",
                     rngs=nnx.Rngs(0))  # fmt: skip
    model = mt.MTBKDModel(mt.Student(student))
    steps_per_epoch = num_examples // 256
    settings = dict(sampler="sgld", step_size=1e-7, batch_size=256, draws_per_epoch=1,
                    progress_bar=False)  # fmt: skip
    if mode == "resident":
        settings.update(num_epochs=4, chunk_epochs=1)
    else:
        epochs = max(1, -(-chunk_steps * 8 // steps_per_epoch))
        settings.update(num_epochs=epochs, stream=True, chunk_steps=chunk_steps)
    posterior = mt.run_sgmcmc(jax.random.key(7), model, x, y, **settings)
    timings = posterior.settings
    chunks = [(float(e) * steps_per_epoch, float(s)) for e, s in timings["chunk_seconds"]]
    rates = [n / s for n, s in chunks[1:]]
    return {
        "mode": mode,
        "num_examples": num_examples,
        "steps_per_s": float(np.median(rates)),
        "rates": [round(r) for r in rates],
        "read_and_transfer_s": [round(v, 3) for v in timings["chunk_read_seconds"]],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--n", type=int, default=10**6, help="rows (F = 64)")
    parser.add_argument("--chunk-steps", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.mode == "alloc":
        result = {"mode": "alloc", **allocation_costs()}
    else:
        with tempfile.TemporaryDirectory(prefix="mtbkd-stream-profile-") as temp:
            write_data(Path(temp), args.n, 64)
            result = profile(args.mode, Path(temp), args.n, args.chunk_steps)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
