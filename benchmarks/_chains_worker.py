"""Vectorised chains sharded over several CPU devices, in a fresh process: SGLD steps/s.

Run by bench.py as ``python _chains_worker.py --case C --devices D --chains K --chunk-epochs E
--steady-chunks S``; prints one JSON line. The device count must be set before JAX starts,
hence a process of its own; the run is the same ``run_sgmcmc`` call as ``sgld_runs.sgld_run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["digits", "reference"], required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--chains", type=int, required=True)
    parser.add_argument("--chunk-epochs", type=int, required=True)
    parser.add_argument("--steady-chunks", type=int, required=True)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    from cases import case_by_name
    from sgld_runs import sgld_run

    case = case_by_name(args.case)
    run = sgld_run(
        case,
        num_chains=args.chains,
        chunk_epochs=args.chunk_epochs,
        steady_chunks=args.steady_chunks,
        seed=98,
    )
    run["local_devices"] = len(jax.local_devices())
    print(json.dumps(run))


if __name__ == "__main__":
    main()
