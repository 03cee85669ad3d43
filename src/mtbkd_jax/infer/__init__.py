"""Inference front-ends; each returns a :class:`Posterior`."""

from mtbkd_jax.infer import schedules
from mtbkd_jax.infer.checkpoint import CheckpointError
from mtbkd_jax.infer.nuts import run_nuts
from mtbkd_jax.infer.paper import run_paper_sgld
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.sgmcmc import SamplerDivergedError, run_sgmcmc
from mtbkd_jax.infer.svi import run_map, run_svi

__all__ = [
    "CheckpointError",
    "Posterior",
    "SamplerDivergedError",
    "run_map",
    "run_nuts",
    "run_paper_sgld",
    "run_sgmcmc",
    "run_svi",
    "schedules",
]
