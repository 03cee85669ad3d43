"""The paired bootstrap of a metric's difference (mtbkd_jax.comparison): against SciPy's paired
bootstrap, a brute-force resampling, and the coverage of a known difference over simulated
test sets (an unpaired bootstrap, deliberately wrong, fails that check)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from mtbkd_jax.comparison import HIGHER_IS_BETTER, METRICS, paired_bootstrap
from mtbkd_jax.metrics import aurc


def _tempered(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def _population(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two correlated predictors (one logit vector, two temperatures) and labels drawn from a
    third temperature: the setting of two distilled students on one test set."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (size, 3))
    truth = _tempered(logits, 1.3)
    labels = (truth.cumsum(-1) < rng.random((size, 1))).sum(-1)
    return _tempered(logits, 1.0), _tempered(logits, 1.6), labels


def test_the_interval_of_an_nll_difference_matches_scipys_paired_bootstrap():
    a, b, y = _population(400, 0)
    ours = paired_bootstrap(a, b, y, "nll", num_resamples=20_000, seed=1)
    nll_a = -np.log(a[np.arange(400), y])
    nll_b = -np.log(b[np.arange(400), y])
    reference = stats.bootstrap(
        (nll_a, nll_b),
        lambda u, v, axis: u.mean(axis) - v.mean(axis),
        paired=True,
        vectorized=True,
        n_resamples=20_000,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(2),
    )
    width = ours.high - ours.low
    assert ours.estimate == pytest.approx(nll_a.mean() - nll_b.mean(), abs=1e-12)
    # two Monte Carlo estimates of the same quantiles: within 5% of the interval's width
    assert ours.low == pytest.approx(reference.confidence_interval.low, abs=0.05 * width)
    assert ours.high == pytest.approx(reference.confidence_interval.high, abs=0.05 * width)


@pytest.mark.parametrize(
    ("metric", "level", "seed"),
    [
        ("nll", 0.95, 0),
        ("accuracy", 0.9, 1),
        ("ece", 0.95, 2),
        ("aurc", 0.8, 3),
        ("classwise_ece", 0.9, 4),
        ("debiased_l2_ce", 0.95, 5),
    ],
)
def test_the_resamples_are_the_same_indices_for_both_predictors_and_every_run(metric, level, seed):
    """Brute force: draw the indices as documented, score each resample in full, and take the
    interval's quantiles and the two-sided p-value from those scores."""
    a, b, y = _population(150, 3)
    a2, b2 = _tempered(np.log(a), 0.9), _tempered(np.log(b), 1.1)
    ours = paired_bootstrap(
        np.stack([a, a2]), np.stack([b, b2]), y, metric, level=level, num_resamples=300, seed=seed
    )
    score = METRICS[metric]
    index = np.random.default_rng(seed).integers(0, 150, size=(300, 150))
    brute = np.array(
        [
            np.mean([score(p[i], y[i]) - score(q[i], y[i]) for p, q in ((a, b), (a2, b2))])
            for i in index
        ]
    )
    low, high = np.quantile(brute, [(1 - level) / 2, (1 + level) / 2])
    assert (ours.low, ours.high) == pytest.approx((low, high), abs=1e-12)
    tail = min((brute <= 0).sum(), (brute >= 0).sum())
    assert ours.p_value == pytest.approx(min(1.0, 2 * (1 + tail) / 301))
    full = np.mean([score(a, y) - score(b, y), score(a2, y) - score(b2, y)])
    assert ours.estimate == pytest.approx(full, abs=1e-12)
    assert ours.num_runs == 2 and ours.num_examples == 150 and ours.level == level


