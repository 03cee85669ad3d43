"""Lifting Flax NNX and linen students into NumPyro: site names, shapes, frozen bodies."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from flax import linen, nnx
from numpyro import handlers
from scipy import stats

from mtbkd_jax import MLP, Student, normal_prior
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
    sites = _sites(student, features)
    assert sites["student.kernel"]["value"].shape == (2, 3)  # only the head is Bayesian


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
