"""The synthetic generators: splits, determinism, exact class probabilities, teachers' expertise.

Statistical checks use large samples with stated tolerances:

* labels vs ``true_probs``: 22,000 draws for each kind and class count; per class, examples are
  binned by their true probability of that class (10 equal-count bins of 2,200) and the label
  count in each bin is compared with its expectation ``sum p``, standardised by
  ``sqrt(sum p (1 - p))`` (the exact standard deviation of a sum of independent Bernoullis);
  every |z| must be below 4.5 (140 z-scores in all: a false alarm has probability about
  140 * 7e-6 = 1e-3, and the draws are fixed by the seed, so a pass is reproducible). The mean
  log-likelihood of the labels must match the mean negative entropy of ``true_probs`` within 4.5
  standard errors.
* Bayes accuracy on a 2,000-example test split: its standard error is about 0.008, so the
  documented range 0.80-0.90 around the calibrated 0.85 is 6 standard errors wide on each side.
* teachers: on 22,000 examples (about 7,300 per region) accuracies have standard errors below
  0.006; the gaps asserted (0.03) are over 5 of them, and the measured gaps are 0.15 or more.
"""

import numpy as np
import pytest

from mtbkd_jax.datasets.synthetic import SyntheticData, make_synthetic

SPLITS = ("train", "validation", "test")
CASES = [("linear", 2), ("linear", 5), ("nonlinear", 2), ("nonlinear", 5)]


@pytest.fixture(scope="module")
def large():
    """22,000 examples (14,000 / 6,000 / 2,000) for each kind and class count, seed 0."""
    return {case: make_synthetic(*case, num_examples=22_000, seed=0) for case in CASES}


def _pooled(data: SyntheticData):
    """All splits together: labels, true probabilities, experts, teacher log-probs (M, N, C)."""
    y = np.concatenate([getattr(data, f"y_{s}") for s in SPLITS])
    probs = np.concatenate([getattr(data, f"true_probs_{s}") for s in SPLITS])
    expert = np.concatenate([getattr(data, f"expert_{s}") for s in SPLITS])
    log_probs = np.concatenate(
        [np.asarray(getattr(data, f"teachers_{s}").log_probs) for s in SPLITS], axis=1
    )
    return y, probs, expert, log_probs


# ------------------------------------------------------------------------- shapes and splits
@pytest.mark.parametrize(
    "num_examples, sizes", [(1100, (700, 300, 100)), (11, (7, 3, 1)), (2200, (1400, 600, 200))]
)
def test_split_sizes_are_7_3_1(num_examples, sizes):
    data = make_synthetic("linear", 3, num_examples=num_examples)
    for split, size in zip(SPLITS, sizes, strict=True):
        assert getattr(data, f"x_{split}").shape == (size, 2)
        assert getattr(data, f"y_{split}").shape == (size,)
        assert getattr(data, f"true_probs_{split}").shape == (size, 3)
        assert getattr(data, f"expert_{split}").shape == (size,)
        bank = getattr(data, f"teachers_{split}")
        assert (bank.num_teachers, bank.num_examples, bank.num_classes) == (3, size, 3)
        assert bank.names == data.teacher_names


def test_shapes_dtypes_and_options():
    data = make_synthetic("nonlinear", 4, num_examples=330, num_features=3, num_teachers=2)
    assert data.kind == "nonlinear" and data.num_classes == 4
    assert data.x_train.shape == (210, 3) and data.x_train.dtype == np.float32
    assert data.y_train.dtype == np.int32
    assert data.true_probs_test.dtype == np.float64
    assert data.teacher_names == ("teacher_0", "teacher_1")
    assert data.teachers_validation.num_teachers == 2
    assert set(np.unique(data.y_train)) <= set(range(4))
    assert set(np.unique(data.expert_train)) == {0, 1}
    assert "nonlinear" in repr(data)


def test_splits_are_disjoint_draws():
    data = make_synthetic("linear", 3, num_examples=1100)
    rows = np.concatenate([data.x_train, data.x_validation, data.x_test])
    assert len(np.unique(rows, axis=0)) == 1100


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("kind", ["linear", "nonlinear"])
def test_deterministic_by_seed_and_different_across_seeds(kind):
    first = make_synthetic(kind, 3, seed=7)
    again = make_synthetic(kind, 3, seed=7)
    other = make_synthetic(kind, 3, seed=8)
    for split in SPLITS:
        for field in ("x", "y", "true_probs", "expert"):
            np.testing.assert_array_equal(
                getattr(first, f"{field}_{split}"), getattr(again, f"{field}_{split}")
            )
        assert (
            getattr(first, f"teachers_{split}").content_hash
            == getattr(again, f"teachers_{split}").content_hash
        )
    assert not np.allclose(first.x_train, other.x_train)
    assert not np.allclose(first.true_probs_train, other.true_probs_train)
    assert first.generator.region_offset != other.generator.region_offset
    if kind == "linear":
        assert not np.allclose(first.generator.weights, other.generator.weights)
    else:
        assert not np.allclose(first.generator.centres, other.generator.centres)


