"""A model's own ``numpyro.param`` sites are fitted by SVI / MAP together with its latent sites;
the posterior carries their fitted values, so its log-likelihood, its predictions and its files
describe the model that was fitted, not the one at each param's initial value."""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from flax import linen

import mtbkd_jax as mk

N, D, C = 200, 3, 2


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0, 0.5]) + 2.0 + rng.normal(size=N) > 0).astype(np.int32)
    return x, y


def _with_intercept(inputs, labels=None):
    """Softmax regression whose class intercepts are a param (type-II maximum likelihood)."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([D, C]).to_event(2))
    b = numpyro.param("b", jnp.zeros(C))
    with numpyro.plate("data", inputs.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=inputs @ w + b), obs=labels)


def _reference_mode(x, y):
    """The joint mode over (w, b) by L-BFGS on a hand-written log joint (no NumPyro)."""

    def loss(p):
        log_p = jax.nn.log_softmax(x @ p["w"] + p["b"])
        prior = -0.5 * jnp.sum(p["w"] ** 2)
        return -(jnp.take_along_axis(log_p, y[:, None], axis=1).sum() + prior)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def solve(p):
        def step(carry, _):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p, solver.init(p)), None, length=200)
        return p

    p = solve({"w": jnp.zeros((D, C)), "b": jnp.zeros(C)})
    return p


def _log_likelihood(x, y, w, b):
    log_p = jax.nn.log_softmax(x @ w + b)
    return np.asarray(jnp.take_along_axis(log_p, jnp.asarray(y)[:, None], axis=1)[:, 0])


def test_a_maps_log_likelihood_uses_the_fitted_param_not_its_initial_value():
    """A polished MAP keeps the fitted intercepts: they equal an independent L-BFGS mode to
    2e-3, and the posterior's pointwise log-likelihood equals a hand-written one at (w, b)
    to 1e-4 per example. At b's initial value (what the posterior used before: the
    deliberately wrong version) the training log-likelihood is over 50 nats lower. The draws
    hold the latent sites alone, so the MAP still starts NUTS (``init_params=mode.point()``)."""
    x, y = _data()
    reference = _reference_mode(jnp.asarray(x), jnp.asarray(y))
    mode = mk.run_map(jax.random.key(0), _with_intercept, x, y, num_steps=500,
                      polish_steps=500, progress_bar=False)  # fmt: skip
    assert set(mode.draws) == {"w"} and set(mode.fitted_params) == {"b"}
    w, b = mode.draws["w"][0, 0], np.asarray(mode.fitted_params["b"])
    np.testing.assert_allclose(b, reference["b"], atol=2e-3)
    np.testing.assert_allclose(w, reference["w"], atol=2e-3)
    pointwise = mode.log_likelihood()["y"][0, 0]
    np.testing.assert_allclose(pointwise, _log_likelihood(x, y, w, b), atol=1e-4)
    at_initial = _log_likelihood(x, y, w, np.zeros(C, np.float32)).sum()
    assert pointwise.sum() > at_initial + 50.0
    held = mode.log_likelihood(x[:20], y[:20])["y"][0, 0]  # new data: the same fitted param
    np.testing.assert_allclose(held, _log_likelihood(x[:20], y[:20], w, b), atol=1e-4)
    nuts = mk.run_nuts(jax.random.key(1), _with_intercept, x, y, num_warmup=20, num_draws=5,
                       init_params=mode.point(), progress_bar=False)  # fmt: skip
    assert nuts.draws["w"].shape[1:] == (5, D, C) and not nuts.fitted_params


def test_an_svi_posterior_keeps_the_param_once_and_gives_it_to_each_draw_and_its_file(tmp_path):
    """AutoNormal: the fitted param is kept once (not 50 copies), each draw's log-likelihood
    uses it, a ``logits_fn`` receives it, and it survives the DataTree (constant data) and
    ``save`` / ``load``."""
    x, y = _data()
    posterior = mk.run_svi(
        jax.random.key(1),
        _with_intercept,
        x,
        y,
        num_steps=1500,
        num_draws=50,
        progress_bar=False,
        logits_fn=lambda draws, inputs: inputs @ draws["w"] + draws["b"],
    )
    b = np.asarray(posterior.fitted_params["b"])
    assert b.shape == (C,) and np.abs(b).max() > 0.5  # it moved from its initial zeros
    pointwise = posterior.log_likelihood()["y"][0]
    expected = np.stack([_log_likelihood(x, y, w, b) for w in posterior.draws["w"][0]])
    np.testing.assert_allclose(pointwise, expected, atol=1e-4)
    probabilities = posterior.predict(x[:5])
    expected_p = jax.nn.softmax(x[:5] @ posterior.draws["w"][0] + b, axis=-1)
    np.testing.assert_allclose(probabilities, expected_p, atol=1e-6)
    tree = posterior.to_datatree()
    np.testing.assert_array_equal(tree["constant_data"]["b"].values, b)
    assert "b" not in tree["posterior"].data_vars
    loaded = mk.Posterior.load(posterior.save(tmp_path / "fit.nc"), logits_fn=posterior.logits_fn)
    np.testing.assert_array_equal(loaded.fitted_params["b"], b)
    assert "b" not in loaded.constant_data
    np.testing.assert_allclose(loaded.predict(x[:5]), probabilities, atol=1e-6)


def _output_layer_map(x, y, num_steps):
    """A student with a dict prior on its output layer only (``layers.1``: the hidden layer
    is a param), its prior, model and MAP. An NNX module: a linen module holds no values to
    keep unsampled weights at, so its dict prior must give every weight a distribution."""
    from flax import nnx

    output = {"layers.1.kernel": dist.Normal(0.0, 1.0).expand((8, C)).to_event(2),
              "layers.1.bias": dist.Normal(0.0, 1.0).expand((C,)).to_event(1)}  # fmt: skip
    student = mk.Student(mk.MLP(D, C, hidden=(8,), rngs=nnx.Rngs(0)), prior=output)
    model = mk.MTBKDModel(student, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mk.infer.ConvergenceWarning)
        mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=num_steps, progress_bar=False)
    return output, model, mode


def test_a_students_unsampled_weights_are_kept_as_fitted(tmp_path):
    """A dict prior on the output layer only (``layers.1``): the hidden layer is a param SVI
    fits. The posterior's log-likelihood is the one the MAP optimised (minus its
    final loss, less the output layer's log prior: an independent reference, 1e-3 relative),
    and its predictions give the same per-example log-likelihood. Before, both used the
    hidden layer's initial weights, silently (264 nats lower in a review's repro). The
    holder (a pytree: the hidden layer's arrays, ``ParamShape`` markers for the lifted output
    layer) survives ``save`` / ``load``: the loaded posterior predicts the same (before, it was
    left out of the file and ``load`` refused the student's own ``logits_fn``)."""
    x, y = _data()
    y = ((x[:, 0] * x[:, 1]) > 0).astype(np.int32)  # a problem the hidden layer must learn
    output, model, mode = _output_layer_map(x, y, num_steps=1500)
    assert set(mode.fitted_params) == {"student$params"}
    point = mode.point()
    log_prior = sum(float(output[k[len("student.") :]].log_prob(v)) for k, v in point.items())
    log_likelihood = mode.log_likelihood()["y"][0, 0]
    assert log_likelihood.sum() == pytest.approx(-mode.losses[-1] - log_prior, rel=1e-3)
    predicted = np.log(np.asarray(mode.predict(x))[0, np.arange(N), y])
    np.testing.assert_allclose(predicted, log_likelihood, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = mk.Posterior.load(mode.save(tmp_path / "fit.nc"), logits_fn=model.logits)
    assert jax.tree.structure(loaded.fitted_params) == jax.tree.structure(mode.fitted_params)
    pairs = zip(jax.tree.leaves(loaded.fitted_params), jax.tree.leaves(mode.fitted_params),
                strict=True)  # fmt: skip
    for again, fitted in pairs:
        np.testing.assert_array_equal(again, fitted)
    assert not loaded.constant_data or not any(
        k.startswith("mtbkd_fitted_param") for k in loaded.constant_data
    )
    np.testing.assert_allclose(loaded.predict(x), mode.predict(x), atol=1e-6)


def test_a_fully_sampled_students_weight_holder_is_not_kept_and_not_warned_about():
    """A Student whose every weight is a sample site registers NumPyro's ``student$params``
    holder with no array left in it: unused, so nothing is kept and nothing is said."""
    x, y = _data()
    bank = mk.TeacherBank.from_logits(np.random.default_rng(2).normal(size=(2, N, C)))
    student = mk.Student(linen.Dense(C), prior=mk.normal_prior(1.0))
    model = mk.MTBKDModel(student, bank)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=50, progress_bar=False)
    assert set(mode.draws) == {"student.kernel", "student.bias"} and not mode.fitted_params


def test_a_sampler_started_at_a_fit_of_a_model_with_params_is_warned():
    """NUTS and SG-MCMC keep a param at its initial value where run_map trained it: a chain
    started at the MAP's point starts in another model (a review's repro: the hidden layer a
    dict prior leaves unsampled moved by 3.3 in the MAP, and NUTS put it back). Started so,
    each sampler warns at the user's line, naming the param; a fully sampled student and a
    sampler's own random starts are not warned."""
    x, y = _data()
    _, model, mode = _output_layer_map(x, y, num_steps=20)
    short = dict(num_warmup=2, num_draws=2, num_chains=1, progress_bar=False)
    with pytest.warns(UserWarning, match=r"param sites \['student\$params'\].*NUTS keeps") as got:
        mk.run_nuts(jax.random.key(1), model, x, y, init_params=mode.point(), **short)
    assert any(w.filename == __file__ for w in got)
    sgmcmc = dict(num_epochs=1, step_size=1e-4, batch_size=50, draws_per_epoch=2)
    with warnings.catch_warnings(), pytest.warns(UserWarning, match=r"SG-MCMC keeps at") as got:
        warnings.simplefilter("ignore", mk.infer.ConvergenceWarning)
        point = mode.point()
        mk.run_sgmcmc(
            jax.random.key(1), model, x, y, init_params=point, **sgmcmc, progress_bar=False
        )
    assert any(w.filename == __file__ for w in got)
    sampled = mk.MTBKDModel(mk.Student(linen.Dense(C)), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mk.infer.ConvergenceWarning)
        start = mk.run_map(jax.random.key(0), sampled, x, y, num_steps=20, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mk.run_nuts(jax.random.key(1), sampled, x, y, init_params=start.point(), **short)
        mk.run_nuts(jax.random.key(1), model, x, y, **short)  # its own starts: nothing to say
    # the warning's advice for a model of one's own: the fitted values substituted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mk.infer.ConvergenceWarning)
        fit = mk.run_map(jax.random.key(0), _with_intercept, x, y, num_steps=20, progress_bar=False)
    with pytest.warns(UserWarning, match=r"param sites \['b'\]"):
        mk.run_nuts(jax.random.key(1), _with_intercept, x, y, init_params=fit.point(), **short)
    fitted = numpyro.handlers.substitute(_with_intercept, data=fit.fitted_params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mk.run_nuts(jax.random.key(1), fitted, x, y, init_params=fit.point(), **short)


class _Shift(NamedTuple):
    offset: jax.Array


def test_scoped_and_nested_params_survive_a_file_and_another_node_is_named(tmp_path):
    """A scoped param (``head/b``: ArviZ rejects '/') and a param that is a tuple holding a
    list are written and read back equal; a param whose pytree node the file cannot lay out
    (a NamedTuple) is named in a warning and kept in memory."""
    x, y = _data()

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([D, C]).to_event(2))
        with numpyro.handlers.scope(prefix="head"):
            b = numpyro.param("b", jnp.zeros(C))
        pair = numpyro.param("pair", (jnp.zeros(C), [jnp.zeros(C)]))
        shift = numpyro.param("shift", _Shift(jnp.zeros(C)))
        logits = inputs @ w + b + pair[0] - pair[1][0] + shift.offset
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=logits), obs=labels)

    mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=300, polish_steps=200,
                      progress_bar=False)  # fmt: skip
    fitted = mode.fitted_params
    b = np.asarray(fitted["head/b"])
    total = b + fitted["pair"][0] - fitted["pair"][1][0] + fitted["shift"].offset
    np.testing.assert_allclose(
        mode.log_likelihood()["y"][0, 0],
        _log_likelihood(x, y, mode.draws["w"][0, 0], total),
        atol=1e-4,
    )
    with pytest.warns(UserWarning, match=r"\['shift'\] are not written to the file") as caught:
        loaded = mk.Posterior.load(mode.save(tmp_path / "fit.nc"))
    assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
    assert set(loaded.fitted_params) == {"head/b", "pair"}
    np.testing.assert_array_equal(loaded.fitted_params["head/b"], b)
    pair = loaded.fitted_params["pair"]
    assert type(pair) is tuple and type(pair[1]) is list and len(pair[1]) == 1
    np.testing.assert_array_equal(pair[0], fitted["pair"][0])
    np.testing.assert_array_equal(pair[1][0], fitted["pair"][1][0])
    assert set(loaded.constant_data) == set(mode.constant_data)  # the leaves are not data


