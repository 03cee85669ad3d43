"""What a trust says about itself and what it accepts: every ``TrustValues`` field's shape,
intervals only of the sites that were learned, a trust's temperature checked wherever its
prior is built, records that tell two weight links apart, the label count's message, and the
classes whose ``lambda`` no labelled example informed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mtbkd_jax import MLP, MTBKDModel, Student, TeacherBank
from mtbkd_jax.trust import TrustHyperprior, TrustPosterior, TrustValues, fit_teacher_trust


def _bank(num_examples=6, seed=0):
    return TeacherBank.from_logits(np.random.default_rng(seed).normal(size=(2, num_examples, 3)))


def _model(bank, trust, **options):
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    return MTBKDModel(student, bank, trust=trust, **options)


def _values(**fields):
    base = {
        "temperature": [1.2, 0.8],
        "concentration": [[4.0], [6.0]],
        "weight_bias": [0.3, -0.3],
        "weight_slope": 0.5,
        "temperature_slope": None,
    }
    return TrustValues(**{**base, **fields})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_bias", [0.1, 0.2, 0.3]),  # one per teacher and one too many
        ("weight_bias", [0.1] * 6),  # one per example
        ("weight_slope", [0.5, 0.5]),  # per teacher: not a documented form
        ("weight_slope", [[0.5], [0.5]]),
        ("temperature_slope", 0.0),  # one for all teachers
        ("temperature_slope", [0.0]),  # broadcast over the teachers, silently, before
        ("temperature_slope", np.zeros((2, 6))),
    ],
)
def test_every_trust_value_field_has_its_shape_checked_by_name(field, value):
    """Before, these failed inside jax with a broadcasting error, or were accepted with a
    meaning nobody documented (a per-example slope)."""
    with pytest.raises(ValueError, match=rf"trust\.{field} must have shape"):
        _model(_bank(), _values(**{field: value}), weight_rule="learned")


def test_trust_values_given_as_lists_make_the_same_prior_as_arrays():
    """Lists and Python floats (``TrustValues([1.2, 0.8], ...)``) raised a Python indexing
    error; converted, they are the arrays' prior to the last bit."""
    bank = _bank()
    as_lists = _model(bank, _values(temperature_slope=[0.5, -0.5]), weight_rule="learned")
    arrays = {
        k: None if v is None else jnp.asarray(v, jnp.float32)
        for k, v in _values(temperature_slope=[0.5, -0.5])._asdict().items()
    }
    as_arrays = _model(bank, TrustValues(**arrays), weight_rule="learned")
    for got, expected in zip(
        jax.tree.leaves(as_lists.teacher_prior),
        jax.tree.leaves(as_arrays.teacher_prior),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def _posterior(hyperprior, seed=0, slope_draws=False, bias=0.0):
    rng = np.random.default_rng(seed)
    draws = {
        "temperature": rng.uniform(0.5, 2.0, size=(40, 2)),
        "concentration": rng.uniform(1.0, 9.0, size=(40, 2, 3)),
        "weight_bias": bias + rng.normal(size=(40, 2)),
        "weight_slope": rng.normal(size=40),
    }
    if slope_draws:
        draws["temperature_slope"] = rng.normal(size=(40, 2))
    return TrustPosterior(draws, hyperprior, ("teacher_0", "teacher_1"))


def test_intervals_exist_only_for_the_sites_that_were_learned():
    """The 90% interval is the 5th and 95th percentiles of the draws (numpy as the
    reference); sites the hyperprior fixed are refused with the reason rather than given a
    zero-width interval or a KeyError."""
    learned = _posterior(TrustHyperprior(calibration="confidence"), slope_draws=True)
    for site in ("temperature", "weight_bias", "weight_slope", "temperature_slope"):
        low, high = learned.interval(site)
        np.testing.assert_allclose(low, np.percentile(learned.draws[site], 5, axis=0))
        np.testing.assert_allclose(high, np.percentile(learned.draws[site], 95, axis=0))
    fixed_rule = _posterior(TrustHyperprior(weight_rule="paper"))
    for site in ("weight_bias", "weight_slope"):
        with pytest.raises(ValueError, match=f"name='{site}' has no interval: the weight rule"):
            fixed_rule.interval(site)
    with pytest.raises(ValueError, match="name='temperature_slope' has no interval"):
        _posterior(TrustHyperprior()).interval("temperature_slope")  # before: a KeyError
    with pytest.raises(ValueError, match="calibration='none'"):
        _posterior(TrustHyperprior(calibration="none")).interval("temperature")


def test_a_trusts_prior_is_refused_at_another_temperature_wherever_it_is_built():
    """``MTBKDModel`` refused the mismatch; ``TrustPosterior.teacher_prior`` took it."""
    trust, bank = _posterior(TrustHyperprior()), _bank()
    trust.teacher_prior(bank)
    trust.teacher_prior(bank, temperature=1.0)
    with pytest.raises(ValueError, match="fitted at temperature 1.0 but the model's temperature"):
        trust.teacher_prior(bank, temperature=5.0)


def test_the_record_tells_two_learned_weight_links_apart_and_has_no_distillation_weight():
    """Two trusts that differ only in their weight link gave equal ``settings()["trust"]``
    (the prior differed); a fixed rule records no link. With a trust the model's
    ``concentration`` is unused, so ``distillation_weight`` is ``None``, not ``beta * 1``."""
    bank = _bank()
    one, other = (_posterior(TrustHyperprior(), bias=b) for b in (0.0, 2.0))
    first, second = _model(bank, one), _model(bank, other)
    assert first.settings()["trust"] != second.settings()["trust"]
    np.testing.assert_allclose(
        first.settings()["trust"]["weight_bias"],
        np.median(one.draws["weight_bias"], axis=0),
        atol=1e-6,
    )
    paper = _model(bank, _posterior(TrustHyperprior(weight_rule="paper")))
    assert "weight_bias" not in paper.settings()["trust"]
    assert first.distillation_weight is None and first.settings()["distillation_weight"] is None
    assert _model(bank, None).distillation_weight == pytest.approx(1.0)


def test_the_record_has_no_concentration_where_the_trust_brings_its_own():
    """A trust with its own lambda recorded the unused default (10) as ``concentration``,
    and ``differs_from_paper`` listed it against the paper's 5; ``"joint"`` without a given
    hyperprior uses it (its hyperprior's median), so it is recorded there."""
    bank = _bank()
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)))
    for trust in (_posterior(TrustHyperprior()), TrustValues.fixed(2, 3.0)):
        model = MTBKDModel(student, bank, trust=trust)
        assert model.settings()["concentration"] is None
        assert not any(d.startswith("concentration") for d in model.differs_from_paper())
    joint = MTBKDModel(student, bank, trust="joint", concentration=3.0)
    assert joint.settings()["concentration"] == 3.0
    assert "concentration=3.0 (paper: 5.0)" in joint.differs_from_paper()
    assert MTBKDModel(student, bank).settings()["concentration"] == 10.0


