"""Students whose output is not a function of each example and the weights alone.

A posterior over a student's weights needs each example's likelihood to depend on that example
and the weights only. Two kinds of Flax layer break this when they run in training mode:

- a ``BatchNorm`` that normalises by the *batch's* statistics (``use_running_average=False``):
  an example's logits then depend on the other examples in its minibatch, and predictions on the
  batch they come in;
- a ``Dropout`` (or any layer that draws random numbers) that is not deterministic: NumPyro's
  lifting restores the module's random state on every call, so the "random" mask is one fixed
  mask, which depends on an example's position in its batch.

Neither gives an error: the samplers run and the draws are wrong. So a student is probed once
per feature shape (:meth:`mtbkd_jax.Student.check_inputs`, which every inference front-end
calls): its module is run on a few rows, and is refused if the forward pass changes its state
other than the weights (batch statistics, random-number counters) or if a row's output changes
with the rows beside it. In evaluation mode (``module.eval()`` for NNX;
``use_running_average=True`` and ``deterministic=True`` for linen) a BatchNorm's running
statistics are fixed constants and its scale and bias are weights like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import errors as flax_errors
from flax import linen, nnx

__all__ = [
    "LINEN_STATE_ERRORS",
    "check_per_example",
    "immutable",
    "linen_state_collections",
    "linen_state_error",
    "stateful_layer_error",
]

# what flax raises when a linen layer would update a collection or draw random numbers
LINEN_STATE_ERRORS = (flax_errors.ModifyScopeVariableError, flax_errors.InvalidRngError)

_FIX = (
    "Put the network in evaluation mode before giving it to mtbkd_jax: module.eval() for an "
    "NNX module (a BatchNorm then uses its running statistics as fixed constants, and Dropout "
    "is off), "
    "use_running_average=True and deterministic=True for linen layers; or remove the layer"
)


def linen_state_collections(module: Any, feature_shape: tuple[int, ...]) -> list[str]:
    """A linen module's variable collections other than ``params`` (e.g. ``batch_stats``),
    found abstractly (nothing is computed)."""
    example = jax.ShapeDtypeStruct((1, *feature_shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), example)
    return sorted(name for name in shapes if name != "params")


def immutable(
    module: Any, net: Any, collections: list[str], given: Mapping[str, Any] | None = None
) -> Any:
    """``x -> logits`` with the lifted weights of ``net`` (NumPyro's ``random_flax_module``
    with ``mutable=collections``: ``partial(apply, params)``) and ``collections`` at their
    ``given`` values (a bound module's, e.g. trained ``batch_stats``), else at their initial
    values, applied immutably."""
    params, given = net.args[0], dict(given or {})

    def apply(x: jax.Array) -> jax.Array:
        fixed = {name: given[name] for name in collections if name in given}
        if len(fixed) < len(collections):
            variables = module.init(jax.random.key(0), x[:1])
            fixed = {name: variables[name] for name in collections} | fixed
        return module.apply({"params": params, **fixed}, x)

    return apply


def check_per_example(
    module: nnx.Module | linen.Module,
    features: Any,
    *,
    name: str = "student",
    given: Mapping[str, Any] | None = None,
    as_given: bool = False,
) -> None:
    """Raise a ``ValueError`` if ``module``'s output on a few rows of ``features`` is not a
    function of each row alone (see the module docstring).

    Args:
        module: the student's network (an NNX instance or a linen module).
        features: the features the network takes (N, ...); its first two rows are used, as
            float32, with a third row of standard normal values, so that the rows differ.
        name: the student's name, for the message.
        given: a linen module's collections other than ``params`` at fixed values (a bound
            module's), used in place of their initial values.
        as_given: probe on the first three rows as they are, in their dtype (integer ids,
            which neither float32 nor a row of noise can stand for).
    """
    probe = jnp.asarray(np.asarray(features[:3])) if as_given else _probe_rows(features)
    if isinstance(module, nnx.Module):
        batch_out, changed = _run_nnx(module, probe)
        single_out, _ = _run_nnx(module, probe[:1])
    else:
        batch_out, changed = _run_linen(module, probe, name, given)
        single_out, _ = _run_linen(module, probe[:1], name, given)
    if changed:
        raise stateful_layer_error(name, changed)
    first, alone = np.asarray(batch_out[0], np.float64), np.asarray(single_out[0], np.float64)
    tolerance = 1e-3 * max(1.0, float(np.nanmax(np.abs(first), initial=0.0)))
    if first.shape != alone.shape or not np.allclose(
        first, alone, rtol=0.0, atol=tolerance, equal_nan=True
    ):
        raise ValueError(
            f"the {name} network's output for one example changes with the other examples in "
            "its batch (by up to "
            f"{float(np.max(np.abs(first - alone))) if first.shape == alone.shape else 'a shape'}"
            "): a layer normalises over the batch axis. The likelihood of each example must "
            "depend on that example and the weights only. " + _FIX
        )


def stateful_layer_error(name: str, changed: list[str]) -> ValueError:
    """The error for a network whose forward pass changes ``changed`` (paths or messages)."""
    return ValueError(
        f"the {name} network changes its state other than the weights when it runs "
        f"({', '.join(changed)}): a BatchNorm in training mode updates its batch statistics, "
        "and a Dropout or other random layer draws random numbers. Inside a NumPyro model that "
        "state is restored on every call, so each example's likelihood would depend on the "
        "other examples in its batch, or on one fixed random mask. " + _FIX
    )


def linen_state_error(name: str, error: Exception) -> ValueError:
    """:func:`stateful_layer_error` for flax's own error from a linen layer."""
    return stateful_layer_error(name, [str(error).split("(https")[0].strip()])


def _probe_rows(features: Any) -> jax.Array:
    rows = jnp.asarray(np.asarray(features[:2]), dtype=jnp.float32)
    noise = jax.random.normal(jax.random.key(20261205), (1, *rows.shape[1:]), jnp.float32)
    return jnp.concatenate([rows, noise], axis=0)


def _run_nnx(module: nnx.Module, x: jax.Array) -> tuple[jax.Array, list[str]]:
    """The module's output on ``x`` from a copy, and what shows it is not a function of the
    rows and weights alone: batch statistics it updated, or random state it advanced that
    changes the output of a second call on the same rows. Other state (``sow``'s
    intermediates, a recurrent cell's carry initialised from an RNG stream) is left alone."""
    copy = nnx.clone(module)
    stats, rngs = _state_leaves(copy, nnx.BatchStat), _state_leaves(copy, nnx.RngState)
    out = copy(x)
    changed = _changed(stats, _state_leaves(copy, nnx.BatchStat))
    advanced = _changed(rngs, _state_leaves(copy, nnx.RngState))
    if advanced and not np.array_equal(np.asarray(out), np.asarray(copy(x))):
        changed += advanced
    return out, changed


def _changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> list[str]:
    return [p for p, v in after.items() if p not in before or not np.array_equal(before[p], v)]


def _state_leaves(module: nnx.Module, kind: Any) -> dict[str, np.ndarray]:
    state = nnx.to_pure_dict(nnx.state(module, kind))
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    out = {}
    for path, leaf in leaves:
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[".".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
    return out


def _run_linen(
    module: linen.Module, x: jax.Array, name: str, given: Mapping[str, Any] | None
) -> tuple[jax.Array, list[str]]:
    """The module's output on ``x`` with every collection immutable (at its ``given`` values
    where there are some) and no random streams; a layer that would update a collection or
    draw random numbers is refused."""
    try:
        variables = {**module.init(jax.random.key(0), x[:1]), **(given or {})}
        out: jax.Array = module.apply(variables, x)  # type: ignore[assignment]
        return out, []
    except LINEN_STATE_ERRORS as error:
        raise linen_state_error(name, error) from None
