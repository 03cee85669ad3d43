"""What a NumPyro model's trace says about its plates and sites, read without computing.

:func:`model_structure` finds every plate (a :class:`PlateSpec` each: name, size N, minibatch
size ``|B|``), the subsampled ones, the latent, observed and deterministic sites. The gradient
estimator (:mod:`mtbkd_jax.infer.gradients`) and the log-likelihood
(:mod:`mtbkd_jax.infer.likelihood`) are built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import refuse_slashed_sites
from mtbkd_jax._tracing import abstract_trace

__all__ = [
    "PlateSpec",
    "ModelStructure",
    "model_structure",
    "check_latent_sites",
]


@dataclass(frozen=True)
class PlateSpec:
    """A subsampled plate: its name, its full size N and the minibatch size ``|B|``."""

    name: str
    size: int
    batch_size: int

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= self.size:
            raise ValueError(
                f"batch size of plate {self.name!r} must lie in 1..{self.size}, "
                f"got {self.batch_size}"
            )

    def indices(self, permutation: jax.Array, step_in_epoch: jax.Array | int) -> jax.Array:
        """The minibatch at a step: the next ``|B|`` entries of this epoch's order, wrapping
        at ``N`` (a permutation of the plate's examples), or at the order's length where it is
        longer (independent draws: a small plate's epoch of draws may exceed its ``N``)."""
        start = step_in_epoch * self.batch_size
        length = max(self.size, permutation.shape[-1])
        return jnp.take(permutation, jnp.mod(start + jnp.arange(self.batch_size), length))


@dataclass(frozen=True)
class ModelStructure:
    """What a NumPyro model's trace says about it, read without computing anything.

    Attributes:
        plates: every plate, in the order the model enters them.
        minibatched: the plates declared with a ``subsample_size`` (a minibatch plan; the
            size may equal the plate's for a small data set).
        latent_shapes: each latent (not observed) sample site's shape.
        observed: the observed sample sites' names (factors excluded).
    """

    plates: tuple[PlateSpec, ...]
    minibatched: tuple[PlateSpec, ...]
    latent_shapes: dict
    observed: tuple[str, ...]
    deterministic: tuple[str, ...] = ()
    # latent site -> the plates it lies in (a local latent lies in the data's plate)
    latent_plates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    discrete: tuple[str, ...] = ()  # latent sites with a discrete support
    # (plate, size, subsample_size) where subsample_size > size (NumPyro takes all N, silently)
    oversized: tuple[tuple[str, int, int], ...] = ()
    # numpyro.param sites holding arrays (a dict prior's unsampled weights; a fully lifted
    # network's weight holder holds none): the samplers keep them at their initial values
    params: tuple[str, ...] = ()
    # observed and factor sites -> the sizes of their batch axes no plate of theirs covers
    unplated_axes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def subsampled(self) -> tuple[PlateSpec, ...]:
        """The plates that really subsample (``subsample_size < size``)."""
        return tuple(p for p in self.minibatched if p.batch_size < p.size)


def model_structure(model: Callable, model_args: tuple, model_kwargs: dict) -> ModelStructure:
    """Trace ``model(*model_args, **model_kwargs)`` abstractly (``jax.eval_shape``: no compute)
    and return its plates, latent sites and observed sites."""
    found: dict = {}

    def run() -> dict[str, Any]:
        trace = abstract_trace(model, model_args, model_kwargs)
        plates, minibatched, latent, observed, deterministic = [], [], {}, [], []
        latent_plates: dict[str, tuple[str, ...]] = {}
        discrete: list[str] = []
        oversized: list[tuple[str, int, int]] = []
        params: list[str] = []
        unplated: dict[str, tuple[int, ...]] = {}
        for name, site in trace.items():
            if site["type"] == "plate":
                size, subsample_size = site["args"]
                if subsample_size is not None and subsample_size > size:
                    oversized.append((name, int(size), int(subsample_size)))
                batch = size if subsample_size is None else subsample_size
                if site["value"] is not None and np.shape(site["value"])[0] == size:
                    batch = size  # all indices given (a full-batch evaluation)
                plates.append(PlateSpec(name, int(size), int(batch)))
                if subsample_size is not None:
                    minibatched.append(plates[-1])
            elif site["type"] == "sample" and not site["is_observed"]:
                refuse_slashed_sites([name])
                latent[name] = site["value"]
                latent_plates[name] = tuple(f.name for f in site["cond_indep_stack"])
                if getattr(site["fn"], "is_discrete", False):
                    discrete.append(name)
            elif site["type"] == "sample":
                unplated[name] = _unplated_axes(site)
                if not _is_factor(site["fn"]):
                    observed.append(name)
            elif site["type"] == "deterministic":
                deterministic.append(name)
            elif site["type"] == "param" and _unsubstituted_array(site):
                params.append(name)
        found.update(
            plates=tuple(plates),
            minibatched=tuple(minibatched),
            observed=tuple(observed),
            deterministic=tuple(deterministic),
            latent_plates=latent_plates,
            discrete=tuple(discrete),
            oversized=tuple(oversized),
            params=tuple(params),
            unplated_axes=unplated,
        )
        return latent

    shapes = jax.eval_shape(run)
    latent_shapes = {k: tuple(v.shape) for k, v in shapes.items()}
    return ModelStructure(
        found["plates"],
        found["minibatched"],
        latent_shapes,
        found["observed"],
        found["deterministic"],
        found["latent_plates"],
        found["discrete"],
        found["oversized"],
        found["params"],
        found["unplated_axes"],
    )


def _unplated_axes(site: dict) -> tuple[int, ...]:
    """The sizes of an observed or factor site's batch axes that none of its plates covers."""
    shape = tuple(getattr(site["fn"], "batch_shape", ()))
    covered = {frame.dim for frame in site["cond_indep_stack"]}
    return tuple(size for k, size in enumerate(shape) if k - len(shape) not in covered)


def _unsubstituted_array(site: dict) -> bool:
    """A param site holding arrays at its initial value (``substitute`` gives another)."""
    initial = site["args"][0] if site["args"] else None
    return bool(jax.tree.leaves(site["value"])) and site["value"] is initial


def check_latent_sites(structure: ModelStructure) -> None:
    """Refuse what SG-MCMC cannot sample: no latent site, a discrete one, or a latent site
    inside a plate that subsamples (a per-example latent would be a vector of the batch's
    size, paired with whichever examples each minibatch holds: a wrong posterior)."""
    if not structure.latent_shapes:
        raise ValueError("the model has no latent sample site to sample")
    if structure.discrete:
        raise ValueError(
            f"SG-MCMC needs continuous latent sites; {list(structure.discrete)} "
            "have a discrete support: marginalise them out in the model (sum over their "
            "values with numpyro.factor), or make them observed"
        )
    subsampled = {p.name for p in structure.subsampled}
    _check_unplated_terms(structure)
    for name, plates in structure.latent_plates.items():
        inside = [p for p in plates if p in subsampled]
        if inside:
            raise ValueError(
                f"the latent site {name!r} lies inside the subsampled plate {inside[0]!r}: "
                "SG-MCMC subsamples the data, not per-example latent variables (each would be "
                "a vector of the minibatch's size, paired with other examples at every step); "
                "move the site out of the plate, marginalise it, or give the plate no "
                "subsample_size"
            )


def _check_unplated_terms(structure: ModelStructure) -> None:
    """Refuse an observed or factor site with a batch axis of a minibatch's size outside that
    plate (``teacher_prior_factor`` called after the ``with numpyro.plate(...)`` block): its
    log density is a minibatch's but no plate scales it by ``N / |B|``, so SG-MCMC would weigh
    it ``|B| / N`` times too little, while NUTS on the full data is right."""
    batches = {p.batch_size: p.name for p in structure.subsampled}
    for name, sizes in structure.unplated_axes.items():
        found = [batches[size] for size in sizes if size in batches]
        if found:
            raise ValueError(
                f"the site {name!r} has a batch axis of the minibatch's size outside the "
                f"subsampled plate {found[0]!r}: its log density, a minibatch's, would not be "
                "scaled by N / |B| (SG-MCMC would weigh it |B| / N times too little); put it "
                "inside the plate (teacher_prior_factor: in the `with numpyro.plate(...)` "
                "block), or, if that axis is not the examples, sum it or give it a plate of "
                "its own"
            )


def _is_factor(fn: object) -> bool:
    """Whether a site's distribution is ``numpyro.factor``'s ``Unit`` (possibly wrapped)."""
    import numpyro.distributions as dist

    while True:
        if isinstance(fn, dist.Unit):
            return True
        inner = getattr(fn, "base_dist", None)
        if inner is None:
            return False
        fn = inner
