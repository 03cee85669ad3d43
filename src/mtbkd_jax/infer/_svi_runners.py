"""The jitted SVI chunk runners ``run_svi`` keeps between calls, and the ELBO they use.

A runner (:class:`_Runner`, at most ``_RUNNER_CACHE_SIZE`` of them) is kept for the same model
object, guide, optimiser settings, static model keyword arguments and data shapes, so that a
second fit of a model is not traced and compiled again. The cache holds the model only weakly:
its entries go when the model does. :class:`SortedTraceELBO` sums NumPyro's ELBO terms in a
fixed order, so losses do not depend on ``PYTHONHASHSEED``."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO, init_to_uniform
from numpyro.infer.autoguide import (
    AutoDelta,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoNormal,
)
from numpyro.optim import optax_to_numpyro

if TYPE_CHECKING:
    from numpyro.infer.svi import SVIState

__all__ = ["GUIDES", "SortedTraceELBO"]

GUIDES = {"normal": AutoNormal, "lowrank": AutoLowRankMultivariateNormal, "delta": AutoDelta}

_RUNNER_CACHE_SIZE = 32
_runners: OrderedDict[tuple, _Runner] = OrderedDict()
_watched_models: set[int] = set()  # ids of the models with a finaliser that clears _runners
_runners_lock = threading.Lock()


class SortedTraceELBO(Trace_ELBO):
    """NumPyro's ``Trace_ELBO`` with its per-site terms summed in the order of the site names.

    ``Trace_ELBO`` sums the sites' terms in the iteration order of a Python ``set`` of names,
    which depends on the process's string-hash seed (``PYTHONHASHSEED``): the same fit in two
    processes then differs in the last bits of every loss, and a chaotic sampler started from it
    (NUTS) gives other draws. Summed in name order, a fit is the same in every process.
    """

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, sum_sites=False)

    def loss_with_mutable_state(
        self,
        rng_key: jax.Array,
        param_map: dict[str, jax.Array],
        model: Callable,
        guide: Callable,
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, Any]:
        out = super().loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)
        terms = out["loss"]
        out["loss"] = sum((terms[name] for name in sorted(terms)), start=jnp.array(0.0))
        return out


def _make_guide(guide: str, model: Callable, init_scale: float, rank: int | None) -> AutoGuide:
    """A fresh autoguide (its prototype, hence its initial values, is set by ``SVI.init``)."""
    init_loc = init_to_uniform(radius=0.5)
    if guide == "delta":
        return AutoDelta(model, init_loc_fn=init_loc)
    if guide == "lowrank":
        extra = {} if rank is None else {"rank": int(rank)}
        return AutoLowRankMultivariateNormal(
            model, init_loc_fn=init_loc, init_scale=init_scale, **extra
        )
    return AutoNormal(model, init_loc_fn=init_loc, init_scale=init_scale)


def _weak_model(model: Callable) -> Callable:
    """A model that calls ``model`` through a weak reference (so that a cached runner does not
    keep the model alive)."""
    reference = weakref.ref(model)

    def weak_model(*args: Any, **kwargs: Any) -> Any:
        target = reference()
        if target is None:
            raise ReferenceError("the model of a cached SVI runner no longer exists")
        return target(*args, **kwargs)

    return weak_model


@dataclass(frozen=True)
class _Settings:
    """What a traced chunk runner depends on besides the model and the data's shapes (the
    optimiser by identity; the learning rate only for the default Adam)."""

    guide: str
    optimizer: optax.GradientTransformation | None
    learning_rate: float | None
    num_particles: int
    init_scale: float
    rank: int | None
    static: tuple  # the static (non-array) model keywords: sorted (name, (type, value))


class _Runner:
    """An ``SVI`` object, its guide and its jitted chunk runner
    ``run_chunk(state, features, labels, arrays, length) -> (state, losses)``; and
    ``losses_at(state, features, labels, arrays, keys)``, the loss at the state's parameters
    for each key (a minibatch model draws the same minibatches from the same key).

    ``fresh`` is true until the runner's own ``SVI`` (whose guide the chunk runner is traced
    with) has been initialised; later fits initialise a new guide of the same structure, so
    that their initial values come from their own key, exactly as without the cache.
    """

    def __init__(self, model: Callable, settings: _Settings) -> None:
        self.model, self.settings = model, settings
        optim = optax_to_numpyro(settings.optimizer or optax.adam(settings.learning_rate))
        self.guide = self._guide()
        elbo = SortedTraceELBO(num_particles=settings.num_particles)
        self.svi = SVI(model, self.guide, optim, elbo)
        self.fresh = True
        self.lock = threading.Lock()
        svi, static = self.svi, {name: value for name, (_, value) in settings.static}
        self.static = static  # the static model keywords, as the programs see them

        def run_chunk(
            state: SVIState,
            features: jax.Array,
            labels: jax.Array | None,
            arrays: dict[str, Any],
            length: int,
        ) -> tuple[SVIState, jax.Array]:
            def step(state: SVIState, _: None) -> tuple[SVIState, jax.Array]:
                return svi.update(state, features, labels, **arrays, **static)

            return jax.lax.scan(step, state, None, length=length)

        self.run_chunk = jax.jit(run_chunk, static_argnums=4)

        def losses_at(
            state: SVIState,
            features: jax.Array,
            labels: jax.Array | None,
            arrays: dict[str, Any],
            keys: jax.Array,
        ) -> jax.Array:
            def loss(key: jax.Array) -> jax.Array:  # one key, one draw of every minibatch
                return svi.evaluate(
                    state._replace(rng_key=key), features, labels, **arrays, **static
                )

            return jax.lax.map(loss, keys)  # one at a time: a full-batch loss's memory once

        self.losses_at = jax.jit(losses_at)

    def paired_losses(
        self, start: SVIState, end: SVIState, data: tuple, count: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """The loss at ``start``'s and at ``end``'s parameters on the same ``count`` draws of
        every minibatch (keys split from ``start``'s): in their differences most of the
        minibatches' noise cancels. A model that does not subsample has one exact loss, taken
        once at each end. ``data``: ``(features, labels, arrays)``."""
        from mtbkd_jax.infer.minibatch import model_structure

        features, labels, arrays = data
        if not model_structure(
            self.model, (features, labels), {**arrays, **self.static}
        ).subsampled:
            count = 1
        keys = jax.random.split(start.rng_key, count)
        before, after = (np.asarray(self.losses_at(state, *data, keys)) for state in (start, end))
        return before, after

    def _guide(self) -> AutoGuide:
        s = self.settings
        return _make_guide(s.guide, self.model, s.init_scale, s.rank)

    def fit_objects(self) -> tuple[SVI, AutoGuide, bool]:
        """The ``(svi, guide, own)`` for one fit: the runner's own until they have been
        initialised once (``own`` is then true), new ones of the same structure later."""
        if self.fresh:
            return self.svi, self.guide, True
        guide = self._guide()
        return SVI(self.model, guide, self.svi.optim, self.svi.loss), guide, False


def is_real(constraint: Any) -> bool:
    """Whether a support is the real line, elementwise (``real``, or ``real`` made an event by
    ``independent``): its transform to the unconstrained space is the identity."""
    from numpyro.distributions import constraints

    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint is constraints.real


def _unconstrained_latents(guide: AutoGuide) -> bool:
    """Whether every latent site of the guide's model lives on the real line (its transform to
    the unconstrained space is the identity). Only then can a chunk runner traced with one
    fit's guide serve another fit's data: a support such as ``interval(0, max(x))`` depends
    on the data, and the transform the runner closed over would be the first fit's."""
    trace = getattr(guide, "prototype_trace", None) or {}
    return all(
        is_real(site["fn"].support)
        for site in trace.values()
        if site["type"] == "sample" and not site["is_observed"]
    )


