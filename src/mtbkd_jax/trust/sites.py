"""Learned teacher trust: each teacher's calibration, concentration and mixing weight as
NumPyro sample sites.

The paper's prior fixes how much each teacher is trusted: one concentration ``lambda`` for all
teachers, the teachers' soft labels as they come, and mixing weights from a fixed entropy rule.
Those weights barely act (at the posterior mode each example's responsibility follows the
teacher closest to the student, and the Dirichlet terms differ by tens of nats while the
log-weights differ by less than one), and an entropy rule trusts the *most confident* teacher,
which is not the most reliable one. Trust that matters acts on what shapes the Dirichlets:

* ``tau_m > 0``, teacher ``m``'s **calibration temperature**: its log-probabilities become
  ``log_softmax(log p_m / tau_m)`` before anything uses them (soft labels and entropies alike);
  ``tau > 1`` softens an over-confident teacher, ``tau < 1`` sharpens an under-confident one.
* ``lambda_{m,k} >= 0``, teacher ``m``'s **concentration** on the examples whose *consensus
  class* is ``k`` (the argmax of the teachers' mean probabilities: label-free, so it exists on
  unlabelled transfer inputs too); with ``per_class=False`` one ``lambda_m`` per teacher. A
  teacher that is unreliable where the consensus says ``k`` gets a flat Dirichlet there
  instead of pulling the student toward its mistake.
* mixing weights ``log w_im = log_softmax_m(b_m - alpha * H_im / log C)`` with ``H_im`` the
  entropy of the calibrated prediction (``"learned"``): ``alpha = 0, b = 0`` is the uniform rule
  and ``b = 0`` the ``softmax`` rule; a fixed rule (``"paper"``, ``"uniform"``, ...) stays
  available, computed on the calibrated teachers.

The fixed model is the special case ``tau = 1`` and ``lambda = lambda_0`` with a fixed weight
rule (:meth:`TrustValues.fixed`).

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

from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from mtbkd_jax._checks import require_positive
from mtbkd_jax.priors import TeacherPrior, log_dirichlet_normalizer
from mtbkd_jax.weighting import (
    inverse_entropy_log_weights,
    paper_log_weights,
    softmax_log_weights,
)

__all__ = [
    "TRUST_WEIGHT_RULES",
    "TrustHyperprior",
    "TrustValues",
    "TrustedTeachers",
    "consensus_class",
    "calibrated_log_probs",
    "sample_trust",
    "trusted_teacher_prior",
    "label_log_probs",
    "label_log_likelihood",
    "teacher_label_log_likelihood",
    "mixing_weight_model",
    "teacher_trust_model",
]

TRUST_WEIGHT_RULES = ("learned", "paper", "uniform", "inverse_entropy", "softmax")


@dataclass(frozen=True)
class TrustHyperprior:
    """Hyperpriors of the trust sites (all weakly informative, centred on the fixed model).

    Attributes:
        concentration: ``lambda_0``, the median of each ``lambda``'s LogNormal prior.
        concentration_spread: the standard deviation of ``log lambda`` (1: a factor of ~7 either
            way covers 95% of the prior).
        temperature_spread: the standard deviation of ``log tau`` (0.7: ``tau`` in
            [0.25, 4] with 95% prior probability).
        per_class: one ``lambda`` per teacher and consensus class (else one per teacher).
        weight_rule: ``"learned"`` (the entropy link ``b_m - alpha H`` is sampled) or a fixed
            rule of :data:`TRUST_WEIGHT_RULES` computed on the calibrated teachers.
        weight_slope_scale: the standard deviation of ``alpha``'s Normal prior.
        weight_bias_scale: the standard deviation of each ``b_m``'s Normal prior.
    """

    concentration: float = 10.0
    concentration_spread: float = 1.0
    temperature_spread: float = 0.7
    per_class: bool = True
    weight_rule: str = "learned"
    weight_slope_scale: float = 3.0
    weight_bias_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "concentration",
            "concentration_spread",
            "temperature_spread",
            "weight_slope_scale",
            "weight_bias_scale",
        ):
            require_positive(getattr(self, name), name)
        if self.weight_rule not in TRUST_WEIGHT_RULES:
            raise ValueError(
                f"weight_rule must be one of {TRUST_WEIGHT_RULES}, got {self.weight_rule!r}"
            )

    @property
    def description(self) -> dict[str, Any]:
        """The settings as plain values (for fingerprints and settings records)."""
        return asdict(self)


class TrustValues(NamedTuple):
    """One value of every trust site.

    Attributes:
        temperature: ``tau``, shape (M,).
        concentration: ``lambda``, shape (M, K) (K = C per class, else 1).
        weight_bias: ``b``, shape (M,) (ignored by a fixed weight rule).
        weight_slope: ``alpha``, shape () (ignored by a fixed weight rule).
    """

    temperature: jax.Array
    concentration: jax.Array
    weight_bias: jax.Array
    weight_slope: jax.Array

    @classmethod
    def fixed(cls, num_teachers: int, concentration: float) -> TrustValues:
        """The fixed model's trust: ``tau = 1``, one ``lambda`` for all, no weight link."""
        return cls(
            jnp.ones(num_teachers),
            jnp.full((num_teachers, 1), float(concentration)),
            jnp.zeros(num_teachers),
            jnp.zeros(()),
        )


