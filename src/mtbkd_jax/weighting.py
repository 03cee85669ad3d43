"""Per-example mixing weights over teachers, shape (M, N); every column sums to 1.

Each rule is a pure, jit-able function of the teachers' entropies ``H`` (M, N). Weights are
constants of the model (no gradient flows into them). The entropy is measured on
``softmax(z / T_w)`` with ``T_w = 1`` and in bits by default, as in the reference code
(see :meth:`TeacherBank.entropies`).

Rules:

* ``paper``: ``w_m ∝ 1 - H_m / sum_j H_j``. For two teachers ``w_1 = H_2 / (H_1 + H_2)``:
  the less uncertain teacher gets more weight. Since ``sum_m (1 - H_m / S) = M - 1``,
  the weights are ``(S - H_m) / ((M - 1) S)``; for ``M >= 3`` no weight can exceed
  ``1 / (M - 1)``, so the rule shrinks toward uniform as M grows. One teacher gets weight 1;
  an example where every teacher is one-hot (``S = 0``) gets uniform weights.
* ``inverse_entropy``: ``w_m ∝ 1 / H_m``; where some teachers have ``H = 0`` the weight is
  shared equally among those (the limit of the rule).
* ``softmax``: ``w = softmax(-H / tau)`` over teachers.
* ``uniform``: ``1 / M``.

**Numerics.** The rules are computed as *log* weights from *log* entropies
(:meth:`TeacherBank.log_entropies`), so that no weight can be negative, none is rounded to zero
that is not zero, and ``log w`` (what the prior uses) is exact where ``w`` itself would
underflow. ``S - H_m`` is never formed by subtraction (in float32 it can come out slightly
negative when one teacher is almost one-hot, which made ``log w`` NaN): it is
``sum_{j != m} H_j``, a sum of non-negative terms, taken as a ``logsumexp`` over the other
teachers. A weight is exactly zero only where the rule's limit says so (the paper rule with
M = 2 when the other teacher is exactly one-hot; a teacher of positive entropy in the
inverse-entropy rule when another is exactly one-hot).
Nearly one-hot teachers are therefore ranked by their tiny entropies (about ``gap e^-gap`` for
a logit gap): teachers given as logits ``±1e4`` (gaps 2e4 and 2.0001e4) get paper weights
0.27 / 0.73, although their soft labels are the same float32 one-hots, while the same teachers
given as exact one-hot probabilities (entropy 0) get 0.5 / 0.5.

:func:`ca_mkd_weights` is a label-aware rule of a baseline (CA-MKD), not one of the rules
above: it needs the labels, so it is not a ``weight_rule`` of the prior.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from mtbkd_jax._checks import as_float_array, as_labels, require_finite, require_positive
from mtbkd_jax._tempering import logsumexp_or_neginf, tempered_log_softmax
from mtbkd_jax.teachers import TeacherBank

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "teacher_weights",
    "teacher_log_weights",
    "WEIGHT_RULES",
    "paper_weights",
    "inverse_entropy_weights",
    "softmax_weights",
    "uniform_weights",
    "paper_log_weights",
    "inverse_entropy_log_weights",
    "softmax_log_weights",
    "ca_mkd_weights",
]


def _log(entropies: jax.Array) -> jax.Array:
    """``log H`` with ``log 0 = -inf`` (negative rounding noise counts as 0); NaN stays NaN,
    so a NaN entropy gives NaN weights, not those of a one-hot teacher."""
    positive = entropies > 0
    log = jnp.where(positive, jnp.log(jnp.where(positive, entropies, 1.0)), -jnp.inf)
    return jnp.where(jnp.isnan(entropies), jnp.nan, log)


def _normalize(log_raw: jax.Array) -> jax.Array:
    """Log weights ``log_raw - logsumexp(log_raw)`` over teachers; an all ``-inf`` column
    (no teacher preferred) gives uniform weights.

    The maximum is subtracted first (exact for nearby floats), so that log weights of large
    magnitude (``-log H`` of an almost one-hot teacher is in the thousands) keep float32's
    relative precision in the weights.
    """
    num_teachers = log_raw.shape[0]
    peak = log_raw.max(0, keepdims=True)
    finite = jnp.isfinite(peak)
    shifted = log_raw - jnp.where(finite, peak, 0.0)
    out = shifted - jnp.log(jnp.exp(shifted).sum(0, keepdims=True))
    out = jnp.where(finite, out, -jnp.log(float(num_teachers)))
    return jnp.where(jnp.isnan(peak), jnp.nan, out)  # a NaN input is not "no preference"


@jax.jit
def paper_log_weights(log_entropies: jax.Array) -> jax.Array:
    """``log w`` of the paper's rule from ``log H`` (M, N): ``w_m ∝ sum_{j != m} H_j``."""
    num_teachers = log_entropies.shape[0]
    if num_teachers == 1:
        return jnp.zeros_like(log_entropies)
    others = ~jnp.eye(num_teachers, dtype=bool)  # (m, j): j != m
    masked = jnp.where(others[:, :, None], log_entropies[None, :, :], -jnp.inf)  # (M, M, N)
    return _normalize(logsumexp_or_neginf(masked, axis=1))  # others all one-hot: -inf


