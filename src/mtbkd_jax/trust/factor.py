"""Learned trust in a user's own NumPyro model: the teacher prior factor under sampled trust.

A model of one's own samples the trust sites with :func:`~mtbkd_jax.trust.sample_trust`
(outside the data plate) and, inside it, adds the teacher prior with
:func:`trusted_prior_factor`, given the same hyperprior (its weight rule and pooling); this is
exactly what ``MTBKDModel(trust="joint", trust_hyperprior=...)`` does.

Example:
    >>> import jax, numpy as np, numpyro
    >>> from mtbkd_jax import TeacherBank
    >>> from mtbkd_jax.trust import TrustHyperprior, TrustedTeachers, sample_trust
    >>> from mtbkd_jax.trust.factor import trusted_prior_factor
    >>> bank = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 5, 3)))
    >>> teachers = TrustedTeachers.build(bank.log_probs)
    >>> h = TrustHyperprior()
    >>> def model(logits):
    ...     trust = sample_trust(h, 2, 3)
    ...     with numpyro.plate("data", 5):
    ...         trusted_prior_factor("teacher_prior", logits, teachers, trust, hyperprior=h)
    >>> trace = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(np.zeros((5, 3)))
    >>> [name for name in sorted(trace) if not name.startswith("trust.")]
    ['data', 'teacher_prior']
    >>> len([name for name in trace if name.startswith("trust.")])
    4
"""

from __future__ import annotations

import jax

from mtbkd_jax.priors import teacher_prior_factor
from mtbkd_jax.trust.sites import TrustedTeachers, TrustHyperprior, TrustValues

__all__ = ["trusted_prior_factor"]


def trusted_prior_factor(
    name: str,
    student_logits: jax.Array,
    teachers: TrustedTeachers,
    trust: TrustValues,
    *,
    hyperprior: TrustHyperprior | None = None,
    temperature: float = 1.0,
    weight_rule: str | None = None,
    prior_power: float = 1.0,
    pooling: str | None = None,
) -> jax.Array:
    """Add ``beta * log sum_m w_m Dir(q^T; 1 + lambda_m p_m(tau_m))`` under ``trust`` (with
    ``pooling="product"``: ``beta * log Dir(q^T; 1 + sum_m w_m lambda_m p_m(tau_m))``).

    Args:
        name: the factor site's name.
        student_logits: the student's logits on the plate's examples, (B, C).
        teachers: the teachers on the same examples (``TrustedTeachers.take`` for a minibatch).
        trust: the trust values (from :func:`~mtbkd_jax.trust.sample_trust`).
        hyperprior: the :class:`~mtbkd_jax.trust.TrustHyperprior` ``sample_trust`` was given:
            its weight rule and pooling are used (without it, ``"learned"`` and
            ``"mixture"`` by default: a hyperprior with a fixed rule samples no weight link,
            and the learned rule without one gives uniform weights).
        temperature: the prior's ``T``.
        weight_rule: ``"learned"`` or a fixed rule (see
            :func:`~mtbkd_jax.trust.trusted_teacher_prior`); with ``hyperprior``, its own or
            left out.
        prior_power: ``beta``.
        pooling: ``"mixture"`` or ``"product"`` (see :mod:`mtbkd_jax.trust.sites`); with
            ``hyperprior``, its own or left out.

    Returns:
        The per-example log prior density (before ``beta``), shape (B,).
    """
    if not isinstance(teachers, TrustedTeachers):
        raise TypeError(f"teachers must be a TrustedTeachers, got {type(teachers).__name__}")
    if not isinstance(trust, TrustValues):
        raise TypeError(f"trust must be a TrustValues, got {type(trust).__name__}")
    if hyperprior is not None:
        if not isinstance(hyperprior, TrustHyperprior):
            raise TypeError(
                f"hyperprior must be a TrustHyperprior, got {type(hyperprior).__name__}"
            )
        given = {"weight_rule": weight_rule, "pooling": pooling}
        own = {"weight_rule": hyperprior.weight_rule, "pooling": hyperprior.pooling}
        for option, value in given.items():
            if value is not None and value != own[option]:
                raise ValueError(
                    f"{option}={value!r} differs from the hyperprior's {own[option]!r}, under "
                    "which sample_trust sampled the trust: leave it out"
                )
        weight_rule, pooling = own["weight_rule"], own["pooling"]
    weight_rule = "learned" if weight_rule is None else weight_rule
    pooling = "mixture" if pooling is None else pooling
    prior = teachers.prior(trust, temperature, weight_rule, pooling)
    return teacher_prior_factor(name, student_logits, prior, prior_power=prior_power)