def test_a_per_example_param_fits_on_minibatches_and_has_no_value_for_new_inputs():
    """An offset per example (``numpyro.param(..., event_dim=0)`` in a subsampled plate):
    the training log-likelihood uses every example's fitted offset (a hand-written reference
    to 1e-4); new inputs have no offset, which the error says instead of NumPyro's shape
    message (before, the initial offsets were used silently)."""
    x, y = _data()

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([D, C]).to_event(2))
        with numpyro.plate("data", inputs.shape[0], subsample_size=50) as idx:
            offset = numpyro.param("offset", jnp.zeros(inputs.shape[0]), event_dim=0)
            logits = inputs[idx] @ w + jnp.stack([jnp.zeros_like(offset), offset], -1)
            numpyro.sample("y", dist.Categorical(logits=logits), obs=labels[idx])

    fit = mk.run_svi(jax.random.key(1), model, x, y, num_steps=300, num_draws=4,
                     progress_bar=False)  # fmt: skip
    offset = np.asarray(fit.fitted_params["offset"])
    assert offset.shape == (N,) and np.abs(offset).max() > 0.1
    shift = np.stack([np.zeros(N), offset], -1)
    expected = np.stack([_log_likelihood(x, y, w, shift) for w in fit.draws["w"][0]])
    np.testing.assert_allclose(fit.log_likelihood()["y"][0], expected, atol=1e-4)
    with pytest.raises(ValueError, match="one value per training example"):
        fit.log_likelihood(x[:30], y[:30])


