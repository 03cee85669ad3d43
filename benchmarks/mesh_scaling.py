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
    .venv/bin/python benchmarks/mesh_scaling.py --single-thread # XLA's single-thread flags
    .venv/bin/python benchmarks/mesh_scaling.py --pinned        # 1 core against 2, ~3 min

What to expect on a 2-core CPU: XLA's CPU client may spread one device's large matrix products
over both cores; the ratio then measures what splitting the minibatch over devices adds to
that, not 1 core against 2. ``--single-thread`` runs the workers with
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` (the first
is an XLA flag of the installed jaxlib: Eigen's matrix products on one thread; the second
token is accepted by XLA's flag parser but is no flag of it, and is kept because JAX's
documentation and issues pair the two), and times 1 device with the default threads, 1 device
and 2 devices single-threaded: the per-core scaling. Every run also reports its CPU time per
wall-clock second over the steady chunks (``cpu_per_wall``, from ``time.process_time`` sampled
every 50 ms; other processes on the machine lower it): about 1 for one busy thread, up to the
core count for more.

``--pinned`` measures per-core scaling by the operating system instead (the single-thread
flags of this jaxlib leave one device's CPU/wall near 1.8: XLA's CPU runtime still spreads
its work over both cores): the 1-device run is pinned to core 0 (``taskset -c 0``), the
2-device run has both cores, each ``--repeats`` times (default 2), in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class CpuClock:
    """``(wall, process CPU seconds)`` sampled every 50 ms in a thread, so that the CPU time
    of a window that ended just now (the steady chunks of a run) can be read afterwards."""

    def __init__(self) -> None:
        import threading
        import time

        self.samples: list[tuple[float, float]] = []
        self._running = True
        self._time = time

        def sample() -> None:
            while self._running:
                self.samples.append((time.perf_counter(), time.process_time()))
                time.sleep(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def cpu_per_wall(self, seconds: float) -> float:
        """Process CPU seconds per wall second over the last ``seconds`` (stops the clock)."""
        end = (self._time.perf_counter(), self._time.process_time())
        self._running = False
        self._thread.join()
        start = end[0] - seconds
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        t0, c0 = before[-1]
        return (end[1] - c0) / (end[0] - t0)


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
    clock = CpuClock()
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
    cpu_per_wall = clock.cpu_per_wall(sum(s for _, s in chunk_seconds[1:]))
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
        "cpu_per_wall": cpu_per_wall,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "finite": bool(finite),
    }


def timed(
    devices: int,
    use_mesh: bool,
    args: argparse.Namespace,
    single_thread: bool = False,
    cores: str | None = None,
) -> dict:
    env = dict(os.environ)
    if single_thread:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_FLAGS).strip()
    command = (
        ([] if cores is None else ["taskset", "-c", cores])
        + [
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
        ]
        + ([] if use_mesh else ["--no-mesh"])
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
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
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="per-core scaling: 1 device (default threads), 1 and 2 devices on one thread each",
    )
    parser.add_argument(
        "--pinned", action="store_true", help="1 device on core 0 only against 2 on both cores"
    )
    parser.add_argument("--repeats", type=int, default=2, help="--pinned: runs of each")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-mesh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = worker(args.worker, not args.no_mesh, args.batch, args.steps, args.chunks)
        print(json.dumps(result))
        return result

    if args.pinned:
        report = pinned_report(args)
    else:
        report = single_thread_report(args) if args.single_thread else default_report(args)
    for name, run in report["runs"].items():
        rates = ", ".join(f"{r:.1f}" for r in run["rates"])
        print(
            f"{name:40s} {run['steps_per_s']:8.2f} steps/s, CPU/wall "
            f"{run['cpu_per_wall']:.2f}  (chunks: {rates})"
        )
    for name, value in report["ratios"].items():
        print(f"{name}: {value:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def default_report(args: argparse.Namespace) -> dict:
    runs = {
        "1 device, no mesh": timed(1, False, args),
        "1 device, mesh (1, 1)": timed(1, True, args),
        "2 devices, mesh (1, 2)": timed(2, True, args),
    }
    base = runs["1 device, mesh (1, 1)"]["steps_per_s"]
    ratios = {
        "2 devices / 1 device (both on a mesh)": runs["2 devices, mesh (1, 2)"]["steps_per_s"]
        / base,
        "1 device without a mesh / with one": runs["1 device, no mesh"]["steps_per_s"] / base,
    }
    return {
        "runs": runs,
        "ratios": ratios,
        "speedup_2_devices": ratios["2 devices / 1 device (both on a mesh)"],
        "mesh_overhead_1_device": ratios["1 device without a mesh / with one"],
        "cpu_count": os.cpu_count(),
    }


def pinned_report(args: argparse.Namespace) -> dict:
    """1 device on core 0 alone against 2 devices on both cores, alternating."""
    runs = {}
    for repeat in range(args.repeats):
        runs[f"1 device, core 0 only, run {repeat + 1}"] = timed(1, True, args, cores="0")
        runs[f"2 devices, both cores, run {repeat + 1}"] = timed(2, True, args)
    one = np.median([r["steps_per_s"] for k, r in runs.items() if k.startswith("1 device")])
    two = np.median([r["steps_per_s"] for k, r in runs.items() if k.startswith("2 devices")])
    return {
        "runs": runs,
        "ratios": {"2 devices on 2 cores / 1 device on 1 core (medians)": float(two / one)},
        "cpu_count": os.cpu_count(),
    }


def single_thread_report(args: argparse.Namespace) -> dict:
    default, one, two = (
        "1 device, mesh (1, 1), default threads",
        "1 device, mesh (1, 1), single thread",
        "2 devices, mesh (1, 2), single thread",
    )
    runs = {
        default: timed(1, True, args),
        one: timed(1, True, args, single_thread=True),
        two: timed(2, True, args, single_thread=True),
    }
    rate = {name: run["steps_per_s"] for name, run in runs.items()}
    return {
        "runs": runs,
        "ratios": {
            "2 devices / 1 device, single thread each": rate[two] / rate[one],
            "1 device, single thread / default threads": rate[one] / rate[default],
            "2 devices single thread / 1 device default": rate[two] / rate[default],
        },
        "single_thread_flags": SINGLE_THREAD_FLAGS,
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