def test_generator_does_not_depend_on_num_examples():
    small = make_synthetic("nonlinear", 3, num_examples=11, seed=3).generator
    big = make_synthetic("nonlinear", 3, num_examples=1100, seed=3).generator
    grid = np.random.default_rng(0).normal(size=(50, 2))
    np.testing.assert_array_equal(small.true_probs(grid), big.true_probs(grid))
    np.testing.assert_array_equal(small.teacher_logits(grid), big.teacher_logits(grid))


# ------------------------------------------------------------------------ true probabilities
@pytest.mark.parametrize("case", CASES)
def test_true_probs_on_simplex_and_match_generator(large, case):
    data = large[case]
    for split in SPLITS:
        probs = getattr(data, f"true_probs_{split}")
        assert np.all(probs >= 0) and np.all(probs <= 1)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
        x = getattr(data, f"x_{split}")
        np.testing.assert_allclose(probs, data.generator.true_probs(x), rtol=0, atol=1e-15)


def test_linear_kind_is_softmax_of_an_affine_map():
    gen = make_synthetic("linear", 3, seed=2).generator
    x = np.random.default_rng(1).normal(size=(200, 2))
    logits = x @ gen.weights.T + gen.bias
    expected = np.exp(gen.logit_scale * logits)
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(gen.true_probs(x), expected, rtol=1e-12)


def test_nonlinear_kind_is_not_linear_in_x(large):
    """Log-odds of a linear model are affine in x; the non-linear kind's are far from it."""
    gen = large[("nonlinear", 2)].generator
    x = np.random.default_rng(2).normal(size=(4000, 2))
    log_odds = np.log(gen.true_probs(x)[:, 1]) - np.log(gen.true_probs(x)[:, 0])
    design = np.column_stack([x, np.ones(len(x))])
    _, residual, *_ = np.linalg.lstsq(design, log_odds, rcond=None)
    r_squared = 1 - residual[0] / ((log_odds - log_odds.mean()) ** 2).sum()
    assert r_squared < 0.5  # XOR-like: an affine fit explains little of the log-odds
    lin = large[("linear", 2)].generator
    lin_log_odds = np.log(lin.true_probs(x)[:, 1]) - np.log(lin.true_probs(x)[:, 0])
    _, lin_residual, *_ = np.linalg.lstsq(design, lin_log_odds, rcond=None)
    assert lin_residual[0] < 1e-12 * (lin_log_odds**2).sum()


@pytest.mark.parametrize("case", CASES)
def test_labels_are_drawn_from_true_probs(large, case):
    y, probs, _, _ = _pooled(large[case])
    for c in range(probs.shape[1]):
        order = np.argsort(probs[:, c])
        for bin_index in np.array_split(order, 10):
            p = probs[bin_index, c]
            observed = (y[bin_index] == c).sum()
            z = (observed - p.sum()) / np.sqrt((p * (1 - p)).sum())
            assert abs(z) < 4.5, (c, p.mean(), observed / len(p), z)
    # the labels' log-likelihood under true_probs has expectation -mean entropy
    log_lik = np.log(probs[np.arange(len(y)), y])
    neg_entropy = (probs * np.log(probs)).sum(-1)
    diff = log_lik - neg_entropy
    assert abs(diff.mean()) < 4.5 * diff.std() / np.sqrt(len(y))


@pytest.mark.parametrize("case", CASES)
def test_bayes_accuracy_in_documented_range(large, case):
    data = large[case]
    assert data.generator.population_bayes_accuracy == pytest.approx(0.85, abs=1e-6)
    assert 0.80 <= data.bayes_accuracy <= 0.90
    # the expected accuracy of argmax true_probs on the test inputs, without label noise
    assert data.true_probs_test.max(-1).mean() == pytest.approx(0.85, abs=0.02)


def test_bayes_accuracy_is_adjustable():
    data = make_synthetic("nonlinear", 2, num_examples=22_000, bayes_accuracy=0.7, seed=5)
    assert data.generator.population_bayes_accuracy == pytest.approx(0.7, abs=1e-6)
    assert 0.65 <= data.bayes_accuracy <= 0.75


