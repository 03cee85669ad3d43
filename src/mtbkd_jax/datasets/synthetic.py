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
elsewhere: no teacher is best everywhere, and with the experiments' 2 or 5 classes and 3
teachers the expert of an example has the lowest entropy there more often than any other
teacher, which entropy-based per-example weighting can exploit. (With more classes or teachers
the true logits spread wider, the outside logits are no longer flat, and that can fail: with
10 classes and 3 teachers, over seeds 0-2, the expert was most often lowest in entropy in only
4 (nonlinear) and 5 (linear) of the 9 regions.)
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
from typing import Any

import numpy as np

from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.datasets.ood import far_gaussian
from mtbkd_jax.datasets.synthetic_generator import SyntheticGenerator, build_generator
from mtbkd_jax.teachers import TeacherBank

__all__ = ["SyntheticData", "SyntheticGenerator", "make_synthetic", "SYNTHETIC_KINDS"]

SYNTHETIC_KINDS = ("linear", "nonlinear")


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

    def distillation_data(self, *, ood_seed: int = 0) -> DistillationData:
        """The problem an experiment runs on, named ``KIND_C``: the teacher prior on the
        training inputs (no transfer set), the validation split with its teachers and the test
        split's true probabilities.

        Its OOD set (``ood_inputs``, as many as the test inputs, drawn by ``ood_seed``) lies
        far from the data: Gaussian inputs around points three standard deviations from the
        training inputs' mean in random directions
        (:func:`~mtbkd_jax.datasets.ood.far_gaussian`), where ``x ~ N(0, I)`` rarely goes."""
        return DistillationData(
            name=f"{self.kind}_{self.num_classes}",
            x_train=self.x_train,
            y_train=self.y_train,
            x_test=self.x_test,
            y_test=self.y_test,
            teachers_prior=self.teachers_train,
            teachers_test=self.teachers_test,
            x_validation=self.x_validation,
            y_validation=self.y_validation,
            teachers_validation=self.teachers_validation,  # for trust_labels="validation"
            true_probs_test=self.true_probs_test,
            ood_inputs=far_gaussian(self.x_train, len(self.x_test), ood_seed),
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticData(kind={self.kind!r}, C={self.num_classes}, "
            f"D={self.x_train.shape[1]}, splits={len(self.x_train)}/{len(self.x_validation)}/"
            f"{len(self.x_test)}, teachers={list(self.teacher_names)})"
        )


def _as_int(value: Any, name: str, minimum: int) -> int:
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
    num_classes, num_examples, num_features, num_teachers, seed, target = _checked(
        kind, num_classes, num_examples, num_features, num_teachers, bayes_accuracy, seed
    )
    params_seq, calibration_seq, data_seq = np.random.SeedSequence(seed).spawn(3)
    generator = build_generator(
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
    return SyntheticData(
        **_split_fields(generator, x, y.astype(np.int32), probs),
        teacher_names=generator.teacher_names,
        kind=kind,
        num_classes=num_classes,
        generator=generator,
    )


def _checked(
    kind: str,
    num_classes: int,
    num_examples: int,
    num_features: int,
    num_teachers: int,
    bayes_accuracy: float,
    seed: int,
) -> tuple[int, int, int, int, int, float]:
    """:func:`make_synthetic`'s arguments checked: ``(C, N, D, M, seed, bayes_accuracy)``."""
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
    return num_classes, num_examples, num_features, num_teachers, seed, target


def _split_fields(
    generator: SyntheticGenerator, x: np.ndarray, y: np.ndarray, probs: np.ndarray
) -> dict[str, Any]:
    """:class:`SyntheticData`'s per-split fields: the examples in order, split 7:3:1."""
    teacher_logits = generator.teacher_logits(x)
    expert = generator.expert(x)
    num_train, num_validation, _ = _split_sizes(len(x))
    bounds = [num_train, num_train + num_validation]
    parts = {
        name: np.split(np.arange(len(x)), bounds)[i]
        for i, name in enumerate(("train", "validation", "test"))
    }
    names = list(generator.teacher_names)
    fields: dict[str, Any] = {}
    for name, index in parts.items():
        fields[f"x_{name}"] = x[index]
        fields[f"y_{name}"] = y[index]
        fields[f"true_probs_{name}"] = probs[index]
        fields[f"teachers_{name}"] = TeacherBank.from_logits(teacher_logits[:, index], names=names)
        fields[f"expert_{name}"] = expert[index]
    return fields
