"""The posterior type: inference front-ends, prediction, ArviZ DataTree, save and load."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from flax import nnx
from scipy import stats
from scipy.special import logsumexp, softmax

from mtbkd_jax import MLP, MTBKDModel, Posterior, Student, TeacherBank, run_map, run_nuts, run_svi
from mtbkd_jax.diagnostics import summary


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    teacher_logits = np.stack([np.stack([-x[:, 0], x[:, 0], x[:, 1]], -1) * s for s in (1, 3)])
    model = MTBKDModel(
        Student(MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0))), TeacherBank.from_logits(teacher_logits)
    )
    return x, y, model


@pytest.fixture(scope="module")
def nuts_posterior(problem):
    x, y, model = problem
    return run_nuts(
        jax.random.key(0),
        model,
        x,
        y,
        num_warmup=50,
        num_draws=40,
        num_chains=2,
        progress_bar=False,
    )


def test_nuts_posterior_shapes_and_stats(nuts_posterior, problem):
    x, _, _ = problem
    post = nuts_posterior
    assert post.num_chains == 2 and post.num_draws == 40
    assert post.draws["student.layers.0.kernel"].shape == (2, 40, 3, 4)
    assert post.draws["student.layers.0.kernel"].dtype == np.float32
    for name in (
        "diverging",
        "acceptance_rate",
        "n_steps",
        "energy",
        "lp",
        "step_size",
        "tree_depth",
    ):
        assert post.sample_stats[name].shape == (2, 40), name
    probs = np.asarray(post.predict(x[:7]))
    assert probs.shape == (80, 7, 3)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    # predict in small draw chunks equals one big chunk
    np.testing.assert_allclose(post.predict(x[:7], draw_batch_size=3), probs, rtol=1e-5, atol=1e-6)
    # the per-draw prediction is the student's forward pass with that draw's weights
    draw = {k: v[1, 5] for k, v in post.draws.items()}
    logits = problem[2].logits(draw, x[:7])
    np.testing.assert_allclose(probs[45], jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)


def test_datatree_works_with_arviz_without_renaming(nuts_posterior, tmp_path):
    tree = nuts_posterior.to_datatree()
    for group in ("posterior", "sample_stats", "observed_data", "constant_data", "log_likelihood"):
        assert group in tree.children, group
    assert tree["constant_data"]["teacher_weights"].shape == (2, 40)
    assert tree["log_likelihood"]["y"].shape == (2, 40, 40)
    s = az.summary(tree)
    assert "student.layers.0.kernel[0, 0]" in s.index
    assert np.isfinite(az.rhat(tree)["student.layers.1.bias"].values).all()
    assert (az.ess(tree)["student.layers.1.bias"].values > 0).all()
    az.plot_trace_dist(tree, var_names=["student.layers.1.bias"])
    assert list(summary(tree, "layers.1.bias").index)[0].startswith("student.layers.1.bias")
    settings = nuts_posterior.settings
    assert settings["concentration"] == 10.0 and settings["inference"] == "nuts"
    assert settings["teacher_names"] == ["teacher_0", "teacher_1"]


def test_save_and_load_round_trip(nuts_posterior, problem, tmp_path):
    x, _, model = problem
    path = nuts_posterior.save(tmp_path / "post.nc")
    tree = xr.open_datatree(path)
    assert "posterior" in tree.children
    loaded = Posterior.load(path, logits_fn=model.logits)
    for name, value in nuts_posterior.draws.items():
        np.testing.assert_array_equal(loaded.draws[name], value)
    np.testing.assert_array_equal(
        loaded.sample_stats["diverging"], nuts_posterior.sample_stats["diverging"]
    )
    assert loaded.settings == nuts_posterior.settings
    assert loaded.method == "nuts"
    np.testing.assert_allclose(loaded.predict(x[:5]), nuts_posterior.predict(x[:5]), rtol=1e-6)
    with pytest.raises(ValueError, match="logits_fn"):
        Posterior.load(path).predict(x[:5])
    # the pointwise log-likelihood survives a load and a second save (for az.loo)
    np.testing.assert_allclose(
        loaded.to_datatree()["log_likelihood"]["y"].values,
        nuts_posterior.to_datatree()["log_likelihood"]["y"].values,
    )
    resaved = xr.open_datatree(loaded.save(tmp_path / "again.nc"))
    assert "log_likelihood" in resaved.children


def test_save_over_an_existing_file_and_a_failed_save_leave_no_temporary_file(
    nuts_posterior, tmp_path, monkeypatch
):
    path = nuts_posterior.save(tmp_path / "post.nc")
    loaded = Posterior.load(path)  # the file is read back while it is written over
    loaded.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.nc"]
    before = path.read_bytes()

    def write_half_then_fail(self, target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(xr.DataTree, "to_netcdf", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        nuts_posterior.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.nc"]  # no post.nc.tmp
    assert path.read_bytes() == before  # the previous file is intact


def test_a_path_in_the_home_folder_written_with_a_tilde(nuts_posterior, tmp_path, monkeypatch):
    """``~/post.nc`` is the home folder's file for save, load and checkpoints, as a shell
    and xarray read it: save wrote its temporary file there, then looked for it under a
    folder literally named ``~`` that it created in the working folder (a review found)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    path = nuts_posterior.save("~/post.nc")
    assert path == home / "post.nc" and sorted(p.name for p in home.iterdir()) == ["post.nc"]
    loaded = Posterior.load("~/post.nc")
    for name, value in nuts_posterior.draws.items():
        np.testing.assert_array_equal(loaded.draws[name], value)
    from mtbkd_jax.infer.checkpoint import _checked_path

    assert _checked_path("~/runs/run.ckpt") == home / "runs" / "run.ckpt"
    assert list(work.iterdir()) == []  # no folder named "~"


