"""A model's own ``numpyro.param`` sites at the values SVI (or a MAP) fitted.

SVI optimises a model's ``numpyro.param`` sites together with its guide (type-II maximum
likelihood: a learned bias, a noise scale, the weights a :class:`~mtbkd_jax.Student`'s dict
prior leaves unsampled). The posterior must keep their fitted values: without them its
pointwise log-likelihood and predictions would run the model at each param's *initial* value,
a different model from the one fitted (a logistic regression with a learned intercept lost 105
nats of training log-likelihood that way). They are kept once, beside the draws
(``Posterior.fitted_params``), and put back by NumPyro's ``substitute`` wherever the model runs,
and given to a ``logits_fn`` with each draw. NUTS and SG-MCMC do not fit params (a param keeps
its initial value there, in the fit and after it alike), so their posteriors hold none.

A NumPyro network's weight holder (``name$params``) whose every weight ``random_flax_module``
/ ``random_nnx_module`` lifted to a sample site has no array left in it (each lifted weight is a
``ParamShape``, a pytree without leaves): it is unused and left out. A holder with unsampled
weights is kept.

A file (``Posterior.save``) holds each fitted param too: an array under its own name, and a
pytree (such a holder, with the ``ParamShape`` markers of its lifted weights) or a name with
'/' (which ArviZ rejects) as arrays plus a layout in the root attrs that ``Posterior.load``
rebuilds it from.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from numpyro import handlers

from mtbkd_jax._tracing import abstract_trace

__all__: list[str] = []


def fitted_params(
    model: Callable, args: tuple, kwargs: dict[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The model's ``numpyro.param`` sites at their values in ``params`` (SVI's parameters,
    which hold the guide's too), in the model's order, less unused weight holders."""
    names: list[str] = []

    def run() -> None:
        trace = abstract_trace(model, args, kwargs)
        names.extend(name for name, site in trace.items() if site["type"] == "param")

    jax.eval_shape(run)
    return {
        name: params[name]
        for name in names
        if name in params and jax.tree.leaves(params[name])  # a holder fully lifted: none
    }


def warn_unfitted_params(params: Collection[str], sampler: str) -> None:
    """Warn, at the user's line, that ``sampler``, started at given points, keeps the model's
    ``params`` (its param sites holding arrays) at their initial values: a MAP or SVI fit
    trains them, so a chain started at such a fit's point would start in another model."""
    if params:
        warnings.warn(
            f"the model has numpyro.param sites {sorted(params)} (for a Student: the weights "
            f"its dict prior leaves unsampled), which {sampler} keeps at their initial values; "
            "run_map and run_svi train them (Posterior.fitted_params), so a chain started at "
            "such a fit's point starts in another model. Give every weight a prior, or, in a "
            "model of your own, put the fitted values in: numpyro.handlers.substitute(model, "
            "data=fit.fitted_params)",
            UserWarning,
            skip_file_prefixes=(str(Path(__file__).parents[1]),),
        )


def with_fitted_params(model: Callable, fitted: Mapping[str, Any]) -> Callable:
    """``model`` with its params at their fitted values (itself when there are none)."""
    return handlers.substitute(model, data=dict(fitted)) if fitted else model


PACKED = "mtbkd_fitted_param_bytes"  # the laid-out params' arrays, as one byte string
PLAIN_ATTR, LAYOUT_ATTR = "mtbkd_fitted_params", "mtbkd_fitted_param_layouts"


class StoredParams(NamedTuple):
    """What a file holds of the fitted params: constant-data ``arrays`` and root ``attrs``."""

    arrays: dict[str, np.ndarray]
    attrs: dict[str, str]


