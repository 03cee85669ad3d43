"""The weights by which a cut or given trust combines the teachers, whatever its pooling, and
which of :class:`~mtbkd_jax.MTBKDModel`'s weight options a trust takes."""

from __future__ import annotations

import jax

from mtbkd_jax.priors import TeacherPrior
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.trust.fit import TrustPosterior
from mtbkd_jax.trust.resolve import resolve_trust
from mtbkd_jax.trust.sites import TrustHyperprior, TrustValues

__all__ = ["check_weight_options", "teacher_log_weights", "weight_rule_used"]


def teacher_log_weights(
    prior: TeacherPrior,
    trust: object,
    teachers: TeacherBank,
    temperature: float,
    weight_rule: str,
) -> jax.Array:
    """The log weights (N, M) by which ``prior`` combines ``teachers``: the mixture's own, or,
    for a trust pooled as one product (whose prior keeps a single component), the weights of
    its sum, recomputed from the trust (a :class:`TrustPosterior` or :class:`TrustValues`)."""
    if prior.log_weights.shape[1] == teachers.num_teachers:
        return prior.log_weights
    if isinstance(trust, TrustPosterior):
        return trust.teacher_prior(teachers, temperature, pooling="mixture").log_weights
    if not isinstance(trust, TrustValues):
        raise TypeError(f"a pooled prior needs its trust's values, got {type(trust).__name__}")
    mixture, _, _ = resolve_trust(  # the given values' prior, left as a mixture
        trust,
        teachers,
        temperature=temperature,
        weight_rule=weight_rule,
        concentration=None,  # values have their own
        hyperprior=None,
    )
    assert mixture is not None
    return mixture.log_weights


def check_weight_options(
    trust: object, weight_rule: object, weight_tau: float, weight_temperature: float
) -> None:
    """Refuse weight options :class:`~mtbkd_jax.trust.TrustValues` would ignore (they use the
    rule at tau 1 and temperature 1); other trusts are checked by :func:`weight_rule_used`,
    once :func:`~mtbkd_jax.trust.resolve.resolve_trust` has accepted them."""
    if not isinstance(trust, TrustValues):
        return
    if not isinstance(weight_rule, str):
        raise ValueError(
            "with trust=TrustValues, weight_rule must name a rule (learned, paper, uniform, "
            "inverse_entropy or softmax), got an array of weights"
        )
    for name, value in (("weight_tau", weight_tau), ("weight_temperature", weight_temperature)):
        if value != 1.0:
            raise ValueError(
                f"with trust=TrustValues the weights are taken at {name}=1 (the trust's "
                f"temperatures calibrate the teachers); got {name}={value}"
            )


def weight_rule_used(
    trust: object,
    hyperprior: TrustHyperprior | None,
    weight_rule: str | None,
    weight_tau: float = 1.0,
    weight_temperature: float = 1.0,
) -> str:
    """The weight rule a model with ``trust`` actually uses (its ``settings()`` record it):
    ``weight_rule`` for :class:`TrustValues` (``None``: the paper's), else the trust's
    hyperprior's, refusing weight options that would be ignored (a ``weight_rule`` given, ``None``
    if not, other than the one used)."""
    if isinstance(trust, TrustValues):
        return "paper" if weight_rule is None else weight_rule
    chosen = trust.hyperprior if isinstance(trust, TrustPosterior) else hyperprior
    assert chosen is not None  # resolve_trust gives "joint" its hyperprior
    given = {"weight_tau": weight_tau, "weight_temperature": weight_temperature}
    changed = [name for name, value in given.items() if value != 1.0]
    if weight_rule not in (None, chosen.weight_rule):
        changed.insert(0, "weight_rule")
    if changed:
        kind = "a fitted TrustPosterior" if isinstance(trust, TrustPosterior) else f"{trust!r}"
        raise ValueError(
            f"{', '.join(changed)} would be ignored with trust={kind}: its hyperprior sets the "
            f"weights (rule {chosen.weight_rule!r}); choose them there "
            "(TrustHyperprior(weight_rule=...), passed to fit_teacher_trust or as "
            "trust_hyperprior) and leave these options out"
        )
    return chosen.weight_rule
