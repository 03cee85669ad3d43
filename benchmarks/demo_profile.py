"""Where the demo's time goes, on whatever device JAX runs on (issue 13): compilation or running.

Runs the demo in this process (``run_demo`` with its progress lines, as ``mtbkd demo`` runs it,
each line stamped with the seconds so far; without the CLI's persistent compilation cache, so
every program is compiled) with a listener on JAX's monitoring events, and reports:

* the wall time of the whole demo and of each method's row (the ``seconds`` of
  ``metrics.json``: for a NUTS row, the sampling from its MAP);
* the seconds JAX spent tracing, lowering to MLIR and compiling with XLA (the events
  ``/jax/core/compile/jaxpr_trace_duration``, ``.../jaxpr_to_mlir_module_duration`` and
  ``.../backend_compile_duration``), with how many programs were compiled, and the functions
  whose XLA compilation cost most (most of the programs are small eager operations, each
  compiled once per shape), and the call sites that compiled most: each compilation is put
  down to the innermost frame of the stack outside JAX (this package's code or a library's,
  e.g. NumPyro's eager initialisation), so a site with many small programs shows where
  eager work runs.

What is left of the wall time after compilation is running the programs (and the host's own
work: data, teachers, figures). A SIGTERM (``timeout``) stops the demo and still writes the
figures so far. Set ``TQDM_DISABLE=1`` to keep the progress bars out of a log (their host
callbacks still run). Run it on the CPU and on the accelerator (``device_check.sh``):

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/demo_profile.py --json cpu.json
    python3 benchmarks/demo_profile.py --json gpu.json        # on the device machine
    .venv/bin/python benchmarks/demo_profile.py --smoke       # a dry run, ~30 s
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

import jax
from jax import monitoring

COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "tracing",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering",
    "/jax/core/compile/backend_compile_duration": "xla_compile",
}


def call_site() -> str:
    """``file:line:function`` of the innermost frame outside JAX and this script: the code
    (ours or a library's) whose call compiled."""
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename
        outside = any(part in name for part in ("site-packages", "dist-packages", "mtbkd_jax"))
        if outside and "/jax/" not in name and "jaxlib" not in name:
            short = name.split("-packages/")[-1].split("src/")[-1]
            return f"{short}:{frame.lineno}:{frame.name}"
    return "?"


def profile_demo(out_dir: Path, smoke: bool) -> dict:
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    by_function: dict[str, list] = defaultdict(lambda: [0, 0.0])
    by_site: dict[str, list] = defaultdict(lambda: [0, 0.0])

    def listen(event: str, duration: float, **kwargs: object) -> None:
        if event in COMPILE_EVENTS:
            seconds[COMPILE_EVENTS[event]] += duration
            counts[COMPILE_EVENTS[event]] += 1
        if COMPILE_EVENTS.get(event) == "xla_compile":
            for entry in (by_function[str(kwargs.get("fun_name", "?"))], by_site[call_site()]):
                entry[0] += 1
                entry[1] += duration

    monitoring.register_event_duration_secs_listener(listen)
    from mtbkd_jax.demo import run_demo

    tick = time.perf_counter()

    def stamped(*args: object) -> None:  # the demo's progress lines, with the seconds so far
        print(f"[{time.perf_counter() - tick:7.1f} s]", *args, flush=True)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a time limit keeps the figures
    try:
        run_demo(out_dir, smoke=smoke, progress=True, say=stamped)
        status = "finished"
    except KeyboardInterrupt:
        status = "stopped by a time limit"
    wall = time.perf_counter() - tick
    done = status == "finished"
    rows = json.loads((out_dir / "metrics.json").read_text()) if done else []  # a list of rows
    compile_total = sum(seconds.values())
    return {
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
        "status": status,
        "wall_seconds": wall,
        "compile_seconds": dict(seconds),
        "compile_counts": dict(counts),
        "compile_share": compile_total / wall,
        "xla_compile_by_function": dict(  # the 25 costliest: name -> [programs, seconds]
            sorted(by_function.items(), key=lambda item: -item[1][1])[:25]
        ),
        "xla_compile_by_call_site": dict(  # the 25 with most programs: site -> [programs, s]
            sorted(by_site.items(), key=lambda item: -item[1][0])[:25]
        ),
        "rows": [
            {k: row.get(k) for k in ("method", "inference", "seconds", "accuracy", "nll")}
            for row in rows
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the demo's smoke run")
    parser.add_argument("--out", help="the demo's output folder (default: a temporary one)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report = profile_demo(Path(args.out or scratch), args.smoke)
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    print(text, end="")
    return report


if __name__ == "__main__":
    main()
