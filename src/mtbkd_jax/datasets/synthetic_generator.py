"""The seed-determined functions behind a synthetic problem: true class probabilities and
teachers of set expertise (the formulas are in :mod:`mtbkd_jax.datasets.synthetic`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mtbkd_jax.teachers import TeacherBank

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["SyntheticGenerator", "build_generator"]

_CALIBRATION_SIZE = 40_000
_NUM_FOURIER = 64
_NOISE_LENGTHSCALE = 0.25
_EXPERT_TEMPERATURE = 0.9
_EXPERT_NOISE = 0.15
_OUTSIDE_SCALE = 0.15
_OUTSIDE_NOISE = 4.0
_EXTRA_FEATURE_SCALE = 0.5


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    expd = np.exp(shifted)
    return expd / expd.sum(-1, keepdims=True)


@dataclass(frozen=True, eq=False)
class SyntheticGenerator:
    """The seed-determined functions behind a synthetic problem, usable on any inputs.

    Evaluate the truth and the teachers on a grid of the plane for figures, or on fresh inputs.
    Inputs are arrays of shape (N, num_features), computed in float64.

    Attributes:
        kind, num_classes, num_features, num_teachers: as given to :func:`make_synthetic`.
        logit_scale: the calibrated scale ``s`` of the true logits ``s * h(x)``.
        logit_spread: ``sigma``, the standard deviation of the centred true logits.
        population_bayes_accuracy: ``E[max_c p(c | x)]`` on the calibration sample.
        region_offset: ``psi``, the angle at which teacher 0's sector starts.
        weights, bias: ``W`` (C, D) and ``b`` (C,) for ``"linear"`` (else None).
        centres: (C, 2, D) class centres for ``"nonlinear"`` (else None).
    """

    kind: str
    num_classes: int
    num_features: int
    num_teachers: int
    logit_scale: float
    logit_spread: float
    population_bayes_accuracy: float
    region_offset: float
    weights: np.ndarray | None
    bias: np.ndarray | None
    centres: np.ndarray | None
    noise_frequencies: np.ndarray  # (M, R, D)
    noise_phases: np.ndarray  # (M, R)
    noise_amplitudes: np.ndarray  # (M, R, C)

    def _inputs(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (N, {self.num_features}), got {x.shape}")
        return x

    def scores(self, x: ArrayLike) -> np.ndarray:
        """The unscaled scores ``h(x)``, shape (N, C)."""
        return _scores(self.kind, self.weights, self.bias, self.centres, self._inputs(x))

    def true_logits(self, x: ArrayLike) -> np.ndarray:
        """``s * h(x)``, shape (N, C)."""
        return self.logit_scale * self.scores(x)

    def true_probs(self, x: ArrayLike) -> np.ndarray:
        """The exact class probabilities ``p(y | x)``, shape (N, C)."""
        return _softmax(self.true_logits(x))

    def expert(self, x: ArrayLike) -> np.ndarray:
        """Index of the teacher whose sector holds each input, shape (N,)."""
        x = self._inputs(x)
        angle = np.mod(np.arctan2(x[:, 1], x[:, 0]) - self.region_offset, 2 * np.pi)
        sector = np.floor(angle / (2 * np.pi / self.num_teachers)).astype(np.int64)
        return np.minimum(sector, self.num_teachers - 1)

    def in_region(self, x: ArrayLike) -> np.ndarray:
        """Boolean mask (M, N): whether each input lies in each teacher's region."""
        expert = self.expert(x)
        return expert[None, :] == np.arange(self.num_teachers)[:, None]

    def noise(self, x: ArrayLike) -> np.ndarray:
        """The teachers' unit-variance random fields ``eps_m(x)``, shape (M, N, C)."""
        x = self._inputs(x)
        fields = []
        for frequencies, phases, amplitudes in zip(
            self.noise_frequencies, self.noise_phases, self.noise_amplitudes, strict=True
        ):
            features = np.cos(x @ frequencies.T + phases)
            fields.append(np.sqrt(2.0 / len(phases)) * (features @ amplitudes))
        return np.stack(fields)

    def teacher_logits(self, x: ArrayLike) -> np.ndarray:
        """Every teacher's logits (M, N, C) (see the module docstring for the formula)."""
        x = self._inputs(x)
        z = self.true_logits(x)[None]
        eps = self.noise(x)
        inside = z / _EXPERT_TEMPERATURE + _EXPERT_NOISE * self.logit_spread * eps
        outside = _OUTSIDE_SCALE * (z + _OUTSIDE_NOISE * self.logit_spread * eps)
        return np.where(self.in_region(x)[..., None], inside, outside)

    @property
    def teacher_names(self) -> tuple[str, ...]:
        return tuple(f"teacher_{m}" for m in range(self.num_teachers))

    def teachers(self, x: ArrayLike) -> TeacherBank:
        """The teachers on ``x`` as a :class:`TeacherBank`."""
        return TeacherBank.from_logits(self.teacher_logits(x), names=list(self.teacher_names))


