"""Reading a :class:`~mtbkd_jax.infer.Posterior` back from the netCDF file
:meth:`~mtbkd_jax.infer.Posterior.save` wrote (its ArviZ ``DataTree``), and the checks the
file carries for it: whether the student had a frozen feature extractor (``load`` must be
given it again), and the logits of the first draw on two training examples (``load``'s
``logits_fn`` must give them again: another activation or network is refused)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtbkd_jax.infer._fitted_params import restored_params, stored_variables

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

    try:
        path = Path(path).expanduser()
    except TypeError as error:
        raise TypeError(f"path must be a path, got {type(path).__name__}") from error
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} is not a file")
    try:
        return _read(cls, path, logits_fn, featurize)
    except (OSError, KeyError, RuntimeError) as error:  # not HDF5, or a damaged block in it
        raise ValueError(
            f"path {str(path)!r} is not a posterior written by Posterior.save (a netCDF-4 "
            f"file), or is damaged; it cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''})"
        ) from None


def _read(
    cls: type[Posterior], path: Path, logits_fn: Callable | None, featurize: Callable | None
) -> Posterior:
    import xarray as xr

    try:
        opened = xr.open_datatree(path, engine="h5netcdf")
    except ValueError as error:  # not netCDF-4
        raise OSError(str(error)) from None
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
            return {str(k): _by_name(v, name) for k, v in data.items()}

        losses = group("optimization").get("loss")
        streamed = _streamed_from(group(STREAMED_GROUP))
        attrs = {str(k): v for k, v in tree.attrs.items()}
        constant = group("constant_data")
        fitted_names = stored_variables(attrs)
        loaded = cls(
            draws=group("posterior"),
            sample_stats=group("sample_stats"),
            method=str(attrs.get("mtbkd_method", "")),
            settings=json.loads(attrs.get("mtbkd_settings", "{}")),
            observed_data=group("observed_data"),
            constant_data={k: v for k, v in constant.items() if k not in fitted_names},
            losses=losses,
            logits_fn=logits_fn,
            featurize=featurize,
            pointwise_log_likelihood=group("log_likelihood") or None,
            fitted_params=restored_params(constant, attrs),
            streamed=streamed,
        )
    if attrs.get(FEATURIZE_ATTR) and featurize is None:
        loaded.featurize = _extractor_not_given
    if logits_fn is not None and attrs.get(LOGITS_ATTR):
        _check_logits(loaded, json.loads(attrs[LOGITS_ATTR]))
    return loaded


FEATURIZE_ATTR, LOGITS_ATTR = "mtbkd_feature_extractor", "mtbkd_logits_check"
STREAMED_GROUP = "streamed_predictive"  # Posterior.streamed: what a keep_draws=False run keeps


def with_streamed(tree: Any, streamed: dict) -> Any:
    """``tree`` with :attr:`Posterior.streamed` (numeric arrays and numbers) as its own group
    (dims ``<name>_dim_<i>``); an entry of another kind is left out, with a warning."""
    import warnings

    import xarray as xr

    kept, left = {}, []
    for name, value in streamed.items():
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            kept[name] = xr.Variable([f"{name}_dim_{i}" for i in range(array.ndim)], array)
        else:
            left.append(name)
    if left:
        warnings.warn(
            f"Posterior.streamed entries {sorted(left)} are not arrays of numbers and are not "
            "written to the file: keep them apart",
            UserWarning,
            stacklevel=3,
        )
    if kept:
        tree[STREAMED_GROUP] = xr.DataTree(xr.Dataset(kept))
    return tree


def _streamed_from(group: dict[str, np.ndarray]) -> dict:
    """The streamed summaries read back; a number (``num_draws``) as a Python number."""
    return {k: v.item() if v.ndim == 0 else v for k, v in group.items()}


def _by_name(variable: Any, group: str) -> np.ndarray:
    """A variable's values with ``chain`` and ``draw`` first, found by name (a file of another
    tool may order them otherwise) where the group has them."""
    dims = list(variable.dims)
    if group in ("posterior", "sample_stats", "log_likelihood"):
        if "chain" not in dims or "draw" not in dims:
            raise ValueError(f"the {group!r} group's variables need 'chain' and 'draw' dims")
        variable = variable.transpose("chain", "draw", ...)
    return np.asarray(variable.values)


def _extractor_not_given(inputs: Any) -> Any:
    raise ValueError(
        "the student of this posterior reads features from a frozen feature extractor, which "
        "Posterior.load was not given: pass featurize= (e.g. student.featurize) to "
        "Posterior.load, or predict from features with featurized=True"
    )


def file_checks(posterior: Posterior) -> dict[str, str]:
    """Root attrs :meth:`~mtbkd_jax.infer.Posterior.save` adds: the feature extractor's
    presence, and the first draw's logits on two of the training features (when known)."""
    out = {FEATURIZE_ATTR: "true"} if _extracts_features(posterior.featurize) else {}
    inputs = posterior.inputs if posterior.inputs is not None else posterior.check_features
    if posterior.logits_fn is None or inputs is None or not _addressable(inputs):
        return out
    features = np.asarray(inputs[:2])
    logits = np.asarray(_first_draw_logits(posterior, features), np.float32)
    out[LOGITS_ATTR] = json.dumps({"features": _encoded(features), "logits": _encoded(logits)})
    return out


def _extracts_features(featurize: Callable | None) -> bool:
    """Whether ``featurize`` does something: a :class:`~mtbkd_jax.Student`'s (or its model's)
    only with a feature extractor, any other callable a user gave always."""
    if featurize is None:
        return False
    owner = getattr(featurize, "__self__", None)
    student = getattr(owner, "student", owner)
    if student is not None and hasattr(student, "feature_extractor"):
        return student.feature_extractor is not None
    return True


def _addressable(array: Any) -> bool:
    """Whether this process holds every row (not one process's shard of a global array)."""
    return bool(getattr(array, "is_fully_addressable", True))


def _first_draw_logits(posterior: Posterior, features: np.ndarray) -> Any:
    assert posterior.logits_fn is not None  # the callers checked it
    return posterior.logits_fn({**posterior.point(), **posterior.fitted_params}, features)


def _encoded(array: np.ndarray) -> dict:
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode(),
    }


def _decoded(stored: dict) -> np.ndarray:
    raw = base64.b64decode(stored["data"])
    return np.frombuffer(raw, np.dtype(stored["dtype"])).reshape(stored["shape"])


def _check_logits(posterior: Posterior, stored: dict) -> None:
    """Refuse a ``logits_fn`` that does not give the saved logits of the first draw (another
    activation, another network): its predictions would be another model's."""
    saved = _decoded(stored["logits"]).astype(np.float64)
    try:
        again = np.asarray(_first_draw_logits(posterior, _decoded(stored["features"])), np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"logits_fn cannot evaluate this posterior's draws ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}): is it the student the posterior was fitted with?"
        ) from None
    scale = max(1.0, float(np.abs(saved).max()))
    if again.shape != saved.shape or not np.allclose(again, saved, rtol=1e-4, atol=1e-4 * scale):
        how = (
            f"differ from those saved by up to {float(np.abs(again - saved).max()):.3g}"
            if again.shape == saved.shape
            else f"have shape {again.shape}, those saved {saved.shape}"
        )
        raise ValueError(
            "logits_fn does not give this posterior's logits: on two training examples its "
            f"first draw's logits {how}. Pass the student the posterior was fitted with "
            f"(saved: {posterior.settings.get('student', 'not recorded')})"
        )