def consensus_class(log_probs: jax.Array) -> jax.Array:
    """The argmax of the teachers' mean probabilities, shape (N,), from (M, N, C)."""
    return jnp.argmax(logsumexp(log_probs, axis=0), axis=-1).astype(jnp.int32)


def calibrated_log_probs(log_probs: jax.Array, temperature: jax.Array) -> jax.Array:
    """``log_softmax(log p_m / tau_m)`` for (M, N, C) log-probabilities and ``tau`` (M,).

    A class of probability zero (``log p = -inf``) keeps probability zero at every ``tau``, with
    a zero gradient (dividing ``-inf`` by ``tau`` would make the gradient in ``tau`` NaN)."""
    zero = jnp.isneginf(log_probs)
    scaled = jnp.where(zero, 0.0, log_probs) / temperature[:, None, None]
    return jax.nn.log_softmax(jnp.where(zero, -jnp.inf, scaled), axis=-1)


def sample_trust(
    hyperprior: TrustHyperprior,
    num_teachers: int,
    num_classes: int,
    prefix: str = "trust",
    sites: tuple[str, ...] = ("temperature", "concentration", "weight_bias", "weight_slope"),
) -> TrustValues:
    """Sample the trust sites ``<prefix>.temperature`` (M,), ``<prefix>.concentration`` (M, K)
    and, for the learned weight link, ``<prefix>.weight_bias`` (M,) and
    ``<prefix>.weight_slope`` () in the enclosing NumPyro model (outside any data plate);
    ``sites`` limits which are sampled (the others take the fixed model's values)."""
    h = hyperprior
    num_groups = num_classes if h.per_class else 1
    fixed = TrustValues.fixed(num_teachers, h.concentration)
    temperature, concentration = fixed.temperature, fixed.concentration
    bias, slope = fixed.weight_bias, fixed.weight_slope
    if "temperature" in sites:
        temperature = numpyro.sample(
            f"{prefix}.temperature",
            dist.LogNormal(0.0, h.temperature_spread).expand([num_teachers]).to_event(1),
        )
    if "concentration" in sites:
        concentration = numpyro.sample(
            f"{prefix}.concentration",
            dist.LogNormal(jnp.log(h.concentration), h.concentration_spread)
            .expand([num_teachers, num_groups])
            .to_event(2),
        )
    if h.weight_rule == "learned" and "weight_bias" in sites:
        bias = numpyro.sample(
            f"{prefix}.weight_bias",
            dist.Normal(0.0, h.weight_bias_scale).expand([num_teachers]).to_event(1),
        )
    if h.weight_rule == "learned" and "weight_slope" in sites:
        slope = numpyro.sample(f"{prefix}.weight_slope", dist.Normal(0.0, h.weight_slope_scale))
    return TrustValues(temperature, concentration, bias, slope)


def _entropy(log_probs: jax.Array) -> jax.Array:
    """Entropy in nats over the last axis (``0 log 0 = 0``, with a finite gradient there)."""
    zero = jnp.isneginf(log_probs)
    safe = jnp.where(zero, 0.0, log_probs)
    return -jnp.sum(jnp.where(zero, 0.0, jnp.exp(safe) * safe), -1)


def _log_weights(calibrated: jax.Array, values: TrustValues, rule: str) -> jax.Array:
    """``log w`` (M, N) from calibrated log-probabilities (M, N, C)."""
    num_classes = calibrated.shape[-1]
    entropy = jnp.maximum(_entropy(calibrated), 0.0)
    if rule == "learned":
        normalised = entropy / jnp.log(float(num_classes))
        return jax.nn.log_softmax(
            values.weight_bias[:, None] - values.weight_slope * normalised, axis=0
        )
    if rule == "uniform":
        return jnp.full(entropy.shape, -jnp.log(float(entropy.shape[0])))
    if rule == "softmax":
        return softmax_log_weights(entropy / jnp.log(2.0))
    positive = entropy > 0
    log_bits = jnp.where(positive, jnp.log(jnp.where(positive, entropy, 1.0)), -jnp.inf)
    log_bits = log_bits - jnp.log(jnp.log(2.0))
    if rule == "paper":
        return paper_log_weights(log_bits)
    return inverse_entropy_log_weights(log_bits)