@jax.jit
def inverse_entropy_log_weights(log_entropies: jax.Array) -> jax.Array:
    """``log w`` of ``w_m ∝ 1 / H_m``; exactly one-hot teachers share all weight where present."""
    is_zero = jnp.isneginf(log_entropies)
    any_zero = is_zero.any(0, keepdims=True)
    regular = _normalize(-jnp.where(is_zero, 0.0, log_entropies))
    limit = _normalize(jnp.where(is_zero, 0.0, -jnp.inf))
    return jnp.where(any_zero, limit, regular)


@jax.jit
def softmax_log_weights(entropies: jax.Array, tau: float = 1.0) -> jax.Array:
    """``log softmax(-H / tau)`` over teachers; ``tau = 0`` is the limit (the surest teachers
    share the weight). Shifted before dividing, so a tiny ``tau`` stays exact."""
    positive = jnp.where(tau == 0, jnp.finfo(jnp.float32).tiny, tau)
    return tempered_log_softmax(-jnp.maximum(entropies, 0.0), positive, axis=0)


@jax.jit
def paper_weights(entropies: jax.Array) -> jax.Array:
    """The paper's rule ``w_m ∝ 1 - H_m / sum_j H_j`` (see the module docstring)."""
    return jnp.exp(paper_log_weights(_log(entropies)))


@jax.jit
def inverse_entropy_weights(entropies: jax.Array) -> jax.Array:
    """``w_m ∝ 1 / H_m``; zero-entropy teachers share all weight equally where present."""
    return jnp.exp(inverse_entropy_log_weights(_log(entropies)))


def softmax_weights(entropies: jax.Array, tau: float = 1.0) -> jax.Array:
    """``w = softmax(-H / tau)`` over teachers (tau > 0; small tau picks the surest teacher;
    a concrete negative or NaN ``tau``, which would favour the least sure, is refused)."""
    if not isinstance(tau, jax.core.Tracer) and not (np.asarray(tau) >= 0.0).all():
        raise ValueError(f"tau must be > 0, got {tau}")
    return jnp.exp(softmax_log_weights(entropies, tau))


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


