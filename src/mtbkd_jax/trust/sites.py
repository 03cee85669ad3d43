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
  With ``calibration="confidence"`` the temperature also depends on the input, through the
  teacher's own confidence there: ``log tau_im = log tau_m + kappa_m (u_im - 1/2)`` with
  ``u_im = H(p_im) / log C`` the normalised entropy of its raw prediction (entropy-based
  adaptive temperature scaling, as Balanya et al. 2024). ``kappa_m > 0`` flattens the teacher
  further where it is already unsure and leaves it sharp where it is sure: a teacher that is
  reliable in one region of the inputs and guesses elsewhere (an expert of its sector, not of
  a class) is described by where it is confident, which a per-class ``lambda`` cannot say.
* ``lambda_{m,k} >= 0``, teacher ``m``'s **concentration** on the examples whose *consensus
  class* is ``k`` (the argmax of the teachers' mean probabilities: label-free, so it exists on
  unlabelled transfer inputs too; an example whose classes tie for it takes the mean of their
  ``lambda``, :func:`consensus_weights`); with ``per_class=False`` one ``lambda_m`` per teacher. A
  teacher that is unreliable where the consensus says ``k`` gets a flat Dirichlet there
  instead of pulling the student toward its mistake.
* mixing weights ``log w_im = log_softmax_m(b_m - alpha * H_im / log C)`` with ``H_im`` the
  entropy of the calibrated prediction (``"learned"``): ``alpha = 0, b = 0`` is the uniform rule
  and ``b = 0`` the ``softmax`` rule; a fixed rule (``"paper"``, ``"uniform"``, ...) stays
  available, computed on the calibrated teachers.

How the teachers' Dirichlets combine (``pooling``):

