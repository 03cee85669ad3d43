"""A MAP polished to convergence by L-BFGS (``run_map(polish_steps=...)``).

Adam at a fixed step size stops short of the mode of a network's log joint, or wanders around
it: the digits demo's learned-trust MAP still fell by 1% of its run's fall in the last tenth
of 2,000 steps, and fits that stopped at different points of that fall predicted the test set
with NLL from 0.12 to 0.21 (``docs/results.md``). From where Adam stops, full-batch L-BFGS
(``optax.lbfgs``, zoom line search) minimises the same objective as AutoDelta's ELBO, ``-log
p(y, z | x)`` at the constrained point ``z`` with the model's ``numpyro.param`` sites at their
SVI values (a :class:`~mtbkd_jax.Student` registers one, unused), all optimised over their
unconstrained coordinates, until the last ten iterations together lowered it by less than
``10 * tolerance * max(|loss|, 1)``: a mode, which no longer depends on where Adam's trajectory
happened to stop.

L-BFGS needs the exact objective: a model that subsamples its data (a minibatch MAP) is
refused, and so is a mesh (the polish runs on one device). The compiled program is kept for
later polishes of the same model object with the same static keywords and data shapes, where
every latent site and param lives on the real line (as :mod:`~mtbkd_jax.infer._svi_runners`
keeps its chunk runners).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from tqdm.auto import tqdm

from mtbkd_jax.infer._svi_runners import _signature, is_real

__all__: list[str] = []

_CHUNK = 25  # L-BFGS iterations per jitted chunk (the host checks convergence between them)
_WINDOW = 10  # iterations over which the loss's decrease is judged (one can stall, then resume)
_CACHE_SIZE = 16
_runners: OrderedDict[tuple, Callable] = OrderedDict()
_watched: set[int] = set()  # ids of the models with a finaliser that clears _runners
_lock = threading.Lock()


def _sites(
    model: Callable, args: tuple, kwargs: dict, point: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(constraints, values)`` of what the polish optimises: every latent site of ``point``
    (its support) and every ``numpyro.param`` site (its constraint), at ``point`` and at the
    SVI values ``params`` (a param SVI did not fit keeps its initial value)."""
    data = {**params, **point}
    trace = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=data)).get_trace(
        *args, **kwargs
    )
    supports, values = {}, {}
    for name, site in trace.items():
        if site["type"] == "sample" and not site["is_observed"] and name in point:
            supports[name], values[name] = site["fn"].support, point[name]
        elif site["type"] == "param":
            supports[name] = site["kwargs"].get("constraint", constraints.real)
            values[name] = site["value"]
    return supports, values


def _objective(
    model: Callable, transforms: dict, static: dict, unconstrained: dict, data: tuple
) -> jax.Array:
    """AutoDelta's loss: minus the log joint at the constrained point."""
    features, labels, arrays = data
    point = {name: jax.tree.map(transforms[name], value) for name, value in unconstrained.items()}
    log_joint, _ = log_density(model, (features, labels), {**arrays, **static}, point)
    return -log_joint


def _chunk_runner(model: Callable, transforms: dict, static: dict) -> Callable:
    """A jitted ``(u, state, done, recent, count, budget, tolerance, data) -> (u, state, done,
    recent, count, losses)``: ``_CHUNK`` L-BFGS iterations, each skipped once the last
    ``_WINDOW`` iterations lowered the loss by less than ``_WINDOW * tolerance * max(|loss|,
    1)`` together (``done``; ``recent``: the losses after those iterations, the start's
    before there were ten) or once ``count`` iterations reach ``budget``."""
    optimizer = optax.lbfgs()

    def run(
        u: dict,
        state: Any,
        done: jax.Array,
        recent: jax.Array,
        count: jax.Array,
        budget: jax.Array,
        tolerance: jax.Array,
        data: tuple,
    ) -> tuple:
        fun = partial(_objective, model, transforms, static, data=data)
        value_and_grad = optax.value_and_grad_from_state(fun)

        def iterate(carry: tuple) -> tuple:
            u, state, recent = carry
            value, grad = value_and_grad(u, state=state)
            updates, state = optimizer.update(grad, state, u, value=value, grad=grad, value_fn=fun)
            u = optax.apply_updates(u, updates)
            after = optax.tree.get(state, "value")  # the line search's value at the new point
            return u, state, jnp.concatenate([recent[1:], after[None]])

        def step(carry: tuple, _: None) -> tuple:
            u, state, done, recent, count = carry
            active = ~done & (count < budget)
            u, state, recent = jax.lax.cond(active, iterate, lambda c: c, (u, state, recent))
            after = recent[-1]
            small = recent[0] - after <= _WINDOW * tolerance * jnp.maximum(jnp.abs(after), 1.0)
            return (u, state, done | (active & small), recent, count + active), after

        carry = (u, state, done, recent, count)
        final, losses = jax.lax.scan(step, carry, None, length=_CHUNK)  # type: ignore[var-annotated]
        return (*final, losses)

    return jax.jit(run)


