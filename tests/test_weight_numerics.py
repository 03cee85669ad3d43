"""Weight rules and the teacher prior at the edges of float32: one-hot, near-one-hot, equal and
extreme teachers, M = 1, 2, 3 and 10 (property-based, with hypothesis).

Every rule must give weights that are finite, >= 0 and sum to 1 per example, log weights with no
NaN whose ``logsumexp`` is 0, and a prior whose log density (and its gradient) is finite for any
finite student logits. The paper rule is also checked against an independent float64
computation in log space (SciPy), where its weights are representable: log weights within 1e-3
(float32 log entropies carry ~1e-6 relative error; 1e-3 absolute in ``log w`` is 0.1% in ``w``).

The regression that motivates this file: GaussianNB + logistic regression on 600 digits gave
245 of 600 examples a NaN prior, because ``1 - H_m / S`` came out slightly negative in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, logsumexp

from mtbkd_jax import TeacherBank, TeacherPrior, teacher_weights
from mtbkd_jax.weighting import WEIGHT_RULES, teacher_log_weights

SCALES = [0.0, 1e-3, 1.0, 20.0, 100.0, 1e4, 1e30]


@st.composite
def teacher_banks(draw):
    """A bank of M in {1, 2, 3, 10} teachers of mixed kinds (random logits at scales from 0 to
    1e30, exactly one-hot, identical to the first) on four examples."""
    num_teachers = draw(st.sampled_from([1, 2, 3, 10]))
    num_examples = 4  # fixed shapes keep JAX's compilations few (each new shape compiles)
    num_classes = draw(st.sampled_from([2, 5]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kinds = draw(
        st.lists(
            st.sampled_from(["logits", "one_hot", "copy"]),
            min_size=num_teachers,
            max_size=num_teachers,
        )
    )
    scales = draw(st.lists(st.sampled_from(SCALES), min_size=num_teachers, max_size=num_teachers))
    probs = []
    for m, (kind, scale) in enumerate(zip(kinds, scales, strict=True)):
        if kind == "copy" and m > 0:  # an identical teacher
            probs.append(probs[0])
            continue
        if kind == "one_hot":
            classes = rng.integers(0, num_classes, num_examples)
            probs.append(("probs", np.eye(num_classes)[classes]))
            continue
        logits = rng.normal(size=(num_examples, num_classes)) * scale
        # a large logit gap makes the teacher nearly one-hot
        logits = np.clip(logits, -1e30, 1e30)
        probs.append(("logits", logits))
    # a bank from a mix of kinds: go through log-probabilities (float64), then logits
    log_probs = []
    for kind, array in probs:
        if kind == "probs":
            with np.errstate(divide="ignore"):
                log_probs.append(np.log(array))
        else:
            log_probs.append(log_softmax(array.astype(np.float32).astype(np.float64), axis=-1))
    log_probs = np.stack(log_probs)
    bank = TeacherBank(
        jnp.asarray(log_probs, jnp.float32), tuple(f"t{m}" for m in range(len(log_probs)))
    )
    return bank


def _reference_log_entropies(log_probs):
    """log H (natural units) in float64, one example and teacher at a time. The top class's
    ``-log p_max`` is taken as ``-log1p(-s)`` from the mass ``s`` off it (float64 cannot resolve
    ``log p_max`` of an almost one-hot teacher either)."""
    out = np.empty(log_probs.shape[:2])
    for m, i in np.ndindex(*out.shape):
        row = log_probs[m, i]
        top = int(np.argmax(row))
        rest = np.delete(row, top)
        rest = rest[np.isfinite(rest)]
        if rest.size == 0:
            out[m, i] = -np.inf
            continue
        s = float(np.exp(logsumexp(rest)))
        terms = [float(np.log1p(-s) + np.log(-np.log1p(-s)))] if s > 0 else []
        if s == 0.0:  # exp underflowed: log(-log1p(-s)) = log s to first order
            terms.append(float(logsumexp(rest)))
        terms += [float(v + np.log(-v)) for v in rest if v < 0]
        out[m, i] = logsumexp(terms)
    return out


def _reference_paper_log_weights(log_probs):
    """log w of the paper rule in float64: log sum_{j != m} H_j, normalised over m."""
    log_h = _reference_log_entropies(log_probs)  # the rule is unit-free: nats are fine
    num_teachers = log_h.shape[0]
    if num_teachers == 1:
        return np.zeros_like(log_h)
    others = np.stack([logsumexp(np.delete(log_h, m, axis=0), axis=0) for m in range(num_teachers)])
    peak = others.max(axis=0)
    uniform = ~np.isfinite(peak)
    with np.errstate(invalid="ignore"):
        shifted = others - peak  # before normalising: log weights can be ~1e29 in size
        out = shifted - np.log(np.exp(shifted).sum(axis=0))
    return np.where(uniform, -np.log(num_teachers), out)


@pytest.mark.parametrize("rule", sorted(WEIGHT_RULES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bank=teacher_banks(), student_scale=st.sampled_from([0.0, 1.0, 100.0, 1e4, 1e30]))
def test_every_rule_gives_valid_weights_and_a_finite_prior(rule, bank, student_scale):
    weights = np.asarray(teacher_weights(bank, rule))
    log_weights = np.asarray(teacher_log_weights(bank, rule))
    assert weights.shape == (bank.num_teachers, bank.num_examples)
    assert np.isfinite(weights).all()
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-5)
    assert not np.isnan(log_weights).any()
    assert (log_weights <= 1e-6).all()
    np.testing.assert_allclose(logsumexp(log_weights, axis=0), 0.0, atol=1e-5)

    prior = TeacherPrior.build(bank, concentration=10.0, temperature=2.0, weight_rule=rule)
    rng = np.random.default_rng(0)
    logits = jnp.asarray(
        np.clip(
            rng.normal(size=(bank.num_examples, bank.num_classes)) * student_scale, -1e30, 1e30
        ),
        jnp.float32,
    )
    density = prior.log_density(logits)
    assert np.isfinite(np.asarray(density)).all(), f"prior {density} for weights {weights}"
    gradient = jax.grad(lambda z: prior.log_density(z).sum())(logits)
    assert np.isfinite(np.asarray(gradient)).all()


@settings(max_examples=80, deadline=None)
@given(bank=teacher_banks())
def test_paper_rule_equals_a_float64_reference(bank):
    ours = np.asarray(teacher_log_weights(bank, "paper"), dtype=np.float64)
    reference = _reference_paper_log_weights(np.asarray(bank.log_probs, np.float64))
    representable = reference > -80.0  # exp(-80) is far below any weight that matters
    np.testing.assert_allclose(ours[representable], reference[representable], atol=1e-3)
    # a weight the reference makes (near) zero is (near) zero here too
    assert (ours[~representable] < -70.0).all()


def test_log_entropies_equal_scipy_where_float64_resolves_them():
    from scipy import stats
    from scipy.special import softmax

    logits = np.random.default_rng(3).normal(size=(3, 20, 5)) * 3.0
    bank = TeacherBank.from_logits(logits)
    probs = softmax(logits.astype(np.float32).astype(np.float64), axis=-1)
    expected = np.log(stats.entropy(probs, base=2, axis=-1))
    np.testing.assert_allclose(np.asarray(bank.log_entropies()), expected, atol=2e-6)
    np.testing.assert_allclose(
        np.asarray(bank.log_entropies(base=np.e)), np.log(stats.entropy(probs, axis=-1)), atol=2e-6
    )


def test_the_motivating_case_gaussian_naive_bayes_and_logistic_regression_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    x, y = load_digits(return_X_y=True)
    x, y = x[:600] / 16.0, y[:600]
    teachers = [GaussianNB().fit(x, y), LogisticRegression(max_iter=1000).fit(x, y)]
    bank = TeacherBank.from_callables(teachers, x, names=["nb", "logreg"])

    @jax.jit
    def subtraction_form(entropies):  # the rule as it was computed before (power check)
        total = entropies.sum(0, keepdims=True)
        return (1.0 - entropies / total) / (entropies.shape[0] - 1)

    old = np.asarray(subtraction_form(bank.entropies()))
    assert (old < 0).sum() > 100  # the old form made hundreds of weights negative here
    for rule in sorted(WEIGHT_RULES):
        prior = TeacherPrior.build(bank, concentration=10.0, weight_rule=rule)
        assert not np.isnan(np.asarray(prior.log_weights)).any(), rule
        density = np.asarray(prior.log_density(jnp.zeros((600, 10))))
        assert np.isfinite(density).all(), f"{rule}: {np.isnan(density).sum()} NaN examples"


@pytest.mark.parametrize("rule", ["paper", "inverse_entropy", "learned"])
def test_learned_temperatures_get_finite_gradients_from_a_one_hot_teacher(rule):
    """Joint trust calibrates the teachers by sampled temperatures before the entropy rules
    see them. An exactly one-hot teacher's log entropy is a logsumexp of no finite term, whose
    gradient was NaN: NumPyro found no valid starting point for the paper and inverse-entropy
    rules (and run_map blamed the log density, which was finite)."""
    from flax import nnx
    from numpyro.infer.util import initialize_model

    import mtbkd_jax as mk
    from mtbkd_jax._tempering import tempered_log_softmax
    from mtbkd_jax.teachers import _log_entropies
    from mtbkd_jax.trust import TrustHyperprior

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 12)
    one_hot = np.eye(3)[labels]
    bank = TeacherBank.from_probs(np.stack([one_hot, np.full((12, 3), 1 / 3)]))
    inputs = jnp.asarray(rng.normal(size=(12, 2)), jnp.float32)
    student = mk.Student(mk.MLP(2, 3, hidden=(), rngs=nnx.Rngs(0)))
    hyperprior = TrustHyperprior(weight_rule=rule)
    model = mk.MTBKDModel(student, bank, trust="joint", trust_hyperprior=hyperprior)
    info = initialize_model(jax.random.key(0), model, model_args=(inputs, jnp.asarray(labels)))
    gradient = jax.grad(info.potential_fn)(info.param_info.z)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(gradient))

    # the entropy of a one-hot teacher stays exactly zero, with a zero gradient
    def entropy(temperature):
        return jnp.exp(_log_entropies(tempered_log_softmax(bank.log_probs, temperature), 2.0))

    assert np.asarray(entropy(1.5)[0]).max() == 0.0
    assert jax.grad(lambda t: entropy(t)[0].sum())(1.5) == 0.0


def test_the_paper_rule_has_finite_gradients_where_a_teachers_entropy_is_zero():
    """w_m is a sum over the *other* teachers' entropies: where they are all exactly zero
    (log H = -inf) the sum's logsumexp had a NaN gradient (here: the first teacher's weight in
    the first example, with the second teacher one-hot there)."""
    from mtbkd_jax.weighting import paper_log_weights

    log_entropies = jnp.array([[0.5, -0.2], [-jnp.inf, 0.3]])  # (M, N): teacher 1 one-hot on 0
    weights = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    gradient = jax.grad(lambda h: (paper_log_weights(h) * weights).sum())(log_entropies)
    assert np.isfinite(np.asarray(gradient)).all()
