"""The machine and the load on it: what the benchmark ran on, and how busy others kept it.

* :func:`machine_info`: CPU, memory, JAX devices, versions, git state, the date.
* :class:`BackgroundLoad`: CPU time used by *other* processes over an interval (from
  /proc/stat, minus this process and its waited-for children), as an average of busy cores.
* :func:`wait_for_quiet`: before a round, wait (up to ``--quiet-wait`` seconds) until other
  processes use < 0.3 cores over 2 s.
* :func:`summary`, :func:`ratio`, :func:`log`: the figures' shared bookkeeping.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mtbkd_jax as mt  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUIET = {"max_wait": 0.0, "threshold": 0.3}  # max_wait set from --quiet-wait


def summary(values) -> dict:
    values = [float(v) for v in values]
    return {
        "median": float(np.median(values)) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "n": len(values),
        "values": values,
    }


def ratio(numerator: list, denominator: list) -> float:
    return float(np.median(numerator) / np.median(denominator))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BackgroundLoad:
    """CPU time used by *other* processes while the benchmark runs (from /proc/stat, minus this
    process and its waited-for children), as an average number of busy cores."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except OSError:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.perf_counter(), busy, own

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / wall)


def wait_for_quiet(label: str) -> dict:
    """Wait (up to --quiet-wait seconds) until other processes use < 0.3 cores over 2 s."""
    if QUIET["max_wait"] <= 0:
        return {"background_before": None, "waited_s": 0.0}
    waited, start = 0.0, time.perf_counter()
    while True:
        probe = BackgroundLoad()
        time.sleep(2.0)
        load = probe.cores()
        waited = time.perf_counter() - start
        if load is None or load < QUIET["threshold"] or waited >= QUIET["max_wait"]:
            break
    if waited > 2.5:
        log(f"{label}: waited {waited:.0f} s for other processes (now {load:.2f} cores)")
    return {"background_before": load, "waited_s": waited}


def _read_first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line
    except OSError:
        pass
    return None


def _versions() -> dict:
    versions = {}
    for name in ("jax", "jaxlib", "numpyro", "blackjax", "flax", "optax", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    versions["mtbkd_jax"] = mt.__version__
    return versions


def _git() -> dict:
    git = {}
    try:
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.split("\n")
        git["uncommitted_src_files"] = [line[3:] for line in changed if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        pass
    return git


def machine_info() -> dict:
    cpu = _read_first("/proc/cpuinfo", "model name")
    mem = _read_first("/proc/meminfo", "MemTotal")
    return {
        "cpu_model": "unknown" if cpu is None else cpu.split(":", 1)[1].strip(),
        "cpu_count": os.cpu_count(),
        "memory_gib": None if mem is None else round(int(mem.split()[1]) / 1024**2, 1),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_threads": f"XLA CPU default: one intra-op thread per core ({os.cpu_count()})",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(),
        "git": _git(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
