"""Synthetic classification problems with known class probabilities and teachers of set expertise.

The generators follow the BKD paper's synthetic experiments (linear and non-linear decision
boundaries, any number of classes, train:validation:test = 7:3:1); its exact generators are not
public, so these are designed so that the true ``p(y | x)`` is known and interval coverage can be
measured (METHOD §6-7).

**Inputs.** ``x ~ N(0, I)`` in ``num_features`` dimensions (default 2, so figures can show the
plane). Only the first two features (the *plane*) decide the teachers' regions; extra features
enter the class probabilities with smaller weights.

**Class probabilities.** ``p(y | x) = softmax(s * h(x))`` with a seed-determined score ``h`` and a
scale ``s`` chosen by bisection so that the Bayes accuracy ``E[max_c p(c | x)]`` (the expected
accuracy of ``argmax p(y | x)``, the best any classifier can do) equals ``bayes_accuracy``
(default 0.85) on a fixed Monte Carlo sample of 40,000 inputs:

* ``"linear"``: ``h(x) = W x + b``. Row ``k`` of ``W`` has, in the plane, the direction at angle
  ``phi + 2 pi k / C`` (``phi`` random, angles jittered by up to 15% of the spacing, lengths
  in [0.8, 1.2]), so every class owns a wedge of the plane; extra features get weights
  ``N(0, 0.5^2)``; ``b ~ N(0, 0.3^2)``. Decision boundaries are straight lines.
* ``"nonlinear"``: two centres per class, ``2C`` centres alternating between classes around a
  ring (radii ``1.2 U(0.8, 1.2)``, angles jittered; centre i belongs to class ``i mod C``, so a
  class's two centres face each other across the origin; for two classes this is the XOR
  pattern); extra coordinates ``N(0, 0.5^2)``. ``h_k(x) = -min_j ||x - c_kj||`` (distance to the
  class's nearest centre). Boundaries are curved (hyperbola branches), and class regions are
  unions of two opposite wedges, which no linear classifier can separate.

Labels are drawn from ``p(y | x)`` by inverse-CDF sampling of one uniform per example.

**Teachers** (``num_teachers`` = M >= 2, default 3). The plane is cut into M equal sectors of
angle ``2 pi / M`` around the origin, starting at a seed-determined angle ``psi``: teacher m's
region of expertise is the sector of polar angles ``psi + 2 pi m / M <= angle(x_0, x_1) <
psi + 2 pi (m + 1) / M`` (for M = 2, a half-plane; since x is isotropic, each region holds 1/M of
the inputs; ``SyntheticData.expert_*`` holds the index of the expert of each example). With
``z = s h(x)`` the true logits, ``sigma`` the standard deviation of the centred true logits and
``eps_m(x)`` a seed-determined random field on the inputs with unit variance (random Fourier
features, length-scale 0.25: it changes sign many times within a region), teacher m outputs

* inside its region: ``z / 0.9 + 0.15 sigma eps_m(x)`` — close to the truth, mildly sharpened;
* outside its region: ``0.15 (z + 4 sigma eps_m(x))`` — mostly noise, and flat.

So each teacher is near-Bayes and confident in its region, and wrong more often and less sure
elsewhere: no teacher is best everywhere, and the expert of an example has the lowest entropy
there more often than any other teacher, which entropy-based per-example weighting can exploit.
Teacher outputs are deterministic functions of x and the seed, never of y.

Example:
    >>> from mtbkd_jax.datasets.synthetic import make_synthetic
    >>> data = make_synthetic("nonlinear", 5, num_examples=1100, seed=0)
    >>> data.x_train.shape, data.x_validation.shape, data.x_test.shape
    ((700, 2), (300, 2), (100, 2))
    >>> data.teachers_test.num_teachers, data.teacher_names
    (3, ('teacher_0', 'teacher_1', 'teacher_2'))
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from mtbkd_jax.teachers import TeacherBank

__all__ = ["SyntheticData", "SyntheticGenerator", "make_synthetic", "SYNTHETIC_KINDS"]

SYNTHETIC_KINDS = ("linear", "nonlinear")

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

    def _inputs(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (N, {self.num_features}), got {x.shape}")
        return x

    def scores(self, x) -> np.ndarray:
        """The unscaled scores ``h(x)``, shape (N, C)."""
        return _scores(self.kind, self.weights, self.bias, self.centres, self._inputs(x))

    def true_logits(self, x) -> np.ndarray:
        """``s * h(x)``, shape (N, C)."""
        return self.logit_scale * self.scores(x)

    def true_probs(self, x) -> np.ndarray:
        """The exact class probabilities ``p(y | x)``, shape (N, C)."""
        return _softmax(self.true_logits(x))

    def expert(self, x) -> np.ndarray:
        """Index of the teacher whose sector holds each input, shape (N,)."""
        x = self._inputs(x)
        angle = np.mod(np.arctan2(x[:, 1], x[:, 0]) - self.region_offset, 2 * np.pi)
        sector = np.floor(angle / (2 * np.pi / self.num_teachers)).astype(np.int64)
        return np.minimum(sector, self.num_teachers - 1)

    def in_region(self, x) -> np.ndarray:
        """Boolean mask (M, N): whether each input lies in each teacher's region."""
        expert = self.expert(x)
        return expert[None, :] == np.arange(self.num_teachers)[:, None]

    def noise(self, x) -> np.ndarray:
        """The teachers' unit-variance random fields ``eps_m(x)``, shape (M, N, C)."""
        x = self._inputs(x)
        fields = []
        for frequencies, phases, amplitudes in zip(
            self.noise_frequencies, self.noise_phases, self.noise_amplitudes, strict=True
        ):
            features = np.cos(x @ frequencies.T + phases)
            fields.append(np.sqrt(2.0 / len(phases)) * (features @ amplitudes))
        return np.stack(fields)

    def teacher_logits(self, x) -> np.ndarray:
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

    def teachers(self, x) -> TeacherBank:
        """The teachers on ``x`` as a :class:`TeacherBank`."""
        return TeacherBank.from_logits(self.teacher_logits(x), names=list(self.teacher_names))


