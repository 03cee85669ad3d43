"""SG-MCMC speed: the sampler against its floors, in interleaved rounds.

Per case (digits, reference head) and round: ``run_sgmcmc`` SGLD with the teacher prior,
without it, and (digits) with the prior on the labelled batch; then the reference loops of
:mod:`floors` (floor layouts, raw gradient with and without the prior, the noise alone, the
host's epoch shuffles, and for digits the transfer batch cut to the data batch and the prior on
the labelled batch). The figures derived from the rates are in :mod:`sgmcmc_figures`; the
vectorised and sharded chains in :mod:`chains_speed`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from cases import Case
from chains_speed import chains_figures
from floors import (
    epoch_shuffles,
    minibatch_loops,
    noise_loop,
    shuffle_block_epochs,
    timed,
)
from machine import BackgroundLoad, log, wait_for_quiet
from sgld_runs import sgld_run
from sgmcmc_figures import sgld_figures


def reference_loops(case: Case, cfg: dict, chunk_epochs: int) -> dict:
    """The jitted reference loops of a case (compiled by :func:`compile_loops`).

    Returns the loops ``[(name, fn, args)]``, the steps each runs, the starting position and
    the plates; every loop runs as many steps as one chunk of the sampler."""
    estimator, estimator_nt = case.estimator(), case.without_teachers().estimator()
    plates, plates_nt = estimator.plates, estimator_nt.plates
    steps_per_epoch = plates[0].size // plates[0].batch_size
    steps = chunk_epochs * steps_per_epoch
    permutations = {
        p.name: jax.random.permutation(jax.random.key(10 + i), p.size) for i, p in enumerate(plates)
    }
    permutations_nt = {p.name: permutations[p.name] for p in plates_nt}
    position = estimator.initial_position(jax.random.key(1))
    num_params = int(sum(np.size(v) for v in jax.tree.leaves(position)))
    floors, raw = minibatch_loops(steps_per_epoch, steps)
    noise, zeros = noise_loop(num_params, steps)
    key = jax.random.key(2)
    loops = [
        *((f"floor_{k}", floors[k], (position, key, estimator, permutations))
          for k in cfg["floor_layouts"]),
        ("raw", raw, (position, estimator, permutations)),
        ("raw_nt", raw, (position, estimator_nt, permutations_nt)),
        ("noise", noise, (zeros, key)),
    ]  # fmt: skip
    if len(plates) > 1 and len(cfg["floor_layouts"]) > 1:
        # a transfer plate: also the gradient with the transfer batch = B, and the same student
        # and teachers with the prior on the labelled batch (the reference code's setting)
        equal = case.estimator(transfer_batch=plates[0].batch_size)
        permutations_eq = {p.name: permutations[p.name] for p in equal.plates}
        labelled = case.with_prior_on_labelled().estimator()
        loops.append(("raw_equal_batches", raw, (position, equal, permutations_eq)))
        loops.append(("raw_labelled_prior", raw, (position, labelled, permutations_nt)))
    # the sampler's per-epoch shuffles of every plate for one chunk, drawn on the host with
    # NumPy as the sampler draws them (whole blocks of epochs; not in the floor: the sampler
    # draws them while the device runs the previous chunk)
    block = shuffle_block_epochs(plates)
    shuffle_epochs = -(-chunk_epochs // block) * block
    words = tuple(int(w) for w in np.asarray(jax.random.key_data(jax.random.key(3))).ravel())
    loops.append(("shuffle", epoch_shuffles(plates, shuffle_epochs, words), ()))
    return {
        "loops": loops,
        "loop_steps": {"shuffle": shuffle_epochs * steps_per_epoch},
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "plates": plates,
        "position": position,
        "num_params": num_params,
    }


def compile_loops(case: Case, loops: list) -> float:
    """Run every loop once (compiling it); seconds spent. Fails on a non-finite result."""
    start = time.perf_counter()
    for _, fn, args in loops:
        out = jax.block_until_ready(fn(*args))
        if not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(out)):
            raise FloatingPointError(f"{case.name}: a reference loop went non-finite")
    return time.perf_counter() - start


def one_round(variants: dict, ref: dict, cfg: dict, chunk_epochs: int, r: int) -> dict:
    """One interleaved round: the sampler runs, then every reference loop ``floor_reps``
    times. ``variants`` maps "sgld" / "sgld_nt" / "sgld_lab" to their cases."""
    round_rates, runs = {}, {}
    for name, case in variants.items():
        runs[name] = sgld_run(
            case,
            num_chains=1,
            chunk_epochs=chunk_epochs,
            steady_chunks=cfg["steady_chunks"],
            seed=r,
        )
        round_rates[name] = runs[name]["rates"]
    main = runs["sgld"]
    if main["steps_per_epoch"] != ref["steps_per_epoch"] or not main["finite"]:
        raise RuntimeError(f"{variants['sgld'].name}: unexpected run {main}")
    for name, fn, args in ref["loops"]:
        steps = ref["loop_steps"].get(name, ref["steps"])
        round_rates[name] = [steps / timed(fn, *args) for _ in range(cfg["floor_reps"])]
    return {"rates": round_rates, "plates": main["plates"], "chunks": main["chunk_seconds"]}


def bench_sgld(case: Case, cfg: dict, torch_setup=None) -> dict:
    """sgld_vs_floor, sgld_vs_raw_gradient, teacher-prior overhead, vectorised chains (and,
    for the reference head, the PyTorch loop), in interleaved rounds."""
    chunk_epochs = cfg["chunk_epochs"][case.name]
    ref = reference_loops(case, cfg, chunk_epochs)
    # PyTorch starts from the same weights
    torch_runner = None if torch_setup is None else torch_setup(ref["position"])
    compile_seconds = compile_loops(case, ref["loops"])
    variants = {"sgld": case, "sgld_nt": case.without_teachers()}
    if len(ref["plates"]) > 1:  # with a transfer plate: the prior on the labelled batch too
        variants["sgld_lab"] = case.with_prior_on_labelled()
    names = ("sgld", "sgld_nt", "sgld_lab", *(name for name, _, _ in ref["loops"]))
    rates = {k: [] for k in names}
    all_rounds, torch_rounds, sgld_chunks, plates_checked = [], [], [], None
    for r in range(cfg["rounds"]):
        log(f"{case.name}: round {r + 1}/{cfg['rounds']}")
        quiet = wait_for_quiet(f"{case.name} round {r + 1}")
        during = BackgroundLoad()
        done = one_round(variants, ref, cfg, chunk_epochs, r)
        plates_checked = done["plates"]
        sgld_chunks.append(done["chunks"])
        for name, values in done["rates"].items():
            rates[name].extend(values)
        if torch_runner is not None:
            torch_rounds.append(torch_runner())
        quiet["background_during"] = during.cores()
        done["rates"]["load"] = quiet
        all_rounds.append(done["rates"])

    expected = [[p.name, p.size, p.batch_size] for p in ref["plates"]]
    if plates_checked is not None and [list(p) for p in plates_checked] != expected:
        raise RuntimeError(
            f"{case.name}: the benchmark's plates {expected} differ from run_sgmcmc's "
            f"{plates_checked}; update benchmarks/cases.py"
        )
    ref.update(compile_seconds=compile_seconds, sgld_chunks=sgld_chunks, chunk_epochs=chunk_epochs)
    result = sgld_figures(case, rates, all_rounds, ref, expected)
    result.update(chains_figures(case, cfg, chunk_epochs, float(np.median(rates["sgld"]))))
    if torch_rounds:
        result["torch_rounds"] = torch_rounds
    return result
