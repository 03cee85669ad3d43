"""Learned teacher trust: each teacher's calibration ``tau_m``, concentration ``lambda_m``
(per consensus class) and mixing weights, learned from labelled data.

* :mod:`mtbkd_jax.trust.sites`: the trust sites and the prior's constants under a trust, with
  the teachers' Dirichlets pooled as the paper's mixture or as one product (``pooling``).
* :mod:`mtbkd_jax.trust.labels`: the label models that make labels evidence about trust.
* :mod:`mtbkd_jax.trust.fit`: :func:`fit_teacher_trust` (the cut posterior of trust) and the
  :class:`TrustPosterior` it returns, which :class:`~mtbkd_jax.MTBKDModel` takes as ``trust=``.
* :mod:`mtbkd_jax.trust.factor`: :func:`trusted_prior_factor`, the teacher prior under sampled
  trust in a NumPyro model of one's own.

Example:
    >>> import jax, numpy as np
    >>> from mtbkd_jax import TeacherBank
    >>> from mtbkd_jax.trust import TrustHyperprior, fit_teacher_trust
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 60)
    >>> logits = rng.normal(size=(2, 60, 3)) + 3.0 * np.eye(3)[labels]
    >>> bank = TeacherBank.from_logits(logits, names=["a", "b"])
    >>> trust = fit_teacher_trust(jax.random.key(0), bank, labels, num_warmup=50, num_draws=50)
    >>> [row["teacher"] for row in trust.summary()]
    ['a', 'b']
"""

from mtbkd_jax.trust.consensus import consensus_class, consensus_weights
from mtbkd_jax.trust.factor import trusted_prior_factor
from mtbkd_jax.trust.fit import RHAT_WARNING, TrustPosterior, fit_teacher_trust
from mtbkd_jax.trust.labels import (
    label_log_likelihood,
    label_log_probs,
    mixing_weight_model,
    teacher_label_log_likelihood,
    teacher_trust_model,
)
from mtbkd_jax.trust.resolve import resolve_trust, trust_description
from mtbkd_jax.trust.sites import (
    TRUST_CALIBRATIONS,
    TRUST_POOLINGS,
    TRUST_WEIGHT_RULES,
    TrustedTeachers,
    TrustHyperprior,
    TrustValues,
    calibrated_log_probs,
    sample_trust,
    trusted_teacher_prior,
)

__all__ = [
    "fit_teacher_trust",
    "RHAT_WARNING",
    "TrustPosterior",
    "TrustHyperprior",
    "TrustValues",
    "TRUST_WEIGHT_RULES",
    "TRUST_CALIBRATIONS",
    "TRUST_POOLINGS",
    "TrustedTeachers",
    "calibrated_log_probs",
    "consensus_class",
    "consensus_weights",
    "label_log_likelihood",
    "label_log_probs",
    "mixing_weight_model",
    "resolve_trust",
    "sample_trust",
    "teacher_label_log_likelihood",
    "teacher_trust_model",
    "trust_description",
    "trusted_teacher_prior",
    "trusted_prior_factor",
]
