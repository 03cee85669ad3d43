"""Throughput and memory benchmark of mtbkd_jax's samplers on the CPU (issue 3).

    .venv/bin/python benchmarks/bench.py --out DIR [--smoke] [--write-docs docs/benchmarks.md]

Writes DIR/bench.json (every figure, every repeat, the machine) and DIR/table.md, and prints the
table. All ratios come from this one run. What each figure is and how it is computed is
described in docs/benchmarks.md ("How each figure is measured") and in the section modules:

* ``machine.py``: the machine, versions, git state and the load other processes put on it;
* ``cases.py``: the two students and their gradient estimators (public API);
* ``sgmcmc_speed.py`` / ``sgmcmc_figures.py`` / ``floors.py`` / ``chains_speed.py``:
  sgld_vs_floor, floor layouts, epoch shuffles, teacher-prior overhead, several chains;
* ``nuts_speed.py``: NUTS against bare full-batch gradients;
* ``adapter_speed.py``: the NumPyro adapter ``MCMC(SGMCMC(...))`` against ``run_sgmcmc``;
* ``torch_compare.py`` (+ ``torch_sgld.py``): the same SGLD step in PyTorch;
* ``memory.py`` (+ ``_memory_worker.py``): memory and step time at N = 10^4 and 10^6;
* ``report.py``: the table, and the docs' results section.

Timing protocol: everything is timed in steady state (compilation excluded) with
block_until_ready. Because other processes may share the two cores, the sampler and its
reference loop are measured in interleaved rounds (sampler run, then its reference loops, then
the next round), each figure is the median over all repeats, and the spread (min..max of the
per-round ratios) is reported with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapter_speed import guarded_bench_adapter  # noqa: E402
from cases import digits_case, reference_case  # noqa: E402
from floors import STEP_SIZE  # noqa: E402
from machine import QUIET, BackgroundLoad, log, machine_info  # noqa: E402
from memory import bench_memory, derive_memory  # noqa: E402
from nuts_speed import bench_nuts  # noqa: E402
from report import table, write_docs  # noqa: E402
from sgmcmc_speed import bench_sgld  # noqa: E402
from torch_compare import TorchComparison, torch_summary  # noqa: E402

SECTIONS = ("nuts", "adapter", "torch", "memory")  # the ones --skip can leave out

# The settings: (full run, --smoke run).
FULL = {
    "rounds": 3,
    "steady_chunks": 4,  # timed chunks per run_sgmcmc call (after the compiling first chunk)
    "floor_reps": 4,  # timed repeats of each reference loop per round
    "chunk_epochs": {"digits": 1000, "reference": 32},  # ~0.2-0.5 s per chunk
    "chains": 4,
    "chains_cases": ("digits", "reference"),
    "chain_devices": 2,  # the chains also sharded over this many CPU devices (fresh process)
    "floor_layouts": ("once", "tree"),
    "nuts": {"num_warmup": 100, "num_draws": (100, 700), "pairs": 2, "grad_steps": 4000},
    # the adapter's two runs: num_samples = these epochs x 31 steps (the long one keeps 3,100
    # samples of 42,378 floats, 0.5 GB); run_sgmcmc runs the long one's epochs
    "adapter": {"num_warmup": 100, "epochs": (20, 100), "rounds": 3},
    "torch": {"steps": 1000, "reps": 3},
    # (N, timed epochs, chunk epochs, input handed to the sampler)
    "memory": [
        (10_000, 40, 10, "device"),
        (1_000_000, 2, 1, "device"),
        (1_000_000, 2, 1, "numpy"),
    ],
}
QUICK = {
    "rounds": 1,
    "steady_chunks": 2,
    "floor_reps": 2,
    "chunk_epochs": {"digits": 50, "reference": 4},
    "chains": 4,
    "chains_cases": ("reference",),
    "chain_devices": 2,
    "floor_layouts": ("once",),
    "nuts": {"num_warmup": 10, "num_draws": (5, 15), "pairs": 1, "grad_steps": 200},
    "adapter": {"num_warmup": 10, "epochs": (1, 3), "rounds": 1},
    "torch": {"steps": 50, "reps": 1},
    "memory": [(10_000, 2, 1, "device")],
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.json")
    parser.add_argument("--smoke", action="store_true", help="tiny smoke setting (< 2 min)")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="measure nothing: re-render the table (and --write-docs) from a saved bench.json",
    )
    parser.add_argument(
        "--torch-python",
        default=None,
        help="interpreter with torch installed (default: .venv-torch/bin/python if present)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each round wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=list(SECTIONS))
    parser.add_argument(
        "--write-docs",
        type=Path,
        default=None,
        help="also replace the marked results section of this markdown file",
    )
    return parser.parse_args(argv)


def measure(args, cfg: dict, results: dict) -> None:
    """Every section, in order; fills ``results``."""
    threads = os.cpu_count() or 1
    digits = digits_case()
    reference, reference_arrays = reference_case(2000)
    torch = TorchComparison("torch" in args.skip, args.torch_python, cfg, threads)
    if torch.note is not None:
        results["torch"] = torch.note
    else:
        results["torch_interpreter"] = str(torch.python)
    try:
        results["sgld"] = {"digits": bench_sgld(digits, cfg)}
        setup = torch.setup_for(reference, reference_arrays)
        results["sgld"]["reference"] = bench_sgld(reference, cfg, setup)
    finally:
        torch.cleanup()
    results["students"] = {
        name: {"description": r["description"], "num_parameters": r["num_parameters"]}
        for name, r in results["sgld"].items()
    }
    if torch.python is not None:
        results["torch"] = torch_summary(results["sgld"]["reference"], threads)
    if "nuts" not in args.skip:
        results["nuts"] = bench_nuts(digits, cfg)
    if "adapter" not in args.skip:
        results["adapter"] = guarded_bench_adapter(reference, cfg)
    if "memory" not in args.skip:
        results["memory"] = bench_memory(cfg)


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = ".venv/bin/python benchmarks/bench.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.from_json is not None:
        return rerender(args, command)
    cfg = QUICK if args.smoke else FULL
    QUIET["max_wait"] = args.quiet_wait
    started = time.perf_counter()
    background = BackgroundLoad()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": machine_info(),
        "settings": {**cfg, "step_size": STEP_SIZE},
        "smoke": args.smoke,
        "loadavg_start": os.getloadavg(),
        "command": command,
    }
    log(f"machine: {results['machine']['cpu_model']}, load {results['loadavg_start']}")
    measure(args, cfg, results)
    results["loadavg_end"] = os.getloadavg()
    results["background_cores_busy"] = background.cores()
    results["wall_seconds"] = time.perf_counter() - started
    markdown = table(results)
    if args.smoke:
        markdown = "(--smoke run: too short for meaningful figures)\n\n" + markdown
    (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "table.md").write_text(markdown + "\n")
    print(markdown)
    print(
        f"\nwall time {results['wall_seconds']:.0f} s; other processes kept "
        f"{results['background_cores_busy'] or 0:.2f} cores busy on average; "
        f"wrote {args.out / 'bench.json'}"
    )
    if args.write_docs is not None:
        write_docs(args.write_docs, command, results, markdown)
    return results


def rerender(args, command: str) -> dict:
    """The table of a saved run (its derived figures recomputed from the raw ones)."""
    results = json.loads(args.from_json.read_text())
    if "memory" in results:
        results["memory"] = derive_memory(results["memory"])
    markdown = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(markdown + "\n")
    print(markdown)
    if args.write_docs is not None:
        measured = results.get("command", "(not recorded)")
        write_docs(
            args.write_docs, f"{measured}`; table re-rendered by `{command}", results, markdown
        )
    return results


if __name__ == "__main__":
    main()
