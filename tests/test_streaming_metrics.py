"""Metrics accumulated over mini-batches against the float64 batch metrics of
mtbkd_jax.metrics (the independent reference: NumPy on the whole set at once)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtbkd_jax import metrics
from mtbkd_jax.streaming_metrics import (
    StreamingMetricsState,
    streaming_classification_metrics,
    streaming_compute,
    streaming_init,
    streaming_merge,
    streaming_reliability_bins,
    streaming_update,
)

KEYS = ("accuracy", "nll", "brier", "ece", "classwise_ece")


def _problem(seed: int, n: int, c: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = sharpness * rng.normal(size=(n, c))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    return probs, labels


def _batch_figures(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
    return {k: metrics.classification_metrics(probs, labels, num_bins)[k] for k in KEYS}


def _streamed(probs, labels, sizes, num_bins=15):
    state = streaming_init(probs.shape[1], num_bins)
    start = 0
    for size in sizes:
        state = streaming_update(state, probs[start : start + size], labels[start : start + size])
        start += size
    assert start == len(labels)
    return state


def test_float32_batches_give_the_batch_metrics():
    """Float32 probabilities in uneven batches: the bin counts and accuracy exactly, the
    float figures to float32 rounding (rtol 1e-6; atol 1e-6 for the ECEs, which are
    differences of sums)."""
    probs, labels = _problem(0, 1000, 4)
    state = _streamed(probs, labels, [1, 99, 400, 500])
    got = streaming_compute(state)
    expected = _batch_figures(probs, labels)
    assert got["examples"] == 1000
    assert got["accuracy"] == expected["accuracy"]
    for key in ("nll", "brier", "ece", "classwise_ece"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)
    edges, counts, conf, acc = streaming_reliability_bins(state)
    ref_edges, ref_counts, ref_conf, ref_acc = metrics.reliability_bins(probs, labels)
    np.testing.assert_array_equal(edges, ref_edges)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(conf, ref_conf, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(acc, ref_acc)  # ratios of exact integer counts


def test_lists_and_wide_jax_arrays_keep_their_bins_as_float64_arrays_do():
    """A list of Python floats (float64) and a float64 JAX array (x64 on) met a float32 state
    without the edge-keeping cast NumPy arrays get: 0.7 became 0.69999999 and left bin 7 of 10
    (ECE 0.175 where the batch metric gives 0.475; found by a user-probe review)."""
    rows = [[0.7, 0.3]] * 10 + [[0.65, 0.35]] * 10
    labels = [0] * 10 + [1] * 10
    expected = {
        "ece": metrics.expected_calibration_error(rows, labels, 10),
        "classwise_ece": metrics.classwise_calibration_error(rows, labels, 10),
    }
    batches = [[(rows, labels)], [(tuple(rows), tuple(labels))]]
    with jax.enable_x64(True):
        wide = [(jnp.asarray(rows, jnp.float64), jnp.asarray(labels))]
        got = [
            streaming_classification_metrics(b, 2, 10, dtype=jnp.float32) for b in [*batches, wide]
        ]
    got += [streaming_classification_metrics(b, 2, 10) for b in batches]
    for figures in got:
        for key, value in expected.items():
            np.testing.assert_allclose(figures[key], value, rtol=1e-6)


def test_a_float32_state_stays_float32_under_x64():
    """With jax_enable_x64 on, the log of a subnormal-safe label probability was widened by a
    NumPy float64 constant: the state's NLL became float64 and compute refused the state."""
    probs, labels = _problem(3, 40, 3)
    with jax.enable_x64(True):
        state = streaming_update(streaming_init(3, dtype=jnp.float32), probs, labels)
        assert {field.dtype for field in state} == {np.dtype(np.float32)}
        got = streaming_compute(state)
    np.testing.assert_allclose(got["nll"], metrics.negative_log_likelihood(probs, labels), 1e-6)
    # inside jit and scan, with JAX's int64 labels under x64 (the host path for wide labels
    # must leave traced labels alone: boolean indexing of a tracer fails)
    with jax.enable_x64(True):
        state = streaming_init(3, dtype=jnp.float64)
        jitted = jax.jit(streaming_update)(
            state, jnp.asarray(probs, jnp.float64), jnp.asarray(labels)
        )
        assert jnp.asarray(labels).dtype == jnp.int64
        scanned, _ = jax.lax.scan(
            lambda carry, batch: (streaming_update(carry, *batch), None),
            state,
            (jnp.asarray(probs, jnp.float64).reshape(4, 10, 3), jnp.asarray(labels).reshape(4, 10)),
        )
        for result in (jitted, scanned):
            np.testing.assert_allclose(
                streaming_compute(result)["nll"],
                metrics.negative_log_likelihood(probs, labels),
                1e-6,
            )


