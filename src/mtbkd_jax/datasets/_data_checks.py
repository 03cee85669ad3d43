"""What :class:`~mtbkd_jax.datasets.DistillationData` checks when it is made: every input set's
rows against its labels and its teachers, one class count, one input shape, one teacher set.

A mismatch used to pass silently and surface late: an ``extra_inputs`` of the wrong width only
after every fit had finished, a test bank of another length as "labels must have shape (5,)",
float labels such as 7.5 nowhere at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import require_finite

if TYPE_CHECKING:
    from mtbkd_jax.datasets.data import DistillationData
    from mtbkd_jax.teachers import TeacherBank

__all__ = ["check_distillation_data"]


def check_distillation_data(data: DistillationData) -> None:
    """Raise a ValueError naming the first field that does not fit the others."""
    classes = int(data.teachers_test.num_classes)
    shape = np.shape(data.x_train)[1:]
    _labelled("x_train", data.x_train, "y_train", data.y_train, classes)
    _labelled("x_test", data.x_test, "y_test", data.y_test, classes)
    if (data.x_validation is None) != (data.y_validation is None):
        raise ValueError("x_validation and y_validation must be given together")
    if data.x_validation is not None:
        _labelled("x_validation", data.x_validation, "y_validation", data.y_validation, classes)
    extra = {f"extra_inputs[{k!r}]": v for k, v in dict(data.extra_inputs).items()}
    inputs = {"x_test": data.x_test, "x_transfer": data.x_transfer,
              "x_validation": data.x_validation, **extra}  # fmt: skip
    for name, value in inputs.items():
        if value is not None and (name == "x_transfer" or name.startswith("extra_inputs")):
            _finite(name, value)
        if value is not None and np.shape(value)[1:] != shape:
            raise ValueError(
                f"{name} must have x_train's shape per example, {shape}, got "
                f"{np.shape(value)[1:]} (shape {np.shape(value)})"
            )
    rows = len(data.x_train) + (0 if data.x_transfer is None else len(data.x_transfer))
    banks = {
        "teachers_prior": (data.teachers_prior, rows, "prior inputs (x_train, x_transfer)"),
        "teachers_test": (data.teachers_test, len(data.x_test), "test inputs (x_test)"),
    }
    if data.teachers_validation is not None:
        validation = (data.teachers_validation, data.num_validation, "validation inputs")
        banks["teachers_validation"] = validation
    for name, (bank, count, what) in banks.items():
        _bank(name, bank, count, what, data.teachers_test)
    if data.ood_inputs is not None:
        _finite("ood_inputs", data.ood_inputs)  # NaN failed every method's OOD scores, unnamed
        ood, test = np.shape(data.ood_inputs), np.shape(data.x_test)
        if len(ood) != len(test) or ood[1:] != test[1:] or ood[0] < 1:
            raise ValueError(
                f"ood_inputs must have shape (N_ood, ...) like x_test's {test} with "
                f"N_ood >= 1, got {ood}"
            )
    if data.true_probs_test is not None:
        expected = (len(data.x_test), classes)
        if np.shape(data.true_probs_test) != expected:
            raise ValueError(
                f"true_probs_test must have shape (N_test, C) = {expected}, got "
                f"{np.shape(data.true_probs_test)}"
            )
        truth = np.asarray(data.true_probs_test, dtype=np.float64)
        finite = bool(np.isfinite(truth).all())
        if not finite or truth.min() < 0 or np.abs(truth.sum(-1) - 1).max() > 1e-6:
            raise ValueError(  # coverage and calibration against the truth would be wrong
                "true_probs_test must hold one probability vector per test example (finite, "
                f">= 0, each row summing to 1 within 1e-6), got values from {truth.min():.6g} "
                f"to {truth.max():.6g}" + ("" if finite else " (NaN or infinite)")
            )


def _labelled(x_name: str, x: Any, y_name: str, y: Any, classes: int) -> None:
    """``y`` one integer class in ``0..classes-1`` per row of ``x``."""
    if np.ndim(x) < 2 or len(x) == 0:
        raise ValueError(f"{x_name} must have shape (N, ...) with N >= 1, got {np.shape(x)}")
    if np.size(x) == 0:
        raise ValueError(f"{x_name} must have at least one feature, got shape {np.shape(x)}")
    _finite(x_name, x)
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(x):
        raise ValueError(
            f"{y_name} must hold one label per row of {x_name}, shape ({len(x)},), got "
            f"{labels.shape}"
        )
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{y_name} must hold integer class labels, got dtype {labels.dtype}")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        bad = labels[labels != np.round(labels)][0]
        raise ValueError(f"{y_name} must hold integer class labels, got {float(bad)!r}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"{y_name} must lie in 0..{classes - 1} (the teachers' {classes} classes), got "
            f"{labels.min()}..{labels.max()}"
        )


def _bank(name: str, bank: TeacherBank, count: int, what: str, test: TeacherBank) -> None:
    """``bank`` describes ``count`` inputs, with the test bank's teachers and classes."""
    if bank.num_examples != count:
        raise ValueError(
            f"{name} must describe the {count} {what}, got a bank of {bank.num_examples} examples"
        )
    if (bank.num_teachers, bank.num_classes) != (test.num_teachers, test.num_classes):
        raise ValueError(
            f"{name} must hold teachers_test's {test.num_teachers} teachers of "
            f"{test.num_classes} classes, got {bank.num_teachers} of {bank.num_classes}"
        )
    if tuple(bank.names) != tuple(test.names):  # another order would swap the teachers' rows
        raise ValueError(
            f"{name} must hold teachers_test's teachers in its order, {list(test.names)}, got "
            f"{list(bank.names)}"
        )


def _finite(name: str, x: Any) -> None:
    """Inputs are real numbers (strings, objects and complex values failed only inside a fit)
    and, as floats, hold no NaN or infinity (integer token ids need no check)."""
    values = np.asarray(x)
    floating = jnp.issubdtype(values.dtype, jnp.floating)  # ml_dtypes' bfloat16 too (kind V)
    if values.dtype.kind not in "biu" and not floating:
        raise ValueError(
            f"{name} must hold real numbers (floats or integers), got dtype {values.dtype}"
        )
    if floating:
        require_finite(values, name)