@pytest.mark.parametrize("metric", ["nll", "accuracy", "brier", "ece"])
def test_runs_that_are_the_others_in_another_order_tie_exactly(metric):
    """The mean over three runs of the same terms in another order is the same mean: every
    resample is a tie, counted in both tails (p = 1), not a rounding error of 1e-17 that
    lands in one (before TIE_TOLERANCE, NLL's p-value here was 0.27)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    runs = rng.dirichlet(np.ones(3), (3, 40))
    d = paired_bootstrap(runs, runs[[1, 2, 0]], y, metric, num_resamples=500)
    assert (d.estimate, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def _unpaired(a, b, y, num_resamples, rng):
    """A deliberately wrong bootstrap: the two predictors' examples resampled independently."""
    nll_a = -np.log(a[np.arange(len(y)), y])
    nll_b = -np.log(b[np.arange(len(y)), y])
    i = rng.integers(0, len(y), (num_resamples, len(y)))
    j = rng.integers(0, len(y), (num_resamples, len(y)))
    return np.quantile(nll_a[i].mean(-1) - nll_b[j].mean(-1), [0.025, 0.975])


def test_the_interval_covers_a_known_difference_at_its_nominal_rate_and_an_unpaired_one_does_not():
    """Test sets of 200 drawn from a population of 200,000 whose NLL difference is known: the
    95% interval covers it in 0.91-0.985 of 300 test sets (the percentile bootstrap of a mean
    at n = 200 covers about 0.94; 0.014 is one binomial standard error at 300). The unpaired
    bootstrap ignores that the two predictors err on the same examples: its intervals are
    several times wider and cover almost always, outside the band."""
    pop_a, pop_b, pop_y = _population(200_000, 4)
    rows = np.arange(len(pop_y))
    truth = np.mean(np.log(pop_b[rows, pop_y]) - np.log(pop_a[rows, pop_y]))
    rng = np.random.default_rng(5)
    paired_hits, unpaired_hits, ratio = 0, 0, []
    for k in range(300):
        pick = rng.integers(0, len(pop_y), 200)
        a, b, y = pop_a[pick], pop_b[pick], pop_y[pick]
        d = paired_bootstrap(a, b, y, "nll", num_resamples=500, seed=k)
        paired_hits += d.low <= truth <= d.high
        low, high = _unpaired(a, b, y, 500, rng)
        unpaired_hits += low <= truth <= high
        ratio.append((high - low) / (d.high - d.low))
    assert 0.91 <= paired_hits / 300 <= 0.985
    assert not 0.91 <= unpaired_hits / 300 <= 0.985
    assert np.median(ratio) > 2


@pytest.mark.parametrize("metric", ["ece", "debiased_l2_ce"])
def test_the_calibration_interval_covers_its_population_difference_roughly(metric):
    """ECE is a biased, binned statistic, and the debiased L2 error's resamples are not
    debiased: their bootstrap intervals are approximations. At test sets of 1,000 from a
    population of 200,000 (the population's difference as the truth), the 95% interval still
    covers it in at least 0.85 of 100 test sets."""
    pop_a, pop_b, pop_y = _population(200_000, 6)
    truth = METRICS[metric](pop_a, pop_y) - METRICS[metric](pop_b, pop_y)
    rng = np.random.default_rng(7)
    hits = 0
    for k in range(100):
        pick = rng.integers(0, len(pop_y), 1000)
        d = paired_bootstrap(
            pop_a[pick], pop_b[pick], pop_y[pick], metric, num_resamples=200, seed=k
        )
        hits += d.low <= truth <= d.high
    assert hits / 100 >= 0.85


def test_swapping_the_predictors_negates_the_difference_and_keeps_the_p_value():
    a, b, y = _population(300, 8)
    ab = paired_bootstrap(a, b, y, "aurc", num_resamples=400)
    ba = paired_bootstrap(b, a, y, "aurc", num_resamples=400)
    assert ba.estimate == pytest.approx(-ab.estimate)
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low))
    assert ba.p_value == pytest.approx(ab.p_value)
    assert ab.estimate == pytest.approx(aurc(a, y) - aurc(b, y))


def test_the_p_value_is_small_exactly_when_the_interval_excludes_zero():
    a, b, y = _population(500, 9)
    clear = paired_bootstrap(a, np.full_like(a, 1 / 3), y, "nll")
    assert clear.high < 0 and clear.p_value < 0.05
    same = paired_bootstrap(a, a, y, "nll")
    assert same.estimate == 0 and same.p_value == 1.0
    near = paired_bootstrap(a, _tempered(np.log(a), 1.01), y, "ece")
    assert (near.low <= 0 <= near.high) == (near.p_value >= 0.05)


