"""A base prior whose scales are learned: the collapsed hierarchical Normal (issue 12).

For each group ``l`` of ``n_l`` weights (by default each parameter array: a layer's kernel and
its bias separately),

    w_l | sigma_l^2 ~ N(0, sigma_l^2 I),        sigma_l^2 ~ InverseGamma(a, b),

and ``sigma_l^2`` is integrated out analytically:

    log p(w_l) = lgamma(a + n_l/2) - lgamma(a) + a log b - (n_l/2) log(2 pi)
                 - (a + n_l/2) log(b + ||w_l||^2 / 2),

an isotropic multivariate Student-t with ``2a`` degrees of freedom and scale ``sqrt(b / a)``
(:class:`CollapsedNormal`, on an array of any shape in O(n_l)).

*Why collapsed.* Sampling ``sigma_l`` beside the weights gives NUTS Neal's funnel (one
coordinate sets the scale of thousands of weights); integrating it out leaves no extra site and
no funnel. The MAP is ridge regression whose penalty ``sigma_l^2 = (b + ||w_l||^2/2) /
(a + n_l/2)`` the weights set themselves. Nothing is lost: ``sigma_l^2 | w ~ InverseGamma(a +
n_l/2, b + ||w_l||^2/2)`` exactly, so each weight draw gives ``sigma_l``'s conditional
posterior (:func:`posterior_scales`; their mean over the draws is the Rao-Blackwellised
posterior mean). With weak data ``||w_l||`` still spreads as ``sigma_l`` does: the funnel is
gone, heavy tails are not.

*Why an inverse-gamma hyperprior.* It is the conjugate one: it collapses in closed form with
elementary functions, to a density bounded at ``w = 0``. A Gamma prior on ``sigma^2`` collapses
to a Bessel-function density that is infinite at ``w = 0`` once ``n_l >= 2a`` (the MAP and
NUTS fall into the spike); a half-Cauchy or half-normal on ``sigma`` does not collapse. The
price: the inverse gamma avoids zero, so ``n_l`` weights cannot learn a ``sigma_l^2`` much
below ``2b / n_l`` (``E[sigma^2 | w] >= b / (a + n_l/2 - 1)``), which bites small groups only.

*The defaults* ``a = 2, b = 1``: ``E[sigma^2] = b / (a - 1) = 1``, so each weight's marginal
variance is 1, that of the default ``normal_prior(1.0)`` (the same prior predictive spread to
second order); ``a = 2`` is the smallest whole concentration with a finite marginal variance
(a Student-t with 4 degrees of freedom), and as a scaled inverse-chi^2 ``(nu0 = 2a,
s0^2 = b/a)`` the hyperprior weighs as much as 4 weights, so any larger group is led by its
data. The prior median of ``sigma`` is 0.77, its central 90% interval (0.46, 1.68): weakly
informative, on the unit scale of weights that take standardised inputs.

*Groups* (``groups=``): ``"parameter"`` (each parameter array), ``"layer"`` (the arrays under
one path prefix: ``layers.0.kernel`` and ``layers.0.bias``) or ``"network"`` (one ``sigma``
for all, a learned weight decay). A group of several arrays gets its joint collapsed density by
the chain rule: each array's distribution is the collapsed Normal *given* the arrays of its
group sampled before it (the hyperprior updated to ``InverseGamma(a + m/2, b + s/2)`` by ``m``
weights of squared norm ``s``), arranged inside the model by :func:`chain_groups` (a
:class:`~mtbkd_jax.Student` does it by itself): still no extra site, and exact prior draws.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.primitives import Messenger
from scipy import special

from mtbkd_jax._checks import require_positive

__all__ = [
    "CollapsedNormal",
    "HierarchicalNormalPrior",
    "ScalePosterior",
    "hierarchical_normal_prior",
    "posterior_scales",
    "chain_groups",
]

GROUPINGS = ("parameter", "layer", "network")


class CollapsedNormal(dist.Distribution):
    """``N(0, sigma^2 I)`` on an array with ``sigma^2 ~ InverseGamma(a, b)`` integrated out.

    An isotropic multivariate Student-t (``2a`` degrees of freedom, scale ``sqrt(b / a)``) whose
    event is a whole array: ``event_shape`` is the array's shape, ``log_prob`` costs O(size).

    Args:
        concentration: ``a > 0``.
        rate: ``b > 0``.
        event_shape: the array's shape.
        group: the label of the scale this array shares (see :func:`chain_groups`); ``None``
            for an array with a scale of its own.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from mtbkd_jax.scale_priors import CollapsedNormal
        >>> d = CollapsedNormal(2.0, 1.0, (3, 2))
        >>> d.sample(jax.random.key(0), (5,)).shape
        (5, 3, 2)
        >>> round(float(d.log_prob(jnp.zeros((3, 2)))), 4)  # lgamma(5)-lgamma(2)-3 log(2 pi)
        -2.3356
    """

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    pytree_data_fields = ("concentration", "rate")
    pytree_aux_fields = ("group",)
    reparametrized_params = ["concentration", "rate"]

    def __init__(
        self,
        concentration: float | jax.Array = 2.0,
        rate: float | jax.Array = 1.0,
        event_shape: tuple[int, ...] = (),
        *,
        group: str | None = None,
        validate_args: bool | None = None,
    ) -> None:
        batch_shape = jnp.broadcast_shapes(jnp.shape(concentration), jnp.shape(rate))
        dtype = jnp.result_type(float)
        self.concentration = jnp.broadcast_to(jnp.asarray(concentration, dtype), batch_shape)
        self.rate = jnp.broadcast_to(jnp.asarray(rate, dtype), batch_shape)
        self.group = group
        super().__init__(
            batch_shape, tuple(int(s) for s in event_shape), validate_args=validate_args
        )

    @property
    def support(self) -> constraints.Constraint:
        ndim = len(self.event_shape)
        return constraints.independent(constraints.real, ndim) if ndim else constraints.real

    @property
    def size(self) -> int:
        """The number of weights in one event, ``n``."""
        return math.prod(self.event_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        event_axes = tuple(range(-len(self.event_shape), 0))
        sum_squares = jnp.sum(jnp.square(value), axis=event_axes)
        half_n = 0.5 * self.size
        a, b = self.concentration, self.rate
        return (
            gammaln(a + half_n)
            - gammaln(a)
            - half_n * jnp.log(2 * jnp.pi * b)
            - (a + half_n) * jnp.log1p(sum_squares / (2 * b))
        )

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        key_scale, key_normal = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape
        precision = jax.random.gamma(key_scale, self.concentration, shape) / self.rate
        scale = jax.lax.rsqrt(precision).reshape(shape + (1,) * len(self.event_shape))
        return scale * jax.random.normal(key_normal, shape + self.event_shape)

    @property
    def variance(self) -> jax.Array:
        """``E[sigma^2] = b / (a - 1)`` per weight where ``a > 1``, else infinite."""
        a, b = self.concentration, self.rate
        per_group = jnp.where(a > 1, b / jnp.where(a > 1, a - 1, 1.0), jnp.inf)
        return jnp.broadcast_to(per_group[(..., *(None,) * len(self.event_shape))], self.shape())

    def given(self, size: int, sum_squares: float | jax.Array) -> CollapsedNormal:
        """This array's distribution given ``size`` other weights of its group whose squares
        sum to ``sum_squares``: the hyperprior updated to ``InverseGamma(a + size/2,
        b + sum_squares/2)``, the same group."""
        a, b = self.concentration + 0.5 * size, self.rate + 0.5 * sum_squares
        return CollapsedNormal(a, b, self.event_shape, group=self.group)


class HierarchicalNormalPrior:
    """A ``(name, shape) -> CollapsedNormal`` base prior with learned per-group scales.

    Build it with :func:`hierarchical_normal_prior`, which documents the arguments.

    Attributes:
        concentration, rate: the inverse-gamma hyperprior's ``a`` and ``b``.
        groups: ``"parameter"``, ``"layer"`` or ``"network"``.
        description: the JSON-able summary used by fingerprints and messages.
    """

    def __init__(self, concentration: float, rate: float, groups: str) -> None:
        self.concentration = concentration
        self.rate = rate
        self.groups = groups
        self.description: dict[str, Any] = {
            "kind": "hierarchical_normal",
            "concentration": concentration,
            "rate": rate,
            "groups": groups,
        }

    def group_of(self, path: str) -> str:
        """The label of the scale the parameter at dotted ``path`` uses: the path itself
        (``"parameter"``), its prefix without the last component (``"layer"``; ``""`` for
        the parameters of the root module, e.g. a bare ``nnx.Linear``), or ``"network"``."""
        if self.groups == "parameter":
            return path
        if self.groups == "layer":
            return path.rpartition(".")[0]
        return "network"

    def __call__(self, name: str, shape: tuple[int, ...], /) -> CollapsedNormal:
        return CollapsedNormal(self.concentration, self.rate, shape, group=self.group_of(name))

    def __repr__(self) -> str:
        return (
            f"hierarchical_normal_prior(concentration={self.concentration!r}, "
            f"rate={self.rate!r}, groups={self.groups!r})"
        )


def hierarchical_normal_prior(
    concentration: float = 2.0, rate: float = 1.0, *, groups: str = "parameter"
) -> HierarchicalNormalPrior:
    """``w_l ~ N(0, sigma_l^2 I)`` per group with ``sigma_l^2 ~ InverseGamma(a, b)``, collapsed.

    A base prior for a :class:`~mtbkd_jax.Student` (and so for the canonical model), like
    :func:`~mtbkd_jax.normal_prior`, whose scale is learned instead of tuned; the module
    docstring gives the reasons for the design and for the defaults.

    Args:
        concentration: ``a > 0`` (default 2: a finite marginal variance).
        rate: ``b > 0`` (default 1: ``E[sigma^2] = b / (a - 1) = 1``, the variance of the
            default ``normal_prior(1.0)``).
        groups: which weights share a scale: ``"parameter"`` (each parameter array),
            ``"layer"`` (the parameters under one path prefix, a layer's kernel and bias) or
            ``"network"`` (all of them).

    Returns:
        A :class:`HierarchicalNormalPrior`: a ``(name, shape) -> Distribution`` callable
        with a ``description``.

    Example:
        >>> from flax import nnx
        >>> from mtbkd_jax import MLP, Student
        >>> from mtbkd_jax.scale_priors import hierarchical_normal_prior
        >>> prior = hierarchical_normal_prior(groups="layer")
        >>> prior.description
        {'kind': 'hierarchical_normal', 'concentration': 2.0, 'rate': 1.0, 'groups': 'layer'}
        >>> student = Student(MLP(4, 3, hidden=(8,), rngs=nnx.Rngs(0)), prior=prior)
        >>> prior("layers.0.kernel", (4, 8)).event_shape, prior.group_of("layers.0.kernel")
        ((4, 8), 'layers.0')
    """
    concentration = require_positive(concentration, "concentration")
    rate = require_positive(rate, "rate")
    if not isinstance(groups, str):
        raise TypeError(f"groups must be one of {GROUPINGS}, got {type(groups).__name__}")
    if groups not in GROUPINGS:
        raise ValueError(f"groups must be one of {GROUPINGS}, got {groups!r}")
    return HierarchicalNormalPrior(concentration, rate, groups)


class _GroupChain(Messenger):
    """Give each :class:`CollapsedNormal` site its distribution given the sites of its group
    sampled before it (the chain rule of the group's joint collapsed density). A site that an
    outer ``numpyro.handlers.reparam`` turns into a deterministic one (the non-centred
    coordinates, :mod:`mtbkd_jax.noncentred`) counts with its value all the same."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, tuple[int, jax.Array]] = {}
        self._pending: dict[int, tuple[str, CollapsedNormal]] = {}  # by id: names may change

    def process_message(self, msg: dict[str, Any]) -> None:
        fn, group = msg.get("fn"), getattr(msg.get("fn"), "group", None)
        if msg["type"] != "sample" or not isinstance(fn, CollapsedNormal) or group is None:
            return
        if group in self._seen:
            msg["fn"] = fn.given(*self._seen[group])
        self._pending[id(msg)] = (group, fn)  # a reparam may drop the fn before postprocess

    def postprocess_message(self, msg: dict[str, Any]) -> None:
        pending = self._pending.pop(id(msg), None)
        if pending is None or msg["type"] not in ("sample", "deterministic"):
            return
        group, fn = pending
        axes = tuple(range(-len(fn.event_shape), 0))
        size, sum_squares = self._seen.get(group, (0, jnp.zeros(())))
        squares = jnp.sum(jnp.square(msg["value"]), axis=axes)
        self._seen[group] = (size + fn.size, sum_squares + squares)


def chain_groups(prior: object) -> contextlib.AbstractContextManager[Any]:
    """A context, inside a NumPyro model, in which the parameter arrays of one group of a
    :class:`HierarchicalNormalPrior` get their joint collapsed density (each given those
    sampled before it); a no-op for any other prior and for ``groups="parameter"``.

    A :class:`~mtbkd_jax.Student` enters it by itself. A model of your own that lifts a
    module with this prior enters it around the lifting, or each array would get its own
    scale::

        with chain_groups(prior):
            net = random_nnx_module("net", module, prior)
    """
    if isinstance(prior, HierarchicalNormalPrior) and prior.groups != "parameter":
        return _GroupChain()
    return contextlib.nullcontext()


class ScalePosterior(NamedTuple):
    """``sigma_l^2 | w ~ InverseGamma(concentration, rate)`` for each draw of the weights.

    Attributes:
        concentration: ``a + n_l / 2`` (the same for every draw).
        rate: ``b + ||w_l||^2 / 2`` per draw, shape of the draws' leading axes.
        size: ``n_l``, the number of weights in the group.
    """

    concentration: float
    rate: np.ndarray
    size: int

    def conditional_means(self) -> np.ndarray:
        """``E[sigma_l | w] = sqrt(rate) Gamma(alpha - 1/2) / Gamma(alpha)`` per draw."""
        alpha = self.concentration
        return np.sqrt(self.rate) * np.exp(special.gammaln(alpha - 0.5) - special.gammaln(alpha))

    def mean(self) -> float:
        """The posterior mean of ``sigma_l``, Rao-Blackwellised (the mean over the draws of
        ``E[sigma_l | w]``)."""
        return float(np.mean(self.conditional_means()))

    def sample(self, rng_key: jax.Array) -> np.ndarray:
        """One draw of ``sigma_l`` from its conditional per draw of the weights: together,
        draws of ``sigma_l``'s posterior."""
        shape = np.shape(self.rate)
        gamma = np.asarray(jax.random.gamma(rng_key, self.concentration, shape), np.float64)
        return np.sqrt(self.rate / gamma)


def posterior_scales(
    draws: Any,
    prior: HierarchicalNormalPrior,
    *,
    name: str = "student",
    sample_ndim: int | None = None,
) -> dict[str, ScalePosterior]:
    """What the scales learned: ``sigma_l``'s conditional posterior per draw, per group.

    Args:
        draws: a :class:`~mtbkd_jax.Posterior` (draws ``(chains, draws, *shape)``) or a dict
            of site name -> array with ``sample_ndim`` leading axes (NumPyro's
            ``MCMC.get_samples()``: one).
        prior: the :class:`HierarchicalNormalPrior` the draws were made under.
        name: the student's name, the prefix of its weight sites.
        sample_ndim: the leading axes of the draws (default 2 for a Posterior, else 1).

    Returns:
        ``{group label: ScalePosterior}`` (labels as :meth:`HierarchicalNormalPrior.group_of`).

    Example:
        >>> import numpy as np
        >>> from mtbkd_jax.scale_priors import hierarchical_normal_prior, posterior_scales
        >>> draws = {"student.kernel": np.full((100, 4, 2), 0.1)}  # 100 draws of a (4, 2) kernel
        >>> scale = posterior_scales(draws, hierarchical_normal_prior())["kernel"]
        >>> scale.concentration, scale.size, round(scale.mean(), 4)
        (6.0, 8, 0.4448)
    """
    if not isinstance(prior, HierarchicalNormalPrior):
        raise TypeError(
            "prior must be the hierarchical_normal_prior(...) the draws were made under, "
            f"got {type(prior).__name__}"
        )
    values = getattr(draws, "draws", draws)
    if not isinstance(values, Mapping):
        raise TypeError(
            f"draws must be a Posterior or a dict of arrays, got {type(draws).__name__}"
        )
    from mtbkd_jax.noncentred import require_centred

    require_centred(values, "draws")
    lead = (2 if values is not draws else 1) if sample_ndim is None else int(sample_ndim)
    if lead < 0:
        raise ValueError(f"sample_ndim must be >= 0, got {sample_ndim}")
    prefix = f"{name}."
    sizes: dict[str, int] = {}
    sums: dict[str, np.ndarray] = {}
    for site, value in sorted(values.items()):
        if not site.startswith(prefix):
            continue
        array = np.asarray(value, dtype=np.float64)
        if array.ndim < lead:
            raise ValueError(
                f"draws[{site!r}] has shape {array.shape}, fewer than sample_ndim={lead} axes"
            )
        group = prior.group_of(site[len(prefix) :])
        sizes[group] = sizes.get(group, 0) + math.prod(array.shape[lead:])
        squares = np.sum(np.square(array), axis=tuple(range(lead, array.ndim)))
        sums[group] = sums.get(group, 0.0) + squares
    if not sizes:
        raise ValueError(
            f"draws has no site named {prefix!r}... (it has {sorted(values)[:4]}); pass the "
            "student's name as name="
        )
    return {
        group: ScalePosterior(prior.concentration + 0.5 * n, prior.rate + 0.5 * sums[group], n)
        for group, n in sizes.items()
    }
