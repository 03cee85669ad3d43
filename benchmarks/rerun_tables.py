"""Rerun every issue-12 table of ``docs/results.md`` at one named commit.

Each table is one job run in its own process, with ``PYTHONPATH`` pointing at a checkout of the
commit named (a ``git worktree add --detach DIR COMMIT``): the driver's own commit does not
matter. A job that exited 0 is marked done (``OUT/done/JOB``) and skipped later, so a run
stopped (or a session that ended) resumes where it stopped; a job in progress is held by an
``flock`` on ``OUT/running/JOB``, so two drivers on one folder never run it twice; each
job's wall time and exit status go to ``OUT/times.jsonl`` and its output to
``OUT/logs/JOB.log``.

Usage::

    git worktree add --detach /tmp/wt-tables COMMIT
    MTBKD_DEEPLOC_DIR=../shared/data/deeploc \\
    MTBKD_FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist \\
    .venv/bin/python benchmarks/rerun_tables.py --src /tmp/wt-tables/src --out OUT [JOB ...]

With ``--keep DIR`` (e.g. ``docs/runs/COMMIT`` in the repository) every job that exits 0 has
its small outputs (its folder's ``*.json`` and ``*.md``, and ``test_size.json``, the number of
test labels in its ``predictions.npz``) copied to the same place under ``DIR``, with
``times.jsonl``: commit them as each job ends, and a rerun spread over sessions (whose machines
are replaced, and ``OUT`` with them) keeps what it finished. A job already kept under ``DIR`` is
done. ``benchmarks/issue12_standing.py DIR`` reads the kept files.

With no JOB every job runs, in the order of ``--list``. The synthetic SG-MCMC jobs
(``ncsgld-KIND_C``) run the learned-trust row alone by NC-SGLD on the non-centred model at the
setting the case's NUTS run chose (its ``tuning.json``), so each comes after its case.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SYNTHETIC_CASES = (("linear", 2), ("linear", 5), ("nonlinear", 2), ("nonlinear", 5))
TRUST_ROW = "MT-BKD (learned trust)"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtbkd_jax.cli", *args]


def _deeploc(out: Path, seed: int, held_out: bool) -> list[str]:
    extra = ", validation_from_test=300, trust_labels='validation'" if held_out else ""
    return _python(
        "from mtbkd_jax.experiments.deeploc import DeepLocConfig, run_deeploc; "
        f"run_deeploc({str(out)!r}, config=DeepLocConfig(seed={seed}{extra}))"
    )


def _synthetic(out: Path, kind: str, classes: int) -> list[str]:
    return _python(
        "from mtbkd_jax.experiments.synthetic import SyntheticConfig, run_synthetic; "
        f"run_synthetic({str(out)!r}, config=SyntheticConfig(cases=(({kind!r}, {classes}),)))"
    )


def chosen_trust_setting(case_dir: Path) -> dict:
    """The learned-trust setting the case's search chose, exactly as it was searched.

    The row's ``settings`` in ``metrics.json`` name the calibration, the pooling and β to six
    digits; the trial of ``tuning.json`` with that calibration, pooling and printed β gives β's
    exact value (the search keeps an extended value only past a margin, so the lowest score is
    not always the choice)."""
    rows = json.loads((case_dir / "metrics.json").read_text())
    (settings,) = {row["settings"] for row in rows if row["method"] == TRUST_ROW}
    calibration = (
        "none"
        if "τ = 1" in settings
        else "confidence"
        if "by confidence" in settings
        else "teacher"
    )
    pooling = "product" if ", product" in settings or "(product" in settings else "mixture"
    beta = settings.split("β=")[1].split(" ")[0]
    trials = json.loads((case_dir / "tuning.json").read_text())[TRUST_ROW]
    (chosen,) = {
        trial["prior_power"]: trial
        for trial in trials
        if (trial["calibration"], trial["pooling"], f"{trial['prior_power']:g}")
        == (calibration, pooling, beta)
    }.values()
    return chosen


def _ncsgld(out: Path, case_out: Path, kind: str, classes: int, kept: Path | None) -> list[str]:
    name = f"{kind}_{classes}"
    case_dir = case_out / name
    if not (case_dir / "metrics.json").exists() and kept is not None:
        case_dir = kept / name  # the case ran in an earlier session: its kept copy
    chosen = chosen_trust_setting(case_dir)
    calibration, pooling, beta = chosen["calibration"], chosen["pooling"], chosen["prior_power"]
    return _python(
        "from mtbkd_jax.experiments.synthetic import SyntheticConfig, run_synthetic; "
        f"run_synthetic({str(out)!r}, config=SyntheticConfig(methods='trust', "
        f"cases=(({kind!r}, {classes}),), trust_calibration={calibration!r}, "
        f"trust_calibration_grid=({calibration!r},), trust_pooling={pooling!r}, "
        f"trust_pooling_grid=({pooling!r},), trust_prior_power_grid=({beta!r},), "
        "grid_extensions=0, bayes='ncsgld', sgmcmc_coordinates='noncentred', "
        "chain_starts='maps', num_chains=4, sgld_epochs=2880, sgld_burnin_epochs=960, "
        "sgld_draws_per_epoch=1))"
    )


def jobs(out: Path, keep: Path | None = None) -> dict[str, tuple[Path, object]]:
    """Job name -> (output folder, its command or a function of nothing giving it)."""
    table: dict[str, tuple[Path, object]] = {
        "digits": (out / "digits", _cli("experiment", "digits", "--out", str(out / "digits"))),
        "fashion-mnist": (
            out / "fmnist",
            _cli("experiment", "fashion-mnist", "--out", str(out / "fmnist")),
        ),
    }
    for seed in range(3):
        path = out / "deeploc" / f"seed{seed}"
        table[f"deeploc-{seed}"] = (path, _deeploc(path, seed, held_out=False))
    for seed in range(3):
        path = out / "deeploc-held-out" / f"seed{seed}"
        table[f"deeploc-held-out-{seed}"] = (path, _deeploc(path, seed, held_out=True))
    for kind, classes in SYNTHETIC_CASES:
        name = f"{kind}_{classes}"
        case_out = out / "synthetic" / name
        table[f"synthetic-{name}"] = (case_out / name, _synthetic(case_out, kind, classes))
        nc_out = out / "synthetic-ncsgld" / name

        kept = keep / case_out.relative_to(out) if keep is not None else None

        def command(nc_out=nc_out, case_out=case_out, kind=kind, classes=classes, kept=kept):
            return _ncsgld(nc_out, case_out, kind, classes, kept)

        table[f"ncsgld-{name}"] = (nc_out / name, command)
    return table


KEPT_SUFFIXES = (".json", ".md")
KEPT_MAX_BYTES = 2_000_000


def keep_outputs(folder: Path, out: Path, keep: Path) -> Path:
    """Copy a finished job's small outputs (``*.json``, ``*.md`` of its folder, not its
    subfolders) and the size of its test set to the same place under ``keep``."""
    target = keep / folder.relative_to(out)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        if path.suffix in KEPT_SUFFIXES and path.stat().st_size <= KEPT_MAX_BYTES:
            shutil.copy2(path, target / path.name)
    predictions = folder / "predictions.npz"
    if predictions.exists():
        with np.load(predictions) as saved:
            size = int(saved["labels"].shape[0])
        (target / "test_size.json").write_text(json.dumps({"test_size": size}) + "\n")
    if (out / "times.jsonl").exists():
        shutil.copy2(out / "times.jsonl", keep / "times.jsonl")
    return target


def run_job(
    name: str, folder: Path, command, src: Path, out: Path, keep: Path | None = None
) -> int | None:
    """Run one job unless it is done (``OUT/done/JOB``, written after it exited 0: its
    ``metrics.json`` alone is no proof, the report writes it first and a failed method writes
    it too) or another driver holds it (an ``flock`` on ``OUT/running/JOB``, passed to the job's
    process, so it lasts as long as the driver or the job lives). Returns the job's exit
    status, or None where it did not run."""
    if (out / "done" / name).exists():
        print(f"{name}: done already ({folder})", flush=True)
        return None
    if keep is not None and (keep / folder.relative_to(out) / "metrics.json").exists():
        print(f"{name}: kept already ({keep / folder.relative_to(out)})", flush=True)
        return None
    (out / "running").mkdir(parents=True, exist_ok=True)
    with open(out / "running" / name, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{name}: another driver or its job holds it; skipped", flush=True)
            return None
        status = _run(name, command, src, out, lock.fileno())
    if status == 0:
        (out / "done").mkdir(exist_ok=True)
        (out / "done" / name).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        if keep is not None:
            print(f"{name}: kept in {keep_outputs(folder, out, keep)}", flush=True)
    return status


def _run(name: str, command, src: Path, out: Path, lock_fd: int) -> int:
    try:
        argv = command() if callable(command) else command
    except (OSError, KeyError, ValueError) as error:
        print(f"{name}: cannot start ({error!r})", flush=True)
        return 1
    env = dict(
        os.environ,
        PYTHONPATH=str(src),
        JAX_PLATFORMS="cpu",
        MTBKD_FASHION_MNIST_CACHE=str(out / "fmnist-cache"),
    )
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"{name}: start {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(start))} UTC", flush=True)
    with open(out / "logs" / f"{name}.log", "w") as log:
        status = subprocess.call(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, pass_fds=(lock_fd,)
        )
    wall = time.time() - start
    with open(out / "times.jsonl", "a") as times:
        times.write(
            json.dumps(
                {
                    "job": name,
                    "status": status,
                    "wall_s": round(wall, 1),
                    "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            + "\n"
        )
    print(f"{name}: exit {status} after {wall / 60:.1f} min", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, help="the src/ folder of a checkout of the commit")
    parser.add_argument("--out", type=Path, required=True, help="the folder every job writes under")
    parser.add_argument("--keep", type=Path, help="copy each finished job's small outputs here")
    parser.add_argument("--list", action="store_true", help="list the jobs and stop")
    parser.add_argument("job", nargs="*", help="jobs to run (default: all, in order)")
    args = parser.parse_args(argv)
    keep = args.keep.resolve() if args.keep else None
    table = jobs(args.out.resolve(), keep)
    if args.list:
        print("\n".join(table))
        return 0
    if args.src is None or not (args.src / "mtbkd_jax").is_dir():
        parser.error("--src must be the src/ folder of a checkout (it holds mtbkd_jax/)")
    unknown = sorted(set(args.job) - set(table))
    if unknown:
        parser.error(f"unknown jobs {unknown}; --list shows them")
    status = {
        name: run_job(name, *table[name], args.src.resolve(), args.out.resolve(), keep)
        for name in (args.job or table)
    }
    failed = [name for name, code in status.items() if code]
    skipped = [name for name, code in status.items() if code is None]
    print(f"failed: {failed}; not run (done, or held by another driver): {skipped}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
