"""The experiments' OOD sets and the rows' selective-prediction and OOD-detection columns.

The OOD sets have the test inputs' shape and dtype and depend on the seed only; a row's OOD
AUROCs equal scikit-learn's ``roc_auc_score`` on entropies computed here in NumPy from the same
probabilities; a MAP row (one draw) and a teacher row have no mutual-information AUROC.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import mtbkd_jax as mk
from mtbkd_jax.datasets import DistillationData, deeploc_available, load_digits_distillation
from mtbkd_jax.datasets.fashion_mnist import _downsample
from mtbkd_jax.datasets.ood import (
    digit_images,
    digits_ood,
    far_gaussian,
    gaussian_like,
    shuffled_features,
    shuffled_pixels,
)
from mtbkd_jax.experiments import markdown_table
from mtbkd_jax.experiments.baselines import _ood_summary, _row
from mtbkd_jax.experiments.synthetic import synthetic_problem

# --------------------------------------------------------------------------- the OOD sets


def test_digits_ood_set_shape_content_and_seed():
    data = load_digits_distillation(0, num_transfer=300, num_validation=150)
    ood = data.ood_inputs
    assert ood.shape == data.x_test.shape and ood.dtype == data.x_test.dtype == np.float32
    assert data.num_ood == len(data.y_test) == 397
    assert ood.min() >= 0.0 and ood.max() <= 1.0  # clipped to the pixels' range
    again = digits_ood(data.prior_inputs, data.x_test, 0)
    np.testing.assert_array_equal(ood, again)
    assert not np.array_equal(ood, digits_ood(data.prior_inputs, data.x_test, 1))
    # the second half: test digits with their pixels permuted, each by a permutation of its own
    num_noise = (len(ood) + 1) // 2
    test_values = {tuple(np.sort(row)) for row in data.x_test}
    assert all(tuple(np.sort(row)) in test_values for row in ood[num_noise:])
    assert not any((row == data.x_test).all(-1).any() for row in ood[num_noise:])
    # the first half: noise with the training pixels' means (clipping moves them a little)
    noise = ood[:num_noise]
    assert np.abs(noise.mean(0) - data.prior_inputs.mean(0)).max() < 0.15


def test_gaussian_like_and_shuffled_pixels():
    rng = np.random.default_rng(0)
    reference = rng.normal(2.0, 3.0, size=(500, 4)).astype(np.float32)
    noise = gaussian_like(reference, 4000, seed=3, clip=False)
    assert noise.shape == (4000, 4) and noise.dtype == np.float32
    np.testing.assert_allclose(noise.mean(0), reference.mean(0), atol=0.2)
    np.testing.assert_allclose(noise.std(0), reference.std(0), rtol=0.05)
    images = rng.random((6, 10))
    shuffled = shuffled_pixels(images, seed=1)
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), np.sort(images, axis=1))
    np.testing.assert_array_equal(shuffled, shuffled_pixels(images, seed=1))
    with pytest.raises(ValueError, match="reference must be a non-empty"):
        gaussian_like(np.zeros(3), 2)
    with pytest.raises(ValueError, match="num must be an integer"):
        gaussian_like(reference, 0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        shuffled_pixels(images, seed=-1)


def test_synthetic_ood_set_is_far_and_seeded():
    data, _ = synthetic_problem("nonlinear", 3, num_examples=330, seed=4)
    ood = data.ood_inputs
    assert ood.shape == data.x_test.shape == (30, 2) and ood.dtype == np.float32
    again, _ = synthetic_problem("nonlinear", 3, num_examples=330, seed=4)
    np.testing.assert_array_equal(ood, again.ood_inputs)
    other, _ = synthetic_problem("nonlinear", 3, num_examples=330, seed=5)
    assert not np.array_equal(ood, other.ood_inputs)
    # three standard deviations out (x ~ N(0, I)), give or take the 0.25 jitter
    z = (ood - data.x_train.mean(0)) / data.x_train.std(0)
    radius = np.linalg.norm(z, axis=1)
    assert radius.min() > 1.8 and abs(radius.mean() - 3.0) < 0.3
    wide = far_gaussian(np.random.default_rng(0).normal(size=(400, 5)), 2000, distance=3.0)
    assert wide.shape == (2000, 5) and wide.dtype == np.float64
    with pytest.raises(ValueError, match="distance must be a positive"):
        far_gaussian(wide, 3, distance=0.0)


def test_fashion_mnist_ood_set_is_digits_in_the_students_input_space():
    images = digit_images(12, seed=0)
    assert images.shape == (12, 28, 28) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() <= 1.0 and images.max() > 0.9
    assert (images[:, :2] == 0).all() and (images[:, :, -2:] == 0).all()  # the padding
    np.testing.assert_array_equal(images, digit_images(12, seed=0))
    assert not np.array_equal(images, digit_images(12, seed=1))
    # the loader pools and flattens them as it does the test images: 196 pixels in [0, 1]
    features = _downsample(images, 2)
    assert features.shape == (12, 196) and features.dtype == np.float32
    assert len(digit_images(1797)) == 1797
    with pytest.raises(ValueError, match="num must be at most 1797"):
        digit_images(1798)


def test_shuffled_features_permute_each_column():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(50, 7)).astype(np.float32)
    shuffled = shuffled_features(inputs, seed=2)
    assert shuffled.shape == inputs.shape and shuffled.dtype == np.float32
    np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(inputs, axis=0))
    np.testing.assert_array_equal(shuffled, shuffled_features(inputs, seed=2))
    assert not (shuffled == inputs).all(-1).any()  # no protein survives whole


@pytest.mark.skipif(not deeploc_available(), reason="DeepLoc data folder not found")
def test_deeploc_ood_set_is_the_shuffled_test_proteins():
    from mtbkd_jax.experiments.deeploc import deeploc_problem

    problem, _ = deeploc_problem(seed=3)
    assert problem.ood_inputs.shape == problem.x_test.shape
    assert problem.ood_inputs.dtype == problem.x_test.dtype
    np.testing.assert_array_equal(
        np.sort(problem.ood_inputs, axis=0), np.sort(problem.x_test, axis=0)
    )
    np.testing.assert_array_equal(problem.ood_inputs, shuffled_features(problem.x_test, 3))


# --------------------------------------------------------------------------- the rows
N_TEST, N_OOD, C = 40, 30, 4


class _TablePosterior:
    """A stand-in posterior: input ``[i]`` gets the draws' probabilities ``table[:, i]``."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def predict(self, inputs, *, draw_batch_size=64):
        return self.table[:, np.asarray(inputs)[:, 0].astype(int)]


