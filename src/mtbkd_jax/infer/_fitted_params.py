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


def storable_params(fitted: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The fitted params a file can hold (arrays, under names ArviZ accepts), with a warning
    naming each one left out: a loaded posterior has no model, and its predictions through a
    ``logits_fn`` would use that param's initial value."""
    stored, left_out = {}, []
    for name, value in fitted.items():
        if isinstance(value, jax.Array | np.ndarray | float | int) and "/" not in name:
            stored[name] = np.asarray(value)
        else:
            left_out.append(name)
    if left_out:
        warnings.warn(
            f"the fitted numpyro.param sites {left_out} are not written to the file (a pytree, "
            "or a name with '/', which ArviZ rejects): a posterior loaded from it predicts with "
            "their initial values",
            UserWarning,
            stacklevel=4,
        )
    return stored
