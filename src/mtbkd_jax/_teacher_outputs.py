"""How the teachers' outputs a user hands to :class:`~mtbkd_jax.TeacherBank` become its
``(M, N, C)`` array: a stack of per-teacher arrays checked for shape, and a scikit-learn
teacher's ``predict_proba`` columns placed at the classes it was trained on."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from numpy.typing import ArrayLike

from mtbkd_jax._checks import as_float_array
from mtbkd_jax._layer_state import check_per_example


class ProbabilisticClassifier(Protocol):
    """A scikit-learn style classifier: anything with ``predict_proba``."""

    def predict_proba(self, inputs: np.ndarray, /) -> ArrayLike: ...


def stack_teachers(arrays: ArrayLike, name: str) -> np.ndarray:
    """Accept an (M, N, C) array or a sequence of (N, C) arrays and return (M, N, C)."""
    if isinstance(arrays, np.ndarray | jax.Array) or (
        isinstance(arrays, Sequence) and len(arrays) > 0 and _ndim(arrays[0]) == 2
    ):
        if not isinstance(arrays, np.ndarray | jax.Array):
            shapes = [np.shape(a) for a in arrays]
            if len(set(shapes)) != 1:
                raise ValueError(
                    f"{name}: every teacher must give an (N, C) array of the same shape; "
                    f"got shapes {shapes} (a mismatch in examples or in class count)"
                )
        stacked = as_float_array(
            arrays if np.ndim(arrays) == 3 else np.stack(list(arrays)), name, 3
        )
    else:
        stacked = as_float_array(arrays, name, 3)
    num_teachers, num_examples, num_classes = stacked.shape
    if num_teachers == 0:
        raise ValueError(f"{name} must hold at least one teacher (M >= 1), got M = 0")
    if num_examples == 0:
        raise ValueError(f"{name} must hold at least one example (N >= 1), got N = 0")
    if num_classes < 2:
        raise ValueError(f"{name} must have at least 2 classes (C >= 2), got C = {num_classes}")
    return stacked


def place_columns(
    probs: np.ndarray, classes: object, num_classes: int | None, index: int
) -> np.ndarray:
    """A scikit-learn teacher's ``predict_proba`` columns placed at its ``classes_`` among
    ``num_classes`` (zero for the classes it never saw); without ``num_classes`` its classes
    must be ``0..k-1`` already."""
    found, k = np.asarray(classes), probs.shape[1]
    said = f"teachers[{index}] was trained on classes {found.tolist()}"
    if found.shape != (k,):
        raise ValueError(f"{said} but predict_proba returned {k} columns")
    if found.dtype == np.bool_:  # a classifier of boolean labels: False, True are 0, 1
        found = found.astype(np.int64)
    whole = np.issubdtype(found.dtype, np.integer) or (
        np.issubdtype(found.dtype, np.floating) and bool(np.all(np.mod(found, 1) == 0))
    )
    if not whole:
        raise ValueError(f"{said}; classes must be integers 0..C-1 (encode the labels first)")
    if num_classes is None:
        if not np.array_equal(found, np.arange(k)):
            raise ValueError(f"{said}; pass num_classes=C (classes must be integers 0..C-1)")
        return probs
    if found.min() < 0 or found.max() >= num_classes or len(np.unique(found)) != k:
        raise ValueError(
            f"{said}; with num_classes={num_classes} they must be distinct in 0..{num_classes - 1}"
        )
    full = np.zeros((probs.shape[0], num_classes))
    full[:, found.astype(int)] = probs
    return full


def _ndim(value: ArrayLike) -> int:
    """``np.ndim``, or -1 where NumPy cannot make an array of ``value`` (a ragged list)."""
    try:
        return int(np.ndim(value))
    except (AttributeError, TypeError, ValueError):
        return -1


# how far from 1 a row of "logits" may sum and still be taken for probabilities
_SUM_TOLERANCE = 0.05


def warn_if_probabilities(logits: np.ndarray, first: int = 0) -> None:
    """Warn, at the user's line, when a teacher's "logits" (teachers ``first``, ``first + 1``,
    ...) are rows on the simplex: read as logits, probabilities give a teacher far flatter
    than it is (0.76 becomes 0.49 of three classes). Rows summing to 1 within 0.05 count, so
    that probabilities rounded to a few decimals (a CSV's) or stored in float16 are seen too:
    logits of every example all in [0, 1] and summing to about 1 are no real teacher's."""
    in_unit = ((logits >= 0) & (logits <= 1)).all(axis=(1, 2))
    on_simplex = in_unit & (np.abs(logits.sum(-1) - 1.0) <= _SUM_TOLERANCE).all(axis=1)
    if on_simplex.any():
        which = [first + int(i) for i in np.flatnonzero(on_simplex)]
        warnings.warn(
            f"the logits of teacher(s) {which} are rows of probabilities (non-negative, each "
            "summing to 1), which would be read as logits and flattened: pass probabilities to "
            "TeacherBank.from_probs, or outputs='probs' to TeacherBank.from_callables",
            UserWarning,
            skip_file_prefixes=(str(Path(__file__).parent),),
        )


def evaluate_teacher(teacher: Any, inputs: np.ndarray, index: int, batch_size: int) -> np.ndarray:
    """``teachers[index]``'s outputs on ``inputs`` (N, C) as float64, in batches: a
    scikit-learn ``predict_proba``'s, or a callable's. An NNX module in training mode is
    refused (its outputs would depend on the batch and its statistics be overwritten; the
    probe runs a copy, on float inputs: token ids are not probed)."""
    # hasattr, not isinstance with a runtime-checkable Protocol: that looks the attribute up
    # statically, so it would find scikit-learn's `available_if` descriptor on e.g. an
    # SVC(probability=False), which has no predict_proba
    is_sklearn = hasattr(teacher, "predict_proba")
    if isinstance(teacher, nnx.Module) and np.issubdtype(inputs.dtype, np.floating):
        check_per_example(teacher, inputs, name=f"teachers[{index}]")
    chunks = []
    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start : start + batch_size]
        if is_sklearn:
            chunk = cast(ProbabilisticClassifier, teacher).predict_proba(batch)
        else:
            chunk = cast(Callable[..., Any], teacher)(jnp.asarray(batch))
        chunks.append(np.asarray(chunk, dtype=np.float64))
    out = np.concatenate(chunks, axis=0)
    if out.ndim != 2 or out.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"teachers[{index}] returned shape {out.shape} for {inputs.shape[0]} inputs; "
            "expected (N, C) with one row per input"
        )
    return out