* ``"mixture"`` (the paper's): ``sum_m w_im Dir(pi; 1 + lambda_im p_im)``. At the posterior mode
  each example's responsibility goes to the teacher whose Dirichlet is closest to the student,
  and the sharper the Dirichlets the more so: the student may follow, example by example, the
  teacher easiest for it to imitate rather than the most reliable one.
* ``"product"`` (logarithmic opinion pooling): ``prod_m Dir(pi; 1 + lambda_im p_im)^{w_im}``,
  which is one Dirichlet, ``Dir(pi; 1 + sum_m w_im lambda_im p_im)``: the student is held to
  the trust-weighted average of the teachers' soft labels, each weighted by its concentration
  and weight, so a reliable teacher pulls more everywhere; a teacher of small ``w lambda``
  adds only ``w lambda`` pseudo-counts, spread over its soft label.
  With one teacher (or identical teachers with equal trust) both poolings are the same prior.

The fixed model is the special case ``tau = 1``, ``kappa = 0`` and ``lambda = lambda_0`` with a
fixed weight rule and ``pooling="mixture"`` (:meth:`TrustValues.fixed`).

How labels inform trust: :mod:`mtbkd_jax.trust.labels`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from mtbkd_jax._checks import is_traced, require_indices, require_positive
from mtbkd_jax._tempering import tempered_log_softmax
from mtbkd_jax.priors import TeacherPrior, log_dirichlet_normalizer
from mtbkd_jax.teachers import _log_entropies
from mtbkd_jax.trust.consensus import consensus_weights, per_example_concentration
from mtbkd_jax.weighting import (
    inverse_entropy_log_weights,
    paper_log_weights,
    softmax_log_weights,
)

__all__ = [
    "TRUST_WEIGHT_RULES",
    "TRUST_CALIBRATIONS",
    "TRUST_POOLINGS",
    "TrustHyperprior",
    "TrustValues",
    "TrustedTeachers",
    "calibrated_log_probs",
    "sample_trust",
    "trusted_teacher_prior",
]

TRUST_WEIGHT_RULES = ("learned", "paper", "uniform", "inverse_entropy", "softmax")
TRUST_CALIBRATIONS = ("teacher", "confidence", "none")
TRUST_POOLINGS = ("mixture", "product")


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
        calibration: ``"teacher"`` (one temperature per teacher), ``"confidence"`` (each
            teacher's temperature also moves with its own normalised entropy on the input,
            ``log tau_im = log tau_m + kappa_m (u_im - 1/2)``; the slopes ``kappa_m`` are
            sampled) or ``"none"`` (no temperature site: ``tau = 1``, the teachers' soft labels
            as they come, while ``lambda`` and the weights are still learned). A teacher's
            temperature calibrates it over *all* labelled inputs; for teachers that are sharp
            and right in one region and wrong elsewhere (experts of a sector) that blurs each one
            where it is right, and ``"none"`` is the better prior. Which one a problem needs is
            a question for its validation split (the experiments search over it).
        temperature_slope_scale: the standard deviation of each ``kappa_m``'s Normal prior (2:
            between a sure and an unsure prediction, ``tau`` may change by a factor of
            ``e^4`` at two prior standard deviations).
        pooling: how the teachers' Dirichlets combine in the prior and in the weights' label
            model: ``"mixture"`` (the paper's) or ``"product"`` (one Dirichlet centred on the
            trust-weighted average of the soft labels; see the module's docstring).
    """

    concentration: float = 10.0
    concentration_spread: float = 1.0
    temperature_spread: float = 0.7
    per_class: bool = True
    weight_rule: str = "learned"
    weight_slope_scale: float = 3.0
    weight_bias_scale: float = 1.0
    calibration: str = "teacher"
    temperature_slope_scale: float = 2.0
    pooling: str = "mixture"

    def __post_init__(self) -> None:
        for name in (
            "concentration",
            "concentration_spread",
            "temperature_spread",
            "weight_slope_scale",
            "weight_bias_scale",
            "temperature_slope_scale",
        ):
            if isinstance(getattr(self, name), bool):  # True is 1 to require_positive
                raise TypeError(f"{name} must be a number, got {getattr(self, name)!r}")
            require_positive(getattr(self, name), name)
        if not isinstance(self.per_class, bool | np.bool_):  # "False" from a config is truthy
            raise TypeError(f"per_class must be True or False, got {self.per_class!r}")
        if self.weight_rule not in TRUST_WEIGHT_RULES:
            raise ValueError(
                f"weight_rule must be one of {TRUST_WEIGHT_RULES}, got {self.weight_rule!r}"
            )
        if self.calibration not in TRUST_CALIBRATIONS:
            raise ValueError(
                f"calibration must be one of {TRUST_CALIBRATIONS}, got {self.calibration!r}"
            )
        if self.pooling not in TRUST_POOLINGS:
            raise ValueError(f"pooling must be one of {TRUST_POOLINGS}, got {self.pooling!r}")

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
        temperature_slope: ``kappa``, shape (M,), the slope of ``log tau`` in the teacher's
            normalised entropy; ``None`` means zero (one temperature per teacher).
    """

    temperature: jax.Array
    concentration: jax.Array
    weight_bias: jax.Array
    weight_slope: jax.Array
    temperature_slope: jax.Array | None = None

    @classmethod
    def fixed(cls, num_teachers: int, concentration: float) -> TrustValues:
        """The fixed model's trust: ``tau = 1``, one ``lambda`` for all, no weight link."""
        return cls(
            jnp.ones(num_teachers),
            jnp.full((num_teachers, 1), float(concentration)),
            jnp.zeros(num_teachers),
            jnp.zeros(()),
            jnp.zeros(num_teachers),
        )


def calibrated_log_probs(
    log_probs: jax.Array, temperature: jax.Array, slope: jax.Array | None = None
) -> jax.Array:
    """``log_softmax(log p_m / tau_im)`` for (M, N, C) log-probabilities and ``tau`` (M,).

    ``tau_im = tau_m`` without ``slope``; with ``slope`` (``kappa``, (M,)),
    ``log tau_im = log tau_m + kappa_m (H(p_im) / log C - 1/2)`` (the raw prediction's
    normalised entropy). A class of probability zero (``log p = -inf``) keeps probability zero
    at every ``tau``, with a zero gradient (dividing ``-inf`` by ``tau`` would make the gradient
    in ``tau`` NaN)."""
    zero = jnp.isneginf(log_probs)
    tau = temperature[:, None, None]
    if slope is not None:
        num_classes = log_probs.shape[-1]
        normalised = jnp.clip(_entropy(log_probs) / jnp.log(float(num_classes)), 0.0, 1.0)
        tau = tau * jnp.exp(slope[:, None, None] * (normalised[..., None] - 0.5))
    # shifted by the row's largest entry before dividing, so it stays exact at a tiny tau
    # (see mtbkd_jax._tempering); the shift is constant over classes and changes nothing else
    top = jax.lax.stop_gradient(jnp.max(log_probs, axis=-1, keepdims=True))
    scaled = (jnp.where(zero, 0.0, log_probs) - jnp.where(jnp.isfinite(top), top, 0.0)) / tau
    return jax.nn.log_softmax(jnp.where(zero, -jnp.inf, scaled), axis=-1)


def sample_trust(
    hyperprior: TrustHyperprior,
    num_teachers: int,
    num_classes: int,
    prefix: str = "trust",
    sites: tuple[str, ...] = (
        "temperature",
        "concentration",
        "weight_bias",
        "weight_slope",
        "temperature_slope",
    ),
) -> TrustValues:
    """Sample the trust sites ``<prefix>.temperature`` (M; not for ``calibration="none"``),
    ``<prefix>.concentration`` (M, K),
    for ``calibration="confidence"`` ``<prefix>.temperature_slope`` (M,) and, for the learned
    weight link with more than one teacher, ``<prefix>.weight_bias`` (M,) and
    ``<prefix>.weight_slope`` () in the enclosing NumPyro model (outside any data plate);
    ``sites`` limits which are sampled (the others take the fixed model's values)."""
    h = hyperprior
    num_groups = num_classes if h.per_class else 1
    fixed = TrustValues.fixed(num_teachers, h.concentration)
    temperature, concentration = fixed.temperature, fixed.concentration
    bias, slope = fixed.weight_bias, fixed.weight_slope
    temperature_slope = None
    if h.calibration == "confidence" and "temperature_slope" in sites:
        temperature_slope = numpyro.sample(
            f"{prefix}.temperature_slope",
            dist.Normal(0.0, h.temperature_slope_scale).expand([num_teachers]).to_event(1),
        )
    if h.calibration != "none" and "temperature" in sites:
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
    link = h.weight_rule == "learned" and num_teachers > 1  # one teacher's weight is 1
    if link and "weight_bias" in sites:
        bias = numpyro.sample(
            f"{prefix}.weight_bias",
            dist.Normal(0.0, h.weight_bias_scale).expand([num_teachers]).to_event(1),
        )
    if link and "weight_slope" in sites:
        slope = numpyro.sample(f"{prefix}.weight_slope", dist.Normal(0.0, h.weight_slope_scale))
    return TrustValues(temperature, concentration, bias, slope, temperature_slope)


def _entropy(log_probs: jax.Array) -> jax.Array:
    """Entropy in nats over the last axis (``0 log 0 = 0``, with a finite gradient there)."""
    zero = jnp.isneginf(log_probs)
    safe = jnp.where(zero, 0.0, log_probs)
    return -jnp.sum(jnp.where(zero, 0.0, jnp.exp(safe) * safe), -1)


def _log_weights(calibrated: jax.Array, values: TrustValues, rule: str) -> jax.Array:
    """``log w`` (M, N) from calibrated log-probabilities (M, N, C)."""
    num_teachers, num_examples, num_classes = calibrated.shape
    if rule == "uniform":
        return jnp.full((num_teachers, num_examples), -jnp.log(float(num_teachers)))
    if rule in ("paper", "inverse_entropy"):
        # log H in log space, as TeacherBank.log_entropies: H underflows float32 at logit gaps
        # of ~85 nats, where these rules need log H
        log_bits = _log_entropies(calibrated, 2.0)
        return (paper_log_weights if rule == "paper" else inverse_entropy_log_weights)(log_bits)
    entropy = jnp.maximum(_entropy(calibrated), 0.0)
    if rule == "learned":
        normalised = entropy / jnp.log(float(num_classes))
        return jax.nn.log_softmax(
            values.weight_bias[:, None] - values.weight_slope * normalised, axis=0
        )
    return softmax_log_weights(entropy / jnp.log(2.0))


def trusted_teacher_prior(
    log_probs: jax.Array,
    consensus: jax.Array,
    values: TrustValues,
    *,
    temperature: float | jax.Array = 1.0,
    weight_rule: str = "learned",
    pooling: str = "mixture",
) -> TeacherPrior:
    """The teacher prior's constants under ``values``, for the examples of ``log_probs``.

    Args:
        log_probs: the teachers' log-probabilities at temperature 1, shape (M, N, C).
        consensus: each example's consensus, weights (N, C) (:func:`consensus_weights`,
            ties shared) or classes (N,) (:func:`consensus_class`).
        values: the trust (one draw or a point estimate).
        temperature: the prior's ``T``: soft labels are ``softmax(log p_m / (tau_m T))``.
        weight_rule: ``"learned"`` or a fixed rule (computed on the calibrated teachers at
            temperature 1, in bits for the entropy rules, as :func:`~mtbkd_jax.teacher_weights`).
        pooling: ``"mixture"`` (M components) or ``"product"`` (one component,
            ``1 + sum_m w_im lambda_im p_im``; see the module's docstring).

    Returns:
        A :class:`~mtbkd_jax.TeacherPrior` (N, M, C), or (N, 1, C) for ``"product"``, usable by
        :func:`~mtbkd_jax.teacher_prior_factor` and :func:`label_log_likelihood`.
    """
    if pooling not in TRUST_POOLINGS:
        raise ValueError(f"pooling must be one of {TRUST_POOLINGS}, got {pooling!r}")
    if weight_rule not in TRUST_WEIGHT_RULES:  # (any other name gave the softmax rule)
        raise ValueError(f"weight_rule must be one of {TRUST_WEIGHT_RULES}, got {weight_rule!r}")
    if not any(is_traced(field) for field in values if field is not None):
        from mtbkd_jax.trust.checks import check_values  # (it imports this module)

        check_values(values, *np.shape(log_probs)[::2])  # a negative tau inverts a teacher
    calibrated = calibrated_log_probs(log_probs, values.temperature, values.temperature_slope)
    tempered = tempered_log_softmax(calibrated, temperature)
    per_example = per_example_concentration(values.concentration, consensus)  # (M, N)
    scaled = jnp.moveaxis(per_example[..., None] * jnp.exp(tempered), 0, 1)  # (N, M, C)
    log_weights = _log_weights(calibrated, values, weight_rule).T  # (N, M)
    if pooling == "product":  # prod_m Dir(1 + s_m)^w_m = Dir(1 + sum_m w_m s_m)
        scaled = jnp.sum(jnp.exp(log_weights)[..., None] * scaled, axis=1, keepdims=True)
        log_weights = jnp.zeros(log_weights.shape[:1] + (1,), log_weights.dtype)
    return TeacherPrior(
        scaled,
        log_dirichlet_normalizer(1.0 + scaled),
        log_weights,
        jnp.asarray(temperature, jnp.float32),
    )


class TrustedTeachers(NamedTuple):
    """The teachers as data for a model whose trust is sampled (the joint posterior):
    log-probabilities with the example axis first, (N, M, C), and the consensus weights
    (N, C) (:func:`consensus_weights`)."""

    log_probs: jax.Array
    consensus: jax.Array

    @classmethod
    def build(cls, log_probs: jax.Array) -> TrustedTeachers:
        """From a :class:`~mtbkd_jax.TeacherBank`'s (M, N, C) ``log_probs``."""
        return cls(jnp.moveaxis(log_probs, 0, 1), consensus_weights(log_probs))

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return int(self.log_probs.shape[0])

    def take(self, indices: jax.Array) -> TrustedTeachers:
        """The teachers on the examples ``indices``: concrete ones must be integers in
        0..N-1 (a -1 took the last example, a 99 gave NaN); traced ones are not checked."""
        size = self.num_examples
        require_indices(indices, size, f"the teachers describe {size} examples")
        return TrustedTeachers(
            jnp.take(self.log_probs, indices, axis=0),
            jnp.take(self.consensus, indices, axis=0),
        )

    def prior(
        self,
        values: TrustValues,
        temperature: float | jax.Array,
        weight_rule: str,
        pooling: str = "mixture",
    ) -> TeacherPrior:
        """The prior's constants under ``values`` (:func:`trusted_teacher_prior`)."""
        return trusted_teacher_prior(
            jnp.moveaxis(self.log_probs, 0, 1),
            self.consensus,
            values,
            temperature=temperature,
            weight_rule=weight_rule,
            pooling=pooling,
        )