def test_labels_too_wide_for_int32_are_invalid_rows_not_an_overflow():
    """uint64 labels (-1, the invalid marker, fits no unsigned type) and Python integers past
    int32 raised NumPy's OverflowError; they are out of range, so invalid rows."""
    probs = np.full((3, 3), 1 / 3, np.float32)
    for labels in (np.array([0, 1, 2**32], np.uint64), [0, 1, 2**33]):
        state = streaming_update(streaming_init(3), probs, labels)
        with pytest.raises(ValueError, match="state holds 1 invalid rows"):
            streaming_compute(state)
    fine = streaming_update(streaming_init(3), probs, np.array([0, 1, 2], np.uint64))
    assert streaming_compute(fine)["examples"] == 3


def test_float64_state_matches_to_float64_rounding():
    with jax.enable_x64(True):
        probs, labels = _problem(1, 600, 3)
        probs = probs.astype(np.float64)
        probs /= probs.sum(-1, keepdims=True)
        state = _streamed(probs, labels, [250, 350])
        assert state.examples.dtype == jnp.float64
        got = streaming_compute(state)
    expected = _batch_figures(probs, labels)
    for key in KEYS:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, err_msg=key)


@settings(max_examples=30, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 119), max_size=6, unique=True),
    seed=st.integers(0, 2**16),
    num_bins=st.sampled_from([1, 2, 7, 10, 15]),
)
def test_any_split_into_batches_gives_the_same_figures(cuts, seed, num_bins):
    probs, labels = _problem(seed, 120, 3)
    bounds = [0, *sorted(cuts), 120]
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    got = streaming_compute(_streamed(probs, labels, sizes, num_bins))
    whole = streaming_compute(_streamed(probs, labels, [120], num_bins))
    expected = _batch_figures(probs, labels, num_bins)
    assert got["accuracy"] == expected["accuracy"] == whole["accuracy"]
    for key in ("nll", "brier", "ece", "classwise_ece"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(got[key], whole[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("num_bins", [5, 10, 15])
def test_confidences_on_and_beside_the_edges_land_in_the_batch_metrics_bins(num_bins):
    """A float32 confidence of k/B rounded to float32 (above or below k/B) and its float32
    neighbours: every count equals reliability_bins's (which bins the float64 value). Edges
    rounded to the nearest float32 would put np.float32(0.7), which is below 0.7, in the bin
    above."""
    exact = np.arange(num_bins + 1) / num_bins
    centre = exact.astype(np.float32)
    values = np.concatenate(
        [centre, np.nextafter(centre, np.float32(0)), np.nextafter(centre, np.float32(2))]
    )
    confidence = np.clip(values, np.float32(0.5), np.float32(1.0))  # a top-class probability
    probs = np.stack([confidence, np.float32(1) - confidence], -1).astype(np.float32)
    labels = np.zeros(len(probs), np.int64)
    _, counts, _, _ = streaming_reliability_bins(_streamed(probs, labels, [len(probs)], num_bins))
    _, expected, _, _ = metrics.reliability_bins(probs, labels, num_bins)
    np.testing.assert_array_equal(counts, expected)
    if num_bins == 10:  # the case the docstring names
        lone = np.array([[0.7, 0.3]], np.float32)
        _, counts, _, _ = streaming_reliability_bins(_streamed(lone, np.array([0]), [1], 10))
        assert float(np.float32(0.7)) < 0.7 and counts[6] == 1 and counts[7] == 0
        naive = np.searchsorted(exact[1:-1].astype(np.float32), np.float32(0.7), side="right")
        assert naive == 7  # what nearest-rounded edges would do


def test_one_hot_predictions_fill_the_last_bin_and_an_impossible_label_gives_inf():
    probs = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    labels = np.array([0, 1, 2, 1])
    state = _streamed(probs, labels, [4])
    _, counts, _, _ = streaming_reliability_bins(state)
    assert counts[-1] == 4 and counts[:-1].sum() == 0  # confidence 1.0: no phantom bin
    got = streaming_compute(state)
    assert got["nll"] == np.inf == metrics.negative_log_likelihood(probs, labels)
    assert got["accuracy"] == 0.75
    assert got["ece"] == pytest.approx(metrics.expected_calibration_error(probs, labels))
    assert np.isfinite(got["brier"]) and np.isfinite(got["classwise_ece"])


def test_extreme_and_low_precision_probabilities():
    """Softmaxes of logits 80 apart (probabilities down to float32's subnormals), in float16
    and bfloat16 too: the state widens them exactly and matches the batch metrics on the same
    (widened) values."""
    logits = np.array([[80.0, 0.0, -20.0], [0.0, 0.0, 0.0], [-5.0, 40.0, 3.0]])
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
    labels = np.array([2, 1, 1])
    for dtype in (np.float32, jnp.float16, jnp.bfloat16):
        low = jnp.asarray(probs).astype(dtype)
        widened = np.asarray(low.astype(jnp.float32))
        widened_ok = np.abs(widened.sum(-1) - 1).max() <= 1e-3
        if not widened_ok:
            continue
        state = streaming_update(streaming_init(3), low, labels)
        got = streaming_compute(state)
        expected = _batch_figures(widened, labels)
        for key in KEYS:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=f"{dtype} {key}")


def test_compensated_sums_do_not_drift_over_thousands_of_batches():
    """4,100 batches of 4,096 (16.8 million examples, past float32's 2**24) in a lax.scan:
    every statistic equals 4,100 times one batch's increment to 1e-12 relative. A plain
    float32 running sum of the same batch sums, computed alongside, is off by more than 1e-6:
    the test has teeth."""
    probs, labels = _problem(3, 4096, 3, sharpness=1.0)
    steps = 4100
    state0 = streaming_init(3)
    once = streaming_update(state0, probs, labels)
    increment = jnp.asarray(once.bin_confidence[0]).sum()

    def body(carry, _):
        state, plain = carry
        return (streaming_update(state, probs, labels), plain + increment), None

    (state, plain), _ = jax.lax.scan(body, (state0, jnp.float32(0)), None, length=steps)

    def value(pair):
        return np.asarray(pair, np.float64).sum(0)

    for field, one, many in zip(state._fields, once, state, strict=True):
        expected = steps * value(one)
        np.testing.assert_allclose(value(many), expected, rtol=1e-12, atol=0, err_msg=field)
    exact = steps * float(np.float64(increment))
    assert value(state.examples) == steps * 4096
    assert abs(float(plain) / exact - 1) > 1e-6
    got = streaming_compute(state)
    expected = _batch_figures(probs, labels)
    for key in KEYS:  # the same data repeated: the same figures
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_mask_leaves_padding_out_even_when_it_holds_nan():
    probs, labels = _problem(4, 50, 4)
    padded = np.concatenate([probs, np.full((14, 4), np.nan, np.float32)])
    padded_labels = np.concatenate([labels, np.full(14, -1)])
    mask = np.arange(64) < 50
    state = streaming_update(streaming_init(4), padded, padded_labels, mask)
    got, expected = streaming_compute(state), streaming_compute(_streamed(probs, labels, [50]))
    assert got["examples"] == 50 and got["accuracy"] == expected["accuracy"]
    for key in KEYS:  # another batch shape sums in another order: the last bits move
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize(
    "row, label",
    [
        ([np.nan, 0.5, 0.5], 0),
        ([-0.1, 0.6, 0.5], 0),
        ([0.5, 0.6, 0.1], 0),  # sums to 1.2
        ([0.2, 0.3, 0.5], 3),
        ([0.2, 0.3, 0.5], -1),
        ([np.inf, 0.0, 0.0], 0),
    ],
)
def test_invalid_rows_are_refused_at_compute_not_turned_into_nan(row, label):
    probs, labels = _problem(5, 20, 3)
    state = _streamed(probs, labels, [20])
    state = streaming_update(state, np.array([row], np.float32), np.array([label]))
    assert np.isfinite(np.asarray(state.nll)).all()  # the bad row did not poison the sums
    with pytest.raises(ValueError, match="1 invalid rows"):
        streaming_compute(state)
    with pytest.raises(ValueError, match="invalid rows"):
        streaming_reliability_bins(state)


def test_merge_of_two_halves_equals_one_state_of_all():
    probs, labels = _problem(6, 300, 5)
    first = _streamed(probs[:120], labels[:120], [120])
    second = _streamed(probs[120:], labels[120:], [100, 80])
    merged = streaming_compute(streaming_merge(first, second))
    whole = streaming_compute(_streamed(probs, labels, [300]))
    assert merged["accuracy"] == whole["accuracy"]
    for key in KEYS:
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="same classes, bins and dtype"):
        streaming_merge(first, streaming_init(5, num_bins=10))


def test_update_inside_a_jitted_function_equals_the_eager_loop():
    probs, labels = _problem(7, 256, 3)
    stacked_probs, stacked_labels = probs.reshape(4, 64, 3), labels.reshape(4, 64)

    @jax.jit
    def accumulate(state, batch_probs, batch_labels):
        def body(s, batch):
            return streaming_update(s, *batch), None

        return jax.lax.scan(body, state, (batch_probs, batch_labels))[0]

    jitted = accumulate(streaming_init(3), stacked_probs, stacked_labels)
    eager = _streamed(probs, labels, [64] * 4)
    for a, b in zip(jitted, eager, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_classification_metrics_over_an_iterable_of_batches():
    probs, labels = _problem(8, 90, 3)
    batches = ((probs[i : i + 32], labels[i : i + 32]) for i in range(0, 90, 32))
    got = streaming_classification_metrics(batches, num_classes=3)
    expected = _batch_figures(probs, labels)
    for key in KEYS:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="item 0"):
        streaming_classification_metrics([probs], num_classes=3)


def test_bad_arguments_are_named():
    state = streaming_init(3)
    assert isinstance(state, StreamingMetricsState) and state.num_bins == 15
    assert streaming_init(3, num_bins=np.asarray(10)).num_bins == 10  # a 0-d array: its number
    cases = [
        (lambda: streaming_init(1), "num_classes must be at least 2"),
        (lambda: streaming_init(3.0), "num_classes must be a positive integer"),
        (lambda: streaming_init(3, num_bins=0), "num_bins must be a positive integer"),
        (lambda: streaming_init(3, num_bins=True), "num_bins must be a positive integer"),
        # 10**9 bins were taken: a state of 48 GB for 3 classes
        (lambda: streaming_init(3, num_bins=10**9), "num_bins must be at most 1_000_000"),
        (lambda: streaming_init(3, num_bins=np.asarray([10])), "num_bins must be a scalar"),
        (lambda: streaming_init(3, dtype=jnp.int32), "dtype must be float32 or float64"),
        (lambda: streaming_init(3, dtype=jnp.float64), "needs jax_enable_x64"),
        (lambda: streaming_update(state, np.ones((2, 4)) / 4, [0, 1]), r"shape \(N, 3\)"),
        (lambda: streaming_update(state, np.ones((2, 3)) / 3, [0.0, 1.0]), "labels must be int"),
        (lambda: streaming_update(state, np.ones((2, 3)) / 3, [0, 1, 2]), "labels must have"),
        (lambda: streaming_update(state, np.ones((2, 3), int), [0, 1]), "floating point"),
        (lambda: streaming_update(state, np.ones((2, 3)) / 3, [0, 1], [1, 0]), "mask must"),
        (lambda: streaming_update({}, np.ones((2, 3)) / 3, [0, 1]), "state must be"),
        (lambda: streaming_compute(state), "no example"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_a_psum_over_a_named_axis_merges_per_shard_states():
    """Each shard (here a vmapped axis, as a device axis of shard_map) accumulates its own
    rows; a psum of the states gives the state of all the rows."""
    probs, labels = _problem(9, 240, 3)
    shards_probs, shards_labels = probs.reshape(4, 60, 3), labels.reshape(4, 60)

    def per_shard(p, y):
        return jax.lax.psum(streaming_update(streaming_init(3), p, y), "data")

    summed = jax.vmap(per_shard, axis_name="data")(shards_probs, shards_labels)
    first = jax.tree.map(lambda x: x[0], summed)
    got, whole = streaming_compute(first), streaming_compute(_streamed(probs, labels, [240]))
    assert got["examples"] == 240 and got["accuracy"] == whole["accuracy"]
    for key in KEYS:
        np.testing.assert_allclose(got[key], whole[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_a_subnormal_probability_on_the_label_has_its_exact_log():
    """XLA on a CPU treats subnormal float32 inputs as zero: -log(1e-44) came out inf where
    the batch metric gives 101.333. A negative subnormal is refused, as the batch refuses it."""
    probs = np.array([[1.0, 1e-44, 0.0], [0.5, 0.5 - 3e-45, 3e-45]], np.float32)
    labels = np.array([1, 2])
    got = streaming_compute(_streamed(probs, labels, [2]))["nll"]
    expected = metrics.negative_log_likelihood(probs, labels)
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-6)
    negative = np.array([[1.0, -1e-44, 0.0]], np.float32)
    with pytest.raises(ValueError, match="1 invalid rows"):
        streaming_compute(_streamed(negative, np.array([0]), [1]))


def test_counts_stay_exact_past_2_to_the_24_in_batches_of_any_size():
    """17,000 batches of 1,000 rows (17 million examples; 1,000 is not a power of two, so a
    plain float32 count rounds past 2**24), and one-row updates on top of 2**25 + 2**24
    examples (a plain float32 count stops there): every count exact; two states merged, too."""
    probs, labels = _problem(10, 1000, 3, sharpness=1.0)

    def body(state, _):
        return streaming_update(state, probs, labels), None

    state, _ = jax.lax.scan(body, streaming_init(3), None, length=17_000)
    once = streaming_update(streaming_init(3), probs, labels)
    for field in ("examples", "correct", "bin_count", "bin_correct", "class_count", "class_hits"):
        got = np.asarray(getattr(state, field), np.float64).sum(0)
        expected = 17_000 * np.asarray(getattr(once, field), np.float64).sum(0)
        np.testing.assert_array_equal(got, expected, err_msg=field)
    merged = streaming_merge(state, state)
    assert np.asarray(merged.examples, np.float64).sum() == 34_000_000
    # a pair whose lost part is near 2**24 (where an unrenormalised one ends up after 2**25
    # one-row updates): each update must still count one
    big = streaming_init(2)._replace(examples=jnp.array([2.0**25, 2.0**24 - 2], jnp.float32))
    for _ in range(6):
        big = streaming_update(big, np.array([[0.9, 0.1]], np.float32), np.array([0]))
    assert np.asarray(big.examples, np.float64).sum() == 2**25 + 2**24 + 4


def test_one_batch_of_two_million_rows_gives_the_batch_figures():
    """A batch's per-bin float sums are chunked: one sequential float32 scatter-add over two
    million rows was 9e-4 off in ECE."""
    probs, labels = _problem(11, 2**21, 3, sharpness=1.0)
    got = streaming_compute(_streamed(probs, labels, [len(labels)]))
    assert got["examples"] == 2**21
    ece = metrics.expected_calibration_error(probs, labels)
    classwise = metrics.classwise_calibration_error(probs, labels)
    assert got["ece"] == pytest.approx(ece, abs=1e-6)
    assert got["classwise_ece"] == pytest.approx(classwise, abs=1e-6)


def test_class_probabilities_on_the_edges_and_masked_valid_rows():
    """Class probabilities exactly on bin edges land in the batch metric's class bins (a
    classwise binning on the wrong side changes the classwise ECE), and masked rows holding
    valid probabilities are left out as masked NaN rows are."""
    values = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.25, 0.45], np.float32)
    probs = np.stack([values, 1 - values], -1).repeat(2, 0)  # on an edge beside mid-bin values
    labels = np.arange(20) % 2
    got = streaming_compute(_streamed(probs, labels, [20], num_bins=5))
    expected = metrics.classwise_calibration_error(probs, labels, 5)
    assert got["classwise_ece"] == pytest.approx(expected, abs=1e-7)
    assert np.isin(probs, (np.arange(1, 5) / 5).astype(np.float32)).sum() >= 8  # on edges
    padded = np.concatenate([probs, np.tile([[0.99, 0.01]], (12, 1)).astype(np.float32)])
    mask = np.arange(32) < 20
    masked = streaming_update(streaming_init(2, 5), padded, np.zeros(32, int), mask)
    assert streaming_compute(masked)["examples"] == 20
    masked = streaming_update(
        streaming_init(2, 5), padded, np.concatenate([labels, np.zeros(12, int)]), mask
    )
    assert streaming_compute(masked) == pytest.approx(got)


def test_row_sums_within_1e_3_are_taken_and_beyond_are_refused():
    state = streaming_init(2)
    taken = streaming_update(state, np.array([[0.5, 0.5004]], np.float32), np.array([0]))
    assert streaming_compute(taken)["examples"] == 1
    refused = streaming_update(state, np.array([[0.5, 0.505]], np.float32), np.array([0]))
    with pytest.raises(ValueError, match="1 invalid rows"):
        streaming_compute(refused)


def test_wide_host_inputs_are_not_wrapped_or_rounded_to_zero_silently():
    """Labels beyond int32 used to wrap into a valid class (2**32 became 0, counted correct);
    a float64 probability that rounds to 0 in a float32 state would give an NLL of inf."""
    state = streaming_init(3)
    wrapped = streaming_update(state, np.ones((1, 3)) / 3, np.array([2**32], np.int64))
    with pytest.raises(ValueError, match="1 invalid rows"):
        streaming_compute(wrapped)
    tiny = np.array([[1 - 1e-50, 1e-50, 0.0]])
    with pytest.raises(ValueError, match="round to 0 in the state's float32"):
        streaming_update(state, tiny, np.array([1]))


def test_corrupt_or_mismatched_states_are_refused():
    state = _streamed(*_problem(12, 30, 3), [30])
    corrupt = state._replace(nll=jnp.array([jnp.nan, 0.0], jnp.float32))
    with pytest.raises(ValueError, match="NaN or infinite sums in \\['nll'\\]"):
        streaming_compute(corrupt)
    malformed = state._replace(bin_count=jnp.zeros(15))
    with pytest.raises(ValueError, match="not a state made by streaming_init"):
        streaming_update(malformed, np.ones((1, 3)) / 3, np.array([0]))
    with jax.enable_x64(True):
        wide = streaming_init(3, dtype=jnp.float64)
        with pytest.raises(ValueError, match="same classes, bins and dtype"):
            streaming_merge(state, wide)


def test_a_refused_dtype_is_reported_as_given():
    """Float64 labels were refused as 'got dtype float32' (the dtype after the conversion to a
    JAX array without x64; found by a user-probe review); a float64 mask likewise."""
    state, probs = streaming_init(3), np.full((4, 3), 1 / 3, np.float32)
    cases = [
        (np.zeros(4), None, "labels must be integer class indices, got dtype float64"),
        ([0.0] * 4, None, "labels must be integer class indices, got dtype float64"),
        (np.zeros(4, np.float16), None, "labels must be integer class indices, got dtype float16"),
        (
            np.zeros(4, int),
            np.ones(4),
            r"mask must be a boolean array of shape \(4,\), got float64",
        ),
        (np.zeros(4, int), [1.0] * 4, r"mask must be a boolean array of shape \(4,\), got float64"),
    ]
    for labels, mask, message in cases:
        with pytest.raises(ValueError, match=message):
            streaming_update(state, probs, labels, mask)


def test_float64_rows_whose_top_classes_round_to_a_tie_keep_their_top_class():
    """``[0.5 - 1e-12, 0.5 + 1e-12]`` rounds to a tie in float32: the streaming accuracy was 0
    where the float64 batch metric's is 1 (the first tied class predicted), and the ECE
    followed (a review). The top class is now the float64 one: accuracy exact, the ECE to
    float32 rounding."""
    probs = np.array([[0.5 - 1e-12, 0.5 + 1e-12], [0.3, 0.7]])
    labels = np.array([1, 0])
    got = streaming_classification_metrics([(probs, labels)], 2)
    assert got["accuracy"] == metrics.accuracy(probs, labels) == 0.5
    np.testing.assert_allclose(
        got["ece"], metrics.expected_calibration_error(probs, labels), atol=1e-6
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), decimals=st.integers(1, 3))
def test_float64_rows_rounded_to_few_decimals_give_the_batch_metrics(seed, decimals):
    """Float64 rows with many near-ties (a CSV's few decimals, renormalised: a review found
    accuracy 0.288 streamed against 0.308 in one batch on 52 such rows). Reference: the float64
    batch metrics; accuracy and counts exact, the rest to float32 rounding."""
    rng = np.random.default_rng(seed)
    probs = np.round(rng.dirichlet(np.ones(4), 52), decimals) + 1e-9 * rng.random((52, 4))
    probs /= probs.sum(-1, keepdims=True)
    labels = rng.integers(0, 4, 52)
    got = streaming_compute(_streamed(probs, labels, [20, 32]))
    expected = _batch_figures(probs, labels)
    assert got["accuracy"] == expected["accuracy"]
    for key in ("nll", "brier", "ece", "classwise_ece"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=5e-6, err_msg=key)