def _scores(kind, weights, bias, centres, x: np.ndarray) -> np.ndarray:
    if kind == "linear":
        return x @ weights.T + bias
    # (N, C, K): distance from each input to each class's centres
    distances = np.linalg.norm(x[:, None, None, :] - centres[None], axis=-1)
    return -distances.min(-1)


@dataclass(frozen=True, eq=False)
class SyntheticData:
    """A synthetic problem: three splits, their true class probabilities and the teachers.

    Attributes:
        x_train, y_train, x_validation, y_validation, x_test, y_test: inputs (N, D) float32 and
            labels (N,) int32, split 7:3:1.
        true_probs_train, true_probs_validation, true_probs_test: ``p(y | x)`` (N, C) float64,
            the distribution each label was drawn from (computed from the float32 inputs).
        teachers_train, teachers_validation, teachers_test: the teachers on each split.
        expert_train, expert_validation, expert_test: index of the teacher whose region of
            expertise holds each example (N,) int64.
        teacher_names: the teachers' names.
        kind, num_classes: as given.
        generator: the underlying functions, to evaluate on other inputs (e.g. a grid).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    true_probs_train: np.ndarray
    true_probs_validation: np.ndarray
    true_probs_test: np.ndarray
    teachers_train: TeacherBank
    teachers_validation: TeacherBank
    teachers_test: TeacherBank
    expert_train: np.ndarray
    expert_validation: np.ndarray
    expert_test: np.ndarray
    teacher_names: tuple[str, ...]
    kind: str
    num_classes: int
    generator: SyntheticGenerator

    @property
    def bayes_accuracy(self) -> float:
        """Accuracy of ``argmax true_probs_test`` against ``y_test`` (the empirical Bayes rate)."""
        return float((self.true_probs_test.argmax(-1) == self.y_test).mean())

    def __repr__(self) -> str:
        return (
            f"SyntheticData(kind={self.kind!r}, C={self.num_classes}, "
            f"D={self.x_train.shape[1]}, splits={len(self.x_train)}/{len(self.x_validation)}/"
            f"{len(self.x_test)}, teachers={list(self.teacher_names)})"
        )


def _as_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        integer = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if integer < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {integer}")
    return int(integer)


def _split_sizes(num_examples: int) -> tuple[int, int, int]:
    """Train, validation and test sizes in the ratio 7:3:1 (rounded; they sum to N)."""
    num_test = max(1, int(np.floor(num_examples / 11 + 0.5)))
    num_validation = max(3, int(np.floor(3 * num_examples / 11 + 0.5)))
    return num_examples - num_validation - num_test, num_validation, num_test


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


def _build_generator(
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


def make_synthetic(
    kind: str,
    num_classes: int,
    *,
    num_examples: int = 1100,
    num_features: int = 2,
    num_teachers: int = 3,
    bayes_accuracy: float = 0.85,
    seed: int = 0,
) -> SyntheticData:
    """Draw a synthetic problem with known ``p(y | x)`` and teachers of set expertise.

    See the module docstring for the generators and the teachers' regions.

    Args:
        kind: ``"linear"`` (straight decision boundaries) or ``"nonlinear"`` (curved
            boundaries, classes made of two opposite wedges).
        num_classes: C >= 2.
        num_examples: N >= 11, split train:validation:test = 7:3:1 (1100 gives 700/300/100).
        num_features: D >= 2 input dimensions; the teachers' sectors live in features 0 and 1.
        num_teachers: M >= 2 teachers, each expert on one sector of angle ``2 pi / M``.
        bayes_accuracy: the population accuracy of the Bayes classifier, strictly between
            1/C and 1 (default 0.85); the logit scale is calibrated to it.
        seed: seeds everything (generator parameters, inputs, labels, teachers). The
            generator's parameters do not depend on ``num_examples``.

    Returns:
        :class:`SyntheticData`.

    Raises:
        ValueError: naming the argument, when one is out of range or of the wrong type.
    """
    if not isinstance(kind, str) or kind not in SYNTHETIC_KINDS:
        raise ValueError(f"kind must be one of {SYNTHETIC_KINDS}, got {kind!r}")
    num_classes = _as_int(num_classes, "num_classes", 2)
    num_examples = _as_int(num_examples, "num_examples", 11)
    num_features = _as_int(num_features, "num_features", 2)
    num_teachers = _as_int(num_teachers, "num_teachers", 2)
    seed = _as_int(seed, "seed", 0)
    try:
        target = float(bayes_accuracy)
    except (TypeError, ValueError):
        raise ValueError(f"bayes_accuracy must be a number, got {bayes_accuracy!r}") from None
    if isinstance(bayes_accuracy, bool) or not (1.0 / num_classes < target < 1.0):
        raise ValueError(
            f"bayes_accuracy must lie strictly between 1/num_classes = {1.0 / num_classes:.3g} "
            f"and 1, got {bayes_accuracy!r}"
        )

    params_seq, calibration_seq, data_seq = np.random.SeedSequence(seed).spawn(3)
    generator = _build_generator(
        kind,
        num_classes,
        num_features,
        num_teachers,
        target,
        np.random.default_rng(params_seq),
        np.random.default_rng(calibration_seq),
    )
    data_rng = np.random.default_rng(data_seq)
    x = data_rng.normal(size=(num_examples, num_features)).astype(np.float32)
    uniforms = data_rng.uniform(size=num_examples)
    probs = generator.true_probs(x)
    cumulative = np.cumsum(probs, axis=-1)
    y = np.minimum((cumulative < uniforms[:, None] * cumulative[:, -1:]).sum(-1), num_classes - 1)
    y = y.astype(np.int32)
    teacher_logits = generator.teacher_logits(x)
    expert = generator.expert(x)

    num_train, num_validation, _ = _split_sizes(num_examples)
    bounds = [num_train, num_train + num_validation]
    parts = {
        name: np.split(np.arange(num_examples), bounds)[i]
        for i, name in enumerate(("train", "validation", "test"))
    }
    names = list(generator.teacher_names)
    fields = {}
    for name, index in parts.items():
        fields[f"x_{name}"] = x[index]
        fields[f"y_{name}"] = y[index]
        fields[f"true_probs_{name}"] = probs[index]
        fields[f"teachers_{name}"] = TeacherBank.from_logits(teacher_logits[:, index], names=names)
        fields[f"expert_{name}"] = expert[index]
    return SyntheticData(
        **fields,
        teacher_names=generator.teacher_names,
        kind=kind,
        num_classes=num_classes,
        generator=generator,
    )
