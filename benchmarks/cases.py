"""The two students of the benchmark, and their gradient estimators as ``run_sgmcmc`` builds them.

* ``digits``: the bundled digits problem (150 labelled digits, a 3-teacher bank on the 600
  prior inputs = labelled + transfer), student MLP 64-16-10, batch 32 (4 steps per epoch; the
  transfer plate then takes ceil(32 * 600 / 150) = 128 examples per step).
* ``reference``: a head of the reference size: synthetic 320-feature inputs, MLP 320-128-10
  (relu, 42,378 parameters), 2 synthetic teachers (random logits) evaluated on the labelled
  inputs (no transfer set), batch 64.

The minibatch potential is the package's public one, :func:`mtbkd_jax.infer.gradients.
gradient_estimator` (the plates, the static kwargs and the teacher prior's constants as data
come from the model's own subsampling plan, as in ``run_sgmcmc``); the benchmark checks its
plates against ``posterior.settings["plates"]`` of an actual run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from flax import nnx

import mtbkd_jax as mt
from mtbkd_jax.infer.gradients import GradientEstimator, gradient_estimator

REFERENCE_FEATURES = 320
REFERENCE_HIDDEN = 128
NUM_CLASSES = 10


@dataclass
class Case:
    """A model with its data, in the form run_sgmcmc / run_nuts take."""

    name: str
    model: mt.MTBKDModel
    inputs: np.ndarray
    labels: np.ndarray
    batch_size: int
    model_kwargs: dict = field(default_factory=dict)
    description: str = ""

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    def without_teachers(self) -> Case:
        """The same student (same module, same base prior) with no teacher prior."""
        return Case(
            self.name + "_no_teacher",
            mt.MTBKDModel(self.model.student, None),
            self.inputs,
            self.labels,
            self.batch_size,
            {},
            self.description + ", no teacher prior",
        )

    def with_prior_on_labelled(self) -> Case:
        """The same student with the teacher prior on its labelled inputs only (no transfer
        set): the teacher bank restricted to the labelled rows, which come first in
        ``prior_inputs``. Likelihood and prior then share one network pass per step."""
        labelled = self.model.teachers.take(np.arange(self.num_examples))
        model = self.model
        if model.weight_rule == "array":
            raise ValueError("with_prior_on_labelled needs a named weight rule, not an array")
        return Case(
            self.name + "_labelled_prior",
            mt.MTBKDModel(
                model.student,
                labelled,
                concentration=model.concentration,
                temperature=model.temperature,
                prior_power=model.prior_power,
                weight_rule=model.weight_rule,
            ),
            self.inputs,
            self.labels,
            self.batch_size,
            {},
            self.description + ", teacher prior on the labelled inputs only",
        )

    def sgmcmc_kwargs(self) -> dict:
        return {"batch_size": self.batch_size, "model_kwargs": dict(self.model_kwargs)}

    def device_args(self) -> tuple:
        """``(inputs, labels)`` as device arrays (float32, int32)."""
        return jnp.asarray(self.inputs, jnp.float32), jnp.asarray(self.labels, jnp.int32)

    def device_kwargs(self) -> dict:
        return {k: jnp.asarray(v, jnp.float32) for k, v in self.model_kwargs.items()}

    def estimator(self, transfer_batch: int | None = None) -> GradientEstimator:
        """The minibatch gradient estimator ``run_sgmcmc`` builds for this case (its default
        transfer batch ceil(B * N_transfer / N) unless ``transfer_batch`` is given, as
        ``prior_batch_size`` gives it). A pytree: pass it to a jitted function as an argument
        and its arrays stay data, as in the sampler."""
        return gradient_estimator(
            self.model,
            self.device_args(),
            self.device_kwargs(),
            batch_size=self.batch_size,
            prior_batch_size=transfer_batch,
        )


def digits_case() -> Case:
    from mtbkd_jax.datasets import load_digits_distillation

    data = load_digits_distillation(0)
    student = mt.Student(mt.MLP(64, NUM_CLASSES, hidden=(16,), rngs=nnx.Rngs(0)))
    model = mt.MTBKDModel(student, data.teachers_prior)
    return Case(
        "digits",
        model,
        np.asarray(data.x_train, np.float32),
        np.asarray(data.y_train, np.int32),
        32,
        {"prior_inputs": np.asarray(data.prior_inputs, np.float32)},
        "digits MLP 64-16-10, N=150 labelled + 600 prior inputs (3 teachers), batch 32",
    )


def synthetic_reference_data(num_examples: int, seed: int = 0, num_teachers: int = 2):
    """Features ~ N(0, 1) (float32), labels from a random linear map, random teacher logits."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((num_examples, REFERENCE_FEATURES), dtype=np.float32)
    labels = np.empty(num_examples, np.int32)
    mixing = rng.standard_normal((REFERENCE_FEATURES, NUM_CLASSES), dtype=np.float32)
    for start in range(0, num_examples, 65536):  # chunked: no (N, 10) float64 temporaries
        stop = start + 65536
        labels[start:stop] = np.argmax(features[start:stop] @ mixing, axis=1)
    teacher_logits = 2.0 * rng.standard_normal(
        (num_teachers, num_examples, NUM_CLASSES), dtype=np.float32
    )
    return features, labels, teacher_logits


def reference_model(teacher_logits) -> mt.MTBKDModel:
    student = mt.Student(
        mt.MLP(
            REFERENCE_FEATURES,
            NUM_CLASSES,
            hidden=(REFERENCE_HIDDEN,),
            activation="relu",
            rngs=nnx.Rngs(0),
        )
    )
    teachers = None if teacher_logits is None else mt.TeacherBank.from_logits(teacher_logits)
    return mt.MTBKDModel(student, teachers)


def reference_case(num_examples: int = 2000, seed: int = 0) -> tuple[Case, dict]:
    features, labels, teacher_logits = synthetic_reference_data(num_examples, seed)
    case = Case(
        "reference",
        reference_model(teacher_logits),
        features,
        labels,
        64,
        {},
        f"MLP 320-128-10 relu, synthetic N={num_examples}, 2 random teachers on the labelled "
        "inputs, batch 64",
    )
    return case, {"features": features, "labels": labels, "teacher_logits": teacher_logits}


def case_by_name(name: str) -> Case:
    return digits_case() if name == "digits" else reference_case()[0]
