"""NUTS speed: gradient evaluations per second of ``run_nuts`` against bare full-batch gradients.

``run_nuts`` recompiles per call, so each pair of calls differs only in ``num_draws`` (same
seed, same ``num_warmup``: warm-up is identical and the first draws coincide); the rate is
(difference in summed ``n_steps``) / (difference in wall time). ``n_steps`` counts leapfrog
steps, one gradient each; warm-up steps are not in ``sample_stats`` and cancel out. The bare
rate is a jitted ``fori_loop`` of full-batch gradients of NumPyro's ``potential_energy`` of the
same model and data (closed over, as NumPyro's MCMC does), timed between the NUTS calls.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from cases import Case
from floors import full_gradient_loop, timed
from machine import log, summary, wait_for_quiet

import mtbkd_jax as mt


def _nuts_call(case: Case, ncfg: dict, num_draws: int):
    """One ``run_nuts`` call: (wall seconds, the draws' ``n_steps``)."""
    start = time.perf_counter()
    posterior = mt.run_nuts(
        jax.random.key(0),
        case.model,
        case.inputs,
        case.labels,
        num_warmup=ncfg["num_warmup"],
        num_draws=num_draws,
        num_chains=1,
        progress_bar=False,
        model_kwargs=dict(case.model_kwargs),
    )
    seconds = time.perf_counter() - start
    return seconds, np.asarray(posterior.sample_stats["n_steps"]).reshape(-1)


def _pair_record(result: dict, small: int, large: int) -> dict:
    (t_small, s_small), (t_large, s_large) = result[small], result[large]
    delta_steps = int(s_large.sum() - s_small.sum())
    return {
        "seconds": {str(small): t_small, str(large): t_large},
        "n_steps_sum": {str(small): int(s_small.sum()), str(large): int(s_large.sum())},
        "delta_steps": delta_steps,
        "grad_evals_per_s": delta_steps / (t_large - t_small),
    }


def bench_nuts(case: Case, cfg: dict) -> dict:
    """Gradient evaluations per second of run_nuts vs bare jitted full-batch gradients."""
    ncfg = cfg["nuts"]
    small, large = ncfg["num_draws"]
    args, kwargs = case.device_args(), case.device_kwargs()
    position = case.estimator().initial_position(jax.random.key(1))
    grad_loop = full_gradient_loop(case.model, args, kwargs, ncfg["grad_steps"])
    jax.block_until_ready(grad_loop(position))

    def bare_rates():
        return [ncfg["grad_steps"] / timed(grad_loop, position) for _ in range(3)]

    bare, runs = [], []
    prefix_identical = True
    for p in range(ncfg["pairs"]):
        log(f"nuts: pair {p + 1}/{ncfg['pairs']}")
        wait_for_quiet(f"nuts pair {p + 1}")
        order = (small, large) if p % 2 == 0 else (large, small)
        result = {}
        for num_draws in order:
            bare.extend(bare_rates())
            result[num_draws] = _nuts_call(case, ncfg, num_draws)
        s_small, s_large = result[small][1], result[large][1]
        prefix_identical &= bool(np.array_equal(s_small, s_large[: len(s_small)]))
        runs.append(_pair_record(result, small, large))
    bare.extend(bare_rates())
    estimates = [run["grad_evals_per_s"] for run in runs]
    return {
        "description": case.description + ", full batch (150 labelled + 600 prior inputs)",
        "num_warmup": ncfg["num_warmup"],
        "num_draws": [small, large],
        "runs": runs,
        "mean_leapfrog_steps_per_draw": float(runs[-1]["n_steps_sum"][str(large)] / large),
        "first_draws_identical_across_pair": prefix_identical,
        "nuts_grad_evals_per_s": summary(estimates),
        "bare_gradients_per_s": summary(bare),
        "nuts_vs_bare_gradient": float(np.median(estimates) / np.median(bare)),
        "nuts_vs_bare_gradient_per_pair": [e / float(np.median(bare)) for e in estimates],
    }