def _forget(model_id: int) -> None:
    with _lock:
        _watched.discard(model_id)
        for key in [key for key in _runners if key[0] == model_id]:
            del _runners[key]


def _runner(model: Callable, supports: dict, static: dict, data: tuple) -> Callable:
    """The kept runner for this model, static keywords and data shapes where every site lives
    on the real line (a support such as ``interval(0, max(x))`` depends on the data), else a
    new one."""
    transforms = {name: biject_to(support) for name, support in supports.items()}
    real = all(is_real(support) for support in supports.values())
    features, labels, arrays = data
    key = (
        id(model),
        tuple(sorted(supports)),
        tuple(sorted((k, (type(v), v)) for k, v in static.items())),
        _signature(features),
        _signature(labels),
        tuple(sorted((k, _signature(v)) for k, v in arrays.items())),
    )
    try:
        hash(key)
        weakref.ref(model)
    except TypeError:
        real = False
    if not real:
        return _chunk_runner(model, transforms, static)
    with _lock:
        if key in _runners:
            _runners.move_to_end(key)
            return _runners[key]
    runner = _chunk_runner(model, transforms, static)
    with _lock:
        runner = _runners.setdefault(key, runner)
        while len(_runners) > _CACHE_SIZE:
            _runners.popitem(last=False)
        if id(model) not in _watched:
            _watched.add(id(model))
            weakref.finalize(model, _forget, id(model)).atexit = False
    return runner


def polish_point(
    model: Callable,
    point: dict[str, jax.Array],
    params: dict[str, jax.Array],
    data: tuple[jax.Array, jax.Array | None, dict[str, Any]],
    static: dict[str, Any],
    *,
    max_steps: int,
    tolerance: float,
    progress_bar: bool,
) -> tuple[dict[str, jax.Array], np.ndarray, bool, float]:
    """Minimise AutoDelta's loss from ``point`` (constrained values; ``params``: SVI's
    parameters, of which the model's ``numpyro.param`` sites are optimised too) by L-BFGS.

    Returns:
        ``(point, losses, converged, grad_norm)``: the polished constrained point (its latent
        sites and the model's ``numpyro.param`` sites), the loss after each iteration run,
        whether the tolerance was met within ``max_steps``, and the gradient's Euclidean norm
        there, over every optimised site's unconstrained coordinates (the loss rule alone also
        stops at line searches that stalled away from a stationary point: this tells the two
        apart).

    Raises:
        FloatingPointError: if the loss is not finite at the start or becomes so.
    """
    features, labels, arrays = data
    supports, values = _sites(model, (features, labels), {**arrays, **static}, point, params)
    transforms = {name: biject_to(support) for name, support in supports.items()}
    u = {  # a param may hold a pytree (a Student's placeholder holds the network's)
        name: jax.tree.map(lambda v, t=transforms[name]: t.inv(jnp.asarray(v)), values[name])
        for name in transforms
    }
    start = _objective(model, transforms, static, u, data)
    if not np.isfinite(float(start)):
        raise FloatingPointError("the MAP's loss is not finite where the L-BFGS polish starts")
    runner = _runner(model, supports, static, data)
    state, done = optax.lbfgs().init(u), jnp.asarray(False)
    # seeded with the start: before ten iterations the rule compares with the start
    recent, count = jnp.full(_WINDOW, start), jnp.asarray(0, jnp.int32)
    budget, limit = jnp.asarray(int(max_steps), jnp.int32), jnp.asarray(tolerance, start.dtype)
    losses: list[np.ndarray] = []
    bar = tqdm(total=int(max_steps), desc="MAP (L-BFGS)", disable=not progress_bar, leave=False)
    while int(count) < max_steps and not bool(done):
        before = int(count)
        u, state, done, recent, count, chunk = runner(
            u, state, done, recent, count, budget, limit, data
        )
        ran = int(count) - before
        chunk = np.asarray(chunk)[:ran]
        if not np.isfinite(chunk).all():
            bar.close()
            bad = before + int(np.argmin(np.isfinite(chunk))) + 1
            raise FloatingPointError(
                f"the L-BFGS polish's loss became non-finite at iteration {bad}"
            )
        losses.append(chunk)
        bar.update(ran)
        bar.set_postfix(loss=f"{chunk[-1]:.6g}")
    bar.close()
    polished = {name: jax.tree.map(transforms[name], u[name]) for name in transforms}
    grad_norm = float(optax.tree.norm(optax.tree.get(state, "grad")))  # at u: the line search's
    return polished, np.concatenate(losses), bool(done), grad_norm