def test_the_verdict_reads_the_interval_in_each_metrics_direction():
    a, b, y = _population(500, 9)
    blunt = np.full_like(a, 1 / 3)
    assert paired_bootstrap(a, blunt, y, "nll").verdict == "better"
    assert paired_bootstrap(blunt, a, y, "nll").verdict == "worse"
    # accuracy: larger is better, so the same sign of the interval reads the other way
    wrong = np.roll(a, 1, axis=-1)
    higher = paired_bootstrap(a, wrong, y, "accuracy")
    assert higher.low > 0 and higher.verdict == "better"
    assert paired_bootstrap(wrong, a, y, "accuracy").verdict == "worse"
    assert paired_bootstrap(a, a, y, "ece").verdict == "level"
    # accuracy at 90% coverage reads as accuracy does
    assert paired_bootstrap(wrong, a, y, "accuracy_at_90").verdict == "worse"
    assert HIGHER_IS_BETTER == {"accuracy", "accuracy_at_90"} and HIGHER_IS_BETTER <= set(METRICS)
    record = higher.as_dict()
    assert record["verdict"] == "better" and record["p_value"] == higher.p_value


def test_runs_that_repeat_one_run_give_that_runs_comparison():
    a, b, y = _population(200, 10)
    for metric in ("brier", "classwise_ece"):
        one = paired_bootstrap(a, b, y, metric, num_resamples=200)
        three = paired_bootstrap(np.stack([a] * 3), np.stack([b] * 3), y, metric, num_resamples=200)
        assert (three.estimate, three.low, three.high) == pytest.approx(
            (one.estimate, one.low, one.high), abs=1e-12
        )
        assert three.as_dict()["num_runs"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "f1"}, "metric must be one of"),
        ({"level": 1.0}, "level must lie strictly between 0 and 1"),
        ({"level": "0.95"}, "level must be a number strictly between 0 and 1"),
        ({"probs_a": np.full((0, 10, 3), 1 / 3)}, "at least one run and one example"),
        (
            {"probs_a": np.full((9, 3), 1 / 3), "probs_b": np.full((9, 3), 1 / 3)}
            | {"labels": np.zeros(9, int)},
            "labels: a paired bootstrap needs at least 10 test examples, got 9",
        ),
        (
            {"probs_a": np.full((12, 3), 1 / 3), "probs_b": np.full((12, 3), 1 / 3)}
            | {"labels": np.zeros(12, int), "metric": "debiased_l2_ce"},
            "metric 'debiased_l2_ce' needs more test examples than its 15 equal-mass bins",
        ),
        ({"seed": None}, "seed must be a non-negative integer, got None"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"seed": "abc"}, "seed must be a non-negative integer"),
        ({"num_resamples": 10}, "num_resamples must be at least 100"),
        ({"num_resamples": 200.0}, "num_resamples must be an integer"),
        ({"probs_b": np.full((4, 3), 1 / 3)}, "probs_a and probs_b must have the same shape"),
        (
            {"probs_a": np.full((2, 10, 3, 1), 1.0)},
            r"probs_a must have shape \(N, C\) or \(R, N, C\)",
        ),
        ({"probs_a": np.full((10, 3), np.nan)}, "^probs_a must be finite"),
        ({"probs_b": np.full((10, 3), 0.5)}, "^probs_b rows must sum to 1"),
        # the labels' range was blamed on probs_a ("probs_a: labels must lie in 0..2")
        (
            {"labels": np.array([0, 1, 2, 3, 0] * 2)},
            r"^labels must lie in 0\.\.2 \(probs_a has C = 3",
        ),
        ({"labels": np.array([0, 1, 2, 0, 5] * 2)}, r"^labels must lie in 0\.\.2"),
        ({"labels": np.array([0, 1, 2, 0, -1] * 2)}, r"^labels must lie in 0\.\.2"),
        ({"labels": np.array([0, 1, 2, 0, 0.5] * 2)}, r"^labels must be integer class"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(change, message):
    args = {
        "probs_a": np.full((10, 3), 1 / 3),
        "probs_b": np.full((10, 3), 1 / 3),
        "labels": np.array([0, 1, 2, 0, 1] * 2),
        "metric": "nll",
    }
    args.update(change)
    options = {k: args.pop(k) for k in ("level", "num_resamples", "seed") if k in args}
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(**args, **options)


def test_a_numpy_level_is_taken_as_a_number():
    a, b, y = _population(100, 11)
    by_numpy = paired_bootstrap(a, b, y, "nll", level=np.float32(0.9), num_resamples=200)
    by_float = paired_bootstrap(a, b, y, "nll", level=0.9, num_resamples=200)
    assert (by_numpy.low, by_numpy.high) == pytest.approx((by_float.low, by_float.high))


def test_zero_dimensional_arrays_are_taken_as_their_numbers():
    """A 0-d level, num_resamples or seed (np.asarray(0.9)) was refused as not a number (found
    by a user-probe review); an array of another shape is refused as not a scalar."""
    import jax.numpy as jnp

    a, b, y = _population(100, 11)
    plain = paired_bootstrap(a, b, y, "nll", level=0.9, num_resamples=200, seed=4)
    for wrap in (np.asarray, jnp.asarray):
        wrapped = paired_bootstrap(
            a, b, y, "nll", level=wrap(0.9), num_resamples=wrap(200), seed=wrap(4)
        )
        assert (wrapped.low, wrapped.high) == pytest.approx((plain.low, plain.high))
        assert wrapped.num_resamples == 200 and isinstance(wrapped.level, float)
    with pytest.raises(ValueError, match="level must be a scalar"):
        paired_bootstrap(a, b, y, "nll", level=np.asarray([0.9]))


def test_a_zero_probability_on_a_label_is_refused_not_turned_into_nan():
    a = np.array([[1.0, 0.0]] + [[0.5, 0.5]] * 9)
    labels = np.array([1] + [0] * 9)
    with pytest.raises(ValueError, match="'nll' is not finite"):
        paired_bootstrap(a, np.full((10, 2), 0.5), labels, "nll", num_resamples=100)


def test_labels_of_another_length_are_blamed_on_the_labels():
    probs = np.full((40, 2), 0.5)
    with pytest.raises(ValueError, match=r"^labels must have shape \(40,\), got \(30,\)"):
        paired_bootstrap(probs, probs, np.zeros(30, int))  # was "probs_a: labels must ..."


def test_a_test_set_below_fifty_examples_is_warned_as_anti_conservative():
    """Under a true null the 5% test rejected in 0.10 of simulated test sets of 20 examples
    (NLL; 0.04-0.05 at 100). Here, by simulation at N = 20 (two noisy copies of one predictor,
    labels from it: a true difference of 0), the rejection rate is above 0.05 beyond its
    standard error, and the call warns; at 50 examples it does not warn."""
    rng = np.random.default_rng(5)
    rejected = []
    for repeat in range(150):
        logits = rng.normal(0, 2, (20, 3))
        labels = (_tempered(logits, 1.0).cumsum(-1) < rng.random((20, 1))).sum(-1)
        a = _tempered(logits + rng.normal(0, 1, (20, 3)), 1.0)
        b = _tempered(logits + rng.normal(0, 1, (20, 3)), 1.0)
        with pytest.warns(UserWarning, match=r"20 test examples .* anti-conservative"):
            difference = paired_bootstrap(a, b, labels, "nll", num_resamples=400, seed=repeat)
        rejected.append(difference.p_value < 0.05)
    assert np.mean(rejected) > 0.05 + np.sqrt(0.05 * 0.95 / 150)  # measured 0.16 (400 resamples)
    probs = np.full((50, 2), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paired_bootstrap(probs, probs, np.zeros(50, int), num_resamples=100)
