"""Checks of a trust before a model uses it: values (:class:`~mtbkd_jax.trust.TrustValues`)
and draws (:class:`~mtbkd_jax.trust.TrustPosterior`) that would make the prior NaN or invert a
teacher, and values whose learned weight link or hyperprior a model would silently ignore."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import _FLOAT32_RANGE
from mtbkd_jax.trust.sites import TrustHyperprior, TrustValues

__all__ = ["check_draws", "check_values", "check_values_use"]


def _shown(array: np.ndarray) -> object:
    return array.tolist() if array.size <= 16 else f"values {array.min():.3g} to {array.max():.3g}"


def _require_usable(fields: Mapping[str, object], what: str) -> None:
    """Every field finite, ``temperature`` > 0 (it and its inverse normal float32 numbers, as
    :func:`~mtbkd_jax._checks.require_positive`) and ``concentration`` >= 0: a zero or
    negative ``tau`` would make the prior NaN or invert the teacher without a word. ``what``
    prefixes the field's name in the message."""
    for name, value in fields.items():
        array = np.asarray(value, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{what}{name} must be finite, got {_shown(array)}")
    tau = np.asarray(fields["temperature"], dtype=np.float64)
    low, high = _FLOAT32_RANGE
    if ((tau < low) | (tau > high)).any():
        raise ValueError(
            f"{what}temperature must be > 0, between {low:.3g} and {high:.3g}, got {_shown(tau)}"
        )
    lam = np.asarray(fields["concentration"], dtype=np.float64)
    if (lam < 0).any():
        raise ValueError(f"{what}concentration must be >= 0, got {_shown(lam)}")


def check_values(trust: TrustValues, num_teachers: int, num_classes: int) -> TrustValues:
    """``trust`` as float32 arrays, once usable for these teachers: finite, ``tau > 0`` (M,),
    ``lambda >= 0`` (M, 1) or (M, C), the weight link's bias (M,) and slope (), and the
    temperature slope (M,) or ``None``; otherwise a ``ValueError`` naming the field (plain
    lists and floats are accepted and converted)."""
    m = num_teachers
    shapes: dict[str, list[tuple[int, ...]]] = {
        "temperature": [(m,)],
        "concentration": [(m, 1), (m, num_classes)],
        "weight_bias": [(m,)],
        "weight_slope": [()],
        "temperature_slope": [(m,)],
    }
    fields = {name: value for name, value in trust._asdict().items() if value is not None}
    _require_usable(fields, "trust.")
    for name, value in fields.items():
        shape = np.shape(value)
        if shape not in shapes[name]:
            wanted = " or ".join(str(s) for s in shapes[name])
            raise ValueError(f"trust.{name} must have shape {wanted}, got {shape}")
    arrays = {name: jnp.asarray(value, jnp.float32) for name, value in fields.items()}
    return TrustValues(**arrays)


def check_draws(draws: Mapping[str, np.ndarray], num_teachers: int) -> None:
    """Raise a ``ValueError`` naming the site unless every draw is usable, as
    :func:`check_values` asks of one value, and of one shape ``(S, ...)`` for the
    ``num_teachers`` teachers: ``temperature`` (S, M), ``concentration`` (S, M, K), and where
    present ``weight_bias`` (S, M), ``weight_slope`` (S,), ``temperature_slope`` (S, M)."""
    for name in ("temperature", "concentration"):
        if name not in draws:
            raise ValueError(
                f"a TrustPosterior's draws need the site {name!r}, got {sorted(draws)}"
            )
    m, s = num_teachers, np.shape(draws["temperature"])[0] if np.ndim(draws["temperature"]) else 0
    groups = np.shape(draws["concentration"])[-1] if np.ndim(draws["concentration"]) == 3 else 1
    shapes = {
        "temperature": (s, m),
        "concentration": (s, m, groups),
        "weight_bias": (s, m),
        "weight_slope": (s,),
        "temperature_slope": (s, m),
    }
    for name, value in draws.items():
        if name not in shapes:
            raise ValueError(f"a TrustPosterior's draws hold no site {name!r}: {sorted(shapes)}")
        if np.shape(value) != shapes[name] or s == 0:
            raise ValueError(
                f"a TrustPosterior's draws of {name} must have shape {shapes[name]} (S >= 1 "
                f"draws, the {m} teachers of teacher_names), got {np.shape(value)}"
            )
    _require_usable(draws, "the trust draws of ")


def check_values_use(
    trust: TrustValues, weight_rule: str, hyperprior: TrustHyperprior | None
) -> None:
    """Refuse what ``MTBKDModel(trust=TrustValues)`` would ignore without a word: a learned
    weight link (non-zero ``weight_bias`` or ``weight_slope``) under a fixed ``weight_rule``,
    and a ``trust_hyperprior`` (of which only the pooling is used) whose weight rule is not the
    model's or whose ``calibration="none"`` contradicts temperatures other than 1."""
    link = np.abs(np.asarray(trust.weight_bias)).max(initial=0.0) + abs(float(trust.weight_slope))
    if weight_rule != "learned" and link > 0:
        raise ValueError(
            f"trust holds a learned weight link (weight_bias {np.asarray(trust.weight_bias)}, "
            f"weight_slope {float(trust.weight_slope)}), which weight_rule={weight_rule!r} "
            "ignores: pass weight_rule='learned' (for a TrustPosterior's point(), also "
            "trust_hyperprior=posterior.hyperprior), or zero the link"
        )
    if hyperprior is None:
        return
    if hyperprior.weight_rule != weight_rule:
        raise ValueError(
            f"trust_hyperprior.weight_rule is {hyperprior.weight_rule!r} but weight_rule is "
            f"{weight_rule!r}: with trust=TrustValues the model uses weight_rule and only the "
            "hyperprior's pooling; pass the same rule to both"
        )
    tau = np.asarray(trust.temperature, dtype=np.float64)
    if hyperprior.calibration == "none" and not np.all(tau == 1.0):
        raise ValueError(
            "trust_hyperprior.calibration is 'none' (every temperature 1), but trust.temperature "
            f"is {tau.tolist()}: pass temperatures of 1, or a hyperprior with calibration"
        )
    slope = np.zeros(1) if trust.temperature_slope is None else np.asarray(trust.temperature_slope)
    if hyperprior.calibration != "confidence" and not np.all(slope == 0.0):
        raise ValueError(
            f"trust_hyperprior.calibration is {hyperprior.calibration!r} (no temperature "
            f"slope), but trust.temperature_slope is {slope.tolist()}: pass zeros (or None), "
            "or a hyperprior with calibration='confidence'"
        )
