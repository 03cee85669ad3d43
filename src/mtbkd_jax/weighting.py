"""Per-example mixing weights over teachers, shape (M, N); every column sums to 1.

Each rule is a pure, jit-able function of the teachers' entropies ``H`` (M, N). Weights are
constants of the model (no gradient flows into them). The entropy is measured on
``softmax(z / T_w)`` with ``T_w = 1`` and in bits by default, as in the reference code
(see :meth:`TeacherBank.entropies`).

Rules:

* ``paper``: ``w_m ∝ 1 - H_m / sum_j H_j``. For two teachers ``w_1 = H_2 / (H_1 + H_2)``:
  the less uncertain teacher gets more weight. Since ``sum_m (1 - H_m / S) = M - 1``,
  the weights are ``(1 - H_m / S) / (M - 1)``; for ``M >= 3`` no weight can exceed
  ``1 / (M - 1)``, so the rule shrinks toward uniform as M grows. One teacher gets weight 1;
  an example where every teacher is one-hot (``S = 0``) gets uniform weights.
* ``inverse_entropy``: ``w_m ∝ 1 / H_m``; where some teachers have ``H = 0`` the weight is
  shared equally among those (the limit of the rule).
* ``softmax``: ``w = softmax(-H / tau)`` over teachers.
* ``uniform``: ``1 / M``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import as_float_array, require_finite, require_positive
from mtbkd_jax.teachers import TeacherBank

__all__ = [
    "paper_weights",
    "inverse_entropy_weights",
    "softmax_weights",
    "uniform_weights",
    "teacher_weights",
    "WEIGHT_RULES",
]


@jax.jit
def paper_weights(entropies: jax.Array) -> jax.Array:
    """The paper's rule ``w_m ∝ 1 - H_m / sum_j H_j`` (see the module docstring)."""
    num_teachers = entropies.shape[0]
    if num_teachers == 1:
        return jnp.ones_like(entropies)
    total = entropies.sum(0, keepdims=True)
    safe_total = jnp.where(total > 0, total, 1.0)
    raw = (1.0 - entropies / safe_total) / (num_teachers - 1)
    return jnp.where(total > 0, raw, 1.0 / num_teachers)


@jax.jit
def inverse_entropy_weights(entropies: jax.Array) -> jax.Array:
    """``w_m ∝ 1 / H_m``; zero-entropy teachers share all weight equally where present."""
    is_zero = entropies <= 0
    any_zero = is_zero.any(0, keepdims=True)
    inverse = 1.0 / jnp.where(is_zero, 1.0, entropies)
    limit = is_zero / jnp.maximum(is_zero.sum(0, keepdims=True), 1)
    regular = inverse / inverse.sum(0, keepdims=True)
    return jnp.where(any_zero, limit, regular)


@jax.jit
def softmax_weights(entropies: jax.Array, tau: float = 1.0) -> jax.Array:
    """``w = softmax(-H / tau)`` over teachers (tau > 0; small tau picks the surest teacher)."""
    return jax.nn.softmax(-entropies / tau, axis=0)


@jax.jit
def uniform_weights(entropies: jax.Array) -> jax.Array:
    """Equal weights ``1 / M``."""
    return jnp.full_like(entropies, 1.0 / entropies.shape[0])


WEIGHT_RULES = {
    "paper": paper_weights,
    "inverse_entropy": inverse_entropy_weights,
    "softmax": softmax_weights,
    "uniform": uniform_weights,
}


def teacher_weights(
    teachers: TeacherBank,
    rule="paper",
    *,
    temperature: float = 1.0,
    tau: float = 1.0,
) -> jax.Array:
    """Mixing weights (M, N) for ``teachers`` by a named rule or from a user array.

    Args:
        teachers: the teacher bank.
        rule: ``"paper"`` (default), ``"inverse_entropy"``, ``"softmax"``, ``"uniform"``, or an
            (M, N) array of non-negative weights (each column is normalised to sum to 1).
        temperature: ``T_w``, the temperature at which entropies are measured (reference: 1).
        tau: the temperature of the ``softmax`` rule.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax import TeacherBank, teacher_weights
        >>> bank = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 4, 3)))
        >>> teacher_weights(bank, "paper").shape
        (2, 4)
    """
    if not isinstance(teachers, TeacherBank):
        raise TypeError(f"teachers must be a TeacherBank, got {type(teachers).__name__}")
    if isinstance(rule, str):
        if rule not in WEIGHT_RULES:
            raise ValueError(
                f"rule must be one of {sorted(WEIGHT_RULES)} or an array, got {rule!r}"
            )
        entropies = teachers.entropies(temperature)
        if rule == "softmax":
            return softmax_weights(entropies, require_positive(tau, "tau"))
        return WEIGHT_RULES[rule](entropies)
    weights = as_float_array(rule, "rule (weights array)", 2)
    expected = (teachers.num_teachers, teachers.num_examples)
    if weights.shape != expected:
        raise ValueError(f"weights array must have shape (M, N) = {expected}, got {weights.shape}")
    require_finite(weights, "weights array")
    if (weights < 0).any():
        raise ValueError("weights array must be non-negative")
    sums = weights.sum(0)
    if (sums <= 0).any():
        raise ValueError(
            f"weights array has a column summing to 0 (example {int(np.argmin(sums))}); "
            "every example needs positive total weight"
        )
    return jnp.asarray(weights / sums, dtype=jnp.float32)
