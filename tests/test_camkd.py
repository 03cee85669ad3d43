"""CA-MKD (Zhang, Chen & Wang, ICASSP 2022) as a one-teacher MAP (MAP = KD, METHOD §4).

References are written here from the paper's formula, independently of the package:
``w_k = (1 - softmax_k(CE_k)) / (K - 1)`` per example, ``CE_k = -log softmax(z_k)[y]``, in
float64 with SciPy (the authors' code: ``(1.0 - F.softmax(loss_t, dim=0)) / (teacher_num - 1)``
with ``CrossEntropyLoss(reduction='none')``). The package works in float32: weights lie in
[0, 1], so they are compared with ``atol = 1e-6`` (float32 ulp there is <= 6e-8, and the CE of
logits of order 1-30 is computed with a relative error of about 1e-7).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen
from scipy.special import log_softmax, softmax

from mtbkd_jax import MTBKDModel, Student, TeacherBank, normal_prior, run_map
from mtbkd_jax.camkd import ca_mkd_bank_weights, ca_mkd_teacher
from mtbkd_jax.weighting import ca_mkd_weights

ATOL = 1e-6


def _reference_weights(logits, labels):
    """The paper's formula in float64: (1 - softmax over teachers of CE) / (K - 1)."""
    logits = np.asarray(logits, np.float64)
    num_teachers = logits.shape[0]
    if num_teachers == 1:
        return np.ones(logits.shape[:2])
    return (1.0 - softmax(_ce(logits, labels), axis=0)) / (num_teachers - 1)


def _ce(logits, labels):
    log_p = log_softmax(np.asarray(logits, np.float64), axis=-1)
    return -np.take_along_axis(log_p, np.asarray(labels)[None, :, None], axis=-1)[..., 0]


def _problem(num_teachers=3, num_examples=50, num_classes=4, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = scale * rng.normal(size=(num_teachers, num_examples, num_classes))
    labels = rng.integers(num_classes, size=num_examples)
    return logits, labels


# ------------------------------------------------------------------------------ the weights
@pytest.mark.parametrize("scale", [1.0, 5.0, 30.0])
@pytest.mark.parametrize("num_teachers", [2, 3, 5])
def test_weights_match_the_papers_formula(num_teachers, scale):
    logits, labels = _problem(num_teachers, scale=scale)
    expected = _reference_weights(logits, labels)
    bank = TeacherBank.from_logits(logits)
    got = np.asarray(ca_mkd_weights(bank.log_probs, labels), np.float64)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    # raw logits give the same weights (the CE is taken on their softmax)
    np.testing.assert_allclose(np.asarray(ca_mkd_weights(logits, labels)), expected, atol=ATOL)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=ATOL)
    # the comparison is sensitive: weights from the CE of the tempered predictions (T = 2, a
    # plausible slip) are far outside the tolerance; so are, for K >= 3, softmax(-CE) and
    # weights without the 1/(K-1) (for K = 2 both are the same as the formula:
    # 1 - softmax(CE)_1 = softmax(CE)_2 = softmax(-CE)_1)
    tempered = _reference_weights(np.asarray(logits) / 2.0, labels)
    assert np.abs(tempered - expected).max() > 100 * ATOL
    if num_teachers >= 3:
        assert np.abs(softmax(-_ce(logits, labels), axis=0) - expected).max() > 100 * ATOL
        assert np.abs(expected * (num_teachers - 1) - expected).max() > 100 * ATOL
    else:
        np.testing.assert_allclose(
            expected[0], softmax(-_ce(logits, labels), axis=0)[0], atol=1e-12
        )


def test_one_teacher_gets_weight_one_and_columns_sum_to_one():
    logits, labels = _problem(1)
    np.testing.assert_array_equal(np.asarray(ca_mkd_weights(logits, labels)), 1.0)
    for num_teachers in (2, 4, 7):
        logits, labels = _problem(num_teachers, scale=10.0, seed=num_teachers)
        weights = np.asarray(ca_mkd_weights(logits, labels))
        assert (weights >= 0).all() and (weights <= 1 / (num_teachers - 1) + ATOL).all()
        np.testing.assert_allclose(weights.sum(0), 1.0, atol=ATOL)


