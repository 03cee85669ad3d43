"""The SG-MCMC figures of one case, from the rates :mod:`sgmcmc_speed` measured.

Every rate is the median over all repeats of all rounds and every ratio a ratio of those
medians; the ``*_per_round`` lists give the same ratio within each round (the spread column).

* ``sgld_vs_floor`` = SGLD steps/s / floor steps/s (the floor: the faster layout);
* ``sgld_vs_floor_plus_shuffle`` = SGLD steps/s / (1 / (t_floor + t_shuffle));
* ``sgld_vs_raw_gradient`` = SGLD steps/s / raw-gradient steps/s;
* ``teacher_prior_overhead_*`` = time per step with the teacher prior / without it;
* ``additive_floor`` = 1 / (t_raw + t_noise), gradient and noise timed in separate loops.
"""

from __future__ import annotations

import numpy as np
from cases import Case
from machine import ratio, summary


def _with_floor(rates: dict, all_rounds: list, layouts: list) -> str:
    """Name the faster floor layout, and add ``floor`` and ``floor_shuffle`` rates (in place)."""
    floor_layout = max(layouts, key=lambda k: np.median(rates[k]))
    rates["floor"] = rates[floor_layout]
    for r in (*all_rounds, rates):  # floor + shuffle: 1 / (t_floor + t_shuffle) per step
        t_floor, t_shuffle = 1.0 / np.median(r[floor_layout]), 1.0 / np.median(r["shuffle"])
        r["floor_shuffle"] = [1.0 / (t_floor + t_shuffle)]
    return floor_layout


def _per_round(all_rounds: list, floor_layout: str) -> dict:
    return {
        "sgld_vs_floor": [ratio(r["sgld"], r[floor_layout]) for r in all_rounds],
        "sgld_vs_floor_shuffle": [ratio(r["sgld"], r["floor_shuffle"]) for r in all_rounds],
        "sgld_vs_raw": [ratio(r["sgld"], r["raw"]) for r in all_rounds],
        "overhead_step": [ratio(r["sgld_nt"], r["sgld"]) for r in all_rounds],
        "overhead_grad": [ratio(r["raw_nt"], r["raw"]) for r in all_rounds],
        "overhead_step_lab": [
            ratio(r["sgld_nt"], r["sgld_lab"]) for r in all_rounds if "sgld_lab" in r
        ],
    }


def _if_measured(rates: dict, name: str, make):
    return make(rates[name]) if rates.get(name) else None


def _overhead_figures(rates: dict, per_round: dict) -> dict:
    """Teacher-prior overhead: time per step with the prior / without = rate without / with."""
    return {
        "no_teacher_sgld_steps_per_s": summary(rates["sgld_nt"]),
        "no_teacher_raw_gradient_steps_per_s": summary(rates["raw_nt"]),
        "teacher_prior_overhead_step": ratio(rates["sgld_nt"], rates["sgld"]),
        "teacher_prior_overhead_step_per_round": per_round["overhead_step"],
        "teacher_prior_overhead_gradient": ratio(rates["raw_nt"], rates["raw"]),
        "teacher_prior_overhead_gradient_per_round": per_round["overhead_grad"],
        # the prior on the labelled batch (digits only: the head has no transfer plate)
        "labelled_prior_sgld_steps_per_s": _if_measured(rates, "sgld_lab", summary),
        "teacher_prior_overhead_step_labelled_prior": _if_measured(
            rates, "sgld_lab", lambda v: ratio(rates["sgld_nt"], v)
        ),
        "teacher_prior_overhead_step_labelled_prior_per_round": per_round["overhead_step_lab"],
        "teacher_prior_overhead_gradient_equal_batches": _if_measured(
            rates, "raw_equal_batches", lambda v: ratio(rates["raw_nt"], v)
        ),
        "teacher_prior_overhead_gradient_labelled_prior": _if_measured(
            rates, "raw_labelled_prior", lambda v: ratio(rates["raw_nt"], v)
        ),
        "raw_gradient_equal_batches_steps_per_s": _if_measured(rates, "raw_equal_batches", summary),
    }


def sgld_figures(case: Case, rates: dict, all_rounds: list, ref: dict, expected: list) -> dict:
    """The figures of one case (the ``bench.json`` entry ``sgld.<case>``, chains aside)."""
    layouts = [name for name, _, _ in ref["loops"] if name.startswith("floor_")]
    floor_layout = _with_floor(rates, all_rounds, layouts)
    per_round = _per_round(all_rounds, floor_layout)
    raw, noise = float(np.median(rates["raw"])), float(np.median(rates["noise"]))
    return {
        "description": case.description,
        "num_parameters": ref["num_params"],
        "plates": expected,
        "steps_per_epoch": ref["steps_per_epoch"],
        "chunk_epochs": ref["chunk_epochs"],
        "steps_per_chunk": ref["steps"],
        "reference_loops_compile_seconds": ref["compile_seconds"],
        "background_per_round": [r["load"] for r in all_rounds],
        "sgld_chunk_seconds": ref["sgld_chunks"],
        "sgld_steps_per_s": summary(rates["sgld"]),
        "floor_layout": floor_layout,
        "floor_steps_per_s": summary(rates["floor"]),
        **{f"{k}_steps_per_s": summary(rates[k]) for k in layouts},
        # 1 / (t_raw + t_noise): gradient and noise timed in separate loops, added
        "additive_floor_steps_per_s": 1.0 / (1.0 / raw + 1.0 / noise),
        "raw_gradient_steps_per_s": summary(rates["raw"]),
        "noise_only_steps_per_s": summary(rates["noise"]),
        "sgld_vs_floor": ratio(rates["sgld"], rates["floor"]),
        "sgld_vs_floor_per_round": per_round["sgld_vs_floor"],
        # the per-epoch shuffles of the plates (drawn on the host), timed alone, per step
        "shuffle_steps_per_s": summary(rates["shuffle"]),
        "sgld_vs_floor_plus_shuffle": ratio(rates["sgld"], rates["floor_shuffle"]),
        "sgld_vs_floor_plus_shuffle_per_round": per_round["sgld_vs_floor_shuffle"],
        "sgld_vs_raw_gradient": ratio(rates["sgld"], rates["raw"]),
        "sgld_vs_raw_gradient_per_round": per_round["sgld_vs_raw"],
        **_overhead_figures(rates, per_round),
    }
