"""Where a run's fits run: the mesh and processes it records in ``run.json``, and the check
of its mesh against what the fits split over it."""

from __future__ import annotations

from typing import Any

import jax

from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.infer.mesh import check_mesh

__all__ = ["check_run_mesh", "placement"]


def placement(config: ExperimentConfig) -> dict[str, Any]:
    """Where the run's fits ran: the mesh's axes (``None`` without one) and the processes (SGLD's
    draws with a mesh depend on its ``data`` axis: the minibatches are stratified over it)."""
    mesh = config.mesh
    return {
        "mesh": None if mesh is None else {str(k): int(v) for k, v in mesh.shape.items()},
        "processes": jax.process_count(),
    }


def check_run_mesh(data: DistillationData, config: ExperimentConfig) -> None:
    """Refuse, before any fit, a ``config.mesh`` whose axes do not divide what every fit
    splits over them (the fits would each refuse it, one method after the other)."""
    if config.mesh is None:
        return
    sizes = {"the labelled inputs": len(data.y_train)}
    if data.prior_inputs is not None:
        sizes["the prior inputs"] = len(data.prior_inputs)
    batches = {"sgld_batch_size": config.sgld_batch_size} if config.bayes != "nuts" else {}
    check_mesh(config.mesh, num_chains=config.num_chains, batch_sizes=batches, data_sizes=sizes)
