"""TeacherBank against independent SciPy / scikit-learn references.

The bank stores float32 log-probabilities, so comparisons with the float64 references use
``atol = 1e-5`` on log-probabilities / entropies (a few float32 ulps on values of order 1-10)
unless stated otherwise.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import log_softmax, softmax
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mtbkd_jax import TeacherBank

ATOL = 1e-5  # float32 storage vs float64 reference


def _logits(shape, seed=0, scale=1.5):
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


def _probs(shape, seed=0):
    """Strictly positive probabilities on the simplex (float64)."""
    return softmax(_logits(shape, seed), axis=-1)


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    return data.data.astype(np.float64), data.target.astype(np.int64)


# ---------------------------------------------------------------------------------- from_logits
def test_from_logits_array_is_log_softmax():
    logits = _logits((3, 7, 4), seed=1)
    bank = TeacherBank.from_logits(logits)
    assert (bank.num_teachers, bank.num_examples, bank.num_classes) == (3, 7, 4)
    assert bank.log_probs.shape == (3, 7, 4)
    assert bank.names == ("teacher_0", "teacher_1", "teacher_2")
    np.testing.assert_allclose(np.asarray(bank.log_probs), log_softmax(logits, axis=-1), atol=ATOL)


def test_from_logits_list_equals_array():
    logits = _logits((3, 6, 5), seed=2)
    from_list = TeacherBank.from_logits([logits[0], logits[1], logits[2]], names=["a", "b", "c"])
    assert from_list.log_probs.shape == (3, 6, 5)
    assert from_list.names == ("a", "b", "c")
    np.testing.assert_allclose(
        np.asarray(from_list.log_probs), log_softmax(logits, axis=-1), atol=ATOL
    )


def test_from_logits_shift_invariant():
    # log_softmax is invariant to adding a per-row constant; a wrong implementation
    # (e.g. storing raw logits) would not be.
    logits = _logits((2, 5, 3), seed=3)
    shifted = logits + np.random.default_rng(4).normal(size=(2, 5, 1)) * 10
    a = TeacherBank.from_logits(logits)
    b = TeacherBank.from_logits(shifted)
    np.testing.assert_allclose(np.asarray(a.log_probs), np.asarray(b.log_probs), atol=1e-4)


# ----------------------------------------------------------------------------------- from_probs
def test_from_probs_round_trip():
    probs = _probs((2, 6, 4), seed=5)
    bank = TeacherBank.from_probs(probs)
    np.testing.assert_allclose(np.exp(np.asarray(bank.log_probs)), probs, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bank.probs()), probs, atol=1e-6)


def test_from_probs_accepts_one_hot_rows():
    probs = np.array(
        [
            [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]],
            [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]],
        ]
    )
    bank = TeacherBank.from_probs(probs)
    np.testing.assert_allclose(np.exp(np.asarray(bank.log_probs)), probs, atol=1e-6)
    entropies = np.asarray(bank.entropies())
    assert not np.isnan(entropies).any()
    reference = stats.entropy(probs, base=2, axis=-1)
    np.testing.assert_allclose(entropies, reference, atol=ATOL)
    # one-hot rows: exactly zero entropy
    assert entropies[0, 0] == 0.0
    assert entropies[0, 1] == 0.0
    assert entropies[1, 0] == 0.0
    # and tempering a one-hot row keeps it one-hot without NaN
    for temperature in (0.5, 2.0, 4.0):
        tempered = np.exp(np.asarray(bank.tempered_log_probs(temperature)))
        assert not np.isnan(tempered).any()
        np.testing.assert_array_equal(tempered[0, 0], [1.0, 0.0, 0.0])
        assert np.asarray(bank.entropies(temperature))[0, 0] == 0.0


def test_from_probs_list_of_arrays():
    probs = _probs((2, 4, 3), seed=6)
    bank = TeacherBank.from_probs([probs[0], probs[1]])
    assert bank.log_probs.shape == (2, 4, 3)
    np.testing.assert_allclose(np.exp(np.asarray(bank.log_probs)), probs, atol=1e-6)


# --------------------------------------------------------------------------- tempering / entropy
@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
def test_tempered_log_probs_from_logits(temperature):
    logits = _logits((3, 5, 4), seed=7)
    bank = TeacherBank.from_logits(logits)
    reference = log_softmax(logits / temperature, axis=-1)
    np.testing.assert_allclose(
        np.asarray(bank.tempered_log_probs(temperature)), reference, atol=ATOL
    )
    np.testing.assert_allclose(np.asarray(bank.probs(temperature)), np.exp(reference), atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
def test_tempered_log_probs_from_probs(temperature):
    probs = _probs((2, 5, 3), seed=8)
    bank = TeacherBank.from_probs(probs)
    # tempering probabilities: p^(1/T) / sum_c p_c^(1/T)
    powered = probs ** (1.0 / temperature)
    reference = powered / powered.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        np.asarray(bank.tempered_log_probs(temperature)),
        log_softmax(np.log(probs) / temperature, axis=-1),
        atol=ATOL,
    )
    np.testing.assert_allclose(np.asarray(bank.probs(temperature)), reference, atol=1e-6)


def test_temperature_one_is_identity_and_higher_temperature_flattens():
    logits = _logits((2, 5, 4), seed=9)
    bank = TeacherBank.from_logits(logits)
    np.testing.assert_allclose(
        np.asarray(bank.tempered_log_probs(1.0)), np.asarray(bank.log_probs), atol=1e-6
    )
    h1 = np.asarray(bank.entropies(1.0))
    h4 = np.asarray(bank.entropies(4.0))
    assert (h4 > h1).all()  # softer labels have higher entropy


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_entropies_bits_against_scipy(temperature):
    logits = _logits((3, 6, 5), seed=10)
    bank = TeacherBank.from_logits(logits)
    probs = softmax(logits / temperature, axis=-1)
    reference = stats.entropy(probs, base=2, axis=-1)
    entropies = np.asarray(bank.entropies(temperature=temperature, base=2))
    assert entropies.shape == (3, 6)
    np.testing.assert_allclose(entropies, reference, atol=ATOL)
    # nats
    np.testing.assert_allclose(
        np.asarray(bank.entropies(temperature=temperature, base=np.e)),
        stats.entropy(probs, axis=-1),
        atol=ATOL,
    )


def test_uniform_entropy_is_log2_c():
    bank = TeacherBank.from_logits(np.zeros((1, 3, 8)))
    np.testing.assert_allclose(np.asarray(bank.entropies()), 3.0, atol=1e-6)  # log2(8)


# -------------------------------------------------------------------------------- accuracy
def test_accuracy_hand_computed():
    # teacher 0 predicts [0, 1, 2, 0]; teacher 1 predicts [2, 1, 0, 1]
    logits = np.full((2, 4, 3), -1.0)
    for i, c in enumerate([0, 1, 2, 0]):
        logits[0, i, c] = 2.0
    for i, c in enumerate([2, 1, 0, 1]):
        logits[1, i, c] = 2.0
    labels = np.array([0, 1, 2, 1])
    bank = TeacherBank.from_logits(logits)
    # teacher 0: 3 of 4 right; teacher 1: examples 1 and 3 right -> 2 of 4
    np.testing.assert_allclose(bank.accuracy(labels), [0.75, 0.5], atol=0)
    # float labels holding integers are accepted
    np.testing.assert_allclose(bank.accuracy(labels.astype(float)), [0.75, 0.5], atol=0)


def test_accuracy_random_against_numpy():
    logits = _logits((3, 50, 4), seed=11)
    labels = np.random.default_rng(12).integers(0, 4, size=50)
    bank = TeacherBank.from_logits(logits)
    reference = (logits.argmax(-1) == labels[None]).mean(1)
    np.testing.assert_allclose(bank.accuracy(labels), reference, atol=0)


# ------------------------------------------------------------------------------ content_hash
def test_content_hash_stable_and_sensitive():
    logits = _logits((2, 4, 3), seed=13)
    a = TeacherBank.from_logits(logits, names=["x", "y"])
    b = TeacherBank.from_logits(logits.copy(), names=["x", "y"])
    assert a.content_hash == b.content_hash
    assert isinstance(a.content_hash, str) and len(a.content_hash) == 16
    assert a.content_hash in repr(a)

    changed = logits.copy()
    changed[1, 2, 0] += 0.5
    assert TeacherBank.from_logits(changed, names=["x", "y"]).content_hash != a.content_hash
    assert TeacherBank.from_logits(logits, names=["x", "z"]).content_hash != a.content_hash


# ------------------------------------------------------------------------- select / average / take
def test_select_by_index_and_name():
    logits = _logits((3, 4, 3), seed=14)
    bank = TeacherBank.from_logits(logits, names=["a", "b", "c"])
    sub = bank.select(["c", 0])
    assert sub.names == ("c", "a")
    np.testing.assert_allclose(
        np.asarray(sub.log_probs), log_softmax(logits[[2, 0]], axis=-1), atol=ATOL
    )
    with pytest.raises(ValueError, match="teachers"):
        bank.select([])


def test_average_is_mean_of_probabilities():
    logits = _logits((3, 5, 4), seed=15)
    bank = TeacherBank.from_logits(logits)
    avg = bank.average(name="mean")
    assert avg.names == ("mean",)
    assert avg.log_probs.shape == (1, 5, 4)
    reference = softmax(logits, axis=-1).mean(0)
    np.testing.assert_allclose(np.exp(np.asarray(avg.log_probs[0])), reference, atol=1e-6)
    # not the softmax of the mean logits (a plausible wrong implementation)
    wrong = softmax(logits.mean(0), axis=-1)
    assert np.abs(reference - wrong).max() > 1e-2


def test_average_with_zeros():
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    avg = TeacherBank.from_probs(probs).average()
    np.testing.assert_allclose(np.exp(np.asarray(avg.log_probs)), [[[0.5, 0.5]]], atol=1e-6)


def test_take_examples():
    logits = _logits((2, 6, 3), seed=16)
    bank = TeacherBank.from_logits(logits, names=["a", "b"])
    sub = bank.take([4, 1])
    assert sub.names == ("a", "b")
    assert (sub.num_teachers, sub.num_examples) == (2, 2)
    np.testing.assert_allclose(
        np.asarray(sub.log_probs), log_softmax(logits[:, [4, 1]], axis=-1), atol=ATOL
    )


def test_take_out_of_range_raises():
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=17))
    with pytest.raises((IndexError, ValueError)):
        bank.take([0, 3])


# ---------------------------------------------------------------------------- from_callables
def test_from_callables_sklearn_on_iris(iris):
    x, y = iris
    model = LogisticRegression(max_iter=500).fit(x, y)
    bank = TeacherBank.from_callables([model], x, names=["lr"])
    assert bank.log_probs.shape == (1, 150, 3)
    assert bank.names == ("lr",)
    np.testing.assert_allclose(np.asarray(bank.probs()[0]), model.predict_proba(x), atol=1e-6)
    reference_acc = (model.predict(x) == y).mean()
    np.testing.assert_allclose(bank.accuracy(y), [reference_acc], atol=0)


def test_from_callables_jax_logits_and_probs(iris):
    x, _ = iris
    rng = np.random.default_rng(18)
    weight = rng.normal(scale=0.3, size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)

    def logits_fn(batch):
        return batch @ jnp.asarray(weight) + jnp.asarray(bias)

    def probs_fn(batch):
        return jax.nn.softmax(logits_fn(batch), axis=-1)

    reference = log_softmax(x @ weight.astype(np.float64) + bias, axis=-1)

    from_logits = TeacherBank.from_callables([logits_fn], x, names=["f"])
    np.testing.assert_allclose(np.asarray(from_logits.log_probs[0]), reference, atol=1e-4)

    from_probs = TeacherBank.from_callables([probs_fn], x, outputs="probs", names=["g"])
    np.testing.assert_allclose(np.asarray(from_probs.probs()[0]), np.exp(reference), atol=1e-5)

    # batching does not change the result (150 examples in chunks of 7)
    batched = TeacherBank.from_callables([logits_fn], x, names=["f"], batch_size=7)
    np.testing.assert_allclose(
        np.asarray(batched.log_probs), np.asarray(from_logits.log_probs), atol=1e-6
    )


def test_from_callables_mixed_teachers(iris):
    x, y = iris
    model = LogisticRegression(max_iter=500).fit(x, y)

    def uniform_logits(batch):
        return jnp.zeros((batch.shape[0], 3))

    bank = TeacherBank.from_callables([model, uniform_logits], x, names=["lr", "flat"])
    assert bank.log_probs.shape == (2, 150, 3)
    np.testing.assert_allclose(np.asarray(bank.probs()[0]), model.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(np.asarray(bank.probs()[1]), 1 / 3, atol=1e-6)


def test_from_callables_sklearn_subset_of_classes(iris):
    x, y = iris
    keep = y != 1
    partial = LogisticRegression(max_iter=500).fit(x[keep], y[keep])  # classes_ = [0, 2]
    full = LogisticRegression(max_iter=500).fit(x, y)
    np.testing.assert_array_equal(partial.classes_, [0, 2])

    bank = TeacherBank.from_callables([full, partial], x, num_classes=3, names=["full", "part"])
    assert bank.log_probs.shape == (2, 150, 3)
    probs = np.asarray(bank.probs())
    partial_probs = partial.predict_proba(x)
    np.testing.assert_allclose(probs[1][:, 0], partial_probs[:, 0], atol=1e-6)
    np.testing.assert_allclose(probs[1][:, 2], partial_probs[:, 1], atol=1e-6)
    np.testing.assert_array_equal(probs[1][:, 1], 0.0)
    assert np.isneginf(np.asarray(bank.log_probs[1][:, 1])).all()
    assert not np.isnan(np.asarray(bank.entropies())).any()

    # without num_classes the shapes disagree
    with pytest.raises(ValueError, match="num_classes"):
        TeacherBank.from_callables([full, partial], x)


def test_from_callables_bad_arguments(iris):
    x, _ = iris
    with pytest.raises(ValueError, match="outputs"):
        TeacherBank.from_callables([lambda b: b[:, :3]], x, outputs="scores")
    with pytest.raises(ValueError, match="teachers"):
        TeacherBank.from_callables([], x)
    with pytest.raises(TypeError, match=r"teachers\[0\]"):
        TeacherBank.from_callables([42], x)
    with pytest.raises(ValueError, match="batch_size"):
        TeacherBank.from_callables([lambda b: b[:, :3]], x, batch_size=0)
    with pytest.raises(ValueError, match="num_classes"):
        TeacherBank.from_callables([lambda b: b[:, :3]], x, num_classes=4)


# ---------------------------------------------------------------------------- malformed inputs
def test_nan_and_inf_logits_raise():
    logits = _logits((2, 3, 3), seed=19)
    bad = logits.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"logits must be finite.*NaN.*\(1, 2, 0\)"):
        TeacherBank.from_logits(bad)
    bad = logits.copy()
    bad[0, 1, 2] = np.inf
    with pytest.raises(ValueError, match=r"logits must be finite.*infinite"):
        TeacherBank.from_logits(bad)
    bad[0, 1, 2] = -np.inf
    with pytest.raises(ValueError, match="logits must be finite"):
        TeacherBank.from_logits(bad)


def test_bad_probs_raise():
    probs = _probs((2, 3, 3), seed=20)
    bad = probs.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="probs must be finite"):
        TeacherBank.from_probs(bad)
    bad = np.array([[[1.2, -0.2, 0.0]]])
    with pytest.raises(ValueError, match="probs must be non-negative"):
        TeacherBank.from_probs(bad)
    bad = probs.copy()
    bad[1, 2] *= 1.1
    with pytest.raises(ValueError, match=r"probs must lie on the simplex.*\(1, 2\)"):
        TeacherBank.from_probs(bad)
    # logits passed as probs are caught by the simplex check
    with pytest.raises(ValueError, match="simplex"):
        TeacherBank.from_probs(np.abs(_logits((1, 3, 3), seed=21)) + 1.0)


@pytest.mark.parametrize("constructor", ["from_logits", "from_probs"])
def test_teachers_of_different_shapes_raise(constructor):
    make = getattr(TeacherBank, constructor)
    name = "logits" if constructor == "from_logits" else "probs"
    different_n = [np.full((4, 3), 1 / 3), np.full((5, 3), 1 / 3)]
    with pytest.raises(ValueError, match=rf"{name}: every teacher"):
        make(different_n)
    different_c = [np.full((4, 3), 1 / 3), np.full((4, 2), 1 / 2)]
    with pytest.raises(ValueError, match=rf"{name}: every teacher"):
        make(different_c)


@pytest.mark.parametrize("constructor", ["from_logits", "from_probs"])
def test_degenerate_sizes_raise(constructor):
    make = getattr(TeacherBank, constructor)
    name = "logits" if constructor == "from_logits" else "probs"
    with pytest.raises(ValueError, match=rf"{name} must hold at least one teacher"):
        make(np.zeros((0, 5, 3)))
    with pytest.raises(ValueError, match=rf"{name} must hold at least one example"):
        make(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match=rf"{name} must have at least 2 classes"):
        make(np.ones((2, 5, 1)))
    with pytest.raises(ValueError, match=rf"{name} must have 3 dimensions"):
        make(np.full((5, 3), 1 / 3))


def test_non_numeric_logits_raise_type_error():
    with pytest.raises(TypeError, match="logits must be a numeric array"):
        TeacherBank.from_logits([[["a", "b"], ["c", "d"]]])
    with pytest.raises(TypeError, match="probs must be a numeric array"):
        TeacherBank.from_probs(np.array([[["x", "y"]]], dtype=object))
    with pytest.raises(TypeError, match="logits must be a numeric array, got list"):
        TeacherBank.from_logits([[[0.0, 1.0], [2.0]]])  # ragged (was an AttributeError)
    bank = TeacherBank.from_probs([[[0.5, 0.5]], [[0.9, 0.1]]])
    with pytest.raises(TypeError, match="weights must be a numeric array, got list"):
        bank.weighted_average([[1.0, 2.0], [3.0]])  # ragged
    with pytest.raises(TypeError, match="logits must be real, got complex values"):
        TeacherBank.from_logits(np.ones((2, 3, 4)) * (1 + 1j))  # NumPy drops the imaginary part


@pytest.mark.parametrize("temperature", [0, -1, np.inf, np.nan])
def test_bad_temperature_raises(temperature):
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=22))
    with pytest.raises(ValueError, match="temperature"):
        bank.tempered_log_probs(temperature)
    with pytest.raises(ValueError, match="temperature"):
        bank.entropies(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        bank.probs(temperature)


def test_bad_base_raises():
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=23))
    with pytest.raises(ValueError, match="base"):
        bank.entropies(base=0)


@pytest.mark.parametrize("base", [1.0, 1, 0.5])
def test_base_at_most_one_raises(base):
    # audit 22, nit: base 1 gave inf, base 0.5 negative entropies and NaN log-entropies
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=23))
    with pytest.raises(ValueError, match=r"base must be a finite number > 1, got"):
        bank.entropies(base=base)
    with pytest.raises(ValueError, match=r"base must be a finite number > 1, got"):
        bank.log_entropies(base=base)
    assert np.isfinite(np.asarray(bank.entropies(base=np.e))).all()  # nats are still fine


def test_bad_names_raise():
    logits = _logits((2, 3, 3), seed=24)
    with pytest.raises(ValueError, match="names has 3 entries"):
        TeacherBank.from_logits(logits, names=["a", "b", "c"])
    with pytest.raises(ValueError, match="names must be distinct"):
        TeacherBank.from_logits(logits, names=["a", "a"])
    with pytest.raises(ValueError, match="names must not contain '/'"):
        TeacherBank.from_logits(logits, names=["a", "b/c"])
    with pytest.raises(TypeError, match="names must be a sequence of names, one per teacher"):
        TeacherBank.from_logits(logits, names="ab")  # was split into "a" and "b"
    with pytest.raises(ValueError, match="names"):
        TeacherBank.from_probs(softmax(logits, -1), names=["only_one"])


def test_bad_labels_raise():
    bank = TeacherBank.from_logits(_logits((2, 4, 3), seed=25))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        bank.accuracy([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        bank.accuracy([0, -1, 2, 1])
    with pytest.raises(ValueError, match="labels has 3 entries"):
        bank.accuracy([0, 1, 2])
    with pytest.raises(ValueError, match="labels must be one-dimensional"):
        bank.accuracy([[0, 1, 2, 1]])
    with pytest.raises(TypeError, match="labels must hold integer"):
        bank.accuracy([0.5, 1, 2, 1])


def test_from_callables_rejects_a_teacher_with_the_wrong_number_of_rows():
    inputs = np.zeros((10, 2))
    with pytest.raises(ValueError, match="one row per input"):
        TeacherBank.from_callables([lambda x: jnp.zeros((3, 4))], inputs)


def test_from_logits_rejects_logits_beyond_float32():
    with pytest.raises(ValueError, match="logits"):
        TeacherBank.from_logits(np.full((1, 2, 3), 1e300))


# ------------------------------------------------------------------ audit 22: findings 5, 9, nits
def test_from_callables_refuses_sklearn_classes_other_than_0_to_k_minus_1(iris):
    x, y = iris
    a = LogisticRegression(max_iter=500).fit(x[y != 2], y[y != 2])  # classes_ [0 1]
    b = LogisticRegression(max_iter=500).fit(x[y != 0], y[y != 0])  # classes_ [1 2]
    # used to give a 2-class bank whose column 0 meant class 0 for a and class 1 for b
    with pytest.raises(
        ValueError, match=r"teachers\[1\] was trained on classes \[1, 2\]; pass num_classes"
    ):
        TeacherBank.from_callables([a, b], x)
    with pytest.raises(
        ValueError, match=r"teachers\[0\] was trained on classes \[1, 2\]; pass num_classes"
    ):
        TeacherBank.from_callables([b], x)
    # a teacher trained on 0..k-1 needs no num_classes
    assert TeacherBank.from_callables([a], x).num_classes == 2


def test_from_callables_refuses_sklearn_classes_it_cannot_place(iris):
    x, y = iris
    strings = LogisticRegression(max_iter=500).fit(x, np.array(["a", "b", "c"])[y])
    with pytest.raises(
        ValueError, match=r"teachers\[0\] .*\['a', 'b', 'c'\]; classes must be integers"
    ):
        TeacherBank.from_callables([strings], x, num_classes=3)
    with pytest.raises(ValueError, match=r"teachers\[0\] .*classes must be integers"):
        TeacherBank.from_callables([strings], x)
    low = LogisticRegression(max_iter=500).fit(x[y != 2], y[y != 2])  # classes_ [0 1]
    high = LogisticRegression(max_iter=500).fit(x[y != 0], y[y != 0])  # classes_ [1 2]
    # a teacher trained on labels 1..C with num_classes=C used to fail with a bare IndexError
    with pytest.raises(ValueError, match=r"teachers\[1\] .*\[1, 2\]; with num_classes=2 .*0\.\.1"):
        TeacherBank.from_callables([low, high], x, num_classes=2)
    with pytest.raises(TypeError, match="num_classes must be an integer >= 2"):
        TeacherBank.from_callables([low], x, num_classes=3.0)


def test_from_callables_places_sklearn_columns_by_classes(iris):
    x, y = iris
    high = LogisticRegression(max_iter=500).fit(x[y != 0], y[y != 0])  # classes_ [1 2]
    full = LogisticRegression(max_iter=500).fit(x, y)
    bank = TeacherBank.from_callables([full, high], x, num_classes=3, names=["full", "high"])
    assert bank.log_probs.shape == (2, 150, 3)
    probs = np.asarray(bank.probs())
    np.testing.assert_allclose(probs[1][:, 1:], high.predict_proba(x), atol=1e-6)
    np.testing.assert_array_equal(probs[1][:, 0], 0.0)
    np.testing.assert_allclose(probs[0], full.predict_proba(x), atol=1e-6)
    # float labels holding whole numbers are integer classes too
    floats = LogisticRegression(max_iter=500).fit(x, y.astype(np.float64))
    np.testing.assert_allclose(
        np.asarray(TeacherBank.from_callables([floats], x).probs()[0]),
        floats.predict_proba(x),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("atol", "error", "message"),
    [
        ("1e-3", TypeError, r"atol must be a number, got '1e-3'"),
        (-1, ValueError, r"atol must be a finite number > 0, got -1"),
        (0.0, ValueError, r"atol must be a finite number > 0"),
        (np.nan, ValueError, r"atol must be a finite number > 0"),
        (1.0, ValueError, r"atol must be a finite number in \(0, 1\), got 1\.0"),
        (2.5, ValueError, r"atol must be a finite number in \(0, 1\)"),
    ],
)
def test_from_probs_refuses_a_bad_atol(atol, error, message):
    with pytest.raises(error, match=message):
        TeacherBank.from_probs(np.full((1, 3, 3), 1 / 3), atol=atol)


def test_from_probs_refuses_a_row_of_zeros():
    # with atol=1 this row used to pass and give NaN log-probabilities read as entropy 0
    probs = np.full((1, 3, 3), 1 / 3)
    probs[0, 1] = 0.0
    for atol in (1e-4, 0.9):
        with pytest.raises(ValueError, match=r"simplex.*row \(0, 1\) .*sums to 0\b"):
            TeacherBank.from_probs(probs, atol=atol)
    with pytest.raises(ValueError, match="atol"):
        TeacherBank.from_probs(probs, atol=1.0)


@pytest.mark.parametrize(
    ("batch_size", "error"),
    [(0.5, TypeError), (2.5, TypeError), (True, TypeError), (0, ValueError)],
)
def test_from_callables_refuses_a_batch_size_that_is_not_a_positive_integer(batch_size, error):
    def teacher(batch):
        return jnp.zeros((batch.shape[0], 3))

    with pytest.raises(error, match=r"batch_size must be an integer >= 1"):
        TeacherBank.from_callables([teacher], np.zeros((5, 2)), batch_size=batch_size)
    bank = TeacherBank.from_callables([teacher], np.zeros((5, 2)), batch_size=np.int64(2))
    assert bank.log_probs.shape == (1, 5, 3)


@pytest.mark.parametrize(
    ("teachers", "names"),
    [
        (["a", "a"], ("a", "a (2)")),
        (["a", 0], ("a", "a (2)")),
        ([1, -1], ("b", "b (2)")),
        ([0, "b", "b", "a"], ("a", "b", "b (2)", "a (2)")),
    ],
)
def test_select_of_a_teacher_twice_gives_identical_teachers_with_distinct_names(teachers, names):
    """Identical teachers are a legitimate bank (the fixed model's special case); duplicate
    names, which every constructor refuses, are not: the repeat is renamed."""
    bank = TeacherBank.from_logits(_logits((2, 3, 3), seed=26), names=["a", "b"])
    chosen = bank.select(teachers)
    assert chosen.names == names
    np.testing.assert_array_equal(chosen.log_probs[0], bank.log_probs[bank.names.index(names[0])])
    assert bank.select(["b", 0]).names == ("b", "a")


def test_a_renamed_repeat_never_takes_another_teachers_name():
    """With teachers named "a" and "a (2)", a repeat of "a" must not become a second "a (2)"
    (a later select(["a (2)"]) would then find the copy, not the teacher)."""
    bank = TeacherBank.from_logits(_logits((3, 4, 3), seed=27), names=["a", "a (2)", "c"])
    chosen = bank.select([0, 0, 1])
    assert chosen.names == ("a", "a (3)", "a (2)")
    np.testing.assert_array_equal(chosen.select(["a (2)"]).log_probs[0], bank.log_probs[1])


def test_a_scikit_learn_teacher_of_boolean_labels_is_placed_as_classes_0_and_1():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(28)
    x = rng.normal(size=(40, 2))
    teacher = LogisticRegression().fit(x, x[:, 0] > 0)  # classes_ [False, True]
    bank = TeacherBank.from_callables([teacher], x, num_classes=2)
    np.testing.assert_allclose(np.exp(bank.log_probs[0]), teacher.predict_proba(x), rtol=1e-5)


@pytest.mark.parametrize("offset", [1e4, 1e7, 1e8, 1e12])
def test_from_logits_ignores_a_common_offset_of_float64_logits(offset):
    """Softmax ignores a common offset; rounding float64 logits to float32 before it did not
    (at 1e8 every logit rounded alike and the teacher became uniform). Against scipy."""
    from scipy.special import log_softmax

    base = np.array([[0.0, 0.5, 1.0], [2.0, 0.0, -1.0]])
    bank = TeacherBank.from_logits((base + offset)[None])
    np.testing.assert_allclose(
        np.asarray(bank.log_probs[0]), log_softmax(base, axis=-1), rtol=1e-6, atol=1e-6
    )


def test_probabilities_given_as_logits_are_warned():
    """Rows on the simplex given to ``from_logits`` (or by a callable under the default
    ``outputs="logits"``) would be read as logits, a far flatter teacher: warned, naming the
    teacher; logits that are not such rows are not."""
    probs = softmax(_logits((2, 6, 3), seed=3, scale=2.0), axis=-1)
    with pytest.warns(UserWarning, match=r"teacher\(s\) \[1\] are rows of probabilities"):
        TeacherBank.from_logits(np.stack([_logits((6, 3)), probs[1]]))
    with pytest.warns(UserWarning, match=r"teacher\(s\) \[1\] .*outputs='probs'") as got:
        TeacherBank.from_callables(
            [lambda x: jnp.asarray(_logits((6, 3))), lambda x: jnp.asarray(probs[0])],
            np.ones((6, 2)),
        )
    assert len(got) == 1 and got[0].filename == __file__  # the user's line, once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TeacherBank.from_logits(_logits((2, 6, 3)))
        TeacherBank.from_probs(probs)


@pytest.mark.parametrize(
    "rounded",
    [lambda p: p.round(3), lambda p: p.round(2), lambda p: p.astype(np.float16)],
    ids=["3 decimals", "2 decimals", "float16"],
)
def test_rounded_probabilities_given_as_logits_are_warned(rounded):
    """Probabilities from a CSV of 3 decimals or stored in float16 sum to 1 only within ~1e-3:
    the 1e-4 check missed them, and the bank was silently flattened (a mean top probability
    of 0.40 where the teachers' is 0.76)."""
    probs = softmax(_logits((2, 50, 4), seed=0, scale=3.0), axis=-1)
    with pytest.warns(UserWarning, match=r"teacher\(s\) \[0, 1\] are rows of probabilities"):
        TeacherBank.from_logits(rounded(probs))
    with warnings.catch_warnings():  # logits of that size but not on the simplex: no warning
        warnings.simplefilter("error")
        TeacherBank.from_logits(rounded(probs) * 1.2)


def test_a_training_mode_nnx_teacher_is_refused_and_left_unchanged():
    """A teacher in training mode gives soft labels that depend on the batch (BatchNorm's batch
    statistics, a Dropout mask) and would have its running statistics overwritten: refused,
    the module as it was; in evaluation mode it is evaluated as it is."""
    from flax import nnx

    class Teacher(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
            self.norm = nnx.BatchNorm(3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.norm(self.linear(x))

    teacher = Teacher()
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    mean_before = np.asarray(teacher.norm.mean[...]).copy()
    with pytest.raises(ValueError, match=r"the teachers\[0\] network changes its state"):
        TeacherBank.from_callables([teacher], x, batch_size=3)
    np.testing.assert_array_equal(np.asarray(teacher.norm.mean[...]), mean_before)
    teacher.eval()
    by_three = TeacherBank.from_callables([teacher], x, batch_size=3)
    whole = TeacherBank.from_callables([teacher], x)
    np.testing.assert_allclose(by_three.log_probs, whole.log_probs, atol=1e-6)