def _discard(runner: _Runner) -> None:
    """Drop a runner from the cache (its own guide failed to initialise: never reuse it)."""
    with _runners_lock:
        for key in [key for key, value in _runners.items() if value is runner]:
            del _runners[key]


def _signature(array: Any) -> tuple | None:
    """Shape and dtype of an array; of every leaf, with the structure, of a pytree (the
    teacher prior's constants on a mesh)."""
    if array is None:
        return None
    if isinstance(array, jax.Array | np.ndarray):
        return (tuple(array.shape), str(array.dtype))
    leaves, treedef = jax.tree.flatten(array)
    return (treedef, tuple(_signature(leaf) for leaf in leaves))


def _forget_model(model_id: int) -> None:
    """Drop the runners of a model that no longer exists (its finaliser)."""
    with _runners_lock:
        _watched_models.discard(model_id)
        for key in [key for key in _runners if key[0] == model_id]:
            del _runners[key]


def _svi_runner(
    model: Callable,
    settings: _Settings,
    features: jax.Array,
    labels: jax.Array | None,
    arrays: dict[str, Any],
) -> _Runner:
    """The cached runner of ``model`` for these settings and data shapes, or a new one (not
    cached when the model cannot be weakly referenced or a static keyword is unhashable)."""
    key = (
        id(model),
        settings,
        _signature(features),
        _signature(labels),
        tuple(sorted((name, _signature(value)) for name, value in arrays.items())),
    )
    try:
        hash(key)
        weakref.ref(model)
    except TypeError:
        return _Runner(model, settings)
    with _runners_lock:
        runner = _runners.get(key)
        if runner is not None:
            _runners.move_to_end(key)
            return runner
    runner = _Runner(_weak_model(model), settings)
    with _runners_lock:
        runner = _runners.setdefault(key, runner)
        _runners.move_to_end(key)
        while len(_runners) > _RUNNER_CACHE_SIZE:
            _runners.popitem(last=False)
        if id(model) not in _watched_models:
            _watched_models.add(id(model))
            weakref.finalize(model, _forget_model, id(model)).atexit = False
    return runner
