"""The label models: how labels inform teacher trust.

**How labels inform trust.** The Dirichlet mixture is a prior on an example's class-probability
vector ``pi_i``; a label is a draw from it: ``y_i ~ Cat(pi_i)``. Integrating ``pi_i`` out gives

    P(y_i = c | trust) = sum_m w_im (1 + lambda_im p_imc) / (C + lambda_im)

(:func:`label_log_likelihood`): each teacher's calibrated soft label smoothed toward uniform by
its concentration, mixed by the weights. With one label per example only this mean is
identified: ``lambda`` is learned as how far a teacher's soft label should be trusted over the
uniform distribution, ``tau`` as its calibration, the weights as which teacher to follow.
:func:`mtbkd_jax.trust.fit_teacher_trust` samples this *label model* (see there for why the cut,
modular posterior is the default, and :class:`~mtbkd_jax.MTBKDModel` for the joint one).
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpy.typing import ArrayLike

from mtbkd_jax._checks import as_labels
from mtbkd_jax.priors import TeacherPrior
from mtbkd_jax.trust.consensus import consensus_weights
from mtbkd_jax.trust.sites import (
    TrustHyperprior,
    TrustValues,
    sample_trust,
    trusted_teacher_prior,
)

__all__ = [
    "label_log_probs",
    "label_log_likelihood",
    "teacher_label_log_likelihood",
    "teacher_trust_model",
    "mixing_weight_model",
]


def _log_means(prior: TeacherPrior) -> jax.Array:
    """``log E[pi_c] = log (1 + s_mc) / (C + sum_c s_mc)`` per teacher, (N, M, C)."""
    scaled = prior.scaled_probs
    return jnp.log1p(scaled) - jnp.log(scaled.shape[-1] + scaled.sum(-1, keepdims=True))


def label_log_probs(prior: TeacherPrior) -> jax.Array:
    """``log P(y_i = c | trust) = log sum_m w_im (1 + s_imc) / (C + sum_c' s_imc')``, (N, C).

    The probability of each class when the example's class-probability vector is drawn from
    the teacher mixture (``s = lambda p``, the prior's ``scaled_probs``), in log space.
    """
    return logsumexp(prior.log_weights[..., None] + _log_means(prior), axis=1)


def _checked(labels: jax.Array, prior: TeacherPrior) -> jax.Array:
    """Concrete labels checked against the prior's N and C (inside a traced model they are
    the caller's to check): ``-1`` would index the last class and a label >= C give NaN."""
    if isinstance(labels, jax.core.Tracer):
        return labels
    num_examples, _, num_classes = prior.scaled_probs.shape
    return jnp.asarray(as_labels(labels, "labels", num_examples, num_classes))


def _model_labels(
    labels: ArrayLike | None, num_examples: int, num_classes: int
) -> jax.Array | None:
    """A label model's concrete labels checked (a label >= C gave a -inf log probability, a
    wrong length a broadcasting error); ``None`` (simulate) and traced labels as they are."""
    if labels is None or isinstance(labels, jax.core.Tracer):
        return labels
    return jnp.asarray(as_labels(labels, "labels", num_examples, num_classes))


def label_log_likelihood(prior: TeacherPrior, labels: jax.Array) -> jax.Array:
    """``log P(y_i | trust)`` of the labels (N,) under the mixture (:func:`label_log_probs`)."""
    labels = _checked(labels, prior)
    log_class = label_log_probs(prior)
    return jnp.take_along_axis(log_class, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def teacher_label_log_likelihood(prior: TeacherPrior, labels: jax.Array) -> jax.Array:
    """``log (1 + s_imy) / (C + lambda_im)`` of each label under each teacher alone, (N, M):
    the label's probability when its class-probability vector is drawn from teacher ``m``'s
    Dirichlet."""
    labels = _checked(labels, prior)
    index = jnp.broadcast_to(
        labels[:, None, None].astype(jnp.int32), prior.scaled_probs.shape[:2] + (1,)
    )
    return jnp.take_along_axis(_log_means(prior), index, axis=2)[..., 0]


def teacher_trust_model(
    log_probs: jax.Array,
    labels: jax.Array | None = None,
    *,
    consensus: jax.Array | None = None,
    hyperprior: TrustHyperprior | None = None,
    temperature: float = 1.0,
) -> None:
    """The label model of each teacher's calibration and concentration (stage 1 of the cut).

    ``tau, lambda ~ hyperprior`` and, for every teacher ``m`` *on its own*,
    ``y_i ~ Cat((1 + lambda_im p_im(tau_m)) / (C + lambda_im))``: each teacher's trust is
    learned from how well that teacher alone predicts the labels (as an annotator's reliability
    in Dawid & Skene's model), so an unreliable teacher cannot hide behind a reliable one, and
    each teacher's numbers use each label once. The mixing weights are stage 2
    (:func:`mixing_weight_model`).

    Args:
        log_probs: the teachers' log-probabilities on the labelled inputs, (M, N, C).
        labels: the labels (N,), or ``None`` to simulate them (one set per teacher, as the model
            says; prior predictive and simulation-based calibration).
        consensus: the consensus, weights (N, C) or classes (N,) (default: the weights from
            ``log_probs``, :func:`consensus_weights`).
        hyperprior: the trust hyperpriors (default :class:`TrustHyperprior`).
        temperature: the prior's ``T``.
    """
    hyperprior = TrustHyperprior() if hyperprior is None else hyperprior
    num_teachers, num_examples, num_classes = log_probs.shape
    labels = _model_labels(labels, num_examples, num_classes)
    consensus = consensus_weights(log_probs) if consensus is None else consensus
    calibration = replace(hyperprior, weight_rule="uniform")
    values = sample_trust(calibration, num_teachers, num_classes)
    prior = trusted_teacher_prior(
        log_probs, consensus, values, temperature=temperature, weight_rule="uniform"
    )
    observed = None if labels is None else jnp.broadcast_to(labels, (num_teachers, num_examples))
    with numpyro.plate("teachers", num_teachers, dim=-2), numpyro.plate("labelled", num_examples):
        log_means = jnp.moveaxis(_log_means(prior), 0, 1)  # (M, N, C)
        numpyro.sample("y", dist.Categorical(logits=log_means), obs=observed)


def mixing_weight_model(
    log_probs: jax.Array,
    labels: jax.Array | None,
    values: TrustValues,
    *,
    consensus: jax.Array | None = None,
    hyperprior: TrustHyperprior | None = None,
    temperature: float = 1.0,
) -> None:
    """The label model of the learned weight link (stage 2 of the cut), given the teachers'
    calibration and concentrations ``values`` from stage 1: ``b, alpha ~ hyperprior``,
    ``y_i ~ Cat(sum_m w_im (1 + lambda_im p_im) / (C + lambda_im))`` (:func:`label_log_probs`);
    with the hyperprior's ``pooling="product"`` the labels' model is the pooled Dirichlet's mean,
    ``y_i ~ Cat((1 + sum_m w_im lambda_im p_im) / (C + sum_m w_im lambda_im))``.
    """
    hyperprior = TrustHyperprior() if hyperprior is None else hyperprior
    num_teachers, num_examples, num_classes = log_probs.shape
    labels = _model_labels(labels, num_examples, num_classes)
    consensus = consensus_weights(log_probs) if consensus is None else consensus
    link = sample_trust(
        hyperprior, num_teachers, num_classes, sites=("weight_bias", "weight_slope")
    )
    values = values._replace(weight_bias=link.weight_bias, weight_slope=link.weight_slope)
    prior = trusted_teacher_prior(
        log_probs,
        consensus,
        values,
        temperature=temperature,
        weight_rule="learned",
        pooling=hyperprior.pooling,
    )
    with numpyro.plate("labelled", num_examples):
        numpyro.sample("y", dist.Categorical(logits=label_log_probs(prior)), obs=labels)