def test_the_teacher_that_is_right_gets_more_weight():
    labels = np.array([0, 1, 2])
    right = np.log(np.full((3, 3), 0.1) + 0.7 * np.eye(3))  # 0.8 on the label
    wrong = np.log(np.full((3, 3), 0.1) + 0.7 * np.eye(3)[[1, 2, 0]])  # 0.1 on the label
    weights = np.asarray(ca_mkd_weights(np.stack([wrong, right, wrong]), labels))
    assert (weights[1] > weights[0]).all() and (weights[1] > weights[2]).all()
    # two teachers: w_1 = p_1[y] / (p_1[y] + p_2[y]) (the formula for K = 2)
    pair = np.asarray(ca_mkd_weights(np.stack([right, wrong]), labels))
    np.testing.assert_allclose(pair[0], 0.8 / 0.9, atol=ATOL)


def test_a_label_probability_of_zero_takes_the_limit():
    probs = np.array([[[0.0, 1.0]], [[0.6, 0.4]], [[0.3, 0.7]]])
    got = np.asarray(ca_mkd_weights(TeacherBank.from_probs(probs).log_probs, [0]))
    assert np.isfinite(got).all()
    # the limit p -> 0 of the formula: the zero teacher takes all of softmax(CE), weight 0
    tiny = np.array([[[1e-300, 1.0]], [[0.6, 0.4]], [[0.3, 0.7]]])
    np.testing.assert_allclose(got[:, 0], _reference_weights(np.log(tiny), [0])[:, 0], atol=ATOL)
    np.testing.assert_allclose(got[:, 0], [0.0, 0.5, 0.5], atol=ATOL)


@pytest.mark.parametrize(
    ("log_probs", "labels", "error", "match"),
    [
        (np.zeros((2, 3)), [0, 1, 0], ValueError, "log_probs must have 3 dimensions"),
        (np.zeros((2, 3, 1)), [0, 0, 0], ValueError, "C >= 2"),
        (np.full((2, 1, 2), np.nan), [0], ValueError, "NaN"),
        (np.zeros((2, 3, 2)), [0, 1], ValueError, "labels has 2 entries"),
        (np.zeros((2, 3, 2)), [0, 1, 2], ValueError, r"labels must lie in 0\.\.1"),
        (np.zeros((2, 3, 2)), [0.5, 1, 0], TypeError, "labels must hold integer"),
        (np.full((2, 1, 2), -np.inf), [0], ValueError, "all -inf"),
    ],
)
def test_weights_name_the_bad_argument(log_probs, labels, error, match):
    with pytest.raises(error, match=match):
        ca_mkd_weights(log_probs, labels)


# ------------------------------------------------------------------------------ the bank
def test_weighted_average_gives_the_mean_of_tempered_probs_at_the_models_temperature():
    logits, labels = _problem(3, num_examples=20, scale=3.0)
    bank = TeacherBank.from_logits(logits)
    weights = _reference_weights(logits, labels)
    for temperature in (1.0, 2.0, 0.5):
        teacher = ca_mkd_teacher(bank, labels, temperature=temperature)
        expected = np.einsum("mn,mnc->nc", weights, softmax(logits / temperature, axis=-1))
        np.testing.assert_allclose(np.asarray(teacher.probs(temperature))[0], expected, atol=ATOL)
        # what the prior sees: lambda * p at the model's temperature
        student = Student(linen.Dense(4))
        model = MTBKDModel(student, teacher, concentration=5.0, temperature=temperature)
        prior_probs = np.asarray(model.teacher_prior.scaled_probs)[:, 0] / 5.0
        np.testing.assert_allclose(prior_probs, expected, atol=ATOL)
    # at T = 2 tempering the T = 1 average is not the average of tempered probabilities: the
    # test above would catch a bank that ignored the temperature
    plain = np.asarray(ca_mkd_teacher(bank, labels).probs(2.0))[0]
    expected = np.einsum("mn,mnc->nc", weights, softmax(logits / 2.0, axis=-1))
    assert np.abs(plain - expected).max() > 100 * ATOL


