"""The one data type of a distillation problem: what every loader returns and every experiment
(the demo included) runs on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mtbkd_jax.datasets._data_checks import check_distillation_data
from mtbkd_jax.teachers import TeacherBank

__all__ = ["DistillationData"]

# the array fields, converted from array-likes (lists) when the problem is made
ARRAYS = ("x_train", "y_train", "x_test", "y_test", "x_transfer", "x_validation",
          "y_validation", "true_probs_test", "ood_inputs")  # fmt: skip


@dataclass(frozen=True, eq=False, kw_only=True)
class DistillationData:
    """A distillation problem: labelled, transfer, validation and test inputs and the teachers.

    Attributes:
        name: the problem's name (used in file names and messages).
        x_train, y_train: the student's labelled examples, (N, D) and (N,).
        x_test, y_test: held-out evaluation data.
        teachers_prior: the teacher bank on :attr:`prior_inputs` (``x_train``, then
            ``x_transfer``).
        teachers_test: the same teachers on ``x_test``.
        x_transfer: unlabelled transfer inputs, or ``None`` (the prior sees ``x_train`` only).
        x_validation, y_validation: a labelled validation split, or ``None``; on it
            ``ExperimentConfig(tune=True)`` chooses each method's hyperparameters. Neither
            the teachers' prior nor the student's likelihood sees it.
        teachers_validation: the same teachers on ``x_validation``, or ``None``; with
            ``ExperimentConfig(trust_labels="validation")`` the learned-trust rows learn the
            teachers' trust from these and ``y_validation`` (labelled inputs the teachers may
            not have been trained on) instead of from the training labels.
        true_probs_test: the true class probabilities of the test inputs, (N_test, C), where
            they are known (synthetic data), else ``None``.
        extra_inputs: named further input sets scored for uncertainty (e.g. the
            multi-location proteins).
        ood_inputs: out-of-distribution inputs shaped like ``x_test``'s, (N_ood, D), or
            ``None``; each row's OOD-detection AUROCs tell them from the test inputs (see
            :mod:`mtbkd_jax.datasets.ood` for the experiments' sets).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    teachers_prior: TeacherBank
    teachers_test: TeacherBank
    x_transfer: np.ndarray | None = None
    x_validation: np.ndarray | None = None
    y_validation: np.ndarray | None = None
    true_probs_test: np.ndarray | None = None
    extra_inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    ood_inputs: np.ndarray | None = None
    teachers_validation: TeacherBank | None = None

    def __post_init__(self) -> None:
        for name in ARRAYS:  # lists of lists as arrays (`.shape` on a list failed unnamed)
            value = getattr(self, name)
            if value is not None and not hasattr(value, "shape"):
                object.__setattr__(self, name, _as_array(name, value))
        if isinstance(self.extra_inputs, Mapping):
            extra = {
                k: v if hasattr(v, "shape") else _as_array(f"extra_inputs[{k!r}]", v)
                for k, v in self.extra_inputs.items()
            }
            object.__setattr__(self, "extra_inputs", extra)
        check_distillation_data(self)

    @property
    def prior_inputs(self) -> np.ndarray:
        """The inputs the teacher prior is evaluated on: ``x_train``, then ``x_transfer``."""
        if self.x_transfer is None:
            return self.x_train
        return np.concatenate([self.x_train, self.x_transfer], axis=0)

    @property
    def num_classes(self) -> int:
        return int(self.teachers_test.num_classes)

    @property
    def num_features(self) -> int:
        """D, the width of a (flat) input."""
        return int(self.x_train.shape[1])

    @property
    def has_validation(self) -> bool:
        return self.x_validation is not None and self.y_validation is not None

    @property
    def num_transfer(self) -> int:
        return 0 if self.x_transfer is None else len(self.x_transfer)

    @property
    def num_validation(self) -> int:
        return 0 if self.y_validation is None else len(self.y_validation)

    @property
    def num_ood(self) -> int:
        return 0 if self.ood_inputs is None else len(self.ood_inputs)

    def __repr__(self) -> str:
        sizes = [len(self.y_train), self.num_transfer, self.num_validation, len(self.y_test)]
        return (
            f"DistillationData(name={self.name!r}, C={self.num_classes}, D={self.num_features}, "
            f"train/transfer/validation/test={'/'.join(map(str, sizes))}, "
            f"teachers={list(self.teachers_test.names)})"
        )


def _as_array(name: str, value: object) -> np.ndarray:
    """An array-like field (a list of lists) as an array; a ragged one is refused by name."""
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name} must be an array or array-like of one shape: {error}") from None
