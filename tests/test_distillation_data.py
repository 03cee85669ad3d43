"""``DistillationData`` refuses, when it is made, a field that does not fit the others, naming
it (each passed before and surfaced late, or never: a wrong-width ``extra_inputs`` only after
every fit had finished; a test bank of another length as "labels must have shape (5,)"; float
labels such as 7.5 not at all)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import mtbkd_jax as mk
from mtbkd_jax.datasets import DistillationData


def _bank(rows, classes=3, teachers=2, seed=0):
    logits = np.random.default_rng(seed).normal(size=(teachers, rows, classes))
    return mk.TeacherBank.from_logits(logits)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return DistillationData(
        name="tiny",
        x_train=rng.normal(size=(10, 4)),
        y_train=rng.integers(0, 3, 10),
        x_test=rng.normal(size=(12, 4)),
        y_test=rng.integers(0, 3, 12),
        x_transfer=rng.normal(size=(5, 4)),
        x_validation=rng.normal(size=(6, 4)),
        y_validation=rng.integers(0, 3, 6),
        teachers_prior=_bank(15),
        teachers_test=_bank(12, seed=1),
        teachers_validation=_bank(6, seed=2),
        true_probs_test=np.full((12, 3), 1 / 3),
        extra_inputs={"multi": rng.normal(size=(3, 4))},
    )


def test_a_consistent_problem_is_accepted_and_integral_float_labels_too(data):
    assert data.num_classes == 3 and len(data.prior_inputs) == 15
    labels = dataclasses.replace(data, y_train=data.y_train.astype(float))
    np.testing.assert_array_equal(labels.y_train, data.y_train)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_train": np.zeros(7, int)}, r"y_train must hold one label per row of x_train, "
         r"shape \(10,\), got \(7,\)"),
        ({"y_train": np.full(10, 7.5)}, r"y_train must hold integer class labels, got 7.5"),
        ({"y_train": np.full(10, 3)}, r"y_train must lie in 0..2 \(the teachers' 3 classes\)"),
        ({"y_test": np.array(["a"] * 12)}, r"y_test must hold integer class labels, got dtype"),
        ({"teachers_test": _bank(5)}, r"teachers_test must describe the 12 test inputs"),
        ({"teachers_prior": _bank(10)}, r"teachers_prior must describe the 15 prior inputs"),
        ({"teachers_prior": _bank(15, classes=4)}, r"teachers_prior must hold teachers_test's "
         r"2 teachers of 3 classes, got 2 of 4"),
        ({"teachers_prior": _bank(15, teachers=3)}, r"got 3 of 3"),
        ({"x_test": np.zeros((12, 5))}, r"x_test must have x_train's shape per example, \(4,\)"),
        ({"extra_inputs": {"multi": np.zeros((3, 7))}}, r"extra_inputs\['multi'\] must have"),
        ({"y_validation": None}, r"x_validation and y_validation must be given together"),
        ({"teachers_validation": _bank(4)}, r"teachers_validation must describe the 6 valid"),
        ({"true_probs_test": np.full((12, 4), 0.25)}, r"true_probs_test must have shape"),
        ({"x_train": np.zeros((0, 4)), "y_train": np.zeros(0, int)}, r"x_train must have shape"),
        # accepted before: coverage against such a truth, or a fit on NaN inputs, is no figure
        ({"true_probs_test": np.full((12, 3), 5.0)}, r"true_probs_test must hold one probability"),
        ({"true_probs_test": np.full((12, 3), np.nan)}, r"\(NaN or infinite\)"),
        ({"x_train": np.full((10, 4), np.nan)},
         r"x_train must be finite; .*\(NaN\) at index \(0, 0\)"),
        ({"x_transfer": np.full((5, 4), np.inf)}, r"x_transfer must be finite"),
        ({"x_test": np.zeros((12, 0)), "x_train": np.zeros((10, 0)), "x_transfer": None,
          "x_validation": None, "y_validation": None, "teachers_validation": None,
          "extra_inputs": {}, "teachers_prior": _bank(10)}, r"x_train must have at least one"),
        # accepted before, failing only after every fit, unnamed: NaN, infinite or string OOD
        # inputs; string, object or complex features
        ({"ood_inputs": np.full((3, 4), np.nan)}, r"ood_inputs must be finite"),
        ({"ood_inputs": np.full((3, 4), np.inf)}, r"ood_inputs must be finite"),
        ({"ood_inputs": np.full((3, 4), "a")}, r"ood_inputs must hold real numbers"),
        ({"x_train": np.full((10, 4), "a")}, r"x_train must hold real numbers .*got dtype <U1"),
        ({"x_train": np.full((10, 4), None)}, r"x_train must hold real numbers .*dtype object"),
        ({"x_test": np.ones((12, 4), complex)}, r"x_test must hold real numbers .*complex128"),
        ({"x_transfer": [[1.0, 2.0], [3.0]]}, r"x_transfer must be an array or array-like of one"),
        # the prior's teachers in another order than the test's: each row under another name
        ({"teachers_prior": mk.TeacherBank(_bank(15).log_probs, ("b", "a"))},
         r"teachers_prior must hold teachers_test's teachers in its order"),
    ],
)  # fmt: skip
def test_a_field_that_does_not_fit_is_named(data, change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(data, **change)


def test_array_likes_are_taken_as_arrays(data):
    """A list of lists failed with "'list' object has no attribute 'shape'"."""
    listed = dataclasses.replace(
        data,
        x_train=data.x_train.tolist(),
        y_train=data.y_train.tolist(),
        ood_inputs=data.x_test[:3].tolist(),
        extra_inputs={"multi": data.extra_inputs["multi"].tolist()},
    )
    np.testing.assert_array_equal(listed.x_train, data.x_train)
    assert isinstance(listed.y_train, np.ndarray) and listed.num_features == 4
    assert listed.num_ood == 3 and isinstance(listed.extra_inputs["multi"], np.ndarray)


def test_bfloat16_inputs_are_taken_and_checked_for_nan(data):
    """The real-number check read bfloat16 (ml_dtypes, dtype kind "V") as not a number and
    refused inputs that were accepted before it; it is a float, checked for NaN as floats."""
    import jax.numpy as jnp

    half = dataclasses.replace(data, x_train=data.x_train.astype(jnp.bfloat16))
    assert half.x_train.dtype == jnp.bfloat16
    broken = data.x_train.astype(jnp.bfloat16)
    broken[0, 0] = np.nan
    with pytest.raises(ValueError, match="x_train must be finite"):
        dataclasses.replace(data, x_train=broken)