# ----------------------------------------------------------------------------------- teachers
@pytest.mark.parametrize("case", CASES)
def test_each_teacher_is_best_inside_its_region(large, case):
    y, _, expert, log_probs = _pooled(large[case])
    correct = log_probs.argmax(-1) == y[None]
    num_teachers = log_probs.shape[0]
    for m in range(num_teachers):
        inside = expert == m
        assert 0.28 < inside.mean() < 0.39  # each sector holds about a third of the inputs
        acc_inside = correct[m, inside].mean()
        assert acc_inside > correct[m, ~inside].mean() + 0.03
        for other in range(num_teachers):
            if other != m:
                assert acc_inside > correct[other, inside].mean() + 0.03


@pytest.mark.parametrize("case", CASES)
def test_expert_is_the_least_uncertain_teacher_in_its_region(large, case):
    data = large[case]
    _, _, expert, _ = _pooled(data)
    entropies = np.concatenate(
        [np.asarray(getattr(data, f"teachers_{s}").entropies()) for s in SPLITS], axis=1
    )
    for m in range(entropies.shape[0]):
        inside = expert == m
        mean_entropy = entropies[:, inside].mean(1)
        assert mean_entropy.argmin() == m, mean_entropy


def test_no_teacher_is_best_everywhere(large):
    y, _, expert, log_probs = _pooled(large[("linear", 2)])
    correct = log_probs.argmax(-1) == y[None]
    best_by_region = [correct[:, expert == m].mean(1).argmax() for m in range(3)]
    assert sorted(best_by_region) == [0, 1, 2]


def test_teachers_depend_on_x_and_seed_only():
    data = make_synthetic("nonlinear", 3, seed=6)
    gen = data.generator
    for split in SPLITS:
        x = getattr(data, f"x_{split}")
        bank = gen.teachers(x)
        np.testing.assert_allclose(
            np.asarray(bank.log_probs), np.asarray(getattr(data, f"teachers_{split}").log_probs)
        )
        np.testing.assert_array_equal(gen.expert(x), getattr(data, f"expert_{split}"))


def test_regions_are_sectors_of_the_plane():
    gen = make_synthetic("linear", 2, num_teachers=4, num_features=3, seed=0).generator
    angles = gen.region_offset + np.deg2rad(np.arange(4) * 90 + 45)  # sector mid-angles
    for radius in (0.1, 3.0):
        x = np.column_stack([radius * np.cos(angles), radius * np.sin(angles), np.full(4, 5.0)])
        np.testing.assert_array_equal(gen.expert(x), np.arange(4))
        mask = gen.in_region(x)
        np.testing.assert_array_equal(mask, np.eye(4, dtype=bool))


# ---------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        (("quadratic", 2), {}, "kind"),
        ((None, 2), {}, "kind"),
        (("linear", 1), {}, "num_classes"),
        (("linear", 2.0), {}, "num_classes"),
        (("linear", True), {}, "num_classes"),
        (("linear", 2), {"num_examples": 10}, "num_examples"),
        (("linear", 2), {"num_examples": "100"}, "num_examples"),
        (("nonlinear", 2), {"num_features": 1}, "num_features"),
        (("linear", 2), {"num_teachers": 1}, "num_teachers"),
        (("linear", 2), {"seed": -1}, "seed"),
        (("linear", 2), {"seed": 1.5}, "seed"),
        (("linear", 5), {"bayes_accuracy": 0.2}, "bayes_accuracy"),
        (("linear", 2), {"bayes_accuracy": 1.0}, "bayes_accuracy"),
        (("linear", 2), {"bayes_accuracy": "high"}, "bayes_accuracy"),
    ],
)
def test_argument_errors_name_the_argument(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic(*args, **kwargs)


def test_generator_checks_input_shape():
    gen = make_synthetic("linear", 3).generator
    with pytest.raises(ValueError, match="x must have shape"):
        gen.true_probs(np.zeros((5, 3)))


def test_the_experiment_problem_carries_the_validation_teachers():
    """SyntheticData has the teachers on its validation split; distillation_data() left them
    out, so trust learned on validation labels (trust_labels="validation") was refused."""
    from mtbkd_jax.datasets.synthetic import make_synthetic

    synthetic = make_synthetic("linear", 2, num_examples=110, seed=0)
    data = synthetic.distillation_data()
    assert data.teachers_validation is synthetic.teachers_validation
    assert data.teachers_validation.num_examples == len(data.y_validation)