def test_weighted_average_with_equal_weights_is_average():
    logits, _ = _problem(3, num_examples=10)
    bank = TeacherBank.from_logits(logits)
    equal = bank.weighted_average(np.full((3, 10), 7.0))  # columns are normalised
    np.testing.assert_allclose(equal.log_probs, bank.average().log_probs, atol=ATOL)
    assert bank.weighted_average(np.ones((3, 10)), name="x").names == ("x",)
    with pytest.raises(ValueError, match=r"weights must have shape \(M, N\) = \(3, 10\)"):
        bank.weighted_average(np.ones((3, 9)))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        bank.weighted_average(np.vstack([-np.ones((1, 10)), np.ones((2, 10))]))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        bank.weighted_average(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="temperature"):
        bank.weighted_average(np.ones((3, 10)), temperature=0.0)


def test_unlabelled_examples_get_each_teachers_mean_weight():
    logits, labels = _problem(3, num_examples=30, scale=2.0)
    bank = TeacherBank.from_logits(logits)  # 20 labelled examples, then 10 transfer inputs
    weights = ca_mkd_bank_weights(bank, labels[:20])
    expected = _reference_weights(logits[:, :20], labels[:20])
    np.testing.assert_allclose(weights[:, :20], expected, atol=ATOL)
    np.testing.assert_allclose(
        weights[:, 20:], np.broadcast_to(expected.mean(1, keepdims=True), (3, 10)), atol=ATOL
    )
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=ATOL)
    with pytest.raises(ValueError, match="labels must be a 1-D array of 1..30"):
        ca_mkd_bank_weights(bank, np.zeros(31, int))
    with pytest.raises(TypeError, match="bank must be a TeacherBank"):
        ca_mkd_bank_weights(logits, labels)


# ------------------------------------------------------------------ MAP = the CA-MKD optimum
NUM_LABELLED, NUM_TRANSFER, NUM_FEATURES, NUM_CLASSES = 120, 40, 4, 3
LAMBDA, BETA, TEMPERATURE, SIGMA0 = 8.0, 0.25, 2.0, 1.5


def _distillation_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(NUM_LABELLED + NUM_TRANSFER, NUM_FEATURES)).astype(np.float32)
    true_w = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    logits = x[:NUM_LABELLED].astype(np.float64) @ true_w
    probs = softmax(logits, axis=-1)
    y = np.array([rng.choice(NUM_CLASSES, p=p) for p in probs])
    teacher_logits = np.stack(
        [
            x @ (true_w + 0.3 * rng.normal(size=true_w.shape)) * 1.5,  # good
            x @ rng.normal(size=true_w.shape) * 2.0,  # unrelated to the labels
            x @ (-true_w) * 1.0,  # wrong
        ]
    )
    return x, y, teacher_logits


def _ca_mkd_optimum(x, y, teacher_logits, weights):
    """argmin of CE(y, q) + beta*lambda * sum_i sum_k w_ik KL(p_ik^T || q_i^T) + L2, written
    directly with optax (labels on the first examples, the KD term on every input)."""
    p = jax.nn.softmax(jnp.asarray(teacher_logits, jnp.float32) / TEMPERATURE)  # (K, N, C)
    w = jnp.asarray(weights, jnp.float32)

    def loss(params):
        logits = x @ params["kernel"] + params["bias"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits[: len(y)], y).sum()
        log_q = jax.nn.log_softmax(logits / TEMPERATURE)
        kl = optax.losses.kl_divergence(log_q[None], p)  # (K, N)
        l2 = sum(jnp.sum(v**2) for v in jax.tree.leaves(params)) / (2 * SIGMA0**2)
        return ce + BETA * LAMBDA * jnp.sum(w * kl) + l2

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def solve(params):
        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(
                grad, state, params, value=value, grad=grad, value_fn=loss
            )
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, length=200)
        return params

    zeros = {"kernel": jnp.zeros((NUM_FEATURES, NUM_CLASSES)), "bias": jnp.zeros(NUM_CLASSES)}
    return solve(zeros)