def teacher_log_weights(
    teachers: TeacherBank,
    rule: str | ArrayLike = "paper",
    *,
    temperature: float = 1.0,
    tau: float = 1.0,
    argument: str = "rule",
) -> jax.Array:
    """Log mixing weights ``log w`` (M, N) by a named rule or from a user array.

    Computed in log space from the teachers' log entropies (see the module docstring): the
    form the teacher prior uses. Arguments as in :func:`teacher_weights`. Entries are finite
    or ``-inf`` (a weight that is exactly zero); each column's ``logsumexp`` is 0.
    ``argument`` is the name under which the caller took ``rule`` (used in error messages).
    """
    if not isinstance(teachers, TeacherBank):
        raise TypeError(f"teachers must be a TeacherBank, got {type(teachers).__name__}")
    if isinstance(rule, str) and rule not in WEIGHT_RULES:
        hint = " ('learned' needs a trust: MTBKDModel(..., trust=...))" if rule == "learned" else ""
        raise ValueError(
            f"{argument} must be one of {sorted(WEIGHT_RULES)} or an (M, N) array, got "
            f"{rule!r}{hint}"
        )
    _refuse_unused_options(rule, temperature, tau, argument)
    if isinstance(rule, str):
        if rule == "uniform":
            shape = (teachers.num_teachers, teachers.num_examples)
            return jnp.full(shape, -np.log(teachers.num_teachers), jnp.float32)
        if rule == "softmax":
            tau = require_positive(tau, "tau")
            return softmax_log_weights(teachers.entropies(temperature), tau)
        log_entropies = teachers.log_entropies(temperature)
        if rule == "paper":
            return paper_log_weights(log_entropies)
        return inverse_entropy_log_weights(log_entropies)
    weights = as_float_array(rule, f"{argument} (an array)", 2)
    expected = (teachers.num_teachers, teachers.num_examples)
    if weights.shape != expected:
        raise ValueError(
            f"{argument} (an array) must have shape (M, N) = {expected}, got {weights.shape}"
        )
    require_finite(weights, f"{argument} (an array)")
    if (weights < 0).any():
        where = tuple(int(i) for i in np.argwhere(weights < 0)[0])
        raise ValueError(
            f"{argument} (an array) must be non-negative, got {weights[where]:.3g} at {where}"
        )
    sums = weights.sum(0)
    if (sums <= 0).any():
        raise ValueError(
            f"{argument} (an array) has a column summing to 0 (example {int(np.argmin(sums))}); "
            "every example needs positive total weight"
        )
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(weights) - np.log(sums), dtype=jnp.float32)


def _refuse_unused_options(rule: object, temperature: float, tau: float, argument: str) -> None:
    """Refuse a ``tau`` other than 1 for a rule other than ``"softmax"``, and a ``temperature``
    other than 1 for ``"uniform"`` or an array: the rule would ignore it without a word."""
    prefix = "weight_" if argument == "weight_rule" else ""
    named = rule if isinstance(rule, str) else None
    shown = repr(named) if named else "an array"
    unused = {}
    if named != "softmax":
        unused[f"{prefix}tau"] = (tau, "the 'softmax' rule alone uses it")
    if named in (None, "uniform"):
        unused[f"{prefix}temperature"] = (temperature, "the entropy rules alone measure entropies")
    for name, (value, why) in unused.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue  # an array or a tracer: its own check names it where it is used
        if value != 1.0:
            raise ValueError(
                f"{name}={value} is not used with {argument}={shown} ({why}): leave it at 1"
            )


