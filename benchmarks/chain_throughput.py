"""Draws per second of vectorised chains, NUTS and SGLD, on whatever device JAX runs on (issue 13).

Two students, each with two random-logit teachers on its labelled inputs:

* ``reference``: the reference head, MLP 320-128-10 relu, N = 2,000 synthetic inputs;
* ``cnn``: :class:`mtbkd_jax.CNN` (two 3x3 convolutions, 8 and 16 channels) on 60,000
  synthetic 28x28 images, the size of Fashion-MNIST's training set (throughput does not depend
  on the pixels' values, and the device machine has no network to fetch the data).

For 1, 16 and 256 chains (``--chains``):

* SGLD: ``run_sgmcmc`` with the chains vectorised (``vmap``), batch 256 (``--batch``), one draw
  per epoch; draws/s = chains x draws per epoch / (seconds per epoch), from the chunks after
  the first (which compiles).
* NUTS: ``run_nuts(chain_method="vectorized", max_tree_depth=6)`` from a MAP (300 Adam steps,
  every chain there); after a first call (which fills JAX's caches), two calls that differ
  only in ``num_draws`` (same warm-up, same seed), so compilation and warm-up cancel:
  draws/s = chains x (extra draws) / (extra seconds), or none where the extra seconds are
  under a tenth of the smaller call's (timer noise). The tree
  depth is capped (at most 63 gradients per draw) so that the figure is the device's
  throughput, comparable across devices, not the geometry of a random start.

Once a configuration's steady part (SGLD's epochs, NUTS's extra draws: not compilation, which
is long on a GPU) takes longer than ``--budget`` seconds, the larger chain counts of the same
(student, sampler) are skipped: the JSON says "skipped".
Run it on the CPU and on the accelerator in the same script (``benchmarks/device_check.sh``):

    .venv/bin/python benchmarks/chain_throughput.py --json cpu.json         # CPU
    JAX_PLATFORMS=cuda python3 benchmarks/chain_throughput.py --json gpu.json
    .venv/bin/python benchmarks/chain_throughput.py --quick                 # a dry run, ~1 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import reference_model, synthetic_reference_data  # noqa: E402

import mtbkd_jax as mt  # noqa: E402
from mtbkd_jax.students import CNN  # noqa: E402


def cnn_problem(num_examples: int, seed: int = 0) -> tuple[mt.MTBKDModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((num_examples, 28 * 28), dtype=np.float32)
    labels = rng.integers(0, 10, num_examples).astype(np.int32)
    logits = 2.0 * rng.standard_normal((2, num_examples, 10), dtype=np.float32)
    student = mt.Student(CNN((28, 28, 1), 10, rngs=nnx.Rngs(0)))
    return mt.MTBKDModel(student, mt.TeacherBank.from_logits(logits)), images, labels


def problem(name: str, quick: bool) -> tuple[mt.MTBKDModel, np.ndarray, np.ndarray]:
    if name == "cnn":
        return cnn_problem(2048 if quick else 60000)
    features, labels, teacher_logits = synthetic_reference_data(512 if quick else 2000)
    return reference_model(teacher_logits), features, labels


def sgld_rate(model, inputs, labels, chains: int, batch: int, epochs: int) -> dict:
    start = time.perf_counter()
    posterior = mt.run_sgmcmc(
        jax.random.key(3), model, inputs, labels, sampler="sgld", step_size=1e-6,
        batch_size=batch, num_chains=chains, num_epochs=epochs, draws_per_epoch=1,
        chunk_epochs=1, progress_bar=False,
    )  # fmt: skip
    seconds = [float(s) for _, s in posterior.settings["chunk_seconds"]][1:]
    per_epoch = float(np.median(seconds))
    return {
        "draws_per_s": chains / per_epoch,
        "seconds_per_epoch": per_epoch,
        "steps_per_epoch": int(posterior.settings["steps_per_epoch"]),
        "wall_seconds": time.perf_counter() - start,
    }


def nuts_call(model, inputs, labels, chains: int, draws: int, warmup: int, start) -> float:
    tick = time.perf_counter()
    posterior = mt.run_nuts(
        jax.random.key(4), model, inputs, labels, num_warmup=warmup, num_draws=draws,
        num_chains=chains, chain_method="vectorized", max_tree_depth=6, init_params=start,
        progress_bar=False,
    )  # fmt: skip
    jax.block_until_ready(posterior.draws)
    return time.perf_counter() - tick


def nuts_rate(model, inputs, labels, chains: int, draws: tuple[int, int], warmup: int) -> dict:
    mode = mt.run_map(jax.random.key(5), model, inputs, labels, num_steps=300, progress_bar=False)
    start = mode.point()
    first = nuts_call(model, inputs, labels, chains, draws[0], warmup, start)
    small = nuts_call(model, inputs, labels, chains, draws[0], warmup, start)
    large = nuts_call(model, inputs, labels, chains, draws[1], warmup, start)
    run = {
        "seconds": {"first call": first, str(draws[0]): small, str(draws[1]): large},
        "extra_seconds": large - small,
    }
    if large - small < 0.1 * small:  # the extra draws took less than the timer's noise
        return {**run, "draws_per_s": None, "note": "difference within noise"}
    return {**run, "draws_per_s": chains * (draws[1] - draws[0]) / (large - small)}


def steady_seconds(run: dict) -> float:
    """The part of a run that grows with the chain count: SGLD's three epochs at the steady
    rate, NUTS's extra draws; compilation (long on a GPU) is left out. It does not bound a
    configuration's whole time (NUTS's three calls each compile and warm up): run the samplers
    in separate invocations where a time limit matters (``device_check.sh`` does)."""
    if "seconds_per_epoch" in run:
        return 3 * float(run["seconds_per_epoch"])
    return max(float(run["extra_seconds"]), 0.0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--students", nargs="+", default=["reference", "cnn"])
    parser.add_argument("--samplers", nargs="+", default=["sgld", "nuts"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--budget", type=float, default=120.0, help="steady seconds per configuration"
    )
    parser.add_argument("--quick", action="store_true", help="small data, 1 and 4 chains")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    chain_counts = [1, 4] if args.quick else args.chains
    report: dict = {"backend": jax.default_backend(), "devices": str(jax.devices()), "runs": {}}
    for name in args.students:
        model, inputs, labels = problem(name, args.quick)
        for sampler in args.samplers:
            over_budget = False
            for chains in chain_counts:
                key = f"{name} {sampler} {chains} chains"
                if over_budget:
                    report["runs"][key] = "skipped (a smaller chain count exceeded the budget)"
                    continue
                if sampler == "sgld":
                    run = sgld_rate(model, inputs, labels, chains, args.batch, 3)
                else:
                    draws = (5, 25) if args.quick else (20, 100)
                    run = nuts_rate(model, inputs, labels, chains, draws, 10 if args.quick else 50)
                over_budget = steady_seconds(run) > args.budget
                report["runs"][key] = run
                rate = run["draws_per_s"]
                shown = f"{rate:10.2f}" if rate is not None else "  (noise)"
                print(f"{key:28s} {shown} draws/s", flush=True)
                if args.json:  # after every run: a time limit keeps what was measured
                    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
