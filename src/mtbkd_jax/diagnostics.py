"""ArviZ integration (this module and :mod:`mtbkd_jax.plots` are the only ones importing ArviZ).

Conversion to an ArviZ 1.x ``xarray.DataTree`` and thin helpers that select parameters by
name, so summaries need not print every network weight.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["to_datatree", "summary", "parameter_names"]


def to_datatree(posterior, *, log_likelihood: dict | None = None):
    """Convert a :class:`~mtbkd_jax.Posterior` to an ArviZ ``xarray.DataTree``.

    Groups: ``posterior``, ``sample_stats`` (if any), ``observed_data`` (``y`` over
    ``example``), ``constant_data`` (``teacher_weights`` over ``teacher`` and
    ``prior_example``), ``log_likelihood`` (observed site -> (chains, draws, N)) when given,
    and ``optimization`` (the SVI/MAP loss trace) when present. The distillation settings are
    stored as JSON in the root attrs.
    """
    import arviz as az
    import xarray as xr

    groups = {"posterior": {k: np.asarray(v) for k, v in posterior.draws.items()}}
    if posterior.sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in posterior.sample_stats.items()}
    if posterior.observed_data:
        groups["observed_data"] = dict(posterior.observed_data)
    if posterior.constant_data:
        groups["constant_data"] = dict(posterior.constant_data)
    if log_likelihood is not None:
        groups["log_likelihood"] = {k: np.asarray(v) for k, v in log_likelihood.items()}
    dims = {"y": ["example"], "teacher_weights": ["teacher", "prior_example"]}
    coords = {}
    names = posterior.settings.get("teacher_names")
    if names and "teacher_weights" in posterior.constant_data:
        coords["teacher"] = list(names)
    tree = az.from_dict(groups, dims=dims, coords=coords)
    if posterior.losses is not None and len(posterior.losses):
        tree["optimization"] = xr.DataTree(
            xr.Dataset({"loss": ("step", np.asarray(posterior.losses))})
        )
    tree.attrs["mtbkd_method"] = posterior.method
    tree.attrs["mtbkd_settings"] = json.dumps(posterior.settings, default=str)
    return tree


def parameter_names(tree, pattern: str | None = None) -> list[str]:
    """Posterior variable names, optionally only those containing ``pattern``."""
    names = list(tree["posterior"].data_vars)
    return [n for n in names if pattern is None or pattern in n]


def summary(tree, pattern: str | None = None, **kwargs):
    """``arviz.summary`` restricted to the variables whose name contains ``pattern``."""
    import arviz as az

    return az.summary(tree, var_names=parameter_names(tree, pattern), **kwargs)