def test_labels_for_fewer_examples_than_the_teachers_get_a_message_about_the_bank():
    with pytest.raises(ValueError, match=r"labels has 4 entries but the teachers describe 6.*"):
        fit_teacher_trust(jax.random.key(0), _bank(), [0, 1, 2, 0])


def test_classes_no_labelled_example_informed_are_named_in_the_summary():
    """Teachers that never make class 2 the consensus: the labelled count per consensus class
    (an argmax of the mean probabilities as the reference: no ties here) sums to N, and
    class 2's ``lambda`` is reported as the hyperprior's alone."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 30, 3))
    logits[:, :, 2] -= 6.0  # class 2 is never anyone's choice
    bank = TeacherBank.from_logits(logits)
    labels = rng.integers(0, 3, size=30)
    trust = fit_teacher_trust(
        jax.random.key(0), bank, labels, num_warmup=30, num_draws=30, num_chains=1
    )
    expected = np.bincount(np.exp(bank.log_probs).mean(0).argmax(-1), minlength=3)
    np.testing.assert_allclose(trust.labelled_by_class, expected, atol=1e-5)
    assert expected[2] == 0 and sum(trust.labelled_by_class) == pytest.approx(30)
    assert all(row["prior_only_classes"] == [2] for row in trust.summary())
    with pytest.raises(ValueError, match="labelled_by_class must hold one count >= 0 per class"):
        TrustPosterior(trust.draws, trust.hyperprior, trust.teacher_names, 1.0, 1.0, (1.0, 2.0))


def test_one_teachers_trust_learns_no_weight_link():
    """With one teacher its mixing weight is 1 whatever the link: the link's sites had the
    labels' likelihood flat in them, so NUTS sampled their prior, and the summary and record
    reported that prior's draws (a 'learned' weight slope) as if the labels had spoken."""
    bank = TeacherBank.from_logits(np.random.default_rng(1).normal(size=(1, 20, 3)))
    labels = np.random.default_rng(2).integers(0, 3, size=20)
    trust = fit_teacher_trust(
        jax.random.key(0), bank, labels, num_warmup=20, num_draws=20, num_chains=1
    )
    assert trust.hyperprior.weight_rule == "learned"
    np.testing.assert_array_equal(trust.draws["weight_slope"], 0.0)
    np.testing.assert_array_equal(trust.draws["weight_bias"], 0.0)
    assert "weight_slope" not in trust.summary()[0] and "weight_slope" not in trust.description
    with pytest.raises(ValueError, match="with one teacher its weight is 1"):
        trust.interval("weight_slope")
    joint = _model(bank, "joint")  # the joint model samples no link either
    x = jnp.zeros((20, 4))
    sites = jax.random.key(1)
    from numpyro.handlers import seed, trace

    names = trace(seed(joint, sites)).get_trace(x, jnp.asarray(labels)).keys()
    assert joint.settings()["weight_rule"] == "learned"
    assert "trust.temperature" in names and not any("weight_" in n for n in names)


def test_the_trusts_rhat_is_arvizs_and_its_warning_fires_where_arviz_flags_the_chains():
    """max_rhat was NumPyro's classic split R-hat while documented as ArviZ's: 1.04 on these
    short chains, where ArviZ's rank-normalised R-hat gives 1.33 on the concentrations, so
    fit_teacher_trust's warning (above 1.1) stayed silent."""
    import warnings

    import arviz as az

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(size=(2, 60, 3)) + 3.0 * np.eye(3)[labels]
    bank = TeacherBank.from_logits(logits, names=["a", "b"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trust = fit_teacher_trust(
            jax.random.key(1), bank, labels, num_warmup=40, num_draws=40, num_chains=2
        )
    expected = []
    for value in trust.draws.values():
        grouped = np.asarray(value, np.float64).reshape(2, 40, -1)
        if np.ptp(grouped) > 0:
            expected.append(np.nanmax(np.asarray(az.rhat(grouped))))
    assert trust.max_rhat == pytest.approx(max(expected), rel=1e-6)
    assert trust.max_rhat > 1.1
    assert any("R-hat" in str(w.message) for w in caught)
