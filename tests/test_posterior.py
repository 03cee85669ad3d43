"""The posterior type: inference front-ends, prediction, ArviZ DataTree, save and load."""

import arviz as az
import jax
import numpy as np
import pytest
import xarray as xr
from flax import nnx

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
        num_samples=40,
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
    assert post.num_samples == 1
    alone = MTBKDModel(model.student, None)
    post = run_map(jax.random.key(2), alone, x, y, num_steps=100, progress_bar=False)
    assert "teacher_weights" not in post.constant_data


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
    with pytest.raises(ValueError, match="num_samples"):
        run_nuts(key, model, x, y, num_samples=0)
    with pytest.raises(ValueError, match="chain_method"):
        run_nuts(key, model, x, y, chain_method="threads")
    with pytest.raises(ValueError, match="learning_rate"):
        run_svi(key, model, x, y, learning_rate=-1.0)


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