def storable_params(fitted: Mapping[str, Any], taken: Collection[str] = ()) -> StoredParams:
    """The fitted params as a file holds them. An array of a plain numeric dtype whose name
    ArviZ accepts (no '/') and no other variable of the group has (``taken``) is stored under
    its name (``PLAIN_ATTR`` lists them). Every other param (a pytree: a network's weight
    holder, with its unsampled weights and the ``ParamShape`` markers of the lifted ones, under
    dict keys that are strings or integers; a name with '/'; bfloat16 and the like) is laid out
    in JSON (``LAYOUT_ATTR``), its arrays packed into one byte variable: one variable however
    many leaves (a variable per leaf made loading quadratic in their number). A value of
    another kind (another pytree node, an object array) is left out with a warning naming it:
    a loaded posterior would predict with its initial value."""
    plain: dict[str, np.ndarray] = {}
    chunks: list[bytes] = []
    layouts: dict[str, Any] = {}
    left_out = []
    for name, value in fitted.items():
        if _is_array(value) and _plain_dtype(value) and "/" not in name and name not in taken:
            plain[name] = np.asarray(value)
            continue
        try:
            layouts[name] = _layout(value, chunks)
        except _NotStorable:
            left_out.append(name)
    if left_out:
        warnings.warn(
            f"the fitted numpyro.param sites {left_out} are not written to the file (a pytree "
            "node other than dict (string or integer keys), list, tuple or ParamShape, or an "
            "object array): a posterior loaded from it predicts with their initial values",
            UserWarning,
            stacklevel=4,
        )
    arrays, attrs = dict(plain), {}
    if plain:
        attrs[PLAIN_ATTR] = json.dumps(list(plain))
    if layouts:
        variable = PACKED
        while variable in taken or variable in fitted:
            variable += "_"
        if chunks:
            arrays[variable] = np.frombuffer(b"".join(chunks), np.uint8)
        order = [name for name in fitted if name in plain or name in layouts]
        layout = {"variable": variable, "order": order, "params": layouts}
        attrs[LAYOUT_ATTR] = json.dumps(layout)
    return StoredParams(arrays, attrs)


def restored_params(constant: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> dict:
    """The fitted params :func:`storable_params` wrote, out of the file's constant data and
    root attrs, in the model's order."""
    names = json.loads(attrs.get(PLAIN_ATTR, "[]"))
    out: dict[str, Any] = {name: constant[name] for name in names if name in constant}
    if LAYOUT_ATTR not in attrs:
        return out
    layout = json.loads(attrs[LAYOUT_ATTR])
    packed = np.asarray(constant.get(layout["variable"], np.zeros(0, np.uint8)), np.uint8)
    out.update({k: _rebuilt(v, packed.tobytes()) for k, v in layout["params"].items()})
    return {name: out[name] for name in layout["order"] if name in out}


def stored_variables(attrs: Mapping[str, Any]) -> set[str]:
    """The constant-data variables that hold fitted params, not data."""
    found = set(json.loads(attrs.get(PLAIN_ATTR, "[]")))
    if LAYOUT_ATTR in attrs:
        found.add(json.loads(attrs[LAYOUT_ATTR])["variable"])
    return found


class _NotStorable(Exception):
    pass


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray | np.generic | float | int)


def _plain_dtype(value: Any) -> bool:
    """A dtype a netCDF file holds as it is (NumPy's own booleans, integers and floats)."""
    dtype = np.asarray(value).dtype
    return dtype.kind in "biuf" and dtype.type.__module__ == "numpy"


def _layout(value: Any, chunks: list[bytes]) -> dict[str, Any]:
    """``value``'s layout (``{"array": [offset, nbytes, dtype, shape]}``, ``{"dict": [[key,
    layout], ...]}``, ``{"list": [...]}``, ``{"tuple": [...]}``, ``{"param_shape": shape}``),
    its arrays' bytes appended to ``chunks``."""
    from numpyro.contrib.module import ParamShape

    if _is_array(value):
        array = np.ascontiguousarray(np.asarray(value))
        if array.dtype.kind == "O":
            raise _NotStorable
        offset = sum(len(c) for c in chunks)
        chunks.append(array.tobytes())
        return {"array": [offset, array.nbytes, array.dtype.name, list(array.shape)]}
    if isinstance(value, ParamShape):
        return {"param_shape": [int(d) for d in value.shape]}
    if isinstance(value, dict):
        if not all(type(k) in (str, int) for k in value):  # JSON keeps both apart, not bool
            raise _NotStorable
        return {"dict": [[k, _layout(v, chunks)] for k, v in value.items()]}
    if type(value) in (list, tuple):
        return {type(value).__name__: [_layout(v, chunks) for v in value]}
    raise _NotStorable


def _rebuilt(layout: Mapping[str, Any], packed: bytes) -> Any:
    from numpyro.contrib.module import ParamShape

    kind, content = next(iter(layout.items()))
    if kind == "array":
        offset, nbytes, dtype, shape = content
        raw = packed[offset : offset + nbytes]
        return np.frombuffer(raw, _dtype(dtype)).reshape(shape).copy()
    if kind == "param_shape":
        return ParamShape(tuple(content))
    if kind == "dict":
        return {k: _rebuilt(v, packed) for k, v in content}
    items = [_rebuilt(v, packed) for v in content]
    return items if kind == "list" else tuple(items)


def _dtype(name: str) -> np.dtype:
    """A dtype by name, NumPy's or ml_dtypes' (bfloat16, float8_*: JAX's extra floats)."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
