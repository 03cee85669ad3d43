"""What :class:`~mtbkd_jax.MTBKDModel` makes of its ``trust=``: a fitted
:class:`~mtbkd_jax.trust.TrustPosterior` or given :class:`~mtbkd_jax.trust.TrustValues` become
the teacher prior's constants, ``"joint"`` the trust sites sampled in the model; and the plain
record of either (``settings()["trust"]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtbkd_jax.priors import TeacherPrior
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.trust.checks import check_values, check_values_use
from mtbkd_jax.trust.consensus import consensus_weights
from mtbkd_jax.trust.fit import TrustPosterior
from mtbkd_jax.trust.sites import (
    TRUST_WEIGHT_RULES,
    TrustedTeachers,
    TrustHyperprior,
    TrustValues,
    trusted_teacher_prior,
)

__all__ = [
    "DEFAULT_CONCENTRATION",
    "check_prior_constants",
    "check_trust_arguments",
    "resolve_trust",
    "sets_own_concentration",
    "trust_description",
]

DEFAULT_CONCENTRATION = 10.0  # MTBKDModel's lambda; with most trusts not used (the trust's is)


def check_prior_constants(constants: object, num_examples: int, argument: str) -> None:
    """Refuse a model's prior constants (fixed or a joint trust's teachers) that are of another
    kind or describe another number of examples than ``argument`` has."""
    if not isinstance(constants, TeacherPrior | TrustedTeachers):
        raise TypeError(f"prior_constants must be a TeacherPrior, got {type(constants).__name__}")
    if num_examples != constants.num_examples:
        raise ValueError(
            f"the teacher bank describes {constants.num_examples} examples but "
            f"{argument} has {num_examples}; build the bank on the inputs where the prior "
            "is evaluated (pass prior_inputs for a separate transfer set, or "
            "teacher_prior=False to predict on new inputs)"
        )


def check_trust_arguments(trust: object, hyperprior: object, teachers: object) -> None:
    """Refuse a trust without teachers, and a hyperprior without a trust (it would be ignored:
    the model would be the fixed one, and its settings would not say so)."""
    if trust is None and hyperprior is not None:
        raise ValueError(
            "trust_hyperprior is for trust='joint' (or TrustValues' pooling), got trust=None "
            "(the fixed model): pass trust='joint' as well, or leave trust_hyperprior out"
        )
    if trust is not None and teachers is None:
        raise ValueError("trust needs teachers; got teachers=None")


def sets_own_concentration(trust: object, hyperprior: object) -> bool:
    """Whether ``trust`` brings its own lambda (values, a posterior, ``"joint"`` under a given
    hyperprior), so that the model's ``concentration`` is not used."""
    joint = isinstance(trust, str) and trust == "joint"
    return isinstance(trust, TrustPosterior | TrustValues) or (joint and hyperprior is not None)


def resolve_trust(
    trust: object,
    teachers: TeacherBank,
    *,
    temperature: float,
    weight_rule: str,
    concentration: float | None,
    hyperprior: TrustHyperprior | None,
) -> tuple[TeacherPrior | None, TrustedTeachers | None, TrustHyperprior | None]:
    """What :class:`~mtbkd_jax.MTBKDModel` makes of its ``trust=``: ``(teacher_prior,
    trusted_teachers, hyperprior)``: the first for a trust given as values or a posterior
    (constants), the second for ``"joint"`` (sampled in the model), the third the hyperprior of
    ``"joint"`` or of given values (their ``pooling``; ``None`` where none was given), ``None``
    for a posterior, which keeps its own (a different ``hyperprior`` is refused).

    A ``concentration`` given (not ``None``) is refused where the trust's own takes its place
    (values, a posterior, ``"joint"`` under a given hyperprior): it would be recorded in the
    model's settings without acting."""
    joint = isinstance(trust, str) and trust == "joint"
    if concentration is not None and sets_own_concentration(trust, hyperprior):
        where = "trust_hyperprior.concentration" if joint else "the trust's concentrations"
        raise ValueError(
            f"concentration={concentration} is not used with this trust ({where} set lambda): "
            "leave concentration out"
        )
    if isinstance(trust, TrustPosterior):
        if hyperprior is not None and hyperprior != trust.hyperprior:
            raise ValueError(
                "trust_hyperprior is for trust='joint' or TrustValues; this TrustPosterior was "
                f"fitted under its own hyperprior ({trust.hyperprior}), which it keeps: leave "
                "trust_hyperprior out, or fit the trust under the hyperprior wanted "
                "(fit_teacher_trust(..., hyperprior=...))"
            )
        return trust.teacher_prior(teachers, temperature), None, None
    if isinstance(trust, TrustValues):
        trust = check_values(trust, teachers.num_teachers, teachers.num_classes)
        if weight_rule not in TRUST_WEIGHT_RULES:
            raise ValueError(
                f"with trust=TrustValues, weight_rule must be one of {TRUST_WEIGHT_RULES}, "
                f"got {weight_rule!r}"
            )
        check_values_use(trust, weight_rule, hyperprior)
        prior = trusted_teacher_prior(
            teachers.log_probs,
            consensus_weights(teachers.log_probs),
            trust,
            temperature=temperature,
            weight_rule=weight_rule,
            pooling="mixture" if hyperprior is None else hyperprior.pooling,
        )
        return prior, None, hyperprior
    if isinstance(trust, str) and trust == "joint":
        if hyperprior is None:
            given = DEFAULT_CONCENTRATION if concentration is None else concentration
            if not given > 0:  # (was raised to 1e-3 without a word, and recorded as given)
                raise ValueError(
                    f"with trust='joint', concentration is the median of each lambda's "
                    f"LogNormal hyperprior and must be > 0, got {given}"
                )
            hyperprior = TrustHyperprior(concentration=given)
        if not isinstance(hyperprior, TrustHyperprior):
            raise TypeError(
                f"trust_hyperprior must be a TrustHyperprior, got {type(hyperprior).__name__}"
            )
        return None, TrustedTeachers.build(teachers.log_probs), hyperprior
    raise ValueError(
        "trust must be None, a TrustPosterior (fit_teacher_trust), TrustValues or 'joint', "
        f"got {trust!r}"
    )


def trust_description(trust: object, hyperprior: TrustHyperprior | None) -> dict[str, Any]:
    """Plain values identifying a model's trust (its ``settings()["trust"]``)."""
    if isinstance(trust, TrustPosterior):
        return trust.description
    if isinstance(trust, TrustValues):
        values = {
            k: np.asarray(v).round(6).tolist() for k, v in trust._asdict().items() if v is not None
        }
        pooling = "mixture" if hyperprior is None else hyperprior.pooling
        return {"kind": "given", **values, "pooling": pooling}
    assert hyperprior is not None  # joint
    return {"kind": "joint", "hyperprior": hyperprior.description}