def trusted_teacher_prior(
    log_probs: jax.Array,
    consensus: jax.Array,
    values: TrustValues,
    *,
    temperature: float | jax.Array = 1.0,
    weight_rule: str = "learned",
) -> TeacherPrior:
    """The teacher prior's constants under ``values``, for the examples of ``log_probs``.

    Args:
        log_probs: the teachers' log-probabilities at temperature 1, shape (M, N, C).
        consensus: each example's consensus class (:func:`consensus_class`), shape (N,).
        values: the trust (one draw or a point estimate).
        temperature: the prior's ``T``: soft labels are ``softmax(log p_m / (tau_m T))``.
        weight_rule: ``"learned"`` or a fixed rule (computed on the calibrated teachers at
            temperature 1, in bits for the entropy rules, as :func:`~mtbkd_jax.teacher_weights`).

    Returns:
        A :class:`~mtbkd_jax.TeacherPrior` (N, M, C), usable by
        :func:`~mtbkd_jax.teacher_prior_factor` and :func:`label_log_likelihood`.
    """
    calibrated = calibrated_log_probs(log_probs, values.temperature)
    tempered = jax.nn.log_softmax(calibrated / temperature, axis=-1)
    concentration = values.concentration
    if concentration.shape[-1] == 1:
        per_example = jnp.broadcast_to(concentration, concentration.shape[:1] + consensus.shape)
    else:
        per_example = jnp.take(concentration, consensus, axis=1)  # (M, N)
    scaled = jnp.moveaxis(per_example[..., None] * jnp.exp(tempered), 0, 1)  # (N, M, C)
    log_weights = _log_weights(calibrated, values, weight_rule).T  # (N, M)
    return TeacherPrior(
        scaled,
        log_dirichlet_normalizer(1.0 + scaled),
        log_weights,
        jnp.asarray(temperature, jnp.float32),
    )


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


def label_log_likelihood(prior: TeacherPrior, labels: jax.Array) -> jax.Array:
    """``log P(y_i | trust)`` of the labels (N,) under the mixture (:func:`label_log_probs`)."""
    log_class = label_log_probs(prior)
    return jnp.take_along_axis(log_class, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def teacher_label_log_likelihood(prior: TeacherPrior, labels: jax.Array) -> jax.Array:
    """``log (1 + s_imy) / (C + lambda_im)`` of each label under each teacher alone, (N, M):
    the label's probability when its class-probability vector is drawn from teacher ``m``'s
    Dirichlet."""
    index = jnp.broadcast_to(
        labels[:, None, None].astype(jnp.int32), prior.scaled_probs.shape[:2] + (1,)
    )
    return jnp.take_along_axis(_log_means(prior), index, axis=2)[..., 0]


class TrustedTeachers(NamedTuple):
    """The teachers as data for a model whose trust is sampled (the joint posterior):
    log-probabilities with the example axis first, (N, M, C), and consensus classes (N,)."""

    log_probs: jax.Array
    consensus: jax.Array

    @classmethod
    def build(cls, log_probs: jax.Array) -> TrustedTeachers:
        """From a :class:`~mtbkd_jax.TeacherBank`'s (M, N, C) ``log_probs``."""
        return cls(jnp.moveaxis(log_probs, 0, 1), consensus_class(log_probs))

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return int(self.log_probs.shape[0])

    def take(self, indices: jax.Array) -> TrustedTeachers:
        """The teachers on the examples ``indices``."""
        return TrustedTeachers(
            jnp.take(self.log_probs, indices, axis=0), jnp.take(self.consensus, indices)
        )

    def prior(
        self, values: TrustValues, temperature: float | jax.Array, weight_rule: str
    ) -> TeacherPrior:
        """The prior's constants under ``values`` (:func:`trusted_teacher_prior`)."""
        return trusted_teacher_prior(
            jnp.moveaxis(self.log_probs, 0, 1),
            self.consensus,
            values,
            temperature=temperature,
            weight_rule=weight_rule,
        )


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
        consensus: the consensus classes (default: from ``log_probs``).
        hyperprior: the trust hyperpriors (default :class:`TrustHyperprior`).
        temperature: the prior's ``T``.
    """
    hyperprior = TrustHyperprior() if hyperprior is None else hyperprior
    num_teachers, num_examples, num_classes = log_probs.shape
    consensus = consensus_class(log_probs) if consensus is None else consensus
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
    ``y_i ~ Cat(sum_m w_im (1 + lambda_im p_im) / (C + lambda_im))`` (:func:`label_log_probs`).
    """
    hyperprior = TrustHyperprior() if hyperprior is None else hyperprior
    num_teachers, num_examples, num_classes = log_probs.shape
    consensus = consensus_class(log_probs) if consensus is None else consensus
    link = sample_trust(
        hyperprior, num_teachers, num_classes, sites=("weight_bias", "weight_slope")
    )
    values = values._replace(weight_bias=link.weight_bias, weight_slope=link.weight_slope)
    prior = trusted_teacher_prior(
        log_probs, consensus, values, temperature=temperature, weight_rule="learned"
    )
    with numpyro.plate("labelled", num_examples):
        numpyro.sample("y", dist.Categorical(logits=label_log_probs(prior)), obs=labels)