@pytest.mark.parametrize("guide", ["normal", "lowrank", "delta"])
def test_svi_guides_return_posteriors(problem, guide):
    x, y, model = problem
    post = run_svi(
        jax.random.key(1), model, x, y, guide=guide, num_steps=300, num_draws=30, progress_bar=False
    )
    expected_draws = 1 if guide == "delta" else 30
    assert post.num_draws == expected_draws
    assert post.losses.shape == (300,)
    assert post.losses[-20:].mean() < post.losses[:20].mean()  # the ELBO improved
    tree = post.to_datatree()
    assert "optimization" in tree.children
    assert post.predict(x).shape == (expected_draws, 40, 3)


def test_transfer_set_path_adds_the_prior_on_the_transfer_inputs_only(problem):
    """log p = base prior + likelihood on labelled inputs + beta * mixture on transfer inputs."""
    from numpyro.infer.util import log_density

    x, y, model = problem
    transfer_model = MTBKDModel(
        model.student,
        model.teachers.take(np.arange(30)),
        concentration=4.0,
        prior_power=0.5,
        temperature=2.0,
    )
    weights = model.student.init_weights(jax.random.key(3), x)
    got, _ = log_density(transfer_model, (x[:10], y[:10]), {"prior_inputs": x[:30]}, weights)
    # independent pieces
    logits_l = np.asarray(model.student.logits(weights, x[:10]), np.float64)
    logits_t = np.asarray(model.student.logits(weights, x[:30]), np.float64)
    loglik = (logits_l - logsumexp(logits_l, -1, keepdims=True))[np.arange(10), y[:10]].sum()
    p = np.exp(np.asarray(model.teachers.log_probs[:, :30], np.float64) / 2.0)
    p /= p.sum(-1, keepdims=True)
    w = np.asarray(transfer_model.teacher_weights, np.float64)
    q = softmax(logits_t / 2.0, -1)
    mix = sum(
        logsumexp(
            [np.log(w[m, i]) + stats.dirichlet.logpdf(q[i], 1 + 4.0 * p[m, i]) for m in range(2)]
        )
        for i in range(30)
    )
    base = sum(stats.norm.logpdf(np.asarray(v, np.float64)).sum() for v in weights.values())
    np.testing.assert_allclose(got, base + loglik + 0.5 * mix, rtol=1e-4)