def test_an_nnx_students_holder_with_integer_keys_survives_a_file(tmp_path):
    """The package's own MLP keeps its layers in ``nnx.List``: its weight holder has integer
    keys (``{'layers': {0: ..., 1: ...}}``), which the first layout refused (left out with a
    warning, and ``load`` then refused the student's own ``logits_fn``)."""
    from flax import nnx

    x, y = _data()
    output = {"layers.1.kernel": dist.Normal(0.0, 1.0).expand((8, C)).to_event(2),
              "layers.1.bias": dist.Normal(0.0, 1.0).expand((C,)).to_event(1)}  # fmt: skip
    student = mk.Student(mk.MLP(D, C, hidden=(8,), rngs=nnx.Rngs(0)), prior=output)
    model = mk.MTBKDModel(student, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mk.infer.ConvergenceWarning)
        mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=300, progress_bar=False)
    holder = mode.fitted_params["student$params"]
    assert 0 in holder["layers"]  # integer keys
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = mk.Posterior.load(mode.save(tmp_path / "fit.nc"), logits_fn=model.logits)
    assert jax.tree.structure(loaded.fitted_params) == jax.tree.structure(mode.fitted_params)
    np.testing.assert_allclose(loaded.predict(x), mode.predict(x), atol=1e-6)


