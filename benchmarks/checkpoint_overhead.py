"""What checkpointing every epoch costs, at the README's setting.

The README's SG-MCMC call (600 digits, MLP 64-16-10, two scikit-learn teachers, batch 64,
80 epochs, 6 draws per epoch, 4 chains, one epoch per chunk) is run with and without
``checkpoint_path``, alternately, and its sampling time (``posterior.settings
["sampling_seconds"]``: the chunks, after set-up and warm start) is compared. The first run of
each kind compiles and is not counted. Each checkpointed run writes a fresh checkpoint; each is
run twice, with the writes in the background (the package's way) and on the main thread.

    .venv/bin/python benchmarks/checkpoint_overhead.py --rounds 5 --out results/bench

Writes ``checkpoint_overhead.json`` to ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

import mtbkd_jax as mk
from mtbkd_jax.infer.checkpoint import Checkpoint

BACKGROUND = Checkpoint.save_in_background


def readme_problem():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, y_train = x[:600], y[:600]
    fitted = [
        GaussianNB().fit(x_train, y_train),
        LogisticRegression(max_iter=1000).fit(x_train, y_train),
    ]
    teachers = mk.TeacherBank.from_callables(fitted, x_train, names=["naive_bayes", "logreg"])
    student = mk.Student(mk.MLP(64, 10, hidden=(16,), rngs=nnx.Rngs(0)))
    model = mk.MTBKDModel(student, teachers, concentration=10.0, prior_power=0.1)
    mode = mk.run_map(jax.random.key(0), model, x_train, y_train, progress_bar=False)
    return model, x_train, y_train, mode.point()


def synchronous_writes(enabled: bool):
    """Write each checkpoint on the main thread instead of in the background (for comparison)."""
    from mtbkd_jax.infer.checkpoint import Checkpoint

    if enabled:
        Checkpoint.save_in_background = lambda self, *args: (self.wait(), self.save(*args))
    else:
        Checkpoint.save_in_background = BACKGROUND


def sample(model, x, y, start, checkpoint_path=None) -> float:
    post = mk.run_sgmcmc(
        jax.random.key(2),
        model,
        x,
        y,
        sampler="sgld",
        batch_size=64,
        num_epochs=80,
        step_size=1e-5,
        draws_per_epoch=6,
        num_chains=4,
        init_params=start,
        checkpoint_path=checkpoint_path,
        progress_bar=False,
    )
    return float(post.settings["sampling_seconds"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    model, x, y, start = readme_problem()
    with tempfile.TemporaryDirectory() as folder:
        fresh = iter(Path(folder) / f"run{i}.ckpt.npz" for i in range(10_000))
        sample(model, x, y, start)  # compile
        sample(model, x, y, start, next(fresh))
        plain, checkpointed, synchronous = [], [], []
        for _ in range(args.rounds):
            plain.append(sample(model, x, y, start))
            checkpointed.append(sample(model, x, y, start, next(fresh)))
            synchronous_writes(True)
            synchronous.append(sample(model, x, y, start, next(fresh)))
            synchronous_writes(False)
        path = next(fresh)
        sample(model, x, y, start, path)
        sizes = {p.name: p.stat().st_size for p in Path(folder).glob("run*") if "run" in p.name}
        last = {k: v for k, v in sizes.items() if k.startswith(path.name.split(".")[0] + ".")}
    ratio = statistics.median(c / p for c, p in zip(checkpointed, plain, strict=True))
    sync_ratio = statistics.median(c / p for c, p in zip(synchronous, plain, strict=True))
    result = {
        "setting": "README SG-MCMC: N=600, MLP 64-16-10, batch 64, 80 epochs x 9 steps, "
        "6 draws/epoch, 4 chains, chunk_epochs=1",
        "rounds": args.rounds,
        "plain_seconds": plain,
        "checkpointed_seconds": checkpointed,
        "median_plain": statistics.median(plain),
        "median_checkpointed": statistics.median(checkpointed),
        "median_ratio": ratio,
        "synchronous_seconds": synchronous,
        "median_synchronous": statistics.median(synchronous),
        "median_synchronous_ratio": sync_ratio,
        "checkpoint_files_bytes": last,
        "git": _git(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.platform(),
    }
    print(f"{'run':<22}{'median s':>10}   all")
    print(f"{'no checkpoint':<22}{result['median_plain']:>10.3f}   {_fmt(plain)}")
    print(
        f"{'checkpoint per epoch':<22}{result['median_checkpointed']:>10.3f}   {_fmt(checkpointed)}"
    )
    print(
        f"{'written synchronously':<22}{result['median_synchronous']:>10.3f}   {_fmt(synchronous)}"
    )
    print(f"median paired ratio {ratio:.3f} (synchronous {sync_ratio:.3f}); files {last}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _fmt(values):
    return " ".join(f"{v:.3f}" for v in values)


def _git() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
