"""run_map(polish_steps=...): an Adam MAP polished to the mode by L-BFGS, against modes known
independently (scikit-learn's L2 logistic regression, a closed-form scale mode), its
convergence record and warning, and its refusals."""

import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.infer.util
import pytest
from sklearn.linear_model import LogisticRegression

import mtbkd_jax as mk


def _logistic_regression(scale=10.0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.logistic(size=200) > 0).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, scale).expand([3]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=inputs @ w).to_event(1), obs=labels)

    mode = LogisticRegression(C=scale**2, fit_intercept=False, tol=1e-12, max_iter=10_000)
    return model, x, y, mode.fit(x, y).coef_[0]


def test_a_polished_map_is_the_mode_where_adam_alone_stopped_short():
    """100 Adam steps at 1e-3 stop far from the mode (more than 0.3 off: the deliberately
    unconverged version); polished, the point is scikit-learn's L2 logistic regression
    (C = sigma^2, no intercept) to 2e-4, the polish met its tolerance, and no warning."""
    model, x, y, reference = _logistic_regression()
    with pytest.warns(mk.infer.ConvergenceWarning):
        early = mk.run_map(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                           progress_bar=False)  # fmt: skip
    assert np.abs(early.draws["w"][0, 0] - reference).max() > 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error", mk.infer.ConvergenceWarning)
        polished = mk.run_map(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                              polish_steps=500, progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(polished.draws["w"][0, 0], reference, atol=2e-4)
    settings = polished.settings
    assert settings["polish_converged"] is True and 0 < settings["polish_steps_run"] < 500
    assert polished.losses.shape == (100 + settings["polish_steps_run"],)
    assert polished.losses[-1] < early.losses[-1]
    # the last loss recorded is the loss at the point returned (minus its log joint)
    point = {"w": jax.numpy.asarray(polished.draws["w"][0, 0])}
    log_joint, _ = numpyro.infer.util.log_density(model, (x, y), {}, point)
    assert polished.losses[-1] == pytest.approx(-float(log_joint), rel=1e-6)

    # the gradient's norm recorded is the norm at the point returned (w is real: the
    # unconstrained coordinates are w's), small at the mode and not at Adam's point
    def loss(w):
        return -numpyro.infer.util.log_density(model, (x, y), {}, {"w": w})[0]

    grad_norm = float(np.linalg.norm(jax.grad(loss)(point["w"])))
    assert settings["polish_grad_norm"] == pytest.approx(grad_norm, rel=1e-3, abs=1e-6)
    assert settings["polish_grad_norm"] < 1e-2
    adam_point = jax.numpy.asarray(early.draws["w"][0, 0])
    assert float(np.linalg.norm(jax.grad(loss)(adam_point))) > 100 * settings["polish_grad_norm"]
    # cut short after 3 iterations the gradient is large, and the norm is the returned point's
    # (the previous iterate's differs by a factor of about 2.5 there)
    with pytest.warns(mk.infer.ConvergenceWarning):
        short = mk.run_map(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                           polish_steps=3, progress_bar=False)  # fmt: skip
    at_short = jax.grad(loss)(jax.numpy.asarray(short.draws["w"][0, 0]))
    assert short.settings["polish_grad_norm"] > 1.0
    np.testing.assert_allclose(
        short.settings["polish_grad_norm"], float(np.linalg.norm(at_short)), rtol=1e-4
    )


def test_the_polish_optimises_a_positive_site_in_its_constrained_space_like_autodelta():
    """sigma ~ Exponential(1), x_i ~ Normal(0, sigma): AutoDelta's objective is the log joint
    at sigma itself (no Jacobian), whose mode solves sigma^3 + N sigma^2 - S = 0 (S = sum x^2).
    The polished sigma is that root to 1e-5 relative; the mode of the log density in log
    sigma (with the Jacobian, a deliberately wrong objective) is another point."""
    rng = np.random.default_rng(1)
    x = (2.0 * rng.normal(size=(50, 1))).astype(np.float32)
    n, s = x.shape[0], float((x.astype(np.float64) ** 2).sum())

    def model(inputs, labels=None):
        sigma = numpyro.sample("sigma", dist.Exponential(1.0))
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("x", dist.Normal(0.0, sigma), obs=inputs[:, 0])

    roots = np.roots([1.0, n, 0.0, -s])
    root = float(roots[np.isreal(roots)].real.max())
    with_jacobian = np.roots([1.0, n - 1, 0.0, -s])  # d/d log sigma adds +1 to the log density
    wrong = float(with_jacobian[np.isreal(with_jacobian)].real.max())
    assert abs(wrong - root) / root > 1e-3
    mode = mk.run_map(jax.random.key(0), model, x, num_steps=50, learning_rate=1e-2,
                      polish_steps=300, progress_bar=False)  # fmt: skip
    assert mode.draws["sigma"].ravel()[0] == pytest.approx(root, rel=1e-5)
    assert mode.settings["polish_converged"] is True


def test_a_polish_cut_short_is_warned_about_naming_polish_steps():
    model, x, y, _ = _logistic_regression()
    with pytest.warns(mk.infer.ConvergenceWarning, match="L-BFGS.*3 iterations.*polish_steps") as w:
        mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=100, learning_rate=1e-3,
                          polish_steps=3, progress_bar=False)  # fmt: skip
    assert w[0].filename == __file__
    assert mode.settings["polish_converged"] is False and mode.settings["polish_steps_run"] == 3


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"polish_steps": -1}, ValueError, "polish_steps must be an integer >= 0"),
        ({"polish_steps": True}, ValueError, "polish_steps must be an integer >= 0"),
        ({"polish_steps": 2.5}, ValueError, "polish_steps must be an integer >= 0"),
        ({"polish_steps": 10, "polish_tolerance": 0.0}, ValueError, "polish_tolerance"),
    ],
)
def test_bad_polish_settings_are_refused(options, error, match):
    model, x, y, _ = _logistic_regression()
    with pytest.raises(error, match=match):
        mk.run_map(jax.random.key(0), model, x, y, num_steps=10, progress_bar=False, **options)