def _scores(kind: str, weights: Any, bias: Any, centres: Any, x: np.ndarray) -> np.ndarray:
    # arrays for ``kind`` (``weights``, ``bias`` for "linear", else ``centres``), the others None
    if kind == "linear":
        return x @ weights.T + bias
    # (N, C, K): distance from each input to each class's centres
    distances = np.linalg.norm(x[:, None, None, :] - centres[None], axis=-1)
    return -distances.min(-1)


def _calibrate_scale(scores: np.ndarray, target: float) -> tuple[float, float]:
    """Bisect on log s so that ``mean max softmax(s * scores)`` equals ``target``."""

    # max_c softmax(s h)_c = 1 / sum_c exp(s (h_c - max h)); classes first for fast sums
    gaps = np.ascontiguousarray((scores - scores.max(-1, keepdims=True)).T)

    def bayes(log_scale: float) -> float:
        return float((1.0 / np.exp(np.exp(log_scale) * gaps).sum(0)).mean())

    low, high = -10.0, 10.0
    if not bayes(low) < target < bayes(high):
        raise ValueError(
            f"bayes_accuracy={target} cannot be reached by scaling this generator's logits "
            f"(range {bayes(low):.3f}..{bayes(high):.3f})"
        )
    for _ in range(60):
        middle = 0.5 * (low + high)
        if bayes(middle) < target:
            low = middle
        else:
            high = middle
    log_scale = 0.5 * (low + high)
    return float(np.exp(log_scale)), bayes(log_scale)


def build_generator(
    kind: str,
    num_classes: int,
    num_features: int,
    num_teachers: int,
    bayes_accuracy: float,
    rng: np.random.Generator,
    calibration_rng: np.random.Generator,
) -> SyntheticGenerator:
    c, d = num_classes, num_features
    weights = bias = centres = None
    if kind == "linear":
        phi = rng.uniform(0, 2 * np.pi)
        spacing = 2 * np.pi / c
        angles = phi + spacing * (np.arange(c) + rng.uniform(-0.15, 0.15, c))
        lengths = rng.uniform(0.8, 1.2, c)
        weights = np.zeros((c, d))
        weights[:, 0] = lengths * np.cos(angles)
        weights[:, 1] = lengths * np.sin(angles)
        weights[:, 2:] = _EXTRA_FEATURE_SCALE * rng.normal(size=(c, d - 2))
        bias = 0.3 * rng.normal(size=c)
    else:
        phi = rng.uniform(0, 2 * np.pi)
        spacing = 2 * np.pi / (2 * c)
        index = np.arange(2 * c)
        angles = phi + spacing * (index + rng.uniform(-0.15, 0.15, 2 * c))
        radii = 1.2 * rng.uniform(0.8, 1.2, 2 * c)
        flat = np.zeros((2 * c, d))
        flat[:, 0] = radii * np.cos(angles)
        flat[:, 1] = radii * np.sin(angles)
        flat[:, 2:] = _EXTRA_FEATURE_SCALE * rng.normal(size=(2 * c, d - 2))
        # centre i belongs to class i mod C: rows (class, which centre)
        centres = flat.reshape(2, c, d).transpose(1, 0, 2).copy()
    region_offset = float(rng.uniform(0, 2 * np.pi))
    noise_frequencies = rng.normal(size=(num_teachers, _NUM_FOURIER, d)) / _NOISE_LENGTHSCALE
    noise_phases = rng.uniform(0, 2 * np.pi, size=(num_teachers, _NUM_FOURIER))
    noise_amplitudes = rng.normal(size=(num_teachers, _NUM_FOURIER, c))

    calibration = calibration_rng.normal(size=(_CALIBRATION_SIZE, d))
    scores = _scores(kind, weights, bias, centres, calibration)
    scale, achieved = _calibrate_scale(scores, bayes_accuracy)
    logits = scale * scores
    spread = float((logits - logits.mean(-1, keepdims=True)).std())
    return SyntheticGenerator(
        kind=kind,
        num_classes=c,
        num_features=d,
        num_teachers=num_teachers,
        logit_scale=scale,
        logit_spread=spread,
        population_bayes_accuracy=achieved,
        region_offset=region_offset,
        weights=weights,
        bias=bias,
        centres=centres,
        noise_frequencies=noise_frequencies,
        noise_phases=noise_phases,
        noise_amplitudes=noise_amplitudes,
    )
