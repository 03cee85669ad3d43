"""First-call and second-call times: what compiling costs, and what reuse saves.

1. ``run_map`` (10 Adam steps) three times on the same small MTBKDModel in one process: the
   first call traces and compiles; later calls reuse the compiled program (``run_svi`` keeps
   it per model and shapes).
2. ``mtbkd demo --smoke`` (or the full demo with ``--full``) twice, each in a fresh process
   with an empty JAX compilation-cache folder before the first: the second run reads its
   programs from the persistent cache the CLI keeps; a third run with ``--no-compile-cache``
   is the reference.

    .venv/bin/python benchmarks/compile_times.py --out results/bench [--full]

Writes ``compile_times.json`` to ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_map_calls(num_calls: int = 3) -> list[float]:
    import jax
    import numpy as np
    from flax import nnx

    import mtbkd_jax as mk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    teachers = mk.TeacherBank.from_logits(rng.normal(size=(2, 200, 3)))
    model = mk.MTBKDModel(mk.Student(mk.MLP(8, 3, hidden=(16,), rngs=nnx.Rngs(0))), teachers)
    seconds = []
    for call in range(num_calls):
        start = time.perf_counter()
        mk.run_map(jax.random.key(call), model, x, y, num_steps=10, progress_bar=False)
        seconds.append(time.perf_counter() - start)
    return seconds


def demo_runs(full: bool) -> dict:
    mtbkd = Path(sys.executable).with_name("mtbkd")
    quick = [] if full else ["--smoke"]
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(folder) / "cache")}
        env.pop("MTBKD_COMPILE_CACHE", None)
        runs = [
            ("no cache", ["--no-compile-cache"]),
            ("cache, first run", []),
            ("cache, second run", []),
        ]
        for name, flags in runs:
            command = [
                str(mtbkd),
                "demo",
                *quick,
                "--no-progress",
                *flags,
                "--out",
                str(Path(folder) / name.replace(" ", "_").replace(",", "")),
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True)
            out[name] = time.perf_counter() - start
        cache = Path(folder) / "cache" / "mtbkd_jax" / "jax-compilation-cache"
        out["cache_files"] = len(list(cache.glob("*"))) if cache.exists() else 0
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--full", action="store_true", help="the full demo instead of --smoke")
    args = parser.parse_args(argv)
    result = {
        "run_map_seconds": run_map_calls(),
        "demo": "full" if args.full else "smoke",
        "demo_seconds": demo_runs(args.full),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    first, *later = result["run_map_seconds"]
    print(
        f"run_map, 10 steps: first call {first:.2f} s, later calls "
        + ", ".join(f"{s:.2f} s" for s in later)
    )
    for name, value in result["demo_seconds"].items():
        unit = "" if name == "cache_files" else " s"
        print(f"mtbkd demo ({result['demo']}), {name}: {value:.1f}{unit}")
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "compile_times.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
