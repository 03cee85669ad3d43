"""Reading a :class:`~mtbkd_jax.infer.Posterior` back from the netCDF file
:meth:`~mtbkd_jax.infer.Posterior.save` wrote (its ArviZ ``DataTree``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mtbkd_jax.infer.posterior import Posterior

__all__: list[str] = []


def read_posterior(
    cls: type[Posterior],
    path: str | os.PathLike[str],
    *,
    logits_fn: Callable | None = None,
    featurize: Callable | None = None,
) -> Posterior:
    """The posterior in ``path``, its fitted params (stored among the constant data, named in
    the root attrs) taken back out of the constant data."""
    import xarray as xr

    try:
        path = Path(path)
    except TypeError as error:
        raise TypeError(f"path must be a path, got {type(path).__name__}") from error
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} is not a file")
    try:
        opened = xr.open_datatree(path, engine="h5netcdf")
    except (OSError, ValueError) as error:  # not HDF5/netCDF-4 at all
        raise ValueError(
            f"path {str(path)!r} is not a posterior written by Posterior.save (a netCDF-4 "
            f"file); it cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''})"
        ) from None
    with opened as tree:
        if "posterior" not in tree.children:
            raise ValueError(
                f"path {str(path)!r} is not a posterior written by Posterior.save: it has "
                f"no 'posterior' group (groups: {sorted(tree.children)})"
            )

        def group(name: str) -> dict[str, np.ndarray]:
            if name not in tree.children:
                return {}
            data = tree[name].to_dataset().data_vars
            return {str(k): np.asarray(v.values) for k, v in data.items()}

        losses = group("optimization").get("loss")
        attrs = dict(tree.attrs)
        constant = group("constant_data")
        names = json.loads(attrs.get("mtbkd_fitted_params", "[]"))
        loaded = cls(
            draws=group("posterior"),
            sample_stats=group("sample_stats"),
            method=str(attrs.get("mtbkd_method", "")),
            settings=json.loads(attrs.get("mtbkd_settings", "{}")),
            observed_data=group("observed_data"),
            constant_data={k: v for k, v in constant.items() if k not in names},
            losses=losses,
            logits_fn=logits_fn,
            featurize=featurize,
            pointwise_log_likelihood=group("log_likelihood") or None,
            fitted_params={name: constant[name] for name in names if name in constant},
        )
    return loaded
