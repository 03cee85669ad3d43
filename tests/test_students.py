"""Lifting Flax NNX and linen students into NumPyro: site names, shapes, frozen bodies."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from flax import linen, nnx
from numpyro import handlers
from scipy import stats

from mtbkd_jax import MLP, MTBKDModel, Student, normal_prior, run_nuts
from mtbkd_jax.students import CNN, LinenMLP


def _sites(student, x):
    trace = handlers.trace(handlers.seed(student, jax.random.key(0))).get_trace(x)
    return {k: v for k, v in trace.items() if v["type"] == "sample"}


def test_nnx_and_linen_site_names_have_no_slash_and_carry_the_prior():
    x = jnp.ones((3, 4))
    for module, expected in [
        (MLP(4, 3, hidden=(5,), rngs=nnx.Rngs(0)), "student.layers.0.kernel"),
        (LinenMLP(3, hidden=(5,)), "student.Dense_0.kernel"),
    ]:
        sites = _sites(Student(module, prior=normal_prior(0.7)), x)
        assert expected in sites
        assert all("/" not in name for name in sites)
        site = sites[expected]
        assert site["value"].shape == (4, 5)
        # the base prior is the given Normal(0, 0.7) on every weight
        expected_log_prob = stats.norm.logpdf(np.asarray(site["value"]), 0, 0.7).sum()
        np.testing.assert_allclose(site["fn"].log_prob(site["value"]), expected_log_prob, rtol=1e-5)
        assert len(sites) == 4


def test_apply_matches_the_flax_forward_pass():
    module = MLP(4, 3, hidden=(5,), rngs=nnx.Rngs(1))
    student = Student(module)
    x = jax.random.normal(jax.random.key(2), (6, 4))
    weights = student.init_weights(jax.random.key(3), x)
    # independent forward pass with the same weights
    h = jnp.tanh(x @ weights["student.layers.0.kernel"] + weights["student.layers.0.bias"])
    expected = h @ weights["student.layers.1.kernel"] + weights["student.layers.1.bias"]
    np.testing.assert_allclose(student.logits(weights, x), expected, rtol=1e-5, atol=1e-6)

    linen_student = Student(linen.Dense(3))
    w = linen_student.init_weights(jax.random.key(4), x)
    np.testing.assert_allclose(
        linen_student.logits(w, x), x @ w["student.kernel"] + w["student.bias"], rtol=1e-5
    )


def test_cnn_shapes_and_flattened_inputs():
    student = Student(CNN((8, 8, 1), 10, channels=(4, 8), rngs=nnx.Rngs(0)))
    x = jnp.ones((5, 64))
    weights = student.init_weights(jax.random.key(0), x)
    assert student.logits(weights, x).shape == (5, 10)
    assert student.logits(weights, x.reshape(5, 8, 8, 1)).shape == (5, 10)


def test_frozen_feature_extractor_is_applied_once_outside_the_model():
    calls = []

    def body(x):
        calls.append(1)
        return jnp.tanh(x[:, :2])

    student = Student(linen.Dense(3), feature_extractor=body)
    features = student.featurize(np.ones((10, 4)), batch_size=4)
    assert features.shape == (10, 2)
    assert len(calls) <= 2  # traced once per distinct batch shape (4 and 2), then cached
    weights = student.init_weights(jax.random.key(0), features)
    assert weights["student.kernel"].shape == (2, 3)  # only the head is Bayesian


def test_an_extractor_student_in_a_model_of_ones_own_is_refused_not_skipped():
    """In a NumPyro model of one's own the front-ends pass the inputs as given, so a Student's
    ``feature_extractor`` would be skipped without a word (a width-keeping extractor: a fit on
    the raw inputs). Building its network there is a ValueError saying what to do; the
    canonical model, whose front-ends featurize, and ``logits`` (given features) still work."""
    import numpyro

    from mtbkd_jax import MTBKDModel, TeacherBank, run_map

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)).astype(np.float32), np.arange(30) % 3
    rotation = jnp.asarray(np.linalg.qr(rng.normal(size=(4, 4)))[0], jnp.float32)
    student = Student(
        MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)), feature_extractor=lambda v: v @ rotation
    )

    def own_model(x, y=None):
        network = student.network(x.shape[1:])
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=network(x)), obs=y)

    with pytest.raises(ValueError, match=r"has a feature_extractor.*student\.featurize\(x\)"):
        run_map(jax.random.key(0), own_model, x, y, num_steps=5, progress_bar=False)
    bank = TeacherBank.from_logits(rng.normal(size=(2, 30, 3)))
    model = MTBKDModel(student, bank)
    fit = run_map(jax.random.key(0), model, x, y, num_steps=5, progress_bar=False)
    logits = model.logits(fit.point(), student.featurize(x))
    assert logits.shape == (30, 3) and np.isfinite(np.asarray(logits)).all()
    np.testing.assert_array_equal(student.logits(fit.point(), student.featurize(x)), logits)


def test_cnn_refuses_images_of_another_layout_instead_of_reshuffling_them():
    cnn = CNN((8, 8, 3), 3, channels=(4,), rngs=nnx.Rngs(0))
    student = Student(cnn)
    images = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
    assert student.check_inputs(images) == 3
    assert student.check_inputs(images.reshape(5, -1)) == 3
    grey = Student(CNN((8, 8, 1), 3, channels=(4,), rngs=nnx.Rngs(0)))
    assert grey.check_inputs(images[..., 0]) == 3  # (N, H, W): one channel, as Fashion-MNIST's
    for shape in [(5, 3, 8, 8), (5, 4, 16, 3)]:  # PyTorch's layout; another size, same count
        with pytest.raises(ValueError, match=r"the CNN takes images of shape \(N, 8, 8, 3\)"):
            student.check_inputs(images.reshape(shape))


def test_a_network_returning_a_tuple_is_named():
    class TwoHeads(nnx.Module):
        def __init__(self):
            self.a, self.b = nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.a(x), self.b(x)

    with pytest.raises(
        ValueError, match=r"must return one array of logits, shape \(N, C\), got tuple"
    ):
        Student(TwoHeads()).check_inputs(np.ones((2, 4), np.float32))


def test_a_network_of_integer_ids_is_told_how_to_take_the_float32_inputs():
    """The front-ends pass inputs as float32; a network that embeds token ids (nnx.Embed)
    used to be told it expected a feature width it does not have. Its error now says what to
    do, and what it says works: cast back in the network, and NUTS samples the embedding."""

    class Tokens(nnx.Module):
        def __init__(self, cast):
            self.embed = nnx.Embed(20, 8, rngs=nnx.Rngs(0))
            self.out = nnx.Linear(8, 3, rngs=nnx.Rngs(1))
            self.cast = cast

        def __call__(self, x):
            return self.out(self.embed(x.astype(jnp.int32) if self.cast else x).mean(-2))

    rng = np.random.default_rng(0)
    ids, labels = rng.integers(0, 20, size=(30, 5)), rng.integers(0, 3, 30)
    assert Student(Tokens(False)).expected_feature_shape() is None  # no width to read off
    with pytest.raises(ValueError, match=r"takes integer ids .*\(x\.astype\(jnp\.int32\)"):
        Student(Tokens(False)).check_inputs(ids.astype(np.float32))
    student = Student(Tokens(True))
    assert student.check_inputs(ids.astype(np.float32)) == 3
    posterior = run_nuts(
        jax.random.key(0), MTBKDModel(student), ids, labels,
        num_warmup=20, num_draws=10, num_chains=1, progress_bar=False,
    )  # fmt: skip
    (embedding,) = [v for k, v in posterior.draws.items() if "embed" in k]
    assert embedding.shape == (1, 10, 20, 8) and embedding.std(1).min() > 0  # it moves
    assert np.isfinite(posterior.predict(ids[:4])).all()


def test_half_precision_logits_are_taken_in_float32_and_warned():
    """A network computing in bfloat16: its logits reach the likelihood as float32 (summed in
    bfloat16, 2,000 examples' log-likelihood stepped by nats), with a warning that the
    potential still moves in steps at that precision."""

    class Net(nnx.Module):
        def __init__(self, dtype):
            self.layer = nnx.Linear(4, 3, dtype=dtype, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.layer(x)

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2000, 4)), jnp.float32)
    weights = Student(Net(jnp.float32)).init_weights(jax.random.key(0), x)
    with pytest.warns(UserWarning, match="computes its logits in bfloat16"):
        logits = Student(Net(jnp.bfloat16)).logits(weights, x)
    assert logits.dtype == jnp.float32
    exact = Student(Net(jnp.float32)).logits(weights, x)
    # the logits themselves are bfloat16's (a relative 2**-8), no longer summed at it
    np.testing.assert_allclose(np.asarray(logits), np.asarray(exact), rtol=2e-2, atol=2e-2)


def test_dict_and_distribution_priors_are_accepted():
    x = jnp.ones((2, 4))
    sites = _sites(Student(linen.Dense(3), prior=dist.Laplace(0.0, 2.0)), x)
    value = np.asarray(sites["student.kernel"]["value"])
    expected = stats.laplace.logpdf(value, 0, 2.0).sum()
    np.testing.assert_allclose(sites["student.kernel"]["fn"].log_prob(value), expected, rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(TypeError, match="module"):
        Student(lambda x: x)
    with pytest.raises(ValueError, match="name"):
        Student(linen.Dense(3), name="a/b")
    with pytest.raises(TypeError, match="feature_extractor"):
        Student(linen.Dense(3), feature_extractor=3)
    with pytest.raises(ValueError, match="activation"):
        MLP(2, 2, activation="gelu", rngs=nnx.Rngs(0))


# ------------------------------------------------------------------ audit 22, finding 4
@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (dict(hidden="16"), TypeError, r"hidden must be a sequence of layer widths, e.g. \(16,\)"),
        (dict(hidden=16), TypeError, r"hidden must be a sequence of layer widths, e.g. \(16,\)"),
        (dict(hidden=None), TypeError, r"hidden must be a sequence of layer widths"),
        (dict(hidden=(0,)), ValueError, r"hidden\[0\] must be an integer >= 1, got 0"),
        (dict(hidden=(8, -4)), ValueError, r"hidden\[1\] must be an integer >= 1, got -4"),
        (dict(hidden=(16.7,)), TypeError, r"hidden\[0\] must be an integer >= 1, got 16\.7"),
        (dict(hidden=(16.0,)), TypeError, r"hidden\[0\] must be an integer"),
        (dict(in_features=4.9), TypeError, r"in_features must be an integer >= 1, got 4\.9"),
        (dict(in_features=0), ValueError, r"in_features must be an integer >= 1, got 0"),
        (dict(num_classes=0), ValueError, r"num_classes must be an integer >= 2, got 0"),
        (dict(num_classes=1), ValueError, r"num_classes must be an integer >= 2, got 1"),
        (dict(num_classes=3.0), TypeError, r"num_classes must be an integer >= 2"),
    ],
)
def test_mlp_refuses_bad_sizes(arguments, error, message):
    settings = dict(in_features=4, num_classes=3, rngs=nnx.Rngs(0)) | arguments
    in_features, num_classes = settings.pop("in_features"), settings.pop("num_classes")
    with pytest.raises(error, match=message):
        MLP(in_features, num_classes, **settings)


def test_mlp_accepts_sequences_of_integer_widths():
    assert MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)).architecture == "4-3 tanh"
    assert MLP(4, 3, hidden=[8, 5], rngs=nnx.Rngs(0)).architecture == "4-8-5-3 tanh"
    assert MLP(4, 3, hidden=np.array([6]), rngs=nnx.Rngs(0)).architecture == "4-6-3 tanh"
    sizes = MLP(np.int64(4), np.int64(3), hidden=(np.int32(2),), rngs=nnx.Rngs(0)).architecture
    assert sizes == "4-2-3 tanh"


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            dict(channels="8"),
            TypeError,
            r"channels must be a sequence of layer widths, e.g. \(8, 16\)",
        ),
        (dict(channels=8), TypeError, r"channels must be a sequence of layer widths"),
        (dict(channels=(4, 0)), ValueError, r"channels\[1\] must be an integer >= 1, got 0"),
        (dict(channels=(4.5,)), TypeError, r"channels\[0\] must be an integer >= 1, got 4\.5"),
        (dict(num_classes=1), ValueError, r"num_classes must be an integer >= 2, got 1"),
        (dict(image_shape=(8.5, 8, 1)), TypeError, r"image_shape\[0\] must be an integer"),
        (dict(image_shape=(8, 8)), ValueError, r"image_shape must be \(height, width, channels\)"),
        (dict(image_shape=(2, 8, 1)), ValueError, r"height and width at least 2\*\*2"),
    ],
)
def test_cnn_refuses_bad_sizes(arguments, error, message):
    """A fractional size was truncated, and an image pooled down to nothing gave a head with
    no inputs."""
    settings = dict(num_classes=10, image_shape=(8, 8, 1), rngs=nnx.Rngs(0)) | arguments
    with pytest.raises(error, match=message):
        CNN(settings.pop("image_shape"), settings.pop("num_classes"), **settings)


def test_a_training_mode_nnx_extractor_is_refused_with_the_students_message():
    """A frozen body left in training mode gave Flax's "Cannot mutate BatchStat from a
    different trace level" (or batch-dependent features): refused as a student is."""

    class Body(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
            self.norm = nnx.BatchNorm(4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.norm(self.linear(x))

    body = Body()
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(0)), feature_extractor=body)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"the feature_extractor network changes its state"):
        student.featurize(x)
    body.eval()
    np.testing.assert_allclose(student.featurize(x, batch_size=3), student.featurize(x), atol=1e-6)


