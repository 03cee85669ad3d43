"""The teacher-informed mixture prior and the base weight priors.

Per example ``i`` the student's tempered class probabilities ``q_i^T`` get the density

    log sum_m w_i^(m) Dir(q_i^T; 1 + lambda p_i^(m))

computed in log space from the student's logits (``log q = log_softmax(logits / T)``), never by
clipping probabilities. The mode of ``Dir(1 + lambda p)`` is ``p``, so each component is
centred on one teacher's soft label and ``lambda`` is the trust in the teachers.

* :class:`TeacherMixtureDirichlet` is that per-example mixture as a NumPyro distribution on the
  simplex (``log_prob`` and ``sample``; prior-predictive checks work).
* :class:`TeacherPrior` holds the precomputed constants for a set of inputs, and
  :func:`teacher_prior_factor` adds ``beta * log mixture`` for a student's logits to any NumPyro
  model, inside a (sub)sampled plate (the plate scales it by ``N / |B|``).
* :func:`normal_prior` and :func:`flat_prior` are base priors for the student's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln, logsumexp, xlogy
from jax.typing import ArrayLike
from numpyro.distributions import constraints

from mtbkd_jax._checks import (
    require_concentration,
    require_indices,
    require_nonnegative_values,
    require_positive,
    require_unit_sums,
)
from mtbkd_jax._deprecation import renamed_keywords
from mtbkd_jax._tempering import tempered_log_softmax
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.weighting import teacher_log_weights

__all__ = [
    "log_dirichlet_normalizer",
    "dirichlet_mixture_log_density",
    "TeacherMixtureDirichlet",
    "TeacherPrior",
    "teacher_prior_factor",
    "normal_prior",
    "flat_prior",
    "check_prior_names",
]


def log_dirichlet_normalizer(concentration: jax.Array) -> jax.Array:
    """``log B(a) = sum_c lgamma(a_c) - lgamma(sum_c a_c)`` over the last axis."""
    return gammaln(concentration).sum(-1) - gammaln(concentration.sum(-1))


def dirichlet_mixture_log_density(
    log_q: jax.Array, scaled_probs: jax.Array, log_normalizer: jax.Array, log_weights: jax.Array
) -> jax.Array:
    """``log sum_m w_m Dir(q; 1 + lambda p_m)`` given ``log q``.

    Args:
        log_q: log class probabilities, shape (..., C) (``-inf`` as below).
        scaled_probs: ``lambda p_m`` (the concentrations minus one), shape (..., M, C).
        log_normalizer: ``log B(1 + lambda p_m)``, shape (..., M).
        log_weights: ``log w_m``, shape (..., M).

    Returns:
        The log density, shape (...).

    A ``log q`` of ``-inf`` (a softmax underflowed at a tiny temperature) is taken as the most
    negative float, so a soft label of 0 adds 0 there (``0 * -inf`` was NaN). Full float32
    products (a GPU's TF32 moved the density by 0.02 nats at ``lambda = 10``, simulated).
    """
    log_q = jnp.maximum(log_q, jnp.finfo(jnp.result_type(log_q)).min)
    sums = jnp.einsum("...mc,...c->...m", scaled_probs, log_q, precision="highest")
    return logsumexp(log_weights + (sums - log_normalizer), axis=-1)


class TeacherMixtureDirichlet(dist.Distribution):
    """Per-example mixture over teachers of Dirichlets centred on their soft labels.

    ``batch_shape = (N,)``, ``event_shape = (C,)``; the support is the simplex.

    Args:
        teacher_probs: tempered soft labels ``p``, shape (M, N, C).
        weights: mixing weights ``w >= 0``, shape (M, N), each column (one example's weights
            over the M teachers) summing to 1: concrete weights off by more than 1e-3 are
            refused (e.g. :func:`~mtbkd_jax.teacher_weights`, or ``w / w.sum(0)``); the
            weights are then normalised exactly (so are traced ones, which are not checked).
        concentration: ``lambda >= 0``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from mtbkd_jax.priors import TeacherMixtureDirichlet
        >>> p = jax.nn.softmax(jnp.arange(12.0).reshape(2, 2, 3))
        >>> d = TeacherMixtureDirichlet(p, jnp.full((2, 2), 0.5), concentration=10.0)
        >>> d.sample(jax.random.key(0), (4,)).shape
        (4, 2, 3)
    """

    arg_constraints = {"teacher_probs": constraints.simplex, "weights": constraints.nonnegative}
    support = constraints.simplex
    reparametrized_params: list[str] = []

    def __init__(
        self,
        teacher_probs: ArrayLike,
        weights: ArrayLike,
        concentration: float | jax.Array = 1.0,
        *,
        validate_args: bool | None = None,
    ) -> None:
        if jnp.ndim(teacher_probs) != 3:
            raise ValueError(
                f"teacher_probs must have shape (M, N, C), got {jnp.shape(teacher_probs)}"
            )
        if jnp.shape(weights) != jnp.shape(teacher_probs)[:2]:
            raise ValueError(
                f"weights must have shape (M, N) = {jnp.shape(teacher_probs)[:2]}, "
                f"got {jnp.shape(weights)}"
            )
        require_nonnegative_values(concentration, "concentration")
        require_nonnegative_values(weights, "weights")
        require_unit_sums(weights, "weights", "columns (one per example, over the M teachers)")
        self.teacher_probs = jnp.asarray(teacher_probs)
        self.weights = jnp.asarray(weights) / jnp.sum(jnp.asarray(weights), 0)  # exactly 1
        self.concentration = concentration
        scaled = concentration * jnp.moveaxis(self.teacher_probs, 0, 1)  # (N, M, C)
        self._scaled_probs = scaled
        self._log_normalizer = log_dirichlet_normalizer(1.0 + scaled)  # (N, M)
        self._log_weights = jnp.log(self.weights.T)  # (N, M)
        num_examples, num_classes = self.teacher_probs.shape[1:]
        super().__init__(
            batch_shape=(num_examples,), event_shape=(num_classes,), validate_args=validate_args
        )

    def tree_flatten(self) -> tuple[tuple[jax.Array, jax.Array, float | jax.Array], None]:
        return (self.teacher_probs, self.weights, self.concentration), None

    @classmethod
    def tree_unflatten(
        cls, aux_data: None, params: tuple[jax.Array, jax.Array, float | jax.Array]
    ) -> TeacherMixtureDirichlet:
        return cls(*params)

    def log_prob_from_log_q(self, log_q: jax.Array) -> jax.Array:
        """Log density given ``log q`` (finite), shape (..., N, C) -> (..., N)."""
        return dirichlet_mixture_log_density(
            log_q, self._scaled_probs, self._log_normalizer, self._log_weights
        )

    def log_prob_from_logits(self, logits: jax.Array) -> jax.Array:
        """Log density of ``q = softmax(logits)``, stable for logits of any size."""
        return self.log_prob_from_log_q(jax.nn.log_softmax(logits, axis=-1))

    def log_prob(self, value: jax.Array) -> jax.Array:
        # xlogy keeps 0 * log 0 = 0 where a concentration equals one exactly.
        log_components = (
            xlogy(self._scaled_probs, value[..., None, :]).sum(-1) - self._log_normalizer
        )
        return logsumexp(self._log_weights + log_components, axis=-1)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        mixture = dist.MixtureSameFamily(
            dist.Categorical(probs=self.weights.T),
            dist.Dirichlet(1.0 + self._scaled_probs),
        )
        return mixture.sample(key, sample_shape)

    @property
    def mean(self) -> jax.Array:
        component_means = (1.0 + self._scaled_probs) / (1.0 + self._scaled_probs).sum(
            -1, keepdims=True
        )
        return jnp.einsum("nm,nmc->nc", self.weights.T, component_means)


class TeacherPrior(NamedTuple):
    """Precomputed constants of the teacher prior for N inputs (example axis first).

    Build it with :meth:`build`; index it with :meth:`take` for a minibatch.

    Attributes:
        scaled_probs: ``lambda p``, shape (N, M, C).
        log_normalizer: ``log B(1 + lambda p)``, shape (N, M).
        log_weights: ``log w``, shape (N, M).
        temperature: ``T`` (a 0-d array): the teachers' soft labels were tempered by it, and
            the student's logits are tempered by the same ``T``.
    """

    scaled_probs: jax.Array
    log_normalizer: jax.Array
    log_weights: jax.Array
    temperature: jax.Array

    @classmethod
    @renamed_keywords("mtbkd_jax.TeacherPrior.build", weights="weight_rule")
    def build(
        cls,
        teachers: TeacherBank,
        *,
        concentration: float,
        temperature: float = 1.0,
        weight_rule: str | np.ndarray | jax.Array = "paper",
        weight_temperature: float = 1.0,
        weight_tau: float = 1.0,
    ) -> TeacherPrior:
        """Constants for ``teachers``' inputs; ``weight_rule`` is a rule name or an (M, N)
        array, and the weight arguments are those of :class:`~mtbkd_jax.MTBKDModel` (the
        former ``weights=`` still works for one release, with a ``DeprecationWarning``)."""
        concentration = require_concentration(concentration)
        temperature = require_positive(temperature, "temperature")
        log_w = teacher_log_weights(
            teachers,
            weight_rule,
            temperature=weight_temperature,
            tau=weight_tau,
            argument="weight_rule",
        )
        scaled = concentration * jnp.moveaxis(teachers.probs(temperature), 0, 1)
        return cls(
            scaled,
            log_dirichlet_normalizer(1.0 + scaled),
            log_w.T,
            jnp.asarray(temperature, jnp.float32),
        )

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return int(self.scaled_probs.shape[0])

    def take(self, indices: ArrayLike) -> TeacherPrior:
        """The constants for the examples ``indices``: concrete ones must be integers in
        0..N-1, as :meth:`TeacherBank.take` requires; traced ones (inside jit) are not checked
        (out of range, they give NaN rows, which the samplers report as a non-finite start)."""
        size = self.num_examples
        require_indices(indices, size, f"the teacher prior has {size} examples")
        return TeacherPrior(
            jnp.take(self.scaled_probs, indices, axis=0),
            jnp.take(self.log_normalizer, indices, axis=0),
            jnp.take(self.log_weights, indices, axis=0),
            self.temperature,
        )

    def log_density(self, student_logits: jax.Array) -> jax.Array:
        """Per-example ``log sum_m w_m Dir(softmax(logits / T); 1 + lambda p_m)``, shape (N,)."""
        log_q = tempered_log_softmax(student_logits, self.temperature)
        return dirichlet_mixture_log_density(
            log_q, self.scaled_probs, self.log_normalizer, self.log_weights
        )


def teacher_prior_factor(
    name: str,
    student_logits: jax.Array,
    prior: TeacherPrior,
    *,
    prior_power: float = 1.0,
) -> jax.Array:
    """Add ``beta * log sum_m w_m Dir(q^T; 1 + lambda p_m)`` to the enclosing NumPyro model.

    Call it inside the plate over the examples that ``prior`` describes (already restricted to
    the minibatch with :meth:`TeacherPrior.take` when the plate subsamples); the plate then
    scales the term by ``N / |B|``. It is an unnormalised pseudo-prior on the weights (no
    Jacobian of the weights-to-probabilities map), which is all gradient-based inference needs.
    The student's logits are tempered by the prior's own temperature (``prior.temperature``),
    the one its teachers' soft labels were built with.

    Args:
        name: the factor site's name.
        student_logits: the student's logits on those examples, shape (B, C).
        prior: the constants for the same examples.
        prior_power: ``beta > 0``, a power on the teacher prior.

    Returns:
        The per-example log mixture density (before ``beta``), shape (B,).
    """
    if not isinstance(prior, TeacherPrior):
        raise TypeError(f"prior must be a TeacherPrior, got {type(prior).__name__}")
    require_nonnegative_values(prior_power, "prior_power", strictly=True)
    shape = tuple(np.shape(student_logits))
    if shape[:-1] != prior.scaled_probs.shape[:1] or shape[-1:] != prior.scaled_probs.shape[-1:]:
        raise ValueError(
            f"student_logits has shape {shape} but the teacher prior describes "
            f"{prior.scaled_probs.shape[0]} examples of {prior.scaled_probs.shape[-1]} classes"
        )
    student_logits = jnp.asarray(student_logits)
    log_density = prior.log_density(student_logits)
    numpyro.factor(name, prior_power * log_density)
    return log_density


# --------------------------------------------------------------------------- base priors
def _matches(name: str, key: str) -> bool:
    return name == key or name.startswith(key + ".")


def _scale_for(name: str, scale: float, scales: Mapping[str, float] | None) -> float:
    if not scales:
        return scale
    matches = [k for k in scales if _matches(name, k)]
    return scales[max(matches, key=len)] if matches else scale


def check_prior_names(prior: object, names: Iterable[str]) -> None:
    """Raise if a base prior names parameters that ``names`` (dotted paths such as
    ``"layers.0.kernel"``) does not have: a misspelt key would otherwise be ignored silently.

    Applies to :func:`normal_prior`'s ``scales`` and to a dict prior (NumPyro's form:
    parameter path -> distribution); other priors name no parameters.
    """
    names = list(names)
    if isinstance(prior, Mapping):
        keys, argument = list(prior), "prior (a dict)"
        unknown = [k for k in keys if k not in names]
    else:
        keys = list(getattr(prior, "description", {}).get("scales", {}) or {})
        argument = "normal_prior(scales=...)"
        unknown = [k for k in keys if not any(_matches(n, k) for n in names)]
    if unknown:
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(
            f"{argument} names {unknown}, which match no parameter of the student; its "
            f"parameters are {shown} (a key matches a path or a prefix of it ending at a '.')"
        )


class _BasePrior(Protocol):
    """What :func:`normal_prior` and :func:`flat_prior` return: a ``(name, shape) ->
    Distribution`` callable with a JSON-able ``description`` (for fingerprints and messages)."""

    description: dict[str, Any]

    def __call__(self, name: str, shape: tuple[int, ...], /) -> dist.Distribution: ...


def normal_prior(
    scale: float = 1.0, scales: Mapping[str, float] | None = None
) -> Callable[[str, tuple[int, ...]], dist.Distribution]:
    """Independent ``Normal(0, sigma0^2)`` on every weight, with optional per-layer scales.

    Args:
        scale: the default ``sigma0``.
        scales: ``{path prefix: sigma0}``; a parameter whose dotted path (for example
            ``"Dense_0.kernel"`` for a linen ``Dense`` layer, ``"layers.0"`` for the first
            layer of an NNX :class:`~mtbkd_jax.MLP`) equals or starts with a key (followed by
            a ``.``) uses that scale; the longest matching key wins. A key that matches no
            parameter is an error when the prior is given to a :class:`~mtbkd_jax.Student`.

    Returns:
        A ``(name, shape) -> Distribution`` callable, the form NumPyro's
        ``random_flax_module`` / ``random_nnx_module`` take as ``prior``.

    Example:
        >>> from mtbkd_jax import normal_prior
        >>> prior = normal_prior(1.0, scales={"layers.1": 0.5})
        >>> float(prior("layers.1.kernel", (16, 10)).scale)
        0.5
        >>> float(prior("layers.0.bias", (16,)).scale)
        1.0
    """
    scale = require_positive(scale, "scale")
    if scales is not None and not isinstance(scales, Mapping):
        raise TypeError(
            f"scales must be a dict of parameter path -> scale, got {type(scales).__name__}"
        )
    for key, value in (scales or {}).items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"scales keys must be non-empty parameter paths (str), got {key!r}")
        require_positive(value, f"scales[{key!r}]")

    def prior(name: str, shape: tuple[int, ...]) -> dist.Distribution:
        return dist.Normal(0.0, _scale_for(name, scale, scales))

    described = cast(_BasePrior, prior)
    described.description = {"kind": "normal", "scale": scale, "scales": dict(scales or {})}
    return described


def flat_prior() -> Callable[[str, tuple[int, ...]], dist.Distribution]:
    """An improper flat prior on every weight (the reference code's sampling setting).

    Note that softmax is unchanged by adding a constant to every logit, so with a flat prior
    the posterior of the output biases is improper along that direction; prefer
    :func:`normal_prior` for MCMC.
    """

    def prior(name: str, shape: tuple[int, ...]) -> dist.Distribution:
        return dist.ImproperUniform(constraints.real, (), ())

    described = cast(_BasePrior, prior)
    described.description = {"kind": "flat"}
    return described