def _problem(ood: bool = True) -> DistillationData:
    rng = np.random.default_rng(0)
    y_test = rng.integers(0, C, N_TEST).astype(np.int32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, N_TEST, C)), names=("a", "b"))
    return DistillationData(
        name="toy",
        x_train=np.zeros((5, 1), np.float32),
        y_train=np.zeros(5, np.int32),
        x_test=np.arange(N_TEST, dtype=np.float32)[:, None],
        y_test=y_test,
        teachers_prior=mk.TeacherBank.from_logits(rng.normal(size=(2, 5, C)), names=("a", "b")),
        teachers_test=bank,
        ood_inputs=np.arange(N_TEST, N_TEST + N_OOD, dtype=np.float32)[:, None] if ood else None,
    )


def _draws(num_draws: int, seed: int = 0) -> np.ndarray:
    """Random draws; the OOD inputs' (the last N_OOD) flatter, so the AUROCs are not trivial."""
    rng = np.random.default_rng(seed)
    concentration = np.r_[np.full(N_TEST, 0.5), np.full(N_OOD, 2.0)]
    alpha = np.broadcast_to(concentration[None, :, None], (num_draws, N_TEST + N_OOD, C))
    g = rng.gamma(alpha)
    return (g / g.sum(-1, keepdims=True)).astype(np.float32)


def _entropy(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(labels, np.r_[inside, outside]))