@pytest.mark.parametrize(
    "prior, argument",
    [
        (normal_prior(1.0, scales={"dense_1": 0.05}), r"normal_prior\(scales=\.\.\.\)"),
        (
            {"Dense_1.kernal": dist.Normal(0, 1), "Dense_1.bias": dist.Normal(0, 1)},
            r"prior \(a dict\)",
        ),
    ],
)
def test_a_misspelt_linen_prior_key_is_refused_in_a_model_of_ones_own(prior, argument):
    """A linen student's prior names were checked by the canonical model only: in the README's
    ``my_model`` (``net = student.network(x.shape[1:])``) a misspelt key was ignored (its
    weights took the default prior, or were not sampled at all). Building the network now
    refuses it, once per input shape, as an NNX student's prior is refused on construction."""
    import numpyro

    from mtbkd_jax import run_map

    student = Student(LinenMLP(3, hidden=(3,)), prior=prior)

    def my_model(x, y=None):
        net = student.network(x.shape[1:])
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=net(x)), obs=y)

    x, y = np.ones((6, 4), np.float32), np.arange(6) % 3
    with pytest.raises(
        ValueError,
        match=argument + r" names \['(dense_1|Dense_1.kernal)'\], "
        r"which match no parameter of the student; its parameters are 'Dense_0",
    ):
        run_map(jax.random.key(0), my_model, x, y, num_steps=2, progress_bar=False)
    with pytest.raises(ValueError, match="which match no parameter"):  # and outside a run
        handlers.trace(handlers.seed(my_model, 0)).get_trace(jnp.ones((2, 4)))


