"""Inference front-ends; each returns a :class:`Posterior`."""

from mtbkd_jax.infer.nuts import run_nuts
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.svi import run_map, run_svi

__all__ = ["Posterior", "run_map", "run_nuts", "run_svi"]
