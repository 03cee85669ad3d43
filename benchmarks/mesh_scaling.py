"""Data-parallel SG-MCMC on a device mesh: SGLD steps/s on 1 and on 2 CPU devices (issue 13).

The reference head (MLP 320-128-10 relu, 2 random teachers on the labelled inputs) with a large
minibatch (``--batch``, default 4,096), so that the per-device work dominates a step; one chain,
``run_sgmcmc(mesh=jax.make_mesh((1, D), ("chains", "data")))``: each device evaluates ``|B| / D``
examples of every minibatch, one all-reduce per step. Each device count runs in a fresh process
(the count is fixed when JAX starts), steady-state steps/s from ``chunk_seconds`` (the first
chunk compiles and is dropped), and the script reports the ratio of the medians. The 1-device
run is also timed without a mesh (today's default path), so the mesh's own overhead shows.

    .venv/bin/python benchmarks/mesh_scaling.py                 # ~2 min on 2 cores
    .venv/bin/python benchmarks/mesh_scaling.py --json out.json

What to expect on a 2-core CPU: XLA's CPU client gives each device its own thread pool, so one
device already parallelises a large matrix product over both cores; the ratio measures what
splitting the minibatch over devices adds to that, not 1 core against 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(devices: int, use_mesh: bool, batch: int, steps: int, chunks: int) -> dict:
    """One timed run in this process (``devices`` CPU devices; called with ``--worker``)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_num_cpu_devices", devices)
    sys.path.insert(0, str(HERE))
    import numpy as np
    from cases import reference_model, synthetic_reference_data

    import mtbkd_jax as mt

    num_examples = batch * steps  # `steps` minibatches per epoch; an epoch per chunk
    features, labels, teacher_logits = synthetic_reference_data(num_examples, seed=0)
    mesh = jax.make_mesh((1, devices), ("chains", "data")) if use_mesh else None
    posterior = mt.run_sgmcmc(
        jax.random.key(7),
        reference_model(teacher_logits),
        features,
        labels,
        sampler="sgld",
        step_size=1e-6,
        batch_size=batch,
        num_epochs=chunks,
        draws_per_epoch=1,
        chunk_epochs=1,
        progress_bar=False,
        mesh=mesh,
    )
    chunk_seconds = [(int(e), float(s)) for e, s in posterior.settings["chunk_seconds"]]
    rates = [e * steps / s for e, s in chunk_seconds[1:]]
    finite = all(np.isfinite(np.asarray(v)).all() for v in posterior.draws.values())
    return {
        "devices": len(jax.devices()),
        "mesh": use_mesh,
        "data_devices": int(posterior.settings["data_devices"]),
        "batch": batch,
        "num_examples": num_examples,
        "chunk_seconds": chunk_seconds,
        "steps_per_s": float(np.median(rates)),
        "rates": rates,
        "finite": bool(finite),
    }


def timed(devices: int, use_mesh: bool, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(devices),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--chunks",
        str(args.chunks),
    ] + ([] if use_mesh else ["--no-mesh"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"worker ({devices} devices) failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if not run["finite"] or run["devices"] != devices:
        raise RuntimeError(f"unexpected worker result {run}")
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096, help="minibatch size |B|")
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch (= per chunk)")
    parser.add_argument("--chunks", type=int, default=8, help="chunks; the first is dropped")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-mesh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = worker(args.worker, not args.no_mesh, args.batch, args.steps, args.chunks)
        print(json.dumps(result))
        return result

    runs = {
        "1 device, no mesh": timed(1, False, args),
        "1 device, mesh (1, 1)": timed(1, True, args),
        "2 devices, mesh (1, 2)": timed(2, True, args),
    }
    base = runs["1 device, mesh (1, 1)"]["steps_per_s"]
    report = {
        "runs": runs,
        "speedup_2_devices": runs["2 devices, mesh (1, 2)"]["steps_per_s"] / base,
        "mesh_overhead_1_device": runs["1 device, no mesh"]["steps_per_s"] / base,
        "cpu_count": os.cpu_count(),
    }
    for name, run in runs.items():
        print(f"{name:24s} {run['steps_per_s']:8.2f} steps/s  (chunks: {run['rates']})")
    print(f"2 devices / 1 device (both on a mesh): {report['speedup_2_devices']:.2f}x")
    print(f"1 device without a mesh / with one:   {report['mesh_overhead_1_device']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
