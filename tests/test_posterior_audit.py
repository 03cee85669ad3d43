"""Findings of a Posterior / ArviZ audit (session 28), each a silent wrong result or an unclear
error before: a loaded posterior predicted with another student or without its feature
extractor, observed sites of other lengths were NaN-padded in the DataTree, a cached
log-likelihood outlived the draws it was of, a damaged file raised h5py's KeyError, a file's
chain and draw axes were read by position, and '/' in a site name was refused only after
sampling."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.datasets import make_synthetic


@pytest.fixture(scope="module")
def problem():
    data = make_synthetic("linear", 3, num_examples=110)
    return data


def _student(activation="tanh", extractor=None, hidden=(4,)):
    net = mk.MLP(2, 3, hidden=hidden, activation=activation, rngs=nnx.Rngs(0))
    return mk.Student(net, feature_extractor=extractor)


def _svi(problem, student, **kwargs):
    model = mk.MTBKDModel(student, problem.teachers_train)
    settings = dict(num_steps=100, num_draws=12, progress_bar=False)
    return mk.run_svi(
        jax.random.key(0), model, problem.x_train, problem.y_train, **settings, **kwargs
    )


def test_a_posterior_loaded_with_another_student_is_refused(problem, tmp_path):
    """A tanh posterior loaded with a relu student predicted with it (probabilities off by up
    to 0.98); the same student loads and predicts exactly as before saving."""
    student = _student("tanh")
    posterior = _svi(problem, student)
    path = posterior.save(tmp_path / "tanh.nc")
    before = np.asarray(posterior.predict(problem.x_test))
    again = mk.Posterior.load(path, logits_fn=_student("tanh").logits)
    np.testing.assert_array_equal(np.asarray(again.predict(problem.x_test)), before)
    with pytest.raises(ValueError, match="logits_fn does not give this posterior's logits"):
        mk.Posterior.load(path, logits_fn=_student("relu").logits)

    def one_class_more(*args, **kwargs):
        logits = _student("tanh").logits(*args, **kwargs)
        return jnp.concatenate([logits, jnp.zeros_like(logits[..., :1])], axis=-1)

    with pytest.raises(ValueError, match=r"logits have shape \(2, 4\), those saved \(2, 3\)"):
        mk.Posterior.load(path, logits_fn=one_class_more)  # said "differ by up to nan"
    mk.Posterior.load(path)  # without logits_fn: nothing to check, the draws are read


def test_a_feature_extractor_not_given_to_load_is_named(problem, tmp_path):
    """A shape-keeping extractor: without featurize=, raw inputs went to the network as
    features (probabilities off by up to 0.95)."""

    def extractor(v):
        return jnp.tanh(3 * v[:, ::-1] + 1)

    student = _student(extractor=extractor)
    posterior = _svi(problem, student)
    path = posterior.save(tmp_path / "features.nc")
    before = np.asarray(posterior.predict(problem.x_test))
    loaded = mk.Posterior.load(path, logits_fn=student.logits)
    with pytest.raises(ValueError, match="frozen feature extractor, which Posterior.load"):
        loaded.predict(problem.x_test)
    features = np.asarray(extractor(jnp.asarray(problem.x_test)))
    from_features = np.asarray(loaded.predict(features, featurized=True))
    np.testing.assert_allclose(from_features, before, rtol=1e-5, atol=1e-6)  # eager vs jitted
    given = mk.Posterior.load(path, logits_fn=student.logits, featurize=student.featurize)
    np.testing.assert_array_equal(np.asarray(given.predict(problem.x_test)), before)


def test_observed_sites_of_other_lengths_get_their_own_dims(problem):
    student = _student()
    x, y = problem.x_train, problem.y_train
    extra = np.linspace(-1, 1, 100).astype(np.float32)

    def two(x, y=None):
        net = student.network(x.shape[1:])
        logits = net(x)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=logits), obs=y)
        with numpyro.plate("extra", 100):
            numpyro.sample("z", dist.Normal(0.1 * logits[0, 0], 1.0), obs=extra)

    posterior = mk.run_svi(
        jax.random.key(0), two, x, y, num_steps=50, num_draws=10, progress_bar=False
    )
    pointwise = posterior.log_likelihood()
    tree = posterior.to_datatree()
    for site, dim in (("y", "example"), ("z", "z_example")):
        stored = tree["log_likelihood"][site]
        assert stored.dims[-1] == dim and stored.shape == pointwise[site].shape
        assert not np.isnan(stored.values).any()  # ArviZ padded y to 100 rows with NaN


def test_the_log_likelihood_follows_draws_assigned_after_it(problem):
    posterior = _svi(problem, _student())
    first = posterior.log_likelihood()["y"]
    posterior.draws = {k: v[:, ::2] for k, v in posterior.draws.items()}  # thinned
    thinned = posterior.log_likelihood()["y"]
    assert thinned.shape[1] == first.shape[1] // 2
    np.testing.assert_array_equal(thinned, first[:, ::2])
    tree = posterior.to_datatree()
    assert tree["log_likelihood"]["y"].sizes["draw"] == tree["posterior"].sizes["draw"]


def test_predict_follows_a_logits_fn_assigned_after_it(problem):
    posterior = _svi(problem, _student("tanh"))
    tanh = np.asarray(posterior.predict(problem.x_test))
    posterior.logits_fn = _student("relu").logits
    assert not np.allclose(np.asarray(posterior.predict(problem.x_test)), tanh)


def test_a_damaged_file_is_one_clear_error(problem, tmp_path):
    path = _svi(problem, _student()).save(tmp_path / "run.nc")
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    start = len(raw) // 4
    raw[start:] = rng.integers(0, 256, len(raw) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="run.nc.*cannot be read"):
        mk.Posterior.load(path)


def test_a_file_with_draw_before_chain_is_read_by_dim_name(problem, tmp_path):
    posterior = mk.run_nuts(
        jax.random.key(1), mk.MTBKDModel(_student(), problem.teachers_train),
        problem.x_train, problem.y_train, num_warmup=20, num_draws=15, num_chains=2,
        progress_bar=False,
    )  # fmt: skip
    tree = posterior.to_datatree()
    tree["posterior"] = tree["posterior"].to_dataset().transpose("draw", "chain", ...)
    tree.to_netcdf(tmp_path / "transposed.nc", engine="h5netcdf")
    loaded = mk.Posterior.load(tmp_path / "transposed.nc")
    assert (loaded.num_chains, loaded.num_draws) == (2, 15)
    for name, value in posterior.draws.items():
        np.testing.assert_array_equal(loaded.draws[name], value)


def test_streamed_summaries_are_written_and_read_back(problem, tmp_path):
    """``Posterior.streamed`` (all a ``keep_draws=False`` run keeps of its predictive) was
    left out of the file with a warning: it is its own group now, read back as it was; an
    entry that is not numbers is still left out, named."""
    posterior = _svi(problem, _student())
    means = np.random.default_rng(0).dirichlet(np.ones(3), size=5).astype(np.float32)
    posterior.streamed = {"predictive_mean": means, "mean_deviance": np.arange(5.0),
                          "num_draws": 12}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        posterior.save(tmp_path / "streamed.nc")
    loaded = mk.Posterior.load(tmp_path / "streamed.nc").streamed
    assert sorted(loaded) == ["mean_deviance", "num_draws", "predictive_mean"]
    np.testing.assert_array_equal(loaded["predictive_mean"], means)
    np.testing.assert_array_equal(loaded["mean_deviance"], np.arange(5.0))
    assert loaded["num_draws"] == 12 and isinstance(loaded["num_draws"], int)
    posterior.streamed = {"num_draws": 3, "note": "by hand"}
    with pytest.warns(UserWarning, match=r"entries \['note'\] are not arrays of numbers"):
        posterior.save(tmp_path / "noted.nc")
    assert mk.Posterior.load(tmp_path / "noted.nc").streamed == {"num_draws": 3}


def test_slashed_site_names_are_refused_before_sampling(problem):
    """NumPyro's own lifting names sites 'net/...': the run was thrown away after sampling."""

    def model(x, y=None):
        w = numpyro.sample("net/kernel", dist.Normal(0, 1).expand([2, 3]).to_event(2))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=x @ w), obs=y)

    calls = []

    def counting(x, y=None):
        calls.append(1)
        return model(x, y)

    with pytest.raises(ValueError, match=r"\['net/kernel'\] contain '/'"):
        mk.run_nuts(jax.random.key(0), counting, problem.x_train, problem.y_train,
                    num_warmup=5, num_draws=5, progress_bar=False)  # fmt: skip
    assert len(calls) == 1  # traced once, abstractly: nothing sampled
    for run in (mk.run_svi, mk.run_map):  # refused after the guide's set-up, before the fit
        with pytest.raises(ValueError, match=r"\['net/kernel'\] contain '/'"):
            run(jax.random.key(0), model, problem.x_train, problem.y_train, num_steps=5,
                progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"\['net/kernel'\] contain '/'"):
        mk.run_sgmcmc(jax.random.key(0), _minibatched(model), problem.x_train, problem.y_train,
                      step_size=1e-4, num_epochs=1, progress_bar=False)  # fmt: skip


def _minibatched(model):
    def minibatched(x, y=None):
        w = numpyro.sample("net/kernel", dist.Normal(0, 1).expand([2, 3]).to_event(2))
        with numpyro.plate("data", x.shape[0], subsample_size=10) as i:
            numpyro.sample("y", dist.Categorical(logits=x[i] @ w), obs=None if y is None else y[i])

    return minibatched
