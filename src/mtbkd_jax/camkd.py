"""CA-MKD (Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher Knowledge Distillation",
ICASSP 2022) as one teacher: a baseline fitted by MAP.

CA-MKD's logit loss is ``CE(y, q) + a * sum_i sum_m w_mi KL(p_mi^T || q_i^T)`` with the
per-example weights of :func:`~mtbkd_jax.weighting.ca_mkd_weights`. Since
``sum_m w_m CE(p_m, q) = CE(sum_m w_m p_m, q)`` and the weights are constants, this is, up to a
constant, vanilla KD from ONE teacher whose soft label on example ``i`` is
``sum_m w_mi p_mi^T``; so its optimum is the MAP of a single-teacher model with the bank of
:func:`ca_mkd_teacher` and ``beta * lambda = a`` (MAP = KD, METHOD §4). The authors' code
divides the KD term by the number of teachers, a factor that ``beta * lambda`` absorbs. Only
the logit part of CA-MKD is reproduced (its intermediate-feature term needs the teachers'
networks, which a :class:`~mtbkd_jax.teachers.TeacherBank` does not hold).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mtbkd_jax._checks import as_labels
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.weighting import ca_mkd_weights

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["ca_mkd_bank_weights", "ca_mkd_teacher"]


def ca_mkd_bank_weights(bank: TeacherBank, labels: ArrayLike) -> np.ndarray:
    """CA-MKD weights (M, N) for every example of ``bank``.

    The first ``len(labels)`` examples of the bank are the labelled ones (as in
    :class:`~mtbkd_jax.datasets.DistillationData`, whose prior inputs are ``x_train``, then
    the unlabelled ``x_transfer``): there the weights are CA-MKD's, per example. CA-MKD needs
    a label, so on the unlabelled examples after them each teacher gets its mean CA-MKD weight
    over the labelled examples (a per-teacher reliability; the columns still sum to 1).

    Args:
        bank: the teachers on the labelled inputs, then on any unlabelled ones.
        labels: integer labels (n,) of the first ``n <= N`` examples, ``n >= 1``.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax import TeacherBank
        >>> bank = TeacherBank.from_probs([[[0.9, 0.1], [0.5, 0.5]], [[0.2, 0.8], [0.5, 0.5]]])
        >>> np.round(ca_mkd_bank_weights(bank, [0]), 3)
        array([[0.818, 0.818],
               [0.182, 0.182]], dtype=float32)
    """
    if not isinstance(bank, TeacherBank):
        raise TypeError(f"bank must be a TeacherBank, got {type(bank).__name__}")
    num_labelled = int(np.shape(labels)[0]) if np.ndim(labels) == 1 else -1
    if not 1 <= num_labelled <= bank.num_examples:
        raise ValueError(
            f"labels must be a 1-D array of 1..{bank.num_examples} labels (the bank's first "
            f"examples are the labelled ones), got shape {np.shape(labels)}"
        )
    labels = as_labels(labels, "labels", num_labelled, bank.num_classes)
    labelled = np.asarray(ca_mkd_weights(bank.log_probs[:, :num_labelled], labels))
    unlabelled = bank.num_examples - num_labelled
    mean = labelled.mean(axis=1, keepdims=True)
    return np.concatenate([labelled, np.repeat(mean, unlabelled, axis=1)], axis=1)


def ca_mkd_teacher(
    bank: TeacherBank, labels: ArrayLike, *, temperature: float = 1.0, name: str = "CA-MKD"
) -> TeacherBank:
    """CA-MKD as one teacher: the :meth:`~TeacherBank.weighted_average` of ``bank`` with the
    weights of :func:`ca_mkd_bank_weights`, at the model's ``temperature``.

    Its soft labels at ``temperature`` are ``sum_m w_mi softmax(z_mi / T)``; the weights
    themselves come from the untempered predictions, as in CA-MKD. ``temperature=1`` follows
    :meth:`TeacherBank.average` (averaged KD): a model at another ``T`` tempers the average.

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax import TeacherBank
        >>> bank = TeacherBank.from_probs([[[0.9, 0.1]], [[0.2, 0.8]]])
        >>> np.asarray(ca_mkd_teacher(bank, [0]).probs()).round(3)
        array([[[0.773, 0.227]]], dtype=float32)
    """
    weights = ca_mkd_bank_weights(bank, labels)
    return bank.weighted_average(weights, name=name, temperature=temperature)
