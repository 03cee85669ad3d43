"""Inference: the ``run_*`` front-ends (each returns a :class:`Posterior`), the SG-MCMC kernels,
the minibatch gradient estimator of NumPyro models, and the NumPyro ``MCMC`` adapter.

* Front-ends: :func:`run_map`, :func:`run_svi`, :func:`run_nuts`, :func:`run_sgmcmc`,
  :func:`run_paper_sgld`.
* Kernels (BlackJAX's shape: ``init(position) -> State``, ``step(rng_key, state, minibatch,
  step_size) -> (State, Info)``): :func:`sgld`, :func:`sghmc`, :func:`cyclical_sgld`,
  :func:`sgnht`, :func:`psgld`, :func:`ncsgld`; their modules hold ``init``, ``build_kernel``
  and the types.
* :func:`gradient_estimator`: the minibatch gradient of any NumPyro model with subsampled
  plates.
* :class:`SGMCMC`: a kernel for ``numpyro.infer.MCMC``.
* :func:`choose_step_size`: the SG-MCMC step size from pilot runs (:func:`check_step_size`
  judges one; ``run_sgmcmc(step_size="auto")`` applies the choice).
* ``mesh=`` on every front-end but :func:`run_paper_sgld`: a ``jax.sharding.Mesh`` with axes
  ``("chains", "data")`` (:mod:`mtbkd_jax.infer.mesh`).
* ``run_sgmcmc(stream=True)``: data larger than device memory, streamed from the host
  (:mod:`mtbkd_jax.infer.streaming`).
"""

from __future__ import annotations

from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._convergence import ConvergenceWarning
from mtbkd_jax.infer._driver import SamplerDivergedError
from mtbkd_jax.infer.checkpoint import CheckpointError
from mtbkd_jax.infer.cyclical_sgld import cyclical_sgld
from mtbkd_jax.infer.gradients import GradientEstimator, gradient_estimator
from mtbkd_jax.infer.ncsgld import ncsgld
from mtbkd_jax.infer.numpyro_kernel import SGMCMC
from mtbkd_jax.infer.nuts import run_nuts
from mtbkd_jax.infer.paper import run_paper_sgld
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.psgld import psgld
from mtbkd_jax.infer.sghmc import sghmc
from mtbkd_jax.infer.sgld import sgld
from mtbkd_jax.infer.sgmcmc import run_sgmcmc
from mtbkd_jax.infer.sgnht import sgnht
from mtbkd_jax.infer.step_size import (
    StepSizeCheck,
    StepSizeChoice,
    UnstableStepSizes,
    check_step_size,
    choose_step_size,
)
from mtbkd_jax.infer.svi import run_map, run_svi

__all__ = [
    "CheckpointError",
    "ConvergenceWarning",
    "GradientEstimator",
    "Posterior",
    "SGMCMC",
    "SamplerDivergedError",
    "StepSizeCheck",
    "StepSizeChoice",
    "UnstableStepSizes",
    "check_step_size",
    "choose_step_size",
    "cyclical_sgld",
    "gradient_estimator",
    "ncsgld",
    "psgld",
    "run_map",
    "run_nuts",
    "run_paper_sgld",
    "run_sgmcmc",
    "run_svi",
    "schedules",
    "sghmc",
    "sgld",
    "sgnht",
]