def test_only_a_full_batch_map_on_one_device_is_polished():
    model, x, y, _ = _logistic_regression()
    with pytest.raises(ValueError, match="polishes a MAP"):
        mk.run_svi(jax.random.key(0), model, x, y, num_steps=10, polish_steps=10,
                   progress_bar=False)  # fmt: skip
    mesh = jax.make_mesh((1, 1), ("chains", "data"))
    with pytest.raises(ValueError, match="cannot be combined with mesh"):
        mk.run_map(jax.random.key(0), model, x, y, num_steps=10, polish_steps=10, mesh=mesh,
                   progress_bar=False)  # fmt: skip

    def minibatch_model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        with numpyro.plate("rows", inputs.shape[0], subsample_size=20) as rows:
            numpyro.sample("y", dist.Bernoulli(logits=inputs[rows] @ w), obs=labels[rows])

    with pytest.raises(ValueError, match="subsamples the plate 'rows'"):
        mk.run_map(jax.random.key(0), minibatch_model, x, y, num_steps=10, polish_steps=10,
                   progress_bar=False)  # fmt: skip


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"map_polish_steps": -1}, "map_polish_steps must be an integer >= 0"),
        ({"map_polish_steps": True}, "map_polish_steps must be an integer >= 0"),
        ({"map_polish_steps": 100, "mesh": jax.make_mesh((1, 1), ("chains", "data"))}, "mesh"),
    ],
)
def test_the_experiments_polish_setting_is_checked_when_the_config_is_made(options, match):
    from mtbkd_jax.experiments import ExperimentConfig

    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**options)
    assert ExperimentConfig(map_polish_steps=np.int64(5)).map_polish_steps == 5


def test_a_models_param_sites_are_polished_with_its_latent_point_as_svi_fits_them():
    """An intercept as a ``numpyro.param`` (no prior) beside ``w ~ Normal(0, 10)``: SVI fits
    both, so the polish optimises both; the mode is scikit-learn's L2 logistic regression with
    an unpenalised intercept to 2e-4. Holding the param at its initial value (a deliberately
    wrong polish) misses that reference by more than 0.05."""
    _, x, y, _ = _logistic_regression()
    y = (y | (np.arange(200) % 3 == 0)).astype(np.int32)  # an intercept the data need

    def with_param(inputs, labels=None):
        offset = numpyro.param("offset", 0.0)
        w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=inputs @ w + offset).to_event(1), obs=labels)

    reference = LogisticRegression(C=100.0, tol=1e-12, max_iter=10_000).fit(x, y)
    mode = mk.run_map(jax.random.key(0), with_param, x, y, num_steps=100, learning_rate=1e-2,
                      polish_steps=500, progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(mode.draws["w"][0, 0], reference.coef_[0], atol=2e-4)
    assert mode.settings["polish_converged"] is True

    def held(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=inputs @ w).to_event(1), obs=labels)

    wrong = mk.run_map(jax.random.key(0), held, x, y, num_steps=100, learning_rate=1e-2,
                       polish_steps=500, progress_bar=False)  # fmt: skip
    assert np.abs(wrong.draws["w"][0, 0] - reference.coef_[0]).max() > 0.05


def test_an_experiments_map_row_records_its_convergence_in_json_safe_values():
    """A polished MAP's row carries its iterations and verdict; an unmeasured share (under 100
    iterations: NaN in the settings) is None, so metrics.json stays JSON."""
    import json

    from mtbkd_jax.experiments.baselines import _map_convergence

    polished = {
        "final_loss_change": float("nan"),
        "polish_steps_run": 40,
        "polish_converged": True,
        "polish_grad_norm": 3e-5,
    }
    record = _map_convergence(polished)
    assert record == {
        "map_final_loss_change": None,
        "map_polish_steps_run": 40,
        "map_polish_converged": True,
        "map_polish_grad_norm": 3e-5,
    }
    assert json.loads(json.dumps(record)) == record
    assert _map_convergence({"final_loss_change": 0.02}) == {"map_final_loss_change": 0.02}
    assert _map_convergence({}) == {"map_final_loss_change": None}
    assert _map_convergence({"polish_grad_norm": float("inf")})["map_polish_grad_norm"] is None


def test_a_second_polish_of_a_network_student_reuses_the_compiled_polish():
    """Weight matrices are real with two event dimensions: the polish of the canonical model
    with an MLP student is kept and served to the next fit of the same model and shapes."""
    from flax import nnx

    from mtbkd_jax.infer import _polish

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    bank = mk.TeacherBank.from_logits(np.stack([x[:, :2] * 3.0]), names=("t",))
    student = mk.Student(mk.MLP(4, 2, hidden=(3,), rngs=nnx.Rngs(0)))
    model = mk.MTBKDModel(student, bank)
    before = len(_polish._runners)
    for seed in (0, 1):
        mk.run_map(jax.random.key(seed), model, x, y, num_steps=20, polish_steps=30,
                   progress_bar=False)  # fmt: skip
        assert len(_polish._runners) == before + 1