def test_a_linen_dict_prior_that_leaves_weights_out_is_refused():
    """The weights a linen student's dict prior left out were random initial values drawn
    with another key by the sampler, ``predict`` and ``log_likelihood`` (a linen module holds
    none): NUTS's posterior predicted with a network never sampled (its log-likelihood and
    predictions differed by 2.2 nats). Refused when a run starts and in a model of one's own;
    an NNX module, whose values are kept, and a dict giving every weight a prior still work."""
    import numpyro

    from mtbkd_jax import TeacherBank, run_map

    x, y = np.ones((6, 4), np.float32), np.arange(6) % 3
    bank = TeacherBank.from_logits(np.zeros((2, 6, 3), np.float32))
    head = {"Dense_1.kernel": dist.Normal(0, 1), "Dense_1.bias": dist.Normal(0, 1)}
    student = Student(LinenMLP(3, hidden=(3,)), prior=head)
    message = (
        r"prior \(a dict\) gives no distribution for \['Dense_0.bias', 'Dense_0.kernel'\] of "
        r"the linen student 'student'.*or use an NNX module"
    )
    short = dict(num_warmup=2, num_draws=2, num_chains=1, progress_bar=False)
    with pytest.raises(ValueError, match=message):
        run_nuts(jax.random.key(0), MTBKDModel(student, bank), x, y, **short)

    def my_model(x, y=None):
        net = student.network(x.shape[1:])
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=net(x)), obs=y)

    with pytest.raises(ValueError, match=message):
        run_nuts(jax.random.key(0), my_model, x, y, logits_fn=student.logits, **short)
    every = {**head, "Dense_0.kernel": dist.Normal(0, 1), "Dense_0.bias": dist.Normal(0, 1)}
    fit = run_map(jax.random.key(0), MTBKDModel(student.with_prior(every), bank), x, y,
                  num_steps=2, progress_bar=False)  # fmt: skip
    assert set(fit.draws) == {f"student.{k}" for k in every} and not fit.fitted_params
    nnx_head = {"layers.1.kernel": dist.Normal(0, 1), "layers.1.bias": dist.Normal(0, 1)}
    nnx_student = Student(MLP(4, 3, hidden=(3,), rngs=nnx.Rngs(0)), prior=nnx_head)
    run_nuts(jax.random.key(0), MTBKDModel(nnx_student, bank), x, y, **short)


