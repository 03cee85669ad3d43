"""Streaming SG-MCMC (issue 13, part 3): data memory-mapped on disk, each chunk's rows gathered
on the host and transferred while the device runs the previous chunk.

A head of the reference's shape on ``--features`` inputs (MLP F-128-10 relu, default F = 64, no
teachers: a teacher bank built by ``MTBKDModel`` lives on the device, O(N)), SGLD, one chain,
batch ``--batch`` (default 256). Three runs, each in a fresh process (so that its peak resident
set is its own):

* ``resident``: N = ``--resident-n`` (10^6) rows in memory, today's device-resident path;
* ``streamed small``: the same N from a ``.npy`` file opened with ``np.load(mmap_mode="r")``,
  ``run_sgmcmc(stream=True, chunk_steps=--chunk-steps)``;
* ``streamed large``: N = ``--streamed-n`` (10^7) rows the same way (F = 64: 2.56 GB on disk).

Steps/s are steady state: the median over chunks after the first (which compiles). Memory:
the process's peak resident set (``VmHWM``) and, at the end, its anonymous and file-backed
parts (``RssAnon``, ``RssFile``: pages of a memory map count in the latter); device memory is
the peak of ``memory_stats()["peak_bytes_in_use"]`` where the backend reports it, else the
largest total of ``jax.live_arrays()`` sampled every 10 ms during the run (on a CPU, which
reports no memory statistics: the arrays Python holds, among them the next chunk's rows; the
rows of the chunk running, which only the runtime holds then, may be missed, so a streamed
run's peak can be up to one chunk's rows more). The files live in a temporary
directory, removed at the end.

    .venv/bin/python benchmarks/streaming.py                # ~10 min on 2 cores
    .venv/bin/python benchmarks/streaming.py --quick        # a dry run, well under a minute
    .venv/bin/python benchmarks/streaming.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUM_CLASSES, HIDDEN = 10, 128


def write_data(directory: Path, num_examples: int, features: int, seed: int = 0) -> None:
    """``x.npy`` (N, F) float32 ~ N(0, 1) and ``y.npy`` (N,) int32 labels of a random linear
    map, written a block at a time (no N-sized array in memory)."""
    import numpy as np
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((features, NUM_CLASSES), dtype=np.float32)
    x = open_memmap(directory / "x.npy", "w+", np.float32, (num_examples, features))
    y = open_memmap(directory / "y.npy", "w+", np.int32, (num_examples,))
    for start in range(0, num_examples, 1 << 18):
        stop = min(start + (1 << 18), num_examples)
        block = rng.standard_normal((stop - start, features), dtype=np.float32)
        x[start:stop] = block
        y[start:stop] = np.argmax(block @ mixing, axis=1)
    x.flush()
    y.flush()
    del x, y


def _memory_status() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) * 1024  # kB -> bytes
    return fields


def worker(kind: str, directory: str, args: argparse.Namespace) -> dict:
    """One timed run in this process (called with ``--worker``)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np
    from flax import nnx

    import mtbkd_jax as mt

    x = np.load(Path(directory) / "x.npy", mmap_mode="r")
    y = np.load(Path(directory) / "y.npy", mmap_mode="r")
    if kind == "resident":  # in memory, then copied to the device by run_sgmcmc
        x, y = np.array(x), np.array(y)
    device_peak, running = [0], [True]

    def sample_device_memory() -> None:  # every 10 ms: the device's bytes in use
        while running[0]:
            stats = jax.devices()[0].memory_stats()
            if stats and "peak_bytes_in_use" in stats:
                used = int(stats["peak_bytes_in_use"])
            else:
                used = sum(int(v.nbytes) for v in jax.live_arrays())
            device_peak[0] = max(device_peak[0], used)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample_device_memory, daemon=True)
    sampler.start()
    student = mt.Student(
        mt.MLP(x.shape[1], NUM_CLASSES, hidden=(HIDDEN,), activation="relu", rngs=nnx.Rngs(0))
    )
    model = mt.MTBKDModel(student)
    steps_per_epoch = x.shape[0] // args.batch
    streamed = kind != "resident"
    settings = dict(
        sampler="sgld", step_size=1e-7, batch_size=args.batch, draws_per_epoch=1,
        progress_bar=False,
    )  # fmt: skip
    if streamed:  # the large run's single epoch in chunks of --chunk-steps steps
        epochs = max(1, -(-args.chunk_steps * args.chunks // steps_per_epoch))
        settings.update(num_epochs=epochs, stream=True, chunk_steps=args.chunk_steps)
    else:  # epochs of the resident run as chunks (its chunks cannot end inside an epoch)
        settings.update(num_epochs=args.resident_epochs, chunk_epochs=1)
    started = time.perf_counter()
    posterior = mt.run_sgmcmc(jax.random.key(7), model, x, y, **settings)
    seconds = time.perf_counter() - started
    running[0] = False
    sampler.join()
    chunks = [
        (float(e) * steps_per_epoch, float(s)) for e, s in posterior.settings["chunk_seconds"]
    ]
    rates = [n / s for n, s in chunks[1:]]
    finite = all(np.isfinite(np.asarray(v)).all() for v in posterior.draws.values())
    return {
        "kind": kind,
        "num_examples": int(x.shape[0]),
        "features": int(x.shape[1]),
        "batch": args.batch,
        "steps_per_epoch": steps_per_epoch,
        "chunk_steps": [int(n) for n, _ in chunks],
        "steps_per_s": float(np.median(rates)),
        "rates": rates,
        "seconds": seconds,
        "device_peak_bytes": device_peak[0],
        "device_memory": "memory_stats" if jax.devices()[0].memory_stats() else "live arrays",
        "backend": jax.default_backend(),
        **_memory_status(),
        "finite": bool(finite),
    }


def timed(kind: str, directory: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--data", str(directory)]
    for name in ("batch", "chunk_steps", "chunks", "resident_epochs"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if not run["finite"]:
        raise RuntimeError(f"non-finite draws in {run}")
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resident-n", type=int, default=10**6)
    parser.add_argument("--streamed-n", type=int, default=10**7)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--chunk-steps", type=int, default=2000, help="steps per streamed chunk")
    parser.add_argument("--chunks", type=int, default=8, help="streamed chunks (first dropped)")
    parser.add_argument("--resident-epochs", type=int, default=4, help="first one dropped")
    parser.add_argument("--quick", action="store_true", help="a small dry run")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = worker(args.worker, args.data, args)
        print(json.dumps(result))
        return result
    if args.quick:
        args.resident_n, args.streamed_n, args.features = 20_000, 200_000, 16
        args.chunk_steps, args.chunks, args.resident_epochs = 200, 3, 3
    runs = {}
    with tempfile.TemporaryDirectory(prefix="mtbkd-stream-") as temp:
        for label, n in (("small", args.resident_n), ("large", args.streamed_n)):
            directory = Path(temp) / label
            directory.mkdir()
            write_data(directory, n, args.features)
            if label == "small":
                runs["resident"] = timed("resident", directory, args)
            runs[f"streamed {label}"] = timed(f"streamed-{label}", directory, args)
            for path in directory.iterdir():
                path.unlink()
    resident, large = runs["resident"], runs["streamed large"]
    report = {
        "runs": runs,
        "ratio_streamed_large_to_resident": large["steps_per_s"] / resident["steps_per_s"],
        "cpu_count": os.cpu_count(),
        "command": " ".join(["benchmarks/streaming.py", *(argv or sys.argv[1:])]),
    }
    mb = 2**20
    print(f"{'run':16s} {'N':>10s} {'steps/s':>9s} {'VmHWM MB':>9s} {'RssAnon':>8s} "
          f"{'RssFile':>8s} {'device MB':>9s}")  # fmt: skip
    for name, run in runs.items():
        print(
            f"{name:16s} {run['num_examples']:10d} {run['steps_per_s']:9.1f} "
            f"{run['VmHWM'] / mb:9.0f} {run['RssAnon'] / mb:8.0f} {run['RssFile'] / mb:8.0f} "
            f"{run['device_peak_bytes'] / mb:9.1f}"
        )
    print(f"streamed N={args.streamed_n} / resident N={args.resident_n}: "
          f"{report['ratio_streamed_large_to_resident']:.2f}x")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