def test_posterior_row_ood_aurocs_match_sklearn():
    data = _problem()
    draws = _draws(8)
    posterior = _TablePosterior(draws)
    summary = mk.predictive_summary(posterior, data.x_test)
    row = _row(
        "MT-BKD",
        "nuts",
        summary["predictive_mean"],
        data,
        summary,
        1.0,
        ood=_ood_summary(posterior, data),
    )
    mean = draws.astype(np.float64).mean(0)
    total = _entropy(mean)
    mi = total - _entropy(draws).mean(0)
    expected_h = _auroc(total[:N_TEST], total[N_TEST:])
    expected_mi = _auroc(mi[:N_TEST], mi[N_TEST:])
    assert 0.55 < expected_h < 1.0  # flatter OOD draws: informative, not perfect
    assert row["ood_auroc_entropy"] == pytest.approx(expected_h, abs=1e-12)
    assert row["ood_auroc_mi"] == pytest.approx(expected_mi, abs=1e-12)
    for key in ("aurc", "accuracy_at_90", "nll", "mean_deviance", "error_auroc_md"):
        assert isinstance(row[key], float), key


def test_map_row_has_an_entropy_auroc_and_no_mi():
    data = _problem()
    mode = _TablePosterior(_draws(1, seed=1))
    probs = np.asarray(mode.predict(data.x_test))[0]
    row = _row("KD", "map", probs, data, seconds=0.5, ood=_ood_summary(mode, data))
    entropy = _entropy(mode.table[0])
    expected = _auroc(entropy[:N_TEST], entropy[N_TEST:])
    assert row["ood_auroc_entropy"] == pytest.approx(expected, abs=1e-12)
    assert row["ood_auroc_mi"] is None
    assert row["mean_deviance"] is None
    # a teacher's row (no outputs on the OOD inputs) has neither AUROC
    teacher = _row("teacher a", "teacher", np.exp(data.teachers_test.log_probs[0]), data)
    assert teacher["ood_auroc_entropy"] is None and teacher["ood_auroc_mi"] is None
    assert isinstance(teacher["aurc"], float) and isinstance(teacher["accuracy_at_90"], float)


def test_rows_without_an_ood_set_have_no_ood_columns():
    data = _problem(ood=False)
    mode = _TablePosterior(_draws(1, seed=1))
    assert _ood_summary(mode, data) is None
    row = _row("KD", "map", np.asarray(mode.predict(data.x_test))[0], data)
    assert "ood_auroc_entropy" not in row and "ood_auroc_mi" not in row
    assert {"aurc", "accuracy_at_90"} <= set(row)


def test_ood_inputs_must_match_the_test_inputs():
    with pytest.raises(ValueError, match=r"ood_inputs must have shape \(N_ood, \.\.\.\) like"):
        DistillationData(
            name="bad",
            x_train=np.zeros((3, 2)),
            y_train=np.zeros(3, int),
            x_test=np.zeros((3, 2)),
            y_test=np.zeros(3, int),
            teachers_prior=mk.TeacherBank.from_logits(np.zeros((1, 3, 2))),
            teachers_test=mk.TeacherBank.from_logits(np.zeros((1, 3, 2))),
            ood_inputs=np.zeros((4, 3)),
        )


def test_markdown_table_has_the_selective_and_ood_columns():
    rows = [
        {
            "method": "KD",
            "inference": "map",
            "accuracy": 0.9,
            "aurc": 0.05,
            "accuracy_at_90": 0.95,
            "ood_auroc_entropy": 0.8,
            "ood_auroc_mi": None,
        },
        {
            "method": "BKD",
            "inference": "sgld",
            "accuracy": 0.91,
            "aurc": 0.04,
            "accuracy_at_90": 0.96,
            "ood_auroc_entropy": 0.85,
            "ood_auroc_mi": 0.7,
        },
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0] == (
        "| method | inference | accuracy | AURC | acc@90 | OOD AUROC (H) | OOD AUROC (MI) |"
    )
    assert lines[2] == "| KD | map | 0.900 | 0.050 | 0.950 | 0.800 | – |"
    assert lines[3] == "| BKD | sgld | 0.910 | 0.040 | 0.960 | 0.850 | 0.700 |"
