"""Two processes against one: SGLD steps/s on a (1 x 4) mesh over 4 CPU devices, held by one
process or split over two (issue 13).

The workload of ``mesh_scaling.py``: the reference head (MLP 320-128-10 relu, 2 random
teachers on the labelled inputs), one chain, a large minibatch (``--batch``, default 4,096),
``run_sgmcmc(mesh=jax.make_mesh((1, 4), ("chains", "data")), shard_data=True)``: each device
holds ``N / 4`` rows and evaluates ``|B| / 4`` of every stratified minibatch, one all-reduce of
the gradient per step. Two layouts of the same global mesh, each launched fresh:

* ``1 process x 4 devices``: ``jax_num_cpu_devices = 4``; the all-reduce stays in the process;
* ``2 processes x 2 devices``: two processes on 127.0.0.1 (a free port), each with
  ``jax_num_cpu_devices = 2``, joined by ``mtbkd_jax.infer.multiprocess.initialize`` (JAX's
  distributed runtime, gloo collectives over TCP); each supplies only its own rows of the
  inputs and labels (``multiprocess.local_rows`` / ``shard_rows``). The teacher bank is part
  of the model and is built whole in every process; ``run_sgmcmc`` places each process's
  blocks of it.

The one process takes its data through the same ``shard_rows`` call (there it holds every
row). Steps/s are steady state, from the posterior's ``chunk_seconds`` as in
``mesh_scaling.py``: the first chunk compiles and is dropped; the median and the range over the
other chunks (process 0's timings; the processes move in lockstep, process 1's are recorded
too). A chunk is ``--chunk-epochs`` epochs of ``--steps`` steps (default 8 x 25 = 200 steps,
``N = batch x steps`` rows). The ratio is two processes' median over one process's.

Time to the first draw, wall clock from the launch of the process(es) to the end of the first
chunk, in three parts: ``startup`` (interpreter, imports, ``initialize``, the synthetic data,
the model: up to the ``run_sgmcmc`` call), ``setup`` (inside ``run_sgmcmc`` before sampling
starts: placing the data, the checks) and ``first chunk`` (its compilation and its 200 steps).
No compilation cache is used. For two processes, the later of the two. ``--quick`` (tiny
chunks, 3 of them) is nearly all start-up and compilation: about 1 min on a shared 2-core
machine (66 s at load average 6-8).

    .venv/bin/python benchmarks/multiprocess_overhead.py              # ~2 min on 2 cores
    .venv/bin/python benchmarks/multiprocess_overhead.py --quick      # a dry run, ~1 min
    .venv/bin/python benchmarks/multiprocess_overhead.py --json out.json

On a single machine the two processes share its cores with each other; the figure measures the
cost of the distributed runtime (gloo over loopback TCP instead of in-process collectives, two
Python drivers), not of a network between hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEVICES = 4  # the global mesh (1 x 4)


def worker(args: argparse.Namespace) -> dict:
    """One process of a run (``--worker PROCESS_ID``): ``args.processes`` processes with
    ``4 / args.processes`` CPU devices each."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_num_cpu_devices", DEVICES // args.processes)
    sys.path.insert(0, str(HERE))
    import numpy as np
    from cases import reference_model, synthetic_reference_data

    import mtbkd_jax as mt
    from mtbkd_jax.infer import multiprocess

    if args.processes > 1:
        multiprocess.initialize(f"127.0.0.1:{args.port}", args.processes, args.worker)
    mesh = jax.make_mesh((1, DEVICES), ("chains", "data"))
    num_examples = args.batch * args.steps  # `steps` minibatches per epoch
    features, labels, teacher_logits = synthetic_reference_data(num_examples, seed=0)
    rows = multiprocess.local_rows(num_examples, mesh)  # this process's rows
    x = multiprocess.shard_rows(features[rows], mesh, num_examples)
    y = multiprocess.shard_rows(labels[rows], mesh, num_examples)
    del features, labels
    model = reference_model(teacher_logits)
    called = time.time()
    started = time.perf_counter()
    posterior = mt.run_sgmcmc(
        jax.random.key(7),
        model,
        x,
        y,
        sampler="sgld",
        step_size=1e-6,
        batch_size=args.batch,
        num_epochs=args.chunks * args.chunk_epochs,
        draws_per_epoch=1,
        chunk_epochs=args.chunk_epochs,
        progress_bar=False,
        mesh=mesh,
        shard_data=True,
    )
    run_seconds = time.perf_counter() - started
    timings = posterior.settings
    chunk_seconds = [(int(e), float(s)) for e, s in timings["chunk_seconds"]]
    rates = [e * args.steps / s for e, s in chunk_seconds[1:]]
    setup = run_seconds - float(timings["sampling_seconds"])
    finite = all(np.isfinite(np.asarray(v)).all() for v in posterior.draws.values())
    return {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "devices": jax.device_count(),
        "data_devices": int(timings["data_devices"]),
        "local_rows": [rows.start, rows.stop],
        "batch": args.batch,
        "num_examples": num_examples,
        "steps_per_chunk": args.steps * args.chunk_epochs,
        "chunk_seconds": chunk_seconds,
        "rates": rates,
        "steps_per_s": float(np.median(rates)),
        "startup_s": called - args.launched,
        "setup_s": setup,
        "first_chunk_s": chunk_seconds[0][1],
        "first_draw_s": called - args.launched + setup + chunk_seconds[0][1],
        "finite": bool(finite),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(processes: int, args: argparse.Namespace) -> dict:
    """Launch ``processes`` workers at once; their results, process 0 first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["JAX_PLATFORMS"] = "cpu"
    port, launched = str(_free_port()), repr(time.time())
    settings = ["--batch", str(args.batch), "--steps", str(args.steps), "--chunks",
                str(args.chunks), "--chunk-epochs", str(args.chunk_epochs)]  # fmt: skip
    settings += ["--processes", str(processes), "--port", port, "--launched", launched]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    workers = [
        subprocess.Popen([sys.executable, __file__, "--worker", str(i), *settings], **pipes)
        for i in range(processes)
    ]
    runs = []
    try:
        for i, process in enumerate(workers):
            out, err = process.communicate(timeout=1800)
            if process.returncode != 0:
                raise RuntimeError(f"worker {i} of {processes} failed:\n{err[-3000:]}")
            runs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    for run in runs:
        if not run["finite"] or run["devices"] != DEVICES or run["data_devices"] != DEVICES:
            raise RuntimeError(f"unexpected worker result {run}")
    first = runs[0]
    return {
        "processes": processes,
        "devices_per_process": first["local_devices"],
        "steps_per_s": first["steps_per_s"],
        "range": [min(first["rates"]), max(first["rates"])],
        "first_draw_s": max(r["first_draw_s"] for r in runs),
        "workers": runs,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096, help="minibatch size |B|")
    parser.add_argument("--steps", type=int, default=25, help="steps per epoch (N = batch x steps)")
    parser.add_argument("--chunk-epochs", type=int, default=8, help="epochs per timed chunk")
    parser.add_argument("--chunks", type=int, default=8, help="chunks; the first is dropped")
    parser.add_argument("--quick", action="store_true", help="a dry run: tiny chunks, 3 of them")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = worker(args)
        print(json.dumps(result))
        return result
    if args.quick:
        args.batch, args.steps, args.chunk_epochs, args.chunks = 256, 4, 2, 3

    runs = {
        "1 process x 4 devices": timed(1, args),
        "2 processes x 2 devices": timed(2, args),
    }
    one, two = runs["1 process x 4 devices"], runs["2 processes x 2 devices"]
    report = {
        "runs": runs,
        "ratio_2_processes": two["steps_per_s"] / one["steps_per_s"],
        "first_draw_ratio_2_processes": two["first_draw_s"] / one["first_draw_s"],
        "batch": args.batch,
        "steps_per_chunk": args.steps * args.chunk_epochs,
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
    }
    for name, run in runs.items():
        low, high = run["range"]
        print(
            f"{name:24s} {run['steps_per_s']:8.2f} steps/s (range {low:.1f}-{high:.1f}), "
            f"first draw after {run['first_draw_s']:.1f} s"
        )
    print(f"2 processes / 1 process, steady steps/s: {report['ratio_2_processes']:.2f}x")
    print(f"2 processes / 1 process, first draw:     {report['first_draw_ratio_2_processes']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
