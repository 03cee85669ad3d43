"""The teacher bank: every teacher's predictions on the student's inputs, as constants.

Teachers are known only through their outputs. A :class:`TeacherBank` holds the teachers'
log-probabilities at temperature 1, shape ``(M, N, C)`` = (teachers, examples, classes),
built from logits, from probabilities, or from callables evaluated once on the inputs.
Everything downstream (tempered soft labels, entropies, mixing weights, the prior) is a
pure function of this array, so teachers are never re-run inside a potential.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from mtbkd_jax._checks import (
    as_float_array,
    as_labels,
    require_count,
    require_finite,
    require_positive,
)
from mtbkd_jax._teacher_outputs import (
    ProbabilisticClassifier,
    evaluate_teacher,
    place_columns,
    stack_teachers,
    warn_if_probabilities,
)
from mtbkd_jax._tempering import logsumexp_or_neginf, tempered_log_softmax

__all__ = ["TeacherBank"]


def _default_names(num_teachers: int, names: Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return tuple(f"teacher_{m}" for m in range(num_teachers))
    if isinstance(names, str | bytes):  # "ab" was split into the names "a" and "b"
        raise TypeError(f"names must be a sequence of names, one per teacher, got {names!r}")
    names = tuple(str(n) for n in names)
    if len(names) != num_teachers:
        raise ValueError(f"names has {len(names)} entries but there are {num_teachers} teachers")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, got {names}")
    if any("/" in n for n in names):
        raise ValueError(f"names must not contain '/' (ArviZ 1.x rejects it), got {names}")
    return names


@dataclass(frozen=True, eq=False)
class TeacherBank:
    """Teachers' log-probabilities ``(M, N, C)`` at temperature 1 and their names.

    Build it with :meth:`from_logits`, :meth:`from_probs` or :meth:`from_callables`
    rather than directly.

    What no check can catch: the teachers' axis comes first, (M teachers, N examples, C
    classes), so an (N, M, C) array of as many examples as teachers is taken as it is; and
    column ``c`` of every teacher must be class ``c`` of the labels (scikit-learn teachers are
    aligned by their ``classes_`` in :meth:`from_callables`; logits or probabilities from
    elsewhere must be put in the labels' class order first). :meth:`accuracy` on labelled
    inputs is the quick test: a teacher at chance level has its classes in another order.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax import TeacherBank
        >>> bank = TeacherBank.from_logits(np.zeros((2, 5, 3)), names=["a", "b"])
        >>> bank.num_teachers, bank.num_examples, bank.num_classes
        (2, 5, 3)
    """

    log_probs: jax.Array
    names: tuple[str, ...]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_logits(cls, logits: ArrayLike, names: Sequence[str] | None = None) -> TeacherBank:
        """Teachers given by raw logits: an (M, N, C) array or a list of (N, C) arrays."""
        stacked = stack_teachers(logits, "logits")
        warn_if_probabilities(stacked)
        return cls._from_stacked_logits(stacked, names)

    @classmethod
    def _from_stacked_logits(
        cls, stacked: np.ndarray, names: Sequence[str] | None = None
    ) -> TeacherBank:
        require_finite(stacked, "logits")
        if np.abs(stacked).max() > 1e30:
            raise ValueError(
                f"logits must be below 1e30 in size (float32), got {np.abs(stacked).max():.3g}"
            )
        # the row's largest logit taken off in float64 before rounding to float32: softmax
        # ignores a common offset, which rounding first would not (logits near 1e8 round alike)
        shifted = (stacked - stacked.max(axis=-1, keepdims=True)).astype(np.float32)
        log_probs = jax.nn.log_softmax(jnp.asarray(shifted), axis=-1)
        return cls(log_probs, _default_names(stacked.shape[0], names))

    @classmethod
    def from_probs(
        cls, probs: ArrayLike, names: Sequence[str] | None = None, atol: float = 1e-4
    ) -> TeacherBank:
        """Teachers given by class probabilities (rows on the simplex, zeros allowed; each row
        must sum to 1 within ``atol``, a number in (0, 1))."""
        if (atol := require_positive(atol, "atol")) >= 1:
            raise ValueError(f"atol must be a finite number in (0, 1), got {atol}")
        stacked = stack_teachers(probs, "probs")
        require_finite(stacked, "probs")
        if (stacked < 0).any():
            where = tuple(int(i) for i in np.argwhere(stacked < 0)[0])
            raise ValueError(
                f"probs must be non-negative; found {stacked[where]:.3g} at index {where}"
            )
        sums = stacked.sum(-1)
        off = (np.abs(sums - 1.0) > atol) | (sums <= 0)  # never divide by a zero row
        if off.any():
            where = tuple(int(i) for i in np.argwhere(off)[0])
            raise ValueError(
                f"probs must lie on the simplex (each row summing to 1 within {atol}); "
                f"row {where} (teacher, example) sums to {sums[where]:.6g}. "
                "Pass logits to TeacherBank.from_logits instead if these are scores."
            )
        with np.errstate(divide="ignore"):
            log_probs = np.log(stacked / sums[..., None])
        return cls(jnp.asarray(log_probs, dtype=jnp.float32), _default_names(len(stacked), names))

    @classmethod
    def from_callables(
        cls,
        teachers: Sequence[Callable[..., Any] | ProbabilisticClassifier],
        inputs: ArrayLike,
        *,
        outputs: str = "logits",
        names: Sequence[str] | None = None,
        num_classes: int | None = None,
        batch_size: int = 4096,
    ) -> TeacherBank:
        """Evaluate each teacher once on ``inputs`` and keep the outputs as constants.

        Args:
            teachers: callables. A scikit-learn estimator (anything with
                ``predict_proba``) gives probabilities; other callables (a Flax NNX module,
                ``functools.partial(linen_module.apply, variables)``, any JAX function) are
                called on a batch of inputs and give ``outputs``.
            inputs: the student's inputs, shape (N, ...).
            outputs: what the non-scikit-learn callables return: ``"logits"`` or ``"probs"``.
            names: one name per teacher (default ``teacher_0..``).
            num_classes: the number of classes C; a scikit-learn teacher's columns are placed
                at its ``classes_`` (integers 0..C-1), zero for classes it never saw. Without
                it, a teacher's ``classes_`` must be 0..k-1.
            batch_size: examples per call, to bound memory.
        """
        if outputs not in ("logits", "probs"):
            raise ValueError(f"outputs must be 'logits' or 'probs', got {outputs!r}")
        teachers = list(teachers)
        if not teachers:
            raise ValueError("teachers must hold at least one callable (M >= 1), got none")
        inputs = np.asarray(inputs)
        if inputs.ndim < 1 or inputs.shape[0] == 0:
            raise ValueError(f"inputs must have at least one example, got shape {inputs.shape}")
        batch_size = require_count(batch_size, "batch_size")
        if num_classes is not None:
            num_classes = require_count(num_classes, "num_classes", 2)
        log_probs = []
        for index, teacher in enumerate(teachers):
            if not callable(teacher) and not hasattr(teacher, "predict_proba"):
                raise TypeError(f"teachers[{index}] is not callable: {type(teacher).__name__}")
            is_sklearn = hasattr(teacher, "predict_proba")  # (why hasattr: _teacher_outputs)
            out = evaluate_teacher(teacher, inputs, index, batch_size)
            if is_sklearn and hasattr(teacher, "classes_"):
                out = place_columns(out, teacher.classes_, num_classes, index)
            kind = "probs" if is_sklearn else outputs
            if kind == "logits":
                warn_if_probabilities(out[None], first=index)  # naming this teacher
            single = (
                cls.from_probs(out[None], names=[f"t{index}"])
                if kind == "probs"
                else cls._from_stacked_logits(out[None], names=[f"t{index}"])
            )
            log_probs.append(np.asarray(single.log_probs[0]))
        shapes = {lp.shape for lp in log_probs}
        if len(shapes) != 1:
            raise ValueError(
                f"teachers disagree on the output shape (N, C): {sorted(shapes)}; "
                "pass num_classes to align scikit-learn teachers trained on fewer classes"
            )
        if num_classes is not None and log_probs[0].shape[-1] != num_classes:
            raise ValueError(
                f"teachers give {log_probs[0].shape[-1]} classes but num_classes={num_classes}"
            )
        return cls(jnp.asarray(np.stack(log_probs)), _default_names(len(log_probs), names))

    # ------------------------------------------------------------------ shape
    @property
    def num_teachers(self) -> int:
        """M, the number of teachers."""
        return int(self.log_probs.shape[0])

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return int(self.log_probs.shape[1])

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return int(self.log_probs.shape[2])

    # ------------------------------------------------------------------ derived quantities
    def tempered_log_probs(self, temperature: float = 1.0) -> jax.Array:
        """``log softmax(z / T)`` for every teacher, shape (M, N, C)."""
        temperature = require_positive(temperature, "temperature")
        return _tempered_log_probs(self.log_probs, temperature)

    def probs(self, temperature: float = 1.0) -> jax.Array:
        """Tempered soft labels ``softmax(z / T)``, shape (M, N, C)."""
        return jnp.exp(self.tempered_log_probs(temperature))

    def entropies(self, temperature: float = 1.0, base: float = 2.0) -> jax.Array:
        """Entropy of each teacher's prediction on each example, shape (M, N).

        The reference code measures it at temperature 1 and in bits (``base=2``).
        """
        if (base := require_positive(base, "base")) <= 1:  # H is infinite or negative
            raise ValueError(f"base must be a finite number > 1, got {base}")
        return _entropies(self.tempered_log_probs(temperature), base)

    def log_entropies(self, temperature: float = 1.0, base: float = 2.0) -> jax.Array:
        """``log H`` of each teacher's prediction on each example, shape (M, N).

        Computed in log space, ``log H = logsumexp_c(log p_c + log(-log p_c))``, so it is
        exact where ``H`` itself underflows (a teacher that is almost one-hot); ``-inf`` where
        the prediction is exactly one-hot. ``H`` is in units of ``log(base)``.
        """
        if (base := require_positive(base, "base")) <= 1:  # H is infinite or negative
            raise ValueError(f"base must be a finite number > 1, got {base}")
        return _log_entropies(self.tempered_log_probs(temperature), base)

    def accuracy(self, labels: ArrayLike) -> np.ndarray:
        """Each teacher's accuracy against ``labels``, shape (M,)."""
        labels = as_labels(labels, "labels", self.num_examples, self.num_classes)
        predictions = np.asarray(jnp.argmax(self.log_probs, axis=-1))
        return (predictions == labels[None]).mean(axis=1)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the names and the float32 log-probabilities (hex, 16 characters)."""
        digest = hashlib.sha256()
        digest.update(json.dumps([list(self.names), list(self.log_probs.shape)]).encode())
        digest.update(np.asarray(self.log_probs, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ new banks
    def select(self, teachers: Sequence[int | str] | np.ndarray | jax.Array) -> TeacherBank:
        """A bank with only the given teachers (by index or name)."""
        if isinstance(teachers, np.ndarray | jax.Array):
            teachers = np.asarray(teachers).tolist()
        if isinstance(teachers, str):
            raise TypeError(
                f"teachers must be a list of teacher names or indices, got the string "
                f"{teachers!r}; pass select([{teachers!r}])"
            )
        if not isinstance(teachers, Sequence):
            raise TypeError(
                "teachers must be a list of teacher names or indices, "
                f"got {type(teachers).__name__}"
            )
        indices = []
        for t in teachers:
            if isinstance(t, str):
                if t not in self.names:
                    raise ValueError(
                        f"teachers names {t!r}, which is not a teacher of this bank; "
                        f"its teachers are {list(self.names)}"
                    )
                indices.append(self.names.index(t))
            elif isinstance(t, int | np.integer) and not isinstance(t, bool):
                if not -self.num_teachers <= t < self.num_teachers:
                    raise ValueError(
                        f"teachers holds the index {int(t)}, out of range for "
                        f"{self.num_teachers} teachers (0..{self.num_teachers - 1})"
                    )
                indices.append(int(t) % self.num_teachers)
            else:
                raise TypeError(
                    f"teachers must hold teacher names (str) or indices (int), got {t!r}"
                )
        if not indices:
            raise ValueError("teachers must name at least one teacher")
        names: list[str] = []  # a teacher taken twice (identical teachers) is renamed "a (2)"
        for i in indices:
            name, k = self.names[i], 1
            while name in names or (k > 1 and name in self.names):
                k += 1
                name = f"{self.names[i]} ({k})"
            names.append(name)
        return TeacherBank(self.log_probs[jnp.asarray(indices)], tuple(names))

    def average(self, name: str = "average") -> TeacherBank:
        """One teacher whose probabilities are the mean of all teachers' (averaged KD).

        The mean is taken at temperature 1; a model at ``T != 1`` tempers the mean (see
        :meth:`weighted_average`, which is this with equal weights and ``temperature=1``)."""
        log_mean = jax.scipy.special.logsumexp(self.log_probs, axis=0) - jnp.log(self.num_teachers)
        return TeacherBank(log_mean[None], (name,))

    def weighted_average(
        self, weights: ArrayLike, name: str = "weighted average", temperature: float = 1.0
    ) -> TeacherBank:
        """One teacher whose soft labels at ``temperature`` are, per example ``i``, the mean
        ``sum_m w_mi softmax(z_mi / T)`` of the teachers' (weighted-average KD).

        ``weights`` (M, N) are non-negative; each column is normalised to sum to 1. The bank
        stores ``log_softmax(T log mean)``, so tempering it at ``temperature`` gives the mean
        back; at another temperature the mean is tempered again (the convention of
        :meth:`average`: ``temperature=1`` averages the untempered probabilities).

        Example:
            >>> import numpy as np
            >>> bank = TeacherBank.from_probs([[[0.5, 0.5]], [[0.9, 0.1]]])
            >>> np.asarray(bank.weighted_average([[1.0], [3.0]]).probs()).round(3)
            array([[[0.8, 0.2]]], dtype=float32)
        """
        temperature = require_positive(temperature, "temperature")
        array, shape = as_float_array(weights, "weights", 2), self.log_probs.shape[:2]
        if array.shape != shape:
            raise ValueError(f"weights must have shape (M, N) = {shape}, got {array.shape}")
        require_finite(array, "weights")
        sums = array.sum(0)
        if (array < 0).any() or (sums <= 0).any():
            raise ValueError("weights must be non-negative with every column summing to > 0")
        with np.errstate(divide="ignore"):
            log_w = jnp.asarray(np.log(array / sums), jnp.float32)
        tempered = self.tempered_log_probs(temperature)
        log_mean = jax.scipy.special.logsumexp(log_w[:, :, None] + tempered, axis=0)
        return TeacherBank(jax.nn.log_softmax(temperature * log_mean, axis=-1)[None], (name,))

    def take(self, indices: ArrayLike) -> TeacherBank:
        """A bank restricted to the examples ``indices``."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"indices must be a 1-D integer array, got {indices.dtype} {indices.shape}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise ValueError(
                f"indices must lie in 0..{self.num_examples - 1}, "
                f"got {indices.min()}..{indices.max()}"
            )
        return TeacherBank(self.log_probs[:, jnp.asarray(indices)], self.names)

    def __repr__(self) -> str:
        return (
            f"TeacherBank(M={self.num_teachers}, N={self.num_examples}, C={self.num_classes}, "
            f"names={list(self.names)}, hash={self.content_hash})"
        )


@jax.jit
def _tempered_log_probs(log_probs: jax.Array, temperature: float) -> jax.Array:
    return tempered_log_softmax(log_probs, temperature)


@jax.jit
def _entropies(log_probs: jax.Array, base: float) -> jax.Array:
    probs = jnp.exp(log_probs)
    terms = jnp.where(probs > 0, probs * log_probs, 0.0)
    return -terms.sum(-1) / jnp.log(base)


@jax.jit
def _log_entropies(log_probs: jax.Array, base: float) -> jax.Array:
    # H = sum_c p_c (-log p_c): every class with 0 < p_c < 1 adds exp(log p_c + log(-log p_c)).
    # The most probable class needs care: -log p_max = -log1p(-s), with s the mass off it, is
    # ~ s for an almost one-hot teacher, far below float32's resolution of log p_max near 0.
    top = jax.nn.one_hot(jnp.argmax(log_probs, axis=-1), log_probs.shape[-1], dtype=bool)
    off_top = jnp.where(top, -jnp.inf, log_probs)
    log_s = logsumexp_or_neginf(off_top)  # log of the mass off the top class (-inf: one-hot)
    s = jnp.exp(log_s)
    small = s < 1e-3  # log(-log1p(-s)) = log s + s / 2 + O(s^2)
    log_neg_log_top = jnp.where(
        small, log_s + s / 2, jnp.log(-jnp.log1p(-jnp.where(small, 0.5, s)))
    )
    top_term = jnp.log1p(-s) + log_neg_log_top  # -inf for an exactly one-hot teacher
    contributes = jnp.isfinite(off_top) & (off_top < 0)
    safe = jnp.where(contributes, off_top, -1.0)
    terms = jnp.where(contributes, safe + jnp.log(-safe), -jnp.inf)
    all_terms = jnp.concatenate([terms, top_term[..., None]], axis=-1)
    return logsumexp_or_neginf(all_terms) - jnp.log(jnp.log(base))