def test_ca_mkd_map_equals_the_ca_mkd_loss_optimum():
    x, y, teacher_logits = _distillation_problem()
    labelled = _reference_weights(teacher_logits[:, :NUM_LABELLED], y)
    weights = np.concatenate(
        [labelled, np.repeat(labelled.mean(1, keepdims=True), NUM_TRANSFER, axis=1)], axis=1
    )
    expected = _ca_mkd_optimum(x, jnp.asarray(y), teacher_logits, weights)

    bank = TeacherBank.from_logits(teacher_logits)
    model = MTBKDModel(
        Student(linen.Dense(NUM_CLASSES), prior=normal_prior(SIGMA0)),
        ca_mkd_teacher(bank, y, temperature=TEMPERATURE),
        concentration=LAMBDA,
        prior_power=BETA,
        temperature=TEMPERATURE,
    )
    schedule = optax.exponential_decay(0.05, transition_steps=1000, decay_rate=0.3)
    posterior = run_map(
        jax.random.key(0),
        model,
        x[:NUM_LABELLED],
        y,
        num_steps=6000,
        optimizer=optax.adam(schedule),
        progress_bar=False,
        model_kwargs={"prior_inputs": x},
    )
    draws = posterior.flat_draws()
    got_kernel, got_bias = draws["student.kernel"][0], draws["student.bias"][0]
    # tolerance as in test_map_equals_kd: Adam with a decayed step vs L-BFGS, float32
    np.testing.assert_allclose(got_kernel, expected["kernel"], atol=2e-3)
    np.testing.assert_allclose(got_bias, expected["bias"], atol=2e-3)

    # a wrong version, uniform weights (averaged KD), lands far outside the tolerance
    uniform = _ca_mkd_optimum(x, jnp.asarray(y), teacher_logits, np.full_like(weights, 1 / 3))
    assert np.max(np.abs(np.asarray(uniform["kernel"]) - got_kernel)) > 2e-2


# ------------------------------------------------------------------ in the experiments' plans
def test_adding_ca_mkd_leaves_the_other_methods_keys_unchanged():
    from mtbkd_jax.datasets import load_digits_distillation
    from mtbkd_jax.experiments import ExperimentConfig
    from mtbkd_jax.experiments.keys import method_keys
    from mtbkd_jax.experiments.methods import baseline_methods, demo_methods

    def data(k):
        return np.asarray(jax.random.key_data(k)) if k is not None else None

    digits = load_digits_distillation(0)
    for plan, schedule in ((baseline_methods, "per-method"), (demo_methods, "maps-first")):
        config = ExperimentConfig(seed=3, key_schedule=schedule, chain_starts="maps")
        methods = plan(digits)
        assert [m.label for m in methods].count("CA-MKD") == 1
        ca_mkd = next(m for m in methods if m.label == "CA-MKD")
        assert ca_mkd.posterior is None and ca_mkd.teachers.num_teachers == 1
        others = [m for m in methods if m.label != "CA-MKD"]
        with_it = dict(zip([m.label for m in methods], method_keys(config, methods), strict=True))
        without = dict(zip([m.label for m in others], method_keys(config, others), strict=True))
        for label, keys in without.items():
            got = with_it[label]
            assert np.array_equal(data(got.map), data(keys.map)), label
            assert np.array_equal(data(got.posterior), data(keys.posterior)), label
            assert all(
                np.array_equal(data(a), data(b))
                for a, b in zip(got.starts, keys.starts, strict=True)
            )
        # CA-MKD's own MAP key is none of the others'
        assert all(
            not np.array_equal(data(with_it["CA-MKD"].map), data(k.map)) for k in without.values()
        )
