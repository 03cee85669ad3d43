"""The learned-scale base prior non-centred, for samplers that move one coordinate at a time.

:func:`~mtbkd_jax.scale_priors.hierarchical_normal_prior` integrates each group's scale out
(``w_l`` a multivariate Student-t), which suits NUTS. Minibatch SG-MCMC suffers from it on a
network: moving weight between layers (a tanh MLP's output kernel up, its hidden kernel down,
the function nearly unchanged) is a move of *every* weight of both arrays, one random-walk step
of ``sqrt(2 h)`` per coordinate at a step ``h`` set by the stiffest direction, so the chains
take hundreds of thousands of steps to reach the scales NUTS's draws have (``docs/results.md``,
"Noise-corrected SGLD"). Non-centred, each array is

    sigma_l^2 ~ InverseGamma(a', b'),     z_l ~ N(0, I),     w_l = sigma_l z_l,

with ``(a', b')`` the array's collapsed hyperprior (for arrays sharing a group, updated by the
arrays before it, :meth:`CollapsedNormal.given`, so the joint marginal of the ``w`` is the
collapsed prior's exactly); the same rescaling is then a move of two coordinates,
``log sigma_out^2`` and ``log sigma_hidden^2``. The posterior of the weights is unchanged; only
the coordinates the sampler walks in are (Papaspiliopoulos, Roberts & Skold 2007).

* :class:`NonCentredScale`: the NumPyro reparameterizer, for a model of your own
  (``numpyro.handlers.reparam(model, config=noncentred_config)``).
* :func:`noncentred`: the canonical :class:`~mtbkd_jax.MTBKDModel` (or any model) wrapped so;
  the samplers take it as they take the model. Its draws hold ``sigma^2`` and ``z``; its
  ``logits`` (a posterior's ``logits_fn``) multiplies them back, so predictions work unchanged.
* :func:`noncentred_point`: a point of the centred model (e.g. a MAP) in the non-centred
  coordinates, to start chains from (``init_params``); :func:`centred_weights`: draws or a
  point back in the weights ``w``; :func:`centred_posterior`: a posterior of the wrapped model
  as one of the model itself (its draws the weights, for diagnostics, ArviZ and the pointwise
  log-likelihood).

Each weight array gains two sites, ``<array>_scale2`` (``sigma^2``) and ``<array>_unit``
(``z``), named without the student's scope prefix, which NumPyro adds back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.reparam import Reparam
from numpyro.primitives import Messenger

from mtbkd_jax.scale_priors import CollapsedNormal

if TYPE_CHECKING:
    from mtbkd_jax.infer.posterior import Posterior

__all__ = [
    "NonCentredScale",
    "NonCentredModel",
    "centred_posterior",
    "centred_weights",
    "noncentred",
    "noncentred_config",
    "noncentred_point",
    "require_centred",
]

SCALE_SUFFIX, UNIT_SUFFIX = "_scale2", "_unit"


_NAME_KEY = "noncentred_name"  # where a site's intended name travels, in its ``infer`` dict


class _PinNames(Messenger):
    """Give each site :class:`NonCentredScale` samples the name it intended, ``<array>_scale2``
    or ``<array>_unit`` of the array's full name: the handlers between it and the model (a
    student's scope, linen's name rewriting) rename the site again on its way out. Pushed
    outside the reparam handler, so it acts after all of them."""

    def process_message(self, msg: dict[str, Any]) -> None:
        intended = (msg.get("infer") or {}).get(_NAME_KEY)
        if intended is not None:
            msg["name"] = intended


class NonCentredScale(Reparam):
    """``w ~ CollapsedNormal(a, b)`` as ``sigma^2 ~ InverseGamma(a, b)``, ``z ~ N(0, I)``,
    ``w = sigma z`` (the module docstring says why), each batch row of its own.

    Only for a :class:`~mtbkd_jax.scale_priors.CollapsedNormal` site without an observed
    value; :func:`noncentred_config` picks those sites (not one wrapped in a
    ``numpyro.plate``'s expansion, which stays centred). Use it through :func:`noncentred`:
    there the new sites are named ``<site>_scale2`` and ``<site>_unit`` after the site's full
    name whatever scopes it sits in; by ``numpyro.handlers.reparam`` alone that holds only for
    a site outside any ``numpyro.handlers.scope``.
    """

    def __call__(self, name: str, fn: Any, obs: Any) -> tuple[None, jax.Array]:
        if not isinstance(fn, CollapsedNormal):
            raise TypeError(
                f"NonCentredScale applies to CollapsedNormal sites, got {type(fn).__name__} "
                f"at {name!r}"
            )
        if obs is not None:
            raise ValueError(f"NonCentredScale cannot reparameterize the observed site {name!r}")
        scale2 = numpyro.sample(
            name + SCALE_SUFFIX,
            dist.InverseGamma(fn.concentration, fn.rate),
            infer={_NAME_KEY: name + SCALE_SUFFIX},
        )
        ndim = len(fn.event_shape)
        unit = numpyro.sample(
            name + UNIT_SUFFIX,
            dist.Normal(0.0, 1.0).expand(fn.batch_shape + fn.event_shape).to_event(ndim),
            infer={_NAME_KEY: name + UNIT_SUFFIX},
        )
        return None, jnp.sqrt(scale2)[(..., *(None,) * ndim)] * unit


def noncentred_config(site: Mapping[str, Any]) -> NonCentredScale | None:
    """``numpyro.handlers.reparam``'s ``config``: every unobserved
    :class:`~mtbkd_jax.scale_priors.CollapsedNormal` site non-centred, the rest unchanged."""
    if isinstance(site.get("fn"), CollapsedNormal) and not site.get("is_observed", False):
        return NonCentredScale()
    return None


class NonCentredModel:
    """``model`` with its learned-scale weights non-centred; everything else is ``model``'s
    (its logits, featurizer, minibatch plan and constants, read through to it).

    Build it with :func:`noncentred`."""

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model
        inner_logits = getattr(model, "logits", None)
        if inner_logits is not None:  # one function per model (jit caches on its identity)
            self.logits = partial(_logits_of_either, inner_logits)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with _PinNames(), handlers.reparam(config=noncentred_config):
            return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def settings(self) -> dict:
        """The model's settings and ``base_prior_coordinates: "non-centred"`` (a checkpoint of
        the centred model does not resume this one)."""
        own = getattr(self.model, "settings", None)
        return {**(own() if callable(own) else {}), "base_prior_coordinates": "non-centred"}

    def __repr__(self) -> str:
        return f"noncentred({self.model!r})"


def _logits_of_either(
    logits: Callable[..., jax.Array], weights: Mapping[str, Any], features: jax.Array
) -> jax.Array:
    """``logits`` of a draw given in either coordinates (:func:`centred_weights` first)."""
    return logits(centred_weights(weights), features)


def noncentred(model: Callable[..., Any]) -> NonCentredModel:
    """``model`` (an :class:`~mtbkd_jax.MTBKDModel` or a NumPyro model of your own) with every
    learned-scale weight array non-centred, for the SG-MCMC samplers.

    Start its chains with :func:`noncentred_point` of a MAP of ``model``.

    Example:
        >>> import numpy as np, numpyro
        >>> from flax import nnx
        >>> import mtbkd_jax as mk
        >>> from mtbkd_jax.noncentred import noncentred
        >>> from mtbkd_jax.scale_priors import hierarchical_normal_prior
        >>> student = mk.Student(mk.MLP(2, 2, hidden=(3,), rngs=nnx.Rngs(0)),
        ...                      prior=hierarchical_normal_prior())
        >>> model = noncentred(mk.MTBKDModel(student, None))
        >>> trace = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     np.zeros((4, 2), np.float32), np.zeros(4, np.int32))
        >>> [n for n in trace if n.startswith("student.layers.1")]  # doctest: +NORMALIZE_WHITESPACE
        ['student.layers.1.bias_scale2', 'student.layers.1.bias_unit', 'student.layers.1.bias',
         'student.layers.1.kernel_scale2', 'student.layers.1.kernel_unit',
         'student.layers.1.kernel']
    """
    if isinstance(model, NonCentredModel):
        return model
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a callable), got {type(model).__name__}")
    return NonCentredModel(model)


def noncentred_point(
    model: Callable[..., Any], point: Mapping[str, Any], *model_args: Any, **model_kwargs: Any
) -> dict[str, np.ndarray]:
    """A point of ``model``'s (centred) sites in :func:`noncentred`'s coordinates.

    Each learned-scale array ``w`` (prior ``CollapsedNormal(a, b)`` of ``n`` weights, ``a, b``
    given the arrays before it in its group) gets ``sigma^2`` at the mode of its conditional
    posterior ``InverseGamma(a + n/2, b + ||w||^2/2)`` and ``z = w / sigma``; so
    ``sigma z = w`` and the point maps to the same weights. The other sites are kept.

    Args:
        model: the centred model (not the :func:`noncentred` one).
        point: site -> value, e.g. ``mode.point()`` of a MAP of ``model``.
        model_args, model_kwargs: what the model is called with (inputs, labels, ...), to
            trace its sites.

    Raises:
        ValueError: if ``point`` lacks one of the learned-scale arrays.
    """
    inner = model.model if isinstance(model, NonCentredModel) else model
    values = {k: jnp.asarray(v) for k, v in point.items()}
    seeded = handlers.seed(handlers.substitute(inner, data=values), jax.random.key(0))
    trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
    out = {k: np.asarray(v) for k, v in point.items()}
    for name, site in trace.items():
        fn = site.get("fn")
        if site["type"] != "sample" or site["is_observed"] or not isinstance(fn, CollapsedNormal):
            continue
        if name not in point:
            raise ValueError(f"point has no value for the learned-scale site {name!r}")
        w = np.asarray(point[name], np.float64)
        a = np.asarray(fn.concentration, np.float64) + 0.5 * w.size
        b = np.asarray(fn.rate, np.float64) + 0.5 * float(np.sum(w**2))
        scale2 = b / (a + 1.0)  # the mode of InverseGamma(a, b)
        del out[name]
        out[name + SCALE_SUFFIX] = np.asarray(scale2, np.float32)
        out[name + UNIT_SUFFIX] = (w / np.sqrt(scale2)).astype(np.float32)
    return out


def centred_weights(draws: Mapping[str, Any]) -> dict[str, Any]:
    """Draws (or one point) of :func:`noncentred`'s sites with each pair ``<array>_scale2``,
    ``<array>_unit`` replaced by the weights ``<array> = sqrt(scale2) * unit``; other sites
    kept. Leading axes (chains, draws) broadcast: ``scale2`` has them alone, ``unit`` has them
    and the array's shape.

    Example:
        >>> import numpy as np
        >>> out = centred_weights({"w_scale2": np.array([4.0]), "w_unit": np.ones((1, 3)),
        ...                        "b": np.zeros(2)})
        >>> sorted(out), out["w"].tolist()
        (['b', 'w'], [[2.0, 2.0, 2.0]])
    """
    out = dict(draws)
    for name in [k for k in draws if k.endswith(SCALE_SUFFIX)]:
        array = name[: -len(SCALE_SUFFIX)]
        if array + UNIT_SUFFIX not in draws:
            continue
        scale2, unit = out.pop(name), out.pop(array + UNIT_SUFFIX)
        extra = np.ndim(unit) - np.ndim(scale2)
        if extra < 0:
            raise ValueError(f"{array + UNIT_SUFFIX} has fewer axes than {name}")
        root = jnp.sqrt(scale2) if isinstance(scale2, jax.Array) else np.sqrt(scale2)
        out[array] = root[(..., *(None,) * extra)] * unit
    return out


def centred_posterior(posterior: Posterior) -> Posterior:
    """A posterior sampled from :func:`noncentred`'s model as one of the model itself: its
    draws the weights (:func:`centred_weights`), its ``model`` and ``logits_fn`` the inner
    model's; the settings still say the coordinates the chains moved in. A posterior of any
    other model is returned as it is."""
    wrapped = posterior.model
    if not isinstance(wrapped, NonCentredModel):
        return posterior
    inner = wrapped.model
    logits_fn = getattr(inner, "logits", None) or posterior.logits_fn
    return replace(posterior, draws=centred_weights(posterior.draws), model=inner,
                   logits_fn=logits_fn)  # fmt: skip


def require_centred(draws: Mapping[str, Any], argument: str = "draws") -> None:
    """Raise a ``ValueError`` naming ``argument`` if ``draws`` hold non-centred sites
    (``<array>_scale2``, ``<array>_unit``) where weights are needed."""
    moved = sorted(k for k in draws if k.endswith((SCALE_SUFFIX, UNIT_SUFFIX)))
    if moved:
        raise ValueError(
            f"{argument} hold non-centred sites ({moved[:2]}...); pass the weights: "
            "mtbkd_jax.noncentred.centred_posterior(posterior) or centred_weights(draws)"
        )
