"""What a linen student needs that an NNX one does not: a linen module holds no values.

An NNX module is an initialised instance: the weights a dict prior leaves unsampled keep its
values. A linen module is a description, so such weights would be random initial values,
drawn from whatever key each computation has (the sampler's seed, ``predict``'s, the
log-likelihood's): the posterior would predict with a network that was never sampled
(:func:`check_dict_prior_complete` refuses it).

A linen module bound to its variables (``module.bind(variables)``, e.g. a trained network with
its ``batch_stats``) does hold values: :func:`split_bound` gives its collections other than
``params`` (the weights are sampled), which the student applies as fixed constants in place
of their initial values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax import linen

__all__ = ["check_dict_prior_complete", "split_bound"]


def split_bound(module: Any) -> tuple[Any, dict[str, Any]]:
    """``(unbound module, its variable collections other than params)`` for a linen module
    bound to variables; ``(module, {})`` for any other module."""
    if not isinstance(module, linen.Module) or module.scope is None:
        return module, {}
    unbound, variables = module.unbind()
    return unbound, {name: value for name, value in variables.items() if name != "params"}


def check_dict_prior_complete(prior: object, names: list[str], student: str) -> None:
    """Raise a ``ValueError`` if ``prior`` is a dict that gives no distribution for some of
    a linen student's parameters ``names`` (dotted paths); other priors cover every weight."""
    if not isinstance(prior, Mapping):
        return
    unlisted = [n for n in names if n not in prior]
    if unlisted:
        raise ValueError(
            f"prior (a dict) gives no distribution for {unlisted} of the linen student "
            f"{student!r}: a linen student keeps no values for them (a bound module's "
            "parameters are not used), so these weights would be random "
            "initial values drawn with another key in each computation (the sampler, "
            "predict, log_likelihood), and the posterior would predict with a network that "
            f"was never sampled. Give every parameter a distribution (a dict with all of "
            f"{names}, or a prior for all such as normal_prior(...)), or use an NNX module, "
            "whose unlisted weights keep the module's values"
        )
