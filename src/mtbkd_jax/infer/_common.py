"""What every inference front-end does before and after running: validate, featurize, package."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import as_labels, require_finite
from mtbkd_jax.infer.posterior import Posterior


def prepare_data(model, inputs, labels, model_kwargs):
    """Validate and featurize the model's data; returns (features, labels, model_kwargs)."""
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (callable), got {type(model).__name__}")
    try:
        raw = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"inputs must be a numeric array, got {type(inputs).__name__}") from error
    if raw.ndim < 2 or raw.shape[0] == 0:
        raise ValueError(f"inputs must have shape (N, ...) with N >= 1, got {raw.shape}")
    require_finite(raw, "inputs")
    featurize = getattr(model, "featurize", None)
    features = featurize(raw) if featurize is not None else jnp.asarray(raw)
    kwargs = dict(model_kwargs or {})
    if kwargs.get("prior_inputs") is not None:
        prior_inputs = np.asarray(kwargs["prior_inputs"], dtype=np.float32)
        require_finite(prior_inputs, "prior_inputs")
        kwargs["prior_inputs"] = featurize(prior_inputs) if featurize else jnp.asarray(prior_inputs)
    if labels is not None:
        teachers = getattr(model, "teachers", None)
        num_classes = (
            teachers.num_classes if teachers is not None else _output_classes(model, features)
        )
        labels = jnp.asarray(as_labels(labels, "labels", raw.shape[0], num_classes))
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