def teacher_weights(
    teachers: TeacherBank,
    rule: str | ArrayLike = "paper",
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

    Returns:
        Weights (M, N), finite, non-negative, each column summing to 1 (to float32 rounding).

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax import TeacherBank, teacher_weights
        >>> bank = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 4, 3)))
        >>> teacher_weights(bank, "paper").shape
        (2, 4)
    """
    return jnp.exp(teacher_log_weights(teachers, rule, temperature=temperature, tau=tau))


@jax.jit
def _ca_mkd_log_weights(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """``log w`` (M, N) of CA-MKD from log-probabilities (M, N, C) and labels (N,)."""
    num_teachers = log_probs.shape[0]
    if num_teachers == 1:
        return jnp.zeros(log_probs.shape[:2], log_probs.dtype)
    normalized = jax.nn.log_softmax(log_probs, axis=-1)
    ce = -jnp.take_along_axis(normalized, labels[None, :, None], axis=-1)[..., 0]  # (M, N)
    # s = softmax(CE) over teachers, in log space; where some CE are infinite (a teacher that
    # gives the label probability 0) s is the limit: shared equally among those teachers
    infinite = jnp.isinf(ce)
    num_infinite = infinite.sum(0, keepdims=True)
    limit = jnp.where(infinite, -jnp.log(jnp.maximum(num_infinite, 1)), -jnp.inf)
    log_share = jnp.where(
        num_infinite > 0, limit, jax.nn.log_softmax(jnp.where(infinite, 0.0, ce), axis=0)
    )
    # log(1 - s_m) = log sum_{j != m} s_j: a sum of non-negative terms, never a subtraction
    others = ~jnp.eye(num_teachers, dtype=bool)  # (m, j): j != m
    masked = jnp.where(others[:, :, None], log_share[None, :, :], -jnp.inf)  # (M, M, N)
    return logsumexp(masked, axis=1) - jnp.log(num_teachers - 1.0)


def ca_mkd_weights(log_probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Per-example teacher weights of CA-MKD (Zhang, Chen & Wang, ICASSP 2022), shape (M, N).

    ``w_m = (1 - softmax_m(L)) / (M - 1)`` with ``L_m = CE(y, p_m) = -log p_m[y]``, the
    cross-entropy of teacher ``m``'s *untempered* prediction against the label: per example,
    as in the authors' code (``attention = (1 - F.softmax(loss_t, dim=0)) / (teacher_num - 1)``
    with ``CrossEntropyLoss(reduction='none')`` on the teachers' logits, Rorozhl/CA-MKD
    ``helper/loops.py``). The teacher closer to the one-hot label gets more weight; every
    column sums to 1; one teacher gets weight 1. For M = 2, ``w_1 = p_1[y] / (p_1[y] + p_2[y])``;
    for M >= 3 no weight exceeds ``1 / (M - 1)``.

    Computed in log space: ``softmax(L)`` as a ``log_softmax`` (CE can be in the thousands)
    and ``1 - s_m`` as ``sum_{j != m} s_j``. A label probability of exactly 0 (infinite CE)
    takes the limit: such teachers share the softmax mass equally.

    Args:
        log_probs: the teachers' log-probabilities (or logits) at temperature 1, (M, N, C);
            ``-inf`` is allowed (a probability of 0), NaN and ``+inf`` are not.
        labels: integer class labels, (N,).

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax.weighting import ca_mkd_weights
        >>> right, wrong = np.log([[0.9, 0.1]]), np.log([[0.2, 0.8]])
        >>> np.round(np.asarray(ca_mkd_weights(np.stack([right, wrong]), [0])), 3)[:, 0]
        array([0.818, 0.182], dtype=float32)
    """
    array = as_float_array(log_probs, "log_probs", 3)
    bad = np.isnan(array) | np.isposinf(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"log_probs must not hold NaN or +inf; found {array[where]} at {where}")
    top = float(np.finfo(np.float32).max)  # +1e39 is +inf in float32, and the weights NaN
    if (array > top).any():  # (a value below -top is -inf in float32: a probability of 0)
        raise ValueError(f"log_probs must be at most {top:.4g} (float32), got {array.max():.3g}")
    num_teachers, num_examples, num_classes = array.shape
    if num_teachers == 0 or num_examples == 0 or num_classes < 2:
        raise ValueError(
            f"log_probs must have shape (M, N, C) with M, N >= 1 and C >= 2, got {array.shape}"
        )
    if np.isneginf(array).all(-1).any():
        where = tuple(int(i) for i in np.argwhere(np.isneginf(array).all(-1))[0])
        raise ValueError(f"log_probs has a row of all -inf at (teacher, example) {where}")
    labels = as_labels(labels, "labels", num_examples, num_classes)
    with np.errstate(over="ignore"):  # below -3.4e38 is -inf in float32, as documented
        single = array.astype(np.float32)
    log_weights = _ca_mkd_log_weights(jnp.asarray(single), jnp.asarray(labels))
    return jnp.exp(log_weights)
