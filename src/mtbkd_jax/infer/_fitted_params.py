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

import warnings
from collections.abc import Callable, Mapping
from typing import Any

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


def with_fitted_params(model: Callable, fitted: Mapping[str, Any]) -> Callable:
    """``model`` with its params at their fitted values (itself when there are none)."""
    return handlers.substitute(model, data=dict(fitted)) if fitted else model


def storable_params(
    fitted: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fitted params as a file holds them: arrays under their own names (those ArviZ
    accepts), and ``(leaves, layouts)`` for the rest: a pytree (a linen student's
    ``student$params`` holder with its unsampled weights, and the ``ParamShape`` markers of the
    lifted ones) or a name with '/' becomes arrays named ``mtbkd_fitted_param_<k>`` plus a
    JSON-able layout that :func:`restored_params` rebuilds it from. A value of another kind
    (a pytree node other than dict, list, tuple or ``ParamShape``) is left out with a warning
    naming it: a loaded posterior would predict with its initial value."""
    stored: dict[str, np.ndarray] = {}
    laid_out: dict[str, np.ndarray] = {}  # the leaves of the laid-out params
    layouts: dict[str, Any] = {}
    left_out = []
    for name, value in fitted.items():
        if _is_array(value) and "/" not in name:
            stored[name] = np.asarray(value)
            continue
        leaves: dict[str, np.ndarray] = {}
        try:
            layout = _layout(value, leaves, first=len(laid_out))
        except _NotStorable:
            left_out.append(name)
            continue
        laid_out.update(leaves)
        layouts[name] = layout
    if left_out:
        warnings.warn(
            f"the fitted numpyro.param sites {left_out} are not written to the file (a pytree "
            "node other than dict, list, tuple or ParamShape): a posterior loaded from it "
            "predicts with their initial values",
            UserWarning,
            stacklevel=4,
        )
    return {**stored, **laid_out}, layouts


def restored_params(
    constant: Mapping[str, np.ndarray], names: list[str], layouts: Mapping[str, Any]
) -> dict[str, Any]:
    """The fitted params :func:`storable_params` wrote, out of the file's constant data."""
    out: dict[str, Any] = {name: constant[name] for name in names if name in constant}
    out.update({name: _rebuilt(layout, constant) for name, layout in layouts.items()})
    return out


def stored_leaf_names(layouts: Mapping[str, Any]) -> set[str]:
    """The constant-data variables that hold the leaves of the laid-out params."""
    found: set[str] = set()

    def visit(layout: Any) -> None:
        kind, content = next(iter(layout.items()))
        if kind == "array":
            found.add(content)
        elif kind == "dict":
            for item in content.values():
                visit(item)
        elif kind in ("list", "tuple"):
            for item in content:
                visit(item)

    for layout in layouts.values():
        visit(layout)
    return found


class _NotStorable(Exception):
    pass


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray | np.generic | float | int)


def _layout(value: Any, leaves: dict[str, np.ndarray], first: int) -> dict[str, Any]:
    """``value``'s layout (``{"array": variable}``, ``{"dict": {...}}``, ``{"list": [...]}``,
    ``{"tuple": [...]}``, ``{"param_shape": shape}``), its arrays added to ``leaves``."""
    from numpyro.contrib.module import ParamShape

    if _is_array(value):
        variable = f"mtbkd_fitted_param_{first + len(leaves)}"
        leaves[variable] = np.asarray(value)
        return {"array": variable}
    if isinstance(value, ParamShape):
        return {"param_shape": [int(d) for d in value.shape]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _layout(v, leaves, first) for k, v in value.items()}}
    if type(value) in (list, tuple):
        return {type(value).__name__: [_layout(v, leaves, first) for v in value]}
    raise _NotStorable


def _rebuilt(layout: Mapping[str, Any], constant: Mapping[str, np.ndarray]) -> Any:
    from numpyro.contrib.module import ParamShape

    kind, content = next(iter(layout.items()))
    if kind == "array":
        return constant[content]
    if kind == "param_shape":
        return ParamShape(tuple(content))
    if kind == "dict":
        return {k: _rebuilt(v, constant) for k, v in content.items()}
    items = [_rebuilt(v, constant) for v in content]
    return items if kind == "list" else tuple(items)