@pytest.mark.parametrize("layer", ["dropout", "batchnorm"])
def test_a_training_mode_nnx_extractor_of_integer_ids_is_refused_with_the_students_message(layer):
    """An extractor of token ids was probed only on float inputs: in training mode its
    Dropout (or BatchNorm) then failed inside the compiled featurization with Flax's
    "Cannot mutate RngCount from a different trace level". Integer ids are probed as they
    are, with the package's message naming the feature_extractor and .eval()."""

    class Tokens(nnx.Module):
        def __init__(self):
            self.embed = nnx.Embed(10, 4, rngs=nnx.Rngs(0))
            self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
            self.norm = nnx.BatchNorm(4, rngs=nnx.Rngs(0))

        def __call__(self, tokens):
            pooled = self.embed(tokens).mean(axis=1)
            return self.dropout(pooled) if layer == "dropout" else self.norm(pooled)

    body = Tokens()
    student = Student(MLP(4, 3, hidden=(), rngs=nnx.Rngs(1)), feature_extractor=body)
    tokens = np.random.default_rng(0).integers(0, 10, (8, 5))
    with pytest.raises(
        ValueError, match=r"the feature_extractor network changes its state.*\.eval\(\)"
    ):
        student.featurize(tokens)
    body.eval()
    features = student.featurize(tokens, batch_size=3)
    np.testing.assert_allclose(features, student.featurize(tokens), atol=1e-6)
    assert features.shape == (8, 4)
