"""The field checks of :class:`~mtbkd_jax.experiments.ExperimentConfig`: a value of the wrong
kind fails when the config is built, naming the field, not inside ``run_baselines`` (which
records a method's failure and goes on with the others) or never (``tune="False"`` is a true
string, so the search ran)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

__all__ = ["check_fields"]

FLAGS = ("teacher_rows", "tune", "posterior_tuning", "progress_bar")
# integer fields and their least value
COUNTS = {
    "seed": 0,
    "num_warmup": 0,
    "trust_warmup": 0,
    "grid_extensions": 0,
    "num_draws": 1,
    "num_chains": 1,
    "trust_draws": 1,
    "map_steps": 1,
    "sgld_batch_size": 1,
    "sgld_epochs": 1,
    "sgld_draws_per_epoch": 1,
}
POSITIVE = ("prior_scale", "temperature", "prior_power", "learning_rate")
NONNEGATIVE = ("concentration", "grid_min_improvement")
GRIDS = ("prior_scale_grid", "concentration_grid", "prior_power_grid", "trust_prior_power_grid")
STEP_SIZES = ("sgld_step_size", "trust_sgld_step_size")
# the seeds a run accepts (as the CLI's --seed): a larger one was silently cut to its low 32
# bits by the random keys and the student's initialisation, so 2**32 ran seed 0
SEED_LIMIT = 2**32


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, least: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= least


def check_fields(config: Any) -> None:
    """Raise a ``ValueError`` naming the first field of ``config`` of the wrong kind."""
    for name in FLAGS:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}")
    for name, least in COUNTS.items():
        if not _count(getattr(config, name), least):
            raise ValueError(f"{name} must be an integer >= {least}, got {getattr(config, name)!r}")
    if int(config.seed) >= SEED_LIMIT:
        raise ValueError(f"seed must be an integer in 0..{SEED_LIMIT - 1}, got {config.seed!r}")
    for name in POSITIVE:
        value = getattr(config, name)
        if not (_number(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    for name in NONNEGATIVE:
        value = getattr(config, name)
        if not (_number(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    for name in GRIDS:  # a concentration grid may hold 0 (a flat Dirichlet: no distillation)
        grid, zero = getattr(config, name), name == "concentration_grid"
        fine = isinstance(grid, tuple | list) and len(grid) > 0
        if not fine or not all(_number(v) and (v > 0 or (zero and v == 0)) for v in grid):
            wanted = ">= 0" if zero else "> 0"
            raise ValueError(f"{name} must be a non-empty tuple of numbers {wanted}, got {grid!r}")
    for name in STEP_SIZES:
        value = getattr(config, name)
        if value != "auto" and not (_number(value) and value > 0):
            raise ValueError(f"{name} must be 'auto' or a finite number > 0, got {value!r}")
    budget = config.trust_search_budget  # a string or None failed comparing float and str
    if not (_number(budget) and 0.0 < budget <= 1.0):
        raise ValueError(
            f"trust_search_budget must be a fraction in (0, 1], a number, got {budget!r}"
        )
    hidden = config.hidden
    if not (isinstance(hidden, tuple | list) and all(_count(width, 1) for width in hidden)):
        raise ValueError(f"hidden must be a tuple of layer widths >= 1, got {hidden!r}")
