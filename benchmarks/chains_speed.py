"""Several chains: vectorised on one device, and sharded over several CPU devices.

* **vectorised**: one ``run_sgmcmc`` call with ``num_chains`` chains (``vmap``), the same
  chunks as the one-chain figure; steps/s per chain from ``chunk_seconds``; draws/s = chains x
  1 draw per epoch x epochs/s, compared with one chain's.
* **on devices**: the same call in a fresh process started with ``jax_num_cpu_devices`` set
  (``_chains_worker.py``), so that ``run_sgmcmc`` shards the chains over the devices.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from cases import Case
from machine import HERE, log, summary
from sgld_runs import sgld_run


def sharded_chains_run(case_name: str, cfg: dict, chunk_epochs: int) -> dict:
    """The vectorised chains sharded over several CPU devices: ``_chains_worker.py`` in a
    fresh process (the device count is fixed when JAX starts)."""
    command = [
        sys.executable,
        str(HERE / "_chains_worker.py"),
        "--case",
        case_name,
        "--devices",
        str(cfg["chain_devices"]),
        "--chains",
        str(cfg["chains"]),
        "--chunk-epochs",
        str(chunk_epochs),
        "--steady-chunks",
        str(cfg["steady_chunks"]),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"_chains_worker.py failed for {case_name}:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if run["chain_devices"] != cfg["chain_devices"] or not run["finite"]:
        raise RuntimeError(f"{case_name}: unexpected sharded run {run}")
    return run


def chains_summary(chains: dict, cfg: dict, one_chain: float, steps_per_epoch: int) -> dict:
    per_chain = float(np.median(chains["rates"]))
    return {
        "num_chains": cfg["chains"],
        "chunk_seconds": chains["chunk_seconds"],
        "steps_per_s_per_chain": summary(chains["rates"]),
        "steps_per_s_all_chains": per_chain * cfg["chains"],
        # draws_per_epoch = 1: one kept draw per chain per epoch
        "draws_per_s": per_chain * cfg["chains"] / steps_per_epoch,
        "draws_per_s_one_chain": one_chain / steps_per_epoch,
        "speedup_vs_one_chain": per_chain * cfg["chains"] / one_chain,
    }


def chains_figures(case: Case, cfg: dict, chunk_epochs: int, one_chain: float) -> dict:
    """``{"chains": ..., "chains_on_devices": ...}`` for a case in ``cfg["chains_cases"]``
    (both None otherwise); ``one_chain`` is the one-chain SGLD steps/s of the same case."""
    if case.name not in cfg["chains_cases"]:
        return {"chains": None, "chains_on_devices": None}
    log(f"{case.name}: {cfg['chains']} vectorised chains")
    chains = sgld_run(
        case,
        num_chains=cfg["chains"],
        chunk_epochs=chunk_epochs,
        steady_chunks=cfg["steady_chunks"],
        seed=99,
    )
    log(f"{case.name}: {cfg['chains']} chains on {cfg['chain_devices']} CPU devices")
    sharded = sharded_chains_run(case.name, cfg, chunk_epochs)
    steps_per_epoch = chains["steps_per_epoch"]
    return {
        "chains": chains_summary(chains, cfg, one_chain, steps_per_epoch),
        "chains_on_devices": {
            **chains_summary(sharded, cfg, one_chain, steps_per_epoch),
            "devices": sharded["chain_devices"],
        },
    }
