"""A MAP polished to convergence by L-BFGS (``run_map(polish_steps=...)``).

Adam at a fixed step size stops short of the mode of a network's log joint, or wanders around
it: the digits demo's learned-trust MAP still fell by 1% of its run's fall in the last tenth
of 2,000 steps, and fits that stopped at different points of that fall predicted the test set
with NLL from 0.12 to 0.21 (``docs/results.md``). From where Adam stops, full-batch L-BFGS
(``optax.lbfgs``, zoom line search) minimises the same objective, AutoDelta's loss ``-log
p(y, z | x)`` at the constrained point ``z``, optimised over the unconstrained coordinates,
until it falls by less than ``tolerance * max(|loss|, 1)`` per iteration: the mode itself,
which no longer depends on where Adam's trajectory happened to stop. The rule is judged over
the last ten iterations together (an iteration can stall and the next resume).

L-BFGS needs the exact objective: a model that subsamples its data (a minibatch MAP) is
refused, and so is a mesh (the polish runs on one device).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from tqdm.auto import tqdm

__all__: list[str] = []

_CHUNK = 25  # L-BFGS iterations per jitted chunk (the host checks convergence between them)
_WINDOW = 10  # iterations over which the loss's decrease is judged (one can stall, then resume)


def _supports(model: Callable, args: tuple, kwargs: dict, point: dict[str, Any]) -> dict:
    """Each latent site's support, from a trace of the model at ``point``; a model with
    ``numpyro.param`` sites is refused (SVI fitted them beside the point; the polish would
    hold them at their initial values)."""
    trace = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=point)).get_trace(
        *args, **kwargs
    )
    params = [name for name, site in trace.items() if site["type"] == "param"]
    if params:
        raise ValueError(
            f"polish_steps polishes a model's latent sample sites, but this model also has "
            f"numpyro.param sites ({', '.join(params[:3])}): fit it without polish_steps, or "
            "make them sample sites with a prior"
        )
    return {
        name: site["fn"].support
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"] and name in point
    }


def _objective(
    model: Callable, transforms: dict, static: dict, unconstrained: dict, data: tuple
) -> jax.Array:
    """AutoDelta's loss: minus the log joint at the constrained point."""
    features, labels, arrays = data
    point = {name: transforms[name](value) for name, value in unconstrained.items()}
    log_joint, _ = log_density(model, (features, labels), {**arrays, **static}, point)
    return -log_joint


def _chunk_runner(model: Callable, transforms: dict, static: dict, tolerance: float) -> Callable:
    """A jitted ``(u, state, done, recent, data, length) -> (u, state, done, recent, values)``:
    ``length`` L-BFGS iterations, each skipped once the last ``_WINDOW`` iterations lowered
    the loss by less than ``_WINDOW * tolerance * max(|loss|, 1)`` together (``done``;
    ``recent``: the losses after those iterations, ``inf`` before there were any)."""
    optimizer = optax.lbfgs()

    def run(
        u: dict, state: Any, done: jax.Array, recent: jax.Array, data: tuple, length: int
    ) -> tuple:
        fun = partial(_objective, model, transforms, static, data=data)
        value_and_grad = optax.value_and_grad_from_state(fun)

        def iterate(carry: tuple) -> tuple:
            u, state = carry
            value, grad = value_and_grad(u, state=state)
            updates, state = optimizer.update(grad, state, u, value=value, grad=grad, value_fn=fun)
            return optax.apply_updates(u, updates), state

        def step(carry: tuple, _: None) -> tuple:
            u, state, done, recent = carry
            u, state = jax.lax.cond(done, lambda c: c, iterate, (u, state))
            after = fun(u)
            small = recent[0] - after <= _WINDOW * tolerance * jnp.maximum(jnp.abs(after), 1.0)
            recent = jnp.concatenate([recent[1:], after[None]])
            return (u, state, done | small, recent), after

        carry = (u, state, done, recent)
        final, losses = jax.lax.scan(step, carry, None, length=length)  # type: ignore[var-annotated]
        return (*final, losses)

    return jax.jit(run, static_argnums=5)


def polish_point(
    model: Callable,
    point: dict[str, jax.Array],
    data: tuple[jax.Array, jax.Array | None, dict[str, Any]],
    static: dict[str, Any],
    *,
    max_steps: int,
    tolerance: float,
    progress_bar: bool,
) -> tuple[dict[str, jax.Array], np.ndarray, bool]:
    """Minimise AutoDelta's loss from ``point`` (constrained values) by L-BFGS.

    Returns:
        ``(point, losses, converged)``: the polished constrained point, the loss after each
        iteration run (iterations after convergence are not run: ``losses`` stops there) and
        whether the tolerance was met within ``max_steps``.

    Raises:
        FloatingPointError: if the loss is not finite at the start or becomes so.
    """
    features, labels, arrays = data
    supports = _supports(model, (features, labels), {**arrays, **static}, point)
    transforms = {name: biject_to(support) for name, support in supports.items()}
    u = {name: transforms[name].inv(jnp.asarray(point[name])) for name in transforms}
    start = _objective(model, transforms, static, u, data)
    if not np.isfinite(float(start)):
        raise FloatingPointError("the MAP's loss is not finite where the L-BFGS polish starts")
    runner = _chunk_runner(model, transforms, static, float(tolerance))
    state, done = optax.lbfgs().init(u), jnp.asarray(False)
    recent = jnp.full(_WINDOW, jnp.inf, start.dtype)
    losses: list[np.ndarray] = []
    bar = tqdm(total=int(max_steps), desc="MAP (L-BFGS)", disable=not progress_bar, leave=False)
    run = 0
    while run < max_steps and not bool(done):
        length = min(_CHUNK, int(max_steps) - run)
        was_done = bool(done)
        u, state, done, recent, values = runner(u, state, done, recent, data, length)
        values = np.asarray(values)
        if not np.isfinite(values).all():
            bar.close()
            bad = run + int(np.argmin(np.isfinite(values)))
            raise FloatingPointError(f"the L-BFGS polish's loss became non-finite at step {bad}")
        ran = length if bool(done) == was_done else _steps_until_done(values)
        losses.append(values[:ran])
        run += length
        bar.update(length)
        bar.set_postfix(loss=f"{values[-1]:.6g}")
    bar.close()
    polished = {name: transforms[name](value) for name, value in u.items()}
    return polished, np.concatenate(losses), bool(done)


def _steps_until_done(values: np.ndarray) -> int:
    """The iterations of a chunk that changed the loss: after convergence the loss stays."""
    changed = np.flatnonzero(np.diff(values) != 0)
    return int(changed[-1]) + 2 if changed.size else 1