def test_map_with_transfer_set_and_student_alone(problem):
    x, y, model = problem
    transfer_model = MTBKDModel(model.student, model.teachers.take(np.arange(30)))
    post = run_map(
        jax.random.key(2),
        transfer_model,
        x[:10],
        y[:10],
        num_steps=100,
        progress_bar=False,
        model_kwargs={"prior_inputs": x[:30]},
    )
    assert post.total_draws == 1
    alone = MTBKDModel(model.student, None)
    post = run_map(jax.random.key(2), alone, x, y, num_steps=100, progress_bar=False)
    assert "teacher_weights" not in post.constant_data


def test_predictive_on_new_inputs_without_the_teacher_prior(problem, nuts_posterior):
    from numpyro.infer import Predictive

    x, _, model = problem
    draws = {k: v.reshape(-1, *v.shape[2:]) for k, v in nuts_posterior.draws.items()}
    samples = Predictive(model, posterior_samples=draws)(
        jax.random.key(0), x[:7], teacher_prior=False
    )
    assert samples["y"].shape == (80, 7)
    with pytest.raises(ValueError, match="teacher_prior=False"):
        Predictive(model, posterior_samples=draws)(jax.random.key(0), x[:7])


def test_apply_refuses_missing_weights(nuts_posterior, problem):
    x, _, model = problem
    draw = {k.replace("student", "net"): v[0, 0] for k, v in nuts_posterior.draws.items()}
    with pytest.raises(ValueError, match="no entry for the student's site"):
        model.logits(draw, x[:3])


def test_predict_refuses_inputs_of_another_width_for_a_linen_student(problem):
    """flax's own ScopeParamShapeError (neither a TypeError nor a ValueError) escaped here."""
    from mtbkd_jax import LinenMLP

    x, y, model = problem
    linen = MTBKDModel(Student(LinenMLP(3, hidden=(4,))), model.teachers)
    post = run_map(jax.random.key(0), linen, x, y, num_steps=3, progress_bar=False)
    with pytest.raises(
        ValueError,
        match=r"inputs have shape \(2, 5\), which the student cannot "
        r"take; the posterior was fitted on \(3,\) per example",
    ):
        post.predict(np.zeros((2, 5), np.float32))


def test_frozen_embedding_body_with_integer_tokens_through_the_front_ends():
    """The paper's setting: a frozen body (here an embedding of token ids) + Bayesian head."""
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 20, size=(30, 6))
    table = jnp.asarray(rng.normal(size=(20, 5)), jnp.float32)

    def body(ids):
        return table[ids].mean(1)  # (N, 5) features

    y = rng.integers(0, 3, 30)
    teachers = TeacherBank.from_logits(rng.normal(size=(2, 30, 3)))
    model = MTBKDModel(
        Student(MLP(5, 3, hidden=(4,), rngs=nnx.Rngs(0)), feature_extractor=body), teachers
    )
    post = run_map(jax.random.key(0), model, tokens, y, num_steps=50, progress_bar=False)
    assert post.draws["student.layers.0.kernel"].shape[-2:] == (5, 4)  # only the head sampled
    probs = post.predict(tokens[:4])  # raw token ids: featurized once inside predict
    assert probs.shape == (1, 4, 3)
    expected = jax.nn.softmax(
        model.logits({k: v[0, 0] for k, v in post.draws.items()}, body(jnp.asarray(tokens[:4])))
    )
    np.testing.assert_allclose(probs[0], expected, rtol=1e-5)