def test_every_kind_of_fitted_value_comes_back_with_its_dtype_order_and_name(tmp_path):
    """Straight through ``save`` / ``load``, without a model: bfloat16 (which netCDF cannot
    hold: the packed bytes can), 0-d and bool arrays, integer keys, empty containers, a
    ``ParamShape`` of no dims; a param named as the packed variable and one named as a
    constant (``teacher_weights``) neither overwrite nor are overwritten; the params come back
    in their order; the constants come back unchanged."""
    from numpyro.contrib.module import ParamShape

    fitted = {
        "z/1": np.arange(3, dtype=np.int64),
        "mtbkd_fitted_param_bytes": np.float32([1.0, 2.0]),
        "teacher_weights": np.float64([0.25]),
        "holder": {"a": {0: jnp.asarray([1.5, -2.0], jnp.bfloat16), 1: ParamShape(())},
                   "flag": np.bool_(True), "empty": {}, "nest": ([], (np.float16(3.0),))},
        "scalar": np.float32(4.0),
    }  # fmt: skip
    constants = {"teacher_weights": np.ones((2, 3)), "mtbkd_fitted_param_bytes_": np.zeros(2)}
    posterior = mk.Posterior(draws={"w": np.zeros((1, 2, 3))}, constant_data=constants,
                             fitted_params=fitted)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = mk.Posterior.load(posterior.save(tmp_path / "fit.nc"))
    assert list(loaded.fitted_params) == list(fitted)
    assert jax.tree.structure(loaded.fitted_params) == jax.tree.structure(fitted)
    pairs = zip(jax.tree.leaves(loaded.fitted_params), jax.tree.leaves(fitted), strict=True)
    for again, given in pairs:
        assert np.asarray(again).dtype == np.asarray(given).dtype
        np.testing.assert_array_equal(np.asarray(again), np.asarray(given))
    assert set(loaded.constant_data) == set(constants)
    for name, value in constants.items():
        np.testing.assert_array_equal(loaded.constant_data[name], value)


def test_a_holder_with_many_leaves_is_one_variable(tmp_path):
    """300 leaves are packed into one variable (a variable per leaf made ``load`` quadratic in
    their number: 30 s at 400 leaves in a review's measurement)."""
    import xarray as xr

    layers = {
        f"layer_{i}": {"kernel": np.full((2, 2), i, np.float32), "bias": np.zeros(2, np.float32)}
        for i in range(150)
    }
    fitted = {"holder": layers}
    posterior = mk.Posterior(draws={"w": np.zeros((1, 2, 3))}, fitted_params=fitted)
    path = posterior.save(tmp_path / "fit.nc")
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        assert list(tree["constant_data"].data_vars) == ["mtbkd_fitted_param_bytes"]
    loaded = mk.Posterior.load(path)
    np.testing.assert_array_equal(loaded.fitted_params["holder"]["layer_149"]["kernel"], 149)
