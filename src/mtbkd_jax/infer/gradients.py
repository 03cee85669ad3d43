"""The minibatch gradient estimator of any NumPyro model with subsampled plates.

A NumPyro model declares its minibatches itself, ``numpyro.plate(name, N, subsample_size=B)``,
and indexes its data with the plate's indices. Substituting the indices of every subsampled
plate (``handlers.substitute``) makes NumPyro scale each site inside a plate by ``N / |B|`` and
count every site outside the plates once, so ``log p`` evaluated on a minibatch is an unbiased
estimate of the full-data log density (METHOD §5), and so is its gradient. The samplers draw
the indices (a permutation of each plate per epoch), so a step costs O(``|B|``), not O(N).

:func:`gradient_estimator` reads the plates from the model's trace. A model may also own its
subsampling plan, as :class:`~mtbkd_jax.MTBKDModel` does, through two optional methods (the
*subsampling protocol*; nothing here imports the canonical model):

* ``model.minibatch_kwargs(num_examples, batch_size, num_transfer, prior_batch_size) -> dict``:
  the keyword arguments that make it subsample (``subsample_size=...``; ``num_transfer`` is the
  length of ``prior_inputs`` when given);
* ``model.constant_kwargs() -> dict``: array constants the model takes as keyword arguments,
  so that ``jit`` receives them as data instead of compiling them into the program (the
  teacher prior's (N, M, C) constants).

The estimator is a pytree whose leaves are the model's array arguments: pass it through
``jax.jit`` as an argument and the data stay data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import init_to_uniform
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy, unconstrain_fn

from mtbkd_jax.infer._common import is_array_tree
from mtbkd_jax.infer._own_plan import with_own_plan
from mtbkd_jax.infer._plate_order import FullPlateOrder
from mtbkd_jax.infer.minibatch import PlateSpec, check_latent_sites, model_structure

__all__ = ["GradientEstimator", "MinibatchPlan", "gradient_estimator", "minibatch_plan"]

if TYPE_CHECKING:
    # the estimator as a pytree: children (model_args, array kwargs), aux (model, static, plates)
    _Children = tuple[tuple[Any, ...], dict[str, Any]]
    _Aux = tuple[Callable, "_Static", tuple[PlateSpec, ...]]


@jax.tree_util.register_pytree_node_class
class GradientEstimator:
    """``log p(z, D)`` of a NumPyro model estimated on a minibatch, and its gradient.

    Args:
        model: the NumPyro model.
        model_args: its positional arguments (arrays).
        model_kwargs: its keyword arguments; arrays become the pytree's leaves (data through
            ``jit``), the rest is compiled in.
        plates: the subsampled plates (:class:`~mtbkd_jax.infer.minibatch.PlateSpec`); a
            minibatch maps each plate's name to its indices.
        array_keys: the keyword arguments that are the pytree's leaves (default: those that
            are trees of arrays). Kept through flattening, so that a tree of the same
            structure with other leaves (``shard_map``'s partition specs) has the same
            structure.

    Build one with :func:`gradient_estimator`, which reads the plates from the model.
    ``estimator(position, minibatch)`` is the gradient, BlackJAX's ``grad_estimator``
    signature, so the kernels of :mod:`mtbkd_jax.infer` (and BlackJAX's own) take it as is.
    """

    def __init__(
        self,
        model: Callable,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
        plates: tuple[PlateSpec, ...] = (),
        array_keys: frozenset[str] | None = None,
    ) -> None:
        self.model = model
        # NumPy arrays become JAX arrays: the model indexes them with traced plate indices
        self.model_args = tuple(_as_jax(a) for a in model_args)
        self.model_kwargs = {k: _as_jax(v) for k, v in (model_kwargs or {}).items()}
        if array_keys is None:
            array_keys = frozenset(k for k, v in self.model_kwargs.items() if is_array_tree(v))
        self.array_keys = array_keys
        self.plates = tuple(plates)
        if not self.plates:
            raise ValueError("plates must name at least one subsampled plate")

    # ------------------------------------------------------------------------- pytree
    def tree_flatten(self) -> tuple[_Children, _Aux]:
        arrays = {k: v for k, v in self.model_kwargs.items() if k in self.array_keys}
        static = tuple(sorted((k, v) for k, v in self.model_kwargs.items() if k not in arrays))
        return (self.model_args, arrays), (self.model, _Static(static), self.plates)

    @classmethod
    def tree_unflatten(cls, aux: _Aux, children: _Children) -> GradientEstimator:
        model, static, plates = aux
        model_args, arrays = children
        kwargs = {**arrays, **dict(static.items)}
        return cls(model, model_args, kwargs, plates, frozenset(arrays))

    # ------------------------------------------------------------------------- densities
    def _substituted(self, minibatch: dict) -> Callable:
        indices = {name: jnp.asarray(index) for name, index in minibatch.items()}
        model = handlers.substitute(self.model, data=indices)
        full = [p.name for p in self.plates if p.batch_size == p.size]
        return FullPlateOrder(model, full) if full else model

    def batch_model(self, minibatch: dict) -> tuple[Callable, tuple, dict]:
        """``(model, args, kwargs)`` evaluating the model on ``minibatch``."""
        return self._substituted(minibatch), self.model_args, self.model_kwargs

    def logdensity(self, position: dict, minibatch: dict) -> jax.Array:
        """``log p(z, D)`` on the unconstrained space, estimated on ``minibatch`` (plate name
        -> indices): every plate's sites scaled by ``N / |B|``. Indices of another length than
        a plate's ``subsample_size`` (``full_batch()``, ``half_batches``) are meant: NumPyro's
        warning that they differ (a model/guide mismatch elsewhere) is not raised."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            return -potential_energy(*self.batch_model(minibatch), position)

    def grad(self, position: dict, minibatch: dict) -> dict:
        """The minibatch estimate of ``grad log p(z, D)``."""
        return jax.grad(self.logdensity)(position, minibatch)

    def __call__(self, position: dict, minibatch: dict) -> dict:
        return self.grad(position, minibatch)

    # ------------------------------------------------------------------------- minibatches
    def full_batch(self) -> dict:
        """Indices covering every example of every plate (the exact log density)."""
        return {p.name: jnp.arange(p.size) for p in self.plates}

    def first_batch(self) -> dict:
        """The first ``|B|`` indices of every plate."""
        return {p.name: jnp.arange(p.batch_size) for p in self.plates}

    def sample_minibatch(self, rng_key: jax.Array) -> dict:
        """Indices drawn uniformly without replacement, independently per plate."""
        keys = jax.random.split(rng_key, len(self.plates))
        return {
            p.name: jax.random.choice(k, p.size, (p.batch_size,), replace=False)
            for p, k in zip(self.plates, keys, strict=True)
        }

    def half_batches(self, minibatch: dict) -> tuple[dict, dict]:
        """The two halves of ``minibatch``, each an unbiased minibatch of its own: a
        subsampled plate's first half of indices repeated twice, and its second half (the
        plate's ``N / |B|`` scaling then weighs each half's examples ``N / (|B| / 2)``); a
        plate taken whole stays whole in both. For a model whose every site lies in at most one
        subsampled plate (the canonical model's ``data`` and ``transfer`` plates are separate)
        their gradients' mean is the minibatch's; a site inside two subsampled plates (nested
        or crossed) gets two unbiased halves whose mean misses the plates' cross terms. The
        indices must come in random order (as ``sample_minibatch`` and epoch permutations
        give them)."""
        first, second = {}, {}
        for plate in self.plates:
            index = jnp.asarray(minibatch[plate.name])
            if plate.batch_size == plate.size:
                first[plate.name] = second[plate.name] = index
                continue
            if plate.batch_size % 2:
                raise ValueError(
                    f"half_batches needs an even batch size on plate {plate.name!r}, "
                    f"got {plate.batch_size}"
                )
            half = plate.batch_size // 2
            first[plate.name] = jnp.concatenate([index[:half], index[:half]])
            second[plate.name] = jnp.concatenate([index[half:], index[half:]])
        return first, second

    # ------------------------------------------------------------------------- positions
    def initial_position(self, rng_key: jax.Array, init_strategy: Callable | None = None) -> dict:
        """A starting point on the unconstrained space (default ``init_to_uniform(0.5)``)."""
        info = initialize_model(
            rng_key,
            self._substituted(self.first_batch()),
            init_strategy=init_strategy or init_to_uniform(radius=0.5),
            model_args=self.model_args,
            model_kwargs=self.model_kwargs,
        )
        return info.param_info.z

    def constrain(self, position: dict) -> dict:
        """Unconstrained values -> the model's sample sites (identity for real weights)."""
        return constrain_fn(
            self._substituted(self.first_batch()), self.model_args, self.model_kwargs, position
        )

    def unconstrain(self, params: dict) -> dict:
        """The model's sample sites -> the unconstrained space."""
        return unconstrain_fn(
            self._substituted(self.first_batch()),
            self.model_args,
            self.model_kwargs,
            {k: jnp.asarray(v) for k, v in params.items()},
        )

    def __repr__(self) -> str:
        plates = ", ".join(f"{p.name}: {p.batch_size}/{p.size}" for p in self.plates)
        name = getattr(self.model, "__name__", type(self.model).__name__)
        return f"GradientEstimator({name}, {plates})"


def _as_jax(value: Any) -> Any:
    """NumPy arrays in a pytree as JAX arrays (anything else unchanged)."""
    return jax.tree.map(lambda v: jnp.asarray(v) if isinstance(v, np.ndarray) else v, value)


class _Static:
    """Static keyword arguments as a hashable ``jit`` cache key (by value where hashable)."""

    def __init__(self, items: tuple) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and _same(self.items, other.items)

    def __hash__(self) -> int:
        try:
            return hash(self.items)
        except TypeError:
            return hash(tuple(k for k, _ in self.items))


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # values whose == is not a bool (arrays in a list): by identity
        return a is b


@dataclass(frozen=True)
class MinibatchPlan:
    """The subsampled plates a model declares and the data its estimator is built from.

    Attributes:
        plates: the subsampled plates (the first sets the epoch: ``size // batch_size`` steps).
        arrays: keyword arguments that are arrays (passed through ``jit`` as data).
        static: the other keyword arguments (compiled in).
        latent_shapes: the model's latent sites and their shapes.
        partial_last_batch: epochs end with the left-over examples as a smaller minibatch.
        deterministic: the model's deterministic sites.
        params: the model's param sites holding arrays (kept at their initial values).
    """

    plates: tuple[PlateSpec, ...]
    arrays: dict
    static: dict
    latent_shapes: dict
    partial_last_batch: bool = False
    deterministic: tuple = ()
    params: tuple = ()

    @property
    def steps_per_epoch(self) -> int:
        """``N // |B|`` steps, or ``ceil(N / |B|)`` with a partial last batch."""
        size, batch = self.plates[0].size, self.plates[0].batch_size
        return -(-size // batch) if self.partial_last_batch else size // batch

    @property
    def kwargs(self) -> dict:
        return {**self.arrays, **self.static}


def minibatch_plan(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict | None = None,
    batch_size: int | None = None,
    prior_batch_size: int | None = None,
    partial_last_batch: bool = False,
) -> MinibatchPlan:
    """Read a model's subsampled plates from its trace (after its own plan, if it has one:
    see the module docstring) and split its keyword arguments into data and settings."""
    model_args = tuple(_as_jax(a) for a in model_args)
    model_kwargs = {k: _as_jax(v) for k, v in (model_kwargs or {}).items()}
    kwargs = with_own_plan(
        model, model_args, dict(model_kwargs or {}), batch_size, prior_batch_size
    )
    own_plan = callable(getattr(model, "minibatch_kwargs", None))
    structure = model_structure(model, tuple(model_args), kwargs)
    plates = list(structure.minibatched)
    for name, size, subsample in structure.oversized:  # NumPyro takes all N, silently
        raise ValueError(
            f"plate {name!r} has subsample_size={subsample}; it must lie in 1..{size} (its size)"
        )
    # the epoch is set by the first plate that really subsamples (a plate of subsample_size N
    # takes all N at every step)
    lead = next((p for p in plates if p.batch_size < p.size), plates[0] if plates else None)
    if lead is not None:
        plates.remove(lead)
        plates.insert(0, lead)
    if not plates:
        names = [p.name for p in structure.plates]
        raise ValueError(
            "the model declares no subsampled plate, so SG-MCMC would run full batch; declare "
            "the minibatch in the model, numpyro.plate(name, N, subsample_size=B), and index "
            f"the data with the plate's indices (the model's plates: {names or 'none'})"
        )
    check_latent_sites(structure)
    if batch_size is not None and not own_plan and batch_size != plates[0].batch_size:
        raise ValueError(
            f"batch_size={batch_size} but the model's plate {plates[0].name!r} takes "
            f"subsample_size={plates[0].batch_size}; a model of your own sets its minibatch "
            "size itself: leave batch_size out, or change the plate's subsample_size"
        )
    if partial_last_batch and len(plates) > 1:
        raise ValueError(
            "partial_last_batch needs a model with one subsampled plate, got "
            f"{[p.name for p in plates]}"
        )
    arrays = {k: v for k, v in kwargs.items() if is_array_tree(v)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    return MinibatchPlan(
        tuple(plates),
        arrays,
        static,
        structure.latent_shapes,
        bool(partial_last_batch),
        structure.deterministic,
        structure.params,
    )


def gradient_estimator(
    model: Callable,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    *,
    batch_size: int | None = None,
    prior_batch_size: int | None = None,
) -> GradientEstimator:
    """The minibatch log density and gradient of ``model(*model_args, **model_kwargs)``.

    Args:
        model: any NumPyro model with at least one subsampled plate,
            ``numpyro.plate(name, N, subsample_size=B)``, whose data it indexes with the
            plate's indices (several plates are fine); or a model with its own subsampling
            plan (:class:`~mtbkd_jax.MTBKDModel`; see the module docstring).
        model_args, model_kwargs: the model's data.
        batch_size: the data plate's minibatch size, for a model with its own plan (default
            64); a model of your own declares its plates' sizes (``batch_size``, if given,
            must equal its first subsampled plate's).
        prior_batch_size: the transfer plate's minibatch size (own plan only; default: in
            proportion to ``batch_size``).

    Returns:
        A :class:`GradientEstimator`: ``estimator(position, minibatch)`` is the gradient of
        ``log p`` with every plate scaled by ``N / |B|``; ``estimator.plates`` the plates.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> from mtbkd_jax.infer import gradient_estimator
        >>> def model(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", x.shape[0], subsample_size=10) as idx:
        ...         numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])
        >>> estimator = gradient_estimator(model, (jnp.ones(100),))
        >>> estimator.plates[0]
        PlateSpec(name='data', size=100, batch_size=10)
        >>> batch = {"data": jnp.arange(10)}
        >>> float(estimator({"mu": jnp.array(0.0)}, batch)["mu"])  # 100 * (1 - 0), prior 0
        100.0
    """
    plan = minibatch_plan(model, tuple(model_args), model_kwargs, batch_size, prior_batch_size)
    return GradientEstimator(model, tuple(model_args), plan.kwargs, plan.plates)