def test_front_ends_validate_inputs(problem):
    x, y, model = problem
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="labels"):
        run_map(key, model, x, y[:-1], num_steps=1)
    with pytest.raises(ValueError, match="labels"):
        run_map(key, model, x, y + 5, num_steps=1)
    with pytest.raises(ValueError, match="inputs"):
        run_map(key, model, np.full_like(x, np.nan), y, num_steps=1)
    with pytest.raises(ValueError, match="teacher bank describes 40"):
        run_map(key, model, x[:20], y[:20], num_steps=1, progress_bar=False)
    with pytest.raises(ValueError, match="guide"):
        run_svi(key, model, x, y, guide="flow")
    with pytest.raises(ValueError, match="num_draws"):
        run_nuts(key, model, x, y, num_draws=0)
    with pytest.raises(ValueError, match="chain_method"):
        run_nuts(key, model, x, y, chain_method="threads")
    with pytest.raises(ValueError, match="learning_rate"):
        run_svi(key, model, x, y, learning_rate=-1.0)
    with pytest.raises(ValueError, match="labels are required"):
        run_map(key, model, x, None, num_steps=1)


def test_model_validates_hyperparameters(problem):
    _, _, model = problem
    with pytest.raises(ValueError, match="concentration"):
        MTBKDModel(model.student, model.teachers, concentration=-1)
    with pytest.raises(ValueError, match="temperature"):
        MTBKDModel(model.student, model.teachers, temperature=0)
    with pytest.raises(ValueError, match="prior_power"):
        MTBKDModel(model.student, model.teachers, prior_power=0)
    with pytest.raises(TypeError, match="student"):
        MTBKDModel(object(), model.teachers)
    with pytest.raises(TypeError, match="teachers"):
        MTBKDModel(model.student, np.zeros((1, 2, 3)))


def test_log_likelihood_of_new_data_checks_its_labels(problem):
    """Labels out of range gave -inf pointwise log-likelihoods (which feed az.loo), labels
    without inputs were ignored for the training labels, and float or short labels failed
    inside JAX: each is now refused with the argument named."""
    x, y, model = problem
    mode = run_map(jax.random.key(0), model, x, y, num_steps=5, progress_bar=False)
    fine = mode.log_likelihood(x[:6], y[:6])["y"]
    assert fine.shape[-1] == 6 and np.isfinite(fine).all()
    cases = [
        ({"inputs": x, "labels": np.full(40, 3)}, r"labels must lie in 0\.\.2"),
        ({"inputs": x, "labels": np.full(40, -1)}, r"labels must lie in 0\.\.2"),
        ({"labels": (y + 1) % 3}, "labels were given without inputs"),
        ({"inputs": x, "labels": np.zeros(5, int)}, "labels has 5 entries but the inputs have 40"),
        ({"inputs": x}, "needs their labels"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            mode.log_likelihood(**kwargs)
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        mode.log_likelihood(x, np.full(40, 1.5))
    fractional = np.zeros(40)
    fractional[7] = 1.5  # the value and where it is, not only the dtype (float64 is taken)
    with pytest.raises(TypeError, match=r"got 1\.5 at index 7"):
        mode.log_likelihood(x, fractional)


def test_a_one_draw_tree_leaves_the_log_likelihood_out_unless_asked(problem, nuts_posterior):
    """``az.loo`` on a MAP's tree (one draw per chain) failed inside ArviZ with an IndexError;
    the default tree leaves its log-likelihood out (asked for, it is there), and a posterior
    of many draws keeps it."""
    x, y, model = problem
    mode = run_map(jax.random.key(0), model, x, y, num_steps=200, progress_bar=False)
    assert "log_likelihood" not in mode.to_datatree().children
    asked = mode.to_datatree(log_likelihood=True)["log_likelihood"]
    assert asked.sizes["draw"] == 1
    tree = nuts_posterior.to_datatree()
    assert "log_likelihood" in tree.children
    assert np.isfinite(float(az.loo(tree).elpd))
