"""One ``run_sgmcmc`` SGLD call timed in steady state: the sampler's side of every SG-MCMC figure
(one chain, several chains, chains on several devices in ``_chains_worker.py``)."""

from __future__ import annotations

import jax
import numpy as np
from cases import Case
from floors import STEP_SIZE

import mtbkd_jax as mt


def sgld_run(case: Case, *, num_chains: int, chunk_epochs: int, steady_chunks: int, seed: int):
    """One run_sgmcmc SGLD call; steady-state rates from posterior.settings["chunk_seconds"]
    (the first chunk compiles and is dropped)."""
    posterior = mt.run_sgmcmc(
        jax.random.key(seed),
        case.model,
        case.inputs,
        case.labels,
        sampler="sgld",
        step_size=STEP_SIZE,
        num_chains=num_chains,
        num_epochs=chunk_epochs * (1 + steady_chunks),
        draws_per_epoch=1,
        chunk_epochs=chunk_epochs,
        progress_bar=False,
        **case.sgmcmc_kwargs(),
    )
    steps_per_epoch = int(posterior.settings["steps_per_epoch"])
    chunks = [(int(e), float(s)) for e, s in posterior.settings["chunk_seconds"]]
    finite = all(np.isfinite(np.asarray(v)).all() for v in posterior.draws.values())
    return {
        "steps_per_epoch": steps_per_epoch,
        "plates": posterior.settings.get("plates"),
        "chunk_seconds": chunks,
        # steps per second of each chain (all chains advance together)
        "rates": [e * steps_per_epoch / s for e, s in chunks[1:]],
        "finite": bool(finite),
        "chain_devices": int(posterior.settings["chain_devices"]),
    }
