"""scikit-learn's bundled 8x8 digits as a multi-teacher distillation problem.

Three teachers of different kinds and expertise are trained once on their own split: a
multinomial logistic regression on the pixels (a strong, calibrated generalist), a shallow random
forest (good but under-confident) and Gaussian naive Bayes (weak and over-confident). The
student sees only a few labelled digits plus an unlabelled transfer set on which the teachers'
predictions inform its prior.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from mtbkd_jax._checks import require_counts
from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.datasets.ood import digits_ood
from mtbkd_jax.teachers import TeacherBank

__all__ = ["load_digits_distillation"]


def _digits_teachers(seed: int) -> dict[str, Any]:
    return {
        "logreg": LogisticRegression(max_iter=2000, C=0.5),
        "forest": RandomForestClassifier(n_estimators=60, max_depth=6, random_state=seed),
        "naive_bayes": GaussianNB(var_smoothing=0.05),
    }


def load_digits_distillation(
    seed: int = 0,
    *,
    num_labelled: int = 150,
    num_transfer: int = 450,
    num_teacher_train: int = 800,
    num_validation: int = 0,
) -> DistillationData:
    """Split the 1,797 digits into teacher-training, labelled, transfer, validation and test
    sets.

    Pixels are scaled to [0, 1]. ``num_validation`` labelled digits (none by default) are held
    out for choosing hyperparameters; neither the teachers nor the student's prior see them.
    The test set is whatever remains (397 digits by default).

    The OOD set (``ood_inputs``, seeded by ``seed``) is as large as the test set: half
    Gaussian-noise images with the labelled and transfer digits' per-pixel mean and standard
    deviation (clipped to [0, 1]), half pixel-shuffled test digits, each with a permutation of
    its own (:func:`~mtbkd_jax.datasets.ood.digits_ood`).
    """
    require_counts(seed=(seed, 0), num_labelled=(num_labelled, 1), num_transfer=(num_transfer, 1))
    require_counts(num_teacher_train=(num_teacher_train, 1), num_validation=(num_validation, 0))
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    sizes = [num_teacher_train, num_labelled, num_transfer, num_validation]
    if seed >= 2**32:  # the teachers' random_state (scikit-learn) is a 32-bit seed
        raise ValueError(f"seed must be below 2**32, got {seed}")
    if min(sizes[:3]) < 1 or num_validation < 0 or sum(sizes) > len(x) - 2:
        raise ValueError(  # 2 test digits at least: the OOD set shuffles half of them
            f"num_labelled, num_transfer and num_teacher_train must be >= 1, num_validation "
            f">= 0, and together at most {len(x) - 2} (2 test digits left), got {num_labelled}, "
            f"{num_transfer}, {num_teacher_train}, {num_validation}"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    teach, label, transfer, validation, test = np.split(order, np.cumsum(sizes))
    teachers = _digits_teachers(seed)
    for estimator in teachers.values():
        estimator.fit(x[teach], y[teach])
    prior_inputs = np.concatenate([x[label], x[transfer]], axis=0)
    names = list(teachers)
    fitted = list(teachers.values())
    return DistillationData(
        name="digits",
        x_train=x[label],
        y_train=y[label].astype(np.int32),
        x_transfer=x[transfer],
        x_test=x[test],
        y_test=y[test].astype(np.int32),
        teachers_prior=TeacherBank.from_callables(
            fitted, prior_inputs, names=names, num_classes=10
        ),
        teachers_test=TeacherBank.from_callables(fitted, x[test], names=names, num_classes=10),
        x_validation=x[validation] if num_validation else None,
        y_validation=y[validation].astype(np.int32) if num_validation else None,
        ood_inputs=digits_ood(prior_inputs, x[test], seed),
    )
