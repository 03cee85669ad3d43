"""What every inference front-end does before and after running: validate, featurize, package."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import as_labels, require_finite
from mtbkd_jax.infer.posterior import Posterior


def _features(model, inputs, name: str) -> jax.Array:
    """Apply the model's frozen feature extractor to the raw inputs (integer token ids are
    fine), or cast the inputs to float32; then check the result is finite.

    A ``jax.Array`` of float32 features is used as it is (no copy); a NumPy array is copied to
    the device once. The finiteness check runs on the device, so no host copy of N x F is made.
    """
    featurize = getattr(model, "featurize", None)
    student = getattr(model, "student", None)
    has_extractor = student is not None and getattr(student, "feature_extractor", None)
    raw = inputs
    if not isinstance(inputs, jax.Array):
        try:
            raw = np.asarray(inputs)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be an array, got {type(inputs).__name__}") from error
    if raw.ndim < 2 or raw.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {raw.dtype}")
    if has_extractor:
        features = featurize(raw)
    else:
        features = jnp.asarray(raw, dtype=jnp.float32)
    if not bool(_all_finite(features)):
        require_finite(np.asarray(features), name if not has_extractor else f"features of {name}")
    return features


@jax.jit
def _all_finite(array: jax.Array) -> jax.Array:
    return jnp.isfinite(array).all()


def prepare_data(model, inputs, labels, model_kwargs):
    """Validate and featurize the model's data; returns (features, labels, model_kwargs).

    Labels are required for the canonical model (its ``y`` would otherwise be a discrete latent
    variable); a user's own model decides for itself."""
    from mtbkd_jax.model import MTBKDModel

    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (callable), got {type(model).__name__}")
    features = _features(model, inputs, "inputs")
    kwargs = dict(model_kwargs or {})
    if kwargs.get("prior_inputs") is not None:
        kwargs["prior_inputs"] = _features(model, kwargs["prior_inputs"], "prior_inputs")
    if labels is None:
        if isinstance(model, MTBKDModel):
            raise ValueError(
                "labels are required for inference; to sample predictions use "
                "Posterior.predict, or numpyro.infer.Predictive for prior predictive checks"
            )
    else:
        teachers = getattr(model, "teachers", None)
        num_classes = (
            teachers.num_classes if teachers is not None else _output_classes(model, features)
        )
        labels = jnp.asarray(as_labels(labels, "labels", features.shape[0], num_classes))
    return features, labels, kwargs


def _output_classes(model, features) -> int:
    student = getattr(model, "student", None)
    if student is None:
        return np.iinfo(np.int32).max
    weights = student.init_weights(jax.random.key(0), features[:1])
    return int(student.apply(weights, features[:1]).shape[-1])


def make_posterior(
    model,
    samples,
    *,
    method,
    sample_stats=None,
    losses=None,
    labels=None,
    features=None,
    settings=None,
    logits_fn=None,
) -> Posterior:
    """Package draws (site -> (chains, draws, ...)) with the model's metadata."""
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
        inputs=None if features is None else np.asarray(features),
    )
