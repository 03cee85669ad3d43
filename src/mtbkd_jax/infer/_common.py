"""What every inference front-end does before and after running: validate, featurize, package."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import as_input_batch, as_labels, require_finite
from mtbkd_jax._compiled_programs import release_if_crowded
from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.students import Student

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

PyTree = Any  # a JAX pytree: nested dicts, tuples and NamedTuples of arrays


def _features(model: Callable[..., Any], inputs: ArrayLike, name: str) -> jax.Array:
    """Apply the model's frozen feature extractor to the raw inputs (integer token ids are
    fine), or cast the inputs to float32; then check the result is finite.

    A ``jax.Array`` of float32 features is used as it is (no copy); a NumPy array is copied to
    the device once. The finiteness check runs on the device, so no host copy of N x F is made.
    A model with a :class:`Student` has the features checked against its network (a
    ``ValueError`` naming ``name``), abstractly.
    """
    featurize = getattr(model, "featurize", None)
    student = getattr(model, "student", None)
    has_extractor = student is not None and getattr(student, "feature_extractor", None)
    raw = as_input_batch(inputs, name)
    if has_extractor:
        assert featurize is not None, "a model with a feature extractor needs featurize"
        features = featurize(raw)
    else:
        features = jnp.asarray(raw, dtype=jnp.float32)
    if not bool(_all_finite(features)):
        require_finite(np.asarray(features), name if not has_extractor else f"features of {name}")
    if isinstance(student, Student):  # the network takes them (abstractly: no compute)
        student.check_inputs(features, name)
    return features


@jax.jit
def _all_finite(array: jax.Array) -> jax.Array:
    return jnp.isfinite(array).all()


def prepare_data(
    model: Callable[..., Any],
    inputs: ArrayLike,
    labels: ArrayLike | None,
    model_kwargs: Mapping[str, Any] | None,
) -> tuple[jax.Array, jax.Array | None, dict[str, Any]]:
    """Validate and featurize the model's data; returns (features, labels, model_kwargs).

    Labels are required for the canonical model (its ``y`` would otherwise be a discrete latent
    variable); a user's own model decides for itself. A model with a :class:`Student` has its
    inputs checked against the network (shape, number of classes) before anything runs.

    Every ``run_*`` starts here, so a script that fits many models in one process (a user's
    own grid search) has its compiled programs released before the process runs out of
    memory mappings (:mod:`mtbkd_jax._compiled_programs`: past Linux's limit XLA's compiler
    crashes the process); they compile again when next called."""
    release_if_crowded()
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (callable), got {type(model).__name__}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
    features = _features(model, inputs, "inputs")
    kwargs = dict(model_kwargs or {})
    num_classes = label_classes(model, features)
    if kwargs.get("prior_inputs") is not None:
        kwargs["prior_inputs"] = _features(model, kwargs["prior_inputs"], "prior_inputs")
    if labels is None:
        require_labels(model)
    else:
        if isinstance(labels, jax.Array) and not labels.is_fully_addressable:
            labels = _global_labels(labels, features.shape[0], num_classes)
        else:
            labels = jnp.asarray(as_labels(labels, "labels", features.shape[0], num_classes))
    return features, labels, kwargs


def label_classes(model: Callable, features: Any) -> int:
    """The number of classes labels may take: the model's :class:`Student`'s on ``features``
    (checked against its teachers'), else its teachers', else any int32."""
    student = getattr(model, "student", None)
    teachers = getattr(model, "teachers", None)
    if not isinstance(student, Student):
        return teachers.num_classes if teachers is not None else int(np.iinfo(np.int32).max)
    num_classes = student.check_inputs(features, "inputs", probe=False)  # checked: cached
    if teachers is not None and num_classes != teachers.num_classes:
        raise ValueError(
            f"the student returns {num_classes} classes but the teachers have "
            f"{teachers.num_classes}; build the student with num_classes={teachers.num_classes}"
        )
    return num_classes


def _global_labels(labels: jax.Array, num_examples: int, num_classes: int) -> jax.Array:
    """Labels spread over several processes (:mod:`mtbkd_jax.infer.multiprocess`), checked
    as :func:`~mtbkd_jax._checks.as_labels` checks host labels, without gathering them."""
    if labels.ndim != 1 or labels.shape[0] != num_examples:
        raise ValueError(
            f"labels must have shape ({num_examples},) like the inputs, got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    low, high = (int(v) for v in jax.jit(lambda v: (v.min(), v.max()))(labels))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1} (C = {num_classes} classes), got values "
            f"in {low}..{high}"
        )
    return labels.astype(jnp.int32)


def require_labels(model: Callable[..., Any]) -> None:
    """Raise a ``ValueError`` if ``model`` (the canonical model) needs labels: without them
    its ``y`` would be a discrete latent variable."""
    if callable(getattr(model, "observation_kwargs", None)) and hasattr(model, "student"):
        raise ValueError(
            "labels are required for inference; to sample predictions use "
            "Posterior.predict, or numpyro.infer.Predictive for prior predictive checks"
        )


def is_array_tree(value: object) -> bool:
    """Whether a keyword argument is data (a pytree of arrays, passed through ``jit`` as an
    argument) rather than a static setting."""
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(x, jax.Array | np.ndarray) for x in leaves)


def check_init_params(
    init_params: object,
    expected: Mapping[str, tuple[int, ...]],
    argument: str = "init_params",
    derived: tuple[str, ...] = (),
) -> dict[str, jax.Array]:
    """Check one starting point (site -> array) against the model's latent sites.

    Raises a ``TypeError``/``ValueError`` naming ``argument`` for a non-dict, a misspelt or
    missing site, a wrong shape (with a hint when it looks like an unsliced
    ``Posterior.draws``) and non-finite values. Values of the model's ``derived`` sites
    (``numpyro.deterministic``, which a posterior's draws hold too) are dropped: they are
    computed from the latent ones. Returns the point as float32 arrays.
    """
    from mtbkd_jax.infer.posterior import Posterior

    if isinstance(init_params, Posterior):
        raise TypeError(
            f"{argument} must be a dict of site -> array, got a Posterior; pass one of its "
            "draws, e.g. posterior.point() (chain 0, draw 0)"
        )
    if not isinstance(init_params, dict):
        raise TypeError(
            f"{argument} must be a dict of site -> array, got {type(init_params).__name__}"
        )
    unknown = sorted(set(init_params) - set(expected) - set(derived))
    missing = sorted(set(expected) - set(init_params))
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"sites the model does not have: {unknown}")
        if missing:
            parts.append(f"no value for: {missing}")
        raise ValueError(
            f"{argument} does not match the model's latent sites ({'; '.join(parts)}); "
            f"the model's sites are {sorted(expected)}"
        )
    out = {}
    for name, shape in expected.items():
        value = np.asarray(init_params[name], dtype=np.float64)
        if value.shape != tuple(shape):
            hint = ""
            if value.ndim == len(shape) + 2 and value.shape[2:] == tuple(shape):
                hint = (
                    " (this looks like Posterior.draws, shaped (chains, draws, ...): pass one "
                    "draw, e.g. posterior.point())"
                )
            raise ValueError(
                f"{argument}[{name!r}] must have shape {tuple(shape)}, got {value.shape}{hint}"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"{argument}[{name!r}] holds NaN or infinite values")
        out[name] = jnp.asarray(value, dtype=jnp.float32)
    return out


def nonfinite_sites(
    model: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    point: Mapping[str, ArrayLike],
) -> list[str]:
    """The sample sites (factors included) whose log density is NaN or infinite when the
    model's latent sites take the constrained values ``point``: what to tell a user whose
    sampler cannot start, instead of blaming the step size. (Called on failure paths only.)"""
    values = _per_site(
        model, args, kwargs, point, lambda site: jnp.sum(site["fn"].log_prob(site["value"]))
    )
    return [name for name, value in values.items() if not np.isfinite(float(value))]


def unconstrained_start(
    model: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    point: Mapping[str, ArrayLike],
    argument: str = "init_params",
) -> dict[str, jax.Array]:
    """A starting point given in the model's own (constrained) space, checked against each
    site's support, in the unconstrained space where NumPyro's samplers move."""
    from numpyro.infer.util import unconstrain_fn

    check_in_support(model, args, kwargs, point, argument)
    return unconstrain_fn(model, args, dict(kwargs), dict(point))


def check_in_support(
    model: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    point: Mapping[str, ArrayLike],
    argument: str = "init_params",
) -> None:
    """Raise a ``ValueError`` naming the first site of ``point`` outside its support."""
    inside_support = _per_site(
        model, args, kwargs, point, lambda site: jnp.all(site["fn"].support(site["value"]))
    )
    for name, inside in inside_support.items():
        if name in point and not bool(inside):
            raise ValueError(
                f"{argument}[{name!r}] lies outside the support of the model's site {name!r}: "
                "a starting point is given in the model's own space (e.g. a positive scale "
                "as a positive number, as posterior.point() gives it)"
            )


def _per_site(
    model: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    point: Mapping[str, ArrayLike],
    of_site: Callable[[dict[str, Any]], jax.Array],
) -> dict[str, jax.Array]:
    """``of_site(site)`` for every sample site of the model run (jitted) with its latent sites
    at the constrained values ``point``."""
    from numpyro import handlers

    arrays = {k: v for k, v in kwargs.items() if is_array_tree(v)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}

    def run(point: Mapping[str, ArrayLike], args: tuple, arrays: dict) -> dict[str, jax.Array]:
        conditioned = handlers.substitute(handlers.seed(model, 0), data=point)
        trace = handlers.trace(conditioned).get_trace(*args, **arrays, **static)
        return {name: of_site(site) for name, site in trace.items() if site["type"] == "sample"}

    return jax.jit(run)(dict(point), args, arrays)


def make_posterior(
    model: Callable[..., Any],
    samples: Mapping[str, ArrayLike],
    *,
    method: str,
    sample_stats: Mapping[str, ArrayLike] | None = None,
    losses: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    features: ArrayLike | None = None,
    settings: Mapping[str, Any] | None = None,
    logits_fn: Callable[..., Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    fitted_params: Mapping[str, Any] | None = None,
) -> Posterior:
    """Package draws (site -> (chains, draws, ...)) with the model and its data (labels
    spread over several processes gathered; inputs spread over them left out).

    ``model_kwargs`` are the user's full-batch keyword arguments (without the samplers' own:
    subsample sizes, constants), kept for the pointwise log-likelihood; ``fitted_params`` the
    model's params as SVI fitted them."""
    if isinstance(labels, jax.Array) and not labels.is_fully_addressable:
        from jax.experimental import multihost_utils  # several processes: gather (a collective)

        labels = np.asarray(multihost_utils.process_allgather(labels, tiled=True))
    if isinstance(features, jax.Array) and not features.is_fully_addressable:
        # inputs spread over processes stay out of the posterior: its log-likelihood and
        # predictions would be collectives, which a file write on process 0 cannot be
        features = None
    model_settings = model.settings() if hasattr(model, "settings") else {}
    constant = {}
    weights = getattr(model, "teacher_weights", None)
    if weights is not None:
        constant["teacher_weights"] = np.asarray(weights, dtype=np.float32)
    return Posterior(
        draws={k: np.asarray(v, dtype=np.float32) for k, v in samples.items()},
        sample_stats={k: np.asarray(v) for k, v in (sample_stats or {}).items()},
        method=method,
        settings={**model_settings, **(settings or {})},
        observed_data={} if labels is None else {"y": np.asarray(labels)},
        constant_data=constant,
        losses=None if losses is None else np.asarray(losses),
        logits_fn=logits_fn or getattr(model, "logits", None),
        featurize=getattr(model, "featurize", None),
        model=model,
        model_args=() if features is None else (features, labels),
        model_kwargs=dict(model_kwargs or {}),
        fitted_params=dict(fitted_params or {}),
    )
