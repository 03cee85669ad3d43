"""Memory and step time at N = 10^4 and 10^6: the reference head, each size in a fresh process.

``_memory_worker.py`` runs ``run_sgmcmc`` on synthetic data of that size (the data handed over
as a ``jax.Array``, "device input", or as a NumPy array, "numpy input") and reports its RSS
(5 ms sampler of ``/proc/self/statm``, plus ``getrusage``) and steady-state steps/s.
:func:`derive_memory` turns the raw figures into what the sampler adds beyond the process with
its data loaded, and how that grows with N per MB of data.
"""

from __future__ import annotations

import json
import subprocess
import sys

from machine import HERE, BackgroundLoad, log, summary, wait_for_quiet


def _worker(n: int, epochs: int, chunk_epochs: int, handed: str) -> dict:
    command = [
        sys.executable,
        str(HERE / "_memory_worker.py"),
        "--n",
        str(n),
        "--epochs",
        str(epochs),
        "--chunk-epochs",
        str(chunk_epochs),
        "--input",
        handed,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"_memory_worker.py failed at N={n}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(cfg: dict) -> dict:
    out = {}
    for n, epochs, chunk_epochs, handed in cfg["memory"]:
        log(f"memory: N = {n:,}, {handed} input (fresh process)")
        quiet = wait_for_quiet(f"memory N={n} {handed}")
        during = BackgroundLoad()
        result = _worker(n, epochs, chunk_epochs, handed)
        quiet["background_during"] = during.cores()
        result["load"] = quiet
        result["steps_per_s"] = summary(result["steps_per_s"])
        out[f"{n}:{handed}"] = result
    return derive_memory(out)


def derive_memory(out: dict) -> dict:
    """What each run adds beyond the process with its data loaded, and how that grows with N.

    The sampler's peak is the highest RSS the 5 ms sampler saw from the call of ``run_sgmcmc``
    to its return; the process peak (``getrusage``) also covers building the synthetic data
    (with ``--input device``, the NumPy array and its device copy coexist for a moment) and the
    imports, which are the benchmark's own doing.
    """
    for result in out.values():
        if not isinstance(result, dict):
            continue
        with_data = result["rss_with_data_mb"]
        sampler_peak = max(result["rss_peak_setup_mb"], result["rss_peak_steady_mb"])
        result["sampler_peak_minus_data_in_memory_mb"] = sampler_peak - with_data
        result["peak_minus_data_in_memory_mb"] = result["peak_rss_mb"] - with_data
        result["steady_minus_data_in_memory_mb"] = result["rss_peak_steady_mb"] - with_data
        result["peak_rss_over_data"] = result["peak_rss_mb"] / result["data_mb"]
    device = [r for k, r in out.items() if k.endswith(":device")]
    if len(device) >= 2:  # the excess over the data at the largest N vs the smallest, per MB
        small, large = min(device, key=lambda r: r["n"]), max(device, key=lambda r: r["n"])
        out["excess_growth_per_data_growth"] = (
            large["sampler_peak_minus_data_in_memory_mb"]
            - small["sampler_peak_minus_data_in_memory_mb"]
        ) / (large["data_mb"] - small["data_mb"])
    return out
