"""The weights by which a cut or given trust combines the teachers, whatever its pooling."""

from __future__ import annotations

import jax

from mtbkd_jax.priors import TeacherPrior
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.trust.fit import TrustPosterior, resolve_trust
from mtbkd_jax.trust.sites import TrustValues

__all__ = ["teacher_log_weights"]


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
        concentration=0.0,
        hyperprior=None,
    )
    assert mixture is not None
    return mixture.log_weights
