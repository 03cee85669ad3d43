"""The NumPyro adapter against the driver: SGLD steps/s of each on the reference head.

* adapter: ``numpyro.infer.MCMC(mtbkd_jax.infer.SGMCMC(model, sampler="sgld", batch_size=64,
  step_size=1e-5), num_warmup=W, num_samples=S, progress_bar=False).run(key, inputs, labels)``;
  one MCMC iteration is one SGLD step, and NumPyro keeps every sample (no thinning);
* driver: ``mtbkd_jax.run_sgmcmc(key, model, inputs, labels, sampler="sgld", batch_size=64,
  step_size=1e-5, num_epochs=E, progress_bar=False)`` with its other defaults (6 draws per
  epoch, one epoch per chunk), as many steps as the adapter's long run.

Steady state, compilation excluded:

* adapter: two ``MCMC`` objects (S short and long, the same W) each run once first (that run
  traces the model and compiles everything). ``MCMC.run`` compiles its sampling loop again at
  every later run too (about 2 s of XLA compilation per run here, seen with cProfile), the
  same for both lengths, so in every round both run again and rate = (S long - S short) /
  (seconds of the long run - of the short one), as for NUTS: the per-step rate.
  ``adapter_whole_run_steps_per_s`` is (W + S) / seconds of the long run, that compile and
  the per-call set-up included.
* driver: ``run_sgmcmc`` compiles at every call, so its rate is that of every other SGLD
  figure: each chunk's epochs x steps per epoch / seconds from ``settings["chunk_seconds"]``,
  the first (compiling) chunk dropped.

Both get the data as device arrays; rounds alternate the order of the adapter's two runs.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from cases import Case
from machine import log, summary, wait_for_quiet

import mtbkd_jax as mt

STEP_SIZE = 1e-5
BATCH_SIZE = 64


def adapter_class():
    """``mtbkd_jax.infer.SGMCMC``, or None where the adapter does not exist (yet)."""
    return getattr(mt.infer, "SGMCMC", None)


def _finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(v)).all()) for v in jax.tree.leaves(tree))


def _adapter(kernel_class, case: Case, warmup: int, samples: int):
    """``run()``: one ``mcmc.run`` of the same MCMC object, timed (seconds), samples included."""
    import numpyro

    inputs, labels = case.device_args()
    mcmc = numpyro.infer.MCMC(
        kernel_class(case.model, sampler="sgld", batch_size=BATCH_SIZE, step_size=STEP_SIZE),
        num_warmup=warmup,
        num_samples=samples,
        progress_bar=False,
    )

    def run() -> float:
        start = time.perf_counter()
        mcmc.run(jax.random.key(0), inputs, labels)
        draws = jax.block_until_ready(mcmc.get_samples())
        seconds = time.perf_counter() - start
        if not _finite(draws):
            raise FloatingPointError("the adapter's draws are not finite")
        return seconds

    return run


def _driver_rates(case: Case, epochs: int) -> list:
    """One ``run_sgmcmc`` call; steady steps/s of its chunks (the first, compiling, dropped)."""
    inputs, labels = case.device_args()
    posterior = mt.run_sgmcmc(
        jax.random.key(0),
        case.model,
        inputs,
        labels,
        sampler="sgld",
        batch_size=BATCH_SIZE,
        step_size=STEP_SIZE,
        num_epochs=epochs,
        progress_bar=False,
    )
    if not _finite(posterior.draws):
        raise FloatingPointError("the driver's draws are not finite")
    steps_per_epoch = int(posterior.settings["steps_per_epoch"])
    chunks = posterior.settings["chunk_seconds"][1:]
    return [e * steps_per_epoch / s for e, s in chunks]


def _round(runs: dict, samples: tuple, warmup: int, reverse: bool) -> dict:
    seconds = {}
    for s in reversed(samples) if reverse else samples:
        seconds[s] = runs[s]()
    short, long = samples
    return {
        "seconds": {str(s): seconds[s] for s in samples},
        "steps_per_s": (long - short) / (seconds[long] - seconds[short]),
        "whole_run_steps_per_s": (warmup + long) / seconds[long],
    }


def bench_adapter(case: Case, cfg: dict) -> dict:
    """Steps/s of the NumPyro adapter and of ``run_sgmcmc``, and their ratio."""
    kernel_class = adapter_class()
    if kernel_class is None:
        note = "mtbkd_jax.infer.SGMCMC does not exist in this version: section skipped"
        log(note)
        return {"skipped": True, "note": note}
    acfg = cfg["adapter"]
    steps_per_epoch = case.num_examples // BATCH_SIZE
    samples = tuple(e * steps_per_epoch for e in acfg["epochs"])
    runs = {s: _adapter(kernel_class, case, acfg["num_warmup"], s) for s in samples}
    log("adapter: a first, compiling run of each")
    first = {str(s): run() for s, run in runs.items()}
    rounds, driver = [], []
    for p in range(acfg["rounds"]):
        log(f"adapter: round {p + 1}/{acfg['rounds']}")
        wait_for_quiet(f"adapter round {p + 1}")
        rounds.append(_round(runs, samples, acfg["num_warmup"], reverse=p % 2 == 1))
        driver.append(_driver_rates(case, acfg["epochs"][1]))
    adapter_rates = [r["steps_per_s"] for r in rounds]
    driver_medians = [float(np.median(d)) for d in driver]
    return {
        "description": case.description,
        "method": "adapter: difference of a short and a long MCMC run; driver: steady chunks",
        "num_warmup": acfg["num_warmup"],
        "num_samples": list(samples),
        "driver_epochs": acfg["epochs"][1],
        "steps_per_epoch": steps_per_epoch,
        "adapter_first_run_seconds": first,
        "adapter_rounds": rounds,
        "adapter_steps_per_s": summary(adapter_rates),
        "adapter_whole_run_steps_per_s": summary(r["whole_run_steps_per_s"] for r in rounds),
        "driver_steps_per_s": summary(v for d in driver for v in d),
        "adapter_vs_driver": float(np.median(adapter_rates))
        / float(np.median([v for d in driver for v in d])),
        "adapter_vs_driver_per_round": [
            a / d for a, d in zip(adapter_rates, driver_medians, strict=True)
        ],
    }


def guarded_bench_adapter(case: Case, cfg: dict) -> dict:
    """:func:`bench_adapter`, a failure recorded instead of raised (the rest still runs)."""
    try:
        return bench_adapter(case, cfg)
    except Exception as error:  # noqa: BLE001 (the adapter is new; report, don't abort)
        note = f"failed: {type(error).__name__}: {error}"[:300]
        log(f"adapter: {note}")
        return {"skipped": True, "note": note}
