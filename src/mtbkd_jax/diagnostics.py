"""ArviZ integration (this module and :mod:`mtbkd_jax.plots` are the only ones importing ArviZ).

Conversion to an ArviZ 1.x ``xarray.DataTree`` and thin helpers that select parameters by
name, so summaries need not print every network weight.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from mtbkd_jax.infer.posterior import Posterior

__all__ = ["to_datatree", "summary", "parameter_names"]


def to_datatree(
    posterior: Posterior, *, log_likelihood: Mapping[str, ArrayLike] | None = None
) -> xr.DataTree:
    """Convert a :class:`~mtbkd_jax.Posterior` to an ArviZ ``xarray.DataTree``.

    Groups: ``posterior``, ``sample_stats`` (if any), ``observed_data`` (``y`` over
    ``example``), ``constant_data`` (``teacher_weights`` over ``teacher`` and
    ``prior_example``), ``log_likelihood`` (observed site -> (chains, draws, N)) when given,
    and ``optimization`` (the SVI/MAP loss trace) when present. The distillation settings are
    stored as JSON in the root attrs.
    """
    import arviz as az
    import xarray as xr

    groups: dict[str, dict[str, Any]] = {
        "posterior": {k: np.asarray(v) for k, v in posterior.draws.items()}
    }
    if posterior.sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in posterior.sample_stats.items()}
    if posterior.observed_data:
        groups["observed_data"] = dict(posterior.observed_data)
    if posterior.constant_data:
        groups["constant_data"] = dict(posterior.constant_data)
    if log_likelihood is not None:
        groups["log_likelihood"] = {k: np.asarray(v) for k, v in log_likelihood.items()}
    dims = {"y": ["example"], "teacher_weights": ["teacher", "prior_example"]}
    coords: dict[str, list[Any]] = {}
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


def parameter_names(tree: xr.DataTree, pattern: str | None = None) -> list[str]:
    """Posterior variable names, optionally only those containing ``pattern``."""
    names = [str(name) for name in tree.children["posterior"].data_vars]
    return [n for n in names if pattern is None or pattern in n]


def summary(
    tree: xr.DataTree, pattern: str | None = None, **kwargs: Any
) -> pd.DataFrame | xr.Dataset:
    """``arviz.summary`` restricted to the variables whose name contains ``pattern``.

    ``kwargs`` go to ``arviz.summary``; it returns a ``pandas.DataFrame``, or an
    ``xarray.Dataset`` with ``fmt="xarray"``.
    """
    import arviz as az

    return az.summary(tree, var_names=parameter_names(tree, pattern), **kwargs)
