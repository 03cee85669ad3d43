"""SG-MCMC: exact oracles, agreement with NUTS, minibatch scaling, resume and NaN handling."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx
from numpyro.infer.util import log_density

import mtbkd_jax as mk
from mtbkd_jax.infer import gradient_estimator

Z = 4.0


def _gaussian_model(sigma, batch_size):
    def model(inputs, labels=None):
        x = numpyro.sample("x", dist.Normal(0.0, sigma))
        # the plate contributes nothing: the gradient is exact
        with numpyro.plate("data", inputs.shape[0], subsample_size=batch_size) as idx:
            numpyro.factor("nothing", 0.0 * inputs[idx, 0] * x)

    return model


def _ess(draws):
    tree = az.from_dict({"posterior": {"x": draws}})
    return float(az.ess(tree)["x"])


def _tree(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "a": jax.random.normal(k1, (7, 3)),
        "b": jax.random.normal(k2, (5,)),
        "c": jax.random.normal(k3, ()),
    }


def test_langevin_updates_equal_blackjax_with_the_same_random_numbers():
    """Our SGLD update is BlackJAX's (same key -> same state) and so is SGHMC's momentum update;
    SGHMC's position then moves with the new momentum. Noise laid out once."""
    from blackjax.sgmcmc import diffusions

    from mtbkd_jax.infer.langevin import sghmc_update, sgld_update

    position, grad, momentum = (_tree(jax.random.key(i)) for i in range(3))
    key = jax.random.key(42)
    eta, tau, alpha = 1e-2, 0.7, 0.3
    ours = jax.jit(sgld_update)(key, position, grad, eta, tau)
    theirs = diffusions.overdamped_langevin()(key, position, grad, eta, tau)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, theirs)
    ours = jax.jit(sghmc_update)(key, position, momentum, grad, eta, tau, alpha)
    _, their_momentum = diffusions.sghmc(alpha=alpha)(key, position, momentum, grad, eta, tau)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # noqa: E731
    jax.tree.map(close, ours[1], their_momentum)  # BlackJAX's momentum update, same noise
    # the position follows with the new momentum (semi-implicit Euler; BlackJAX: the old one)
    jax.tree.map(close, ours[0], jax.tree.map(lambda x, r: x + eta * r, position, ours[1]))
    # power: another key, or the noise scale sqrt(eta) instead of sqrt(2 eta), differs
    reference = diffusions.overdamped_langevin()(key, position, grad, eta, tau)
    other = sgld_update(jax.random.key(43), position, grad, eta, tau)
    assert not np.allclose(other["a"], reference["a"], rtol=1e-3)
    slipped = sgld_update(key, position, grad, eta, tau / 2)
    assert not np.allclose(slipped["a"], reference["a"], rtol=1e-3)


def test_a_users_model_with_a_teacher_prior_attribute_gets_no_extra_kwargs():
    """Only the canonical model receives ``prior_constants``; a user's callable that merely
    carries a ``teacher_prior`` attribute is called with its own arguments."""

    class Wrapped:
        teacher_prior = "not the canonical model's"

        def __call__(self, inputs, labels=None):
            _gaussian_model(1.0, 4)(inputs, labels)

    post = mk.run_sgmcmc(
        jax.random.key(0),
        Wrapped(),
        np.zeros((8, 1), np.float32),
        batch_size=4,
        num_epochs=1,
        draws_per_epoch=1,
        step_size=0.1,
        progress_bar=False,
    )
    assert post.draws["x"].shape == (1, 1)


@pytest.mark.parametrize("step_size", [0.2, 0.5])
def test_sgld_gaussian_settles_at_the_discretised_variance(step_size):
    """SGLD on N(0, s^2) is an AR(1) with stationary variance s^2 / (1 - eps / (2 s^2))."""
    sigma = 1.0
    inputs = np.zeros((100, 1), np.float32)
    post = mk.run_sgmcmc(
        jax.random.key(0),
        _gaussian_model(sigma, 2),
        inputs,
        sampler="sgld",
        batch_size=2,  # 50 steps per epoch, a draw every 10 steps
        num_epochs=1000,
        num_burnin_epochs=5,
        step_size=step_size,
        draws_per_epoch=5,
        random_draw_positions=False,
        num_chains=4,
        chunk_epochs=100,
        progress_bar=False,
        logits_fn=lambda w, x: x,
    )
    draws = post.draws["x"].astype(np.float64)  # (4 chains, 5000 draws)
    ess = _ess(draws)
    assert ess > 8000, f"ESS {ess:.0f} too small"
    exact = sigma**2 / (1 - step_size / (2 * sigma**2))
    variance = draws.var()
    # MCSE of a variance for near-Gaussian draws: var * sqrt(2 / ESS)
    z = abs(variance - exact) / (exact * np.sqrt(2 / ess))
    assert z < Z, f"variance {variance:.4f} vs oracle {exact:.4f} (z = {z:.1f})"
    assert abs(draws.mean()) / np.sqrt(exact / ess) < Z
    # power: the continuous-time answer (variance s^2) is far outside the tolerance, and so is
    # a sampler with the classic noise slip sqrt(eps) instead of sqrt(2 eps)
    assert abs(sigma**2 - exact) / (exact * np.sqrt(2 / ess)) > 2 * Z
    wrong = (step_size / 2) * 2 / (1 - (1 - step_size) ** 2) * sigma**2
    assert abs(wrong - exact) / (exact * np.sqrt(2 / ess)) > 2 * Z


class OneLogit(nnx.Module):
    """Binary logistic regression as a student: logits (0, x w + b)."""

    def __init__(self, num_features):
        self.w = nnx.Param(jnp.zeros(num_features))
        self.b = nnx.Param(jnp.zeros(()))

    def __call__(self, x):
        return jnp.stack([jnp.zeros(x.shape[0]), x @ self.w + self.b], axis=-1)


@pytest.fixture(scope="module")
def logistic_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (rng.uniform(size=200) < 1 / (1 + np.exp(-(x @ [1.0, -0.5] + 0.3)))).astype(np.int32)
    teacher = np.stack([np.zeros(200), x @ [1.5, -0.2]], -1)[None]
    model = mk.MTBKDModel(
        mk.Student(OneLogit(2)),
        mk.TeacherBank.from_logits(teacher),
        concentration=5.0,
        prior_power=0.2,
    )
    nuts = mk.run_nuts(
        jax.random.key(1),
        model,
        x,
        y,
        num_warmup=500,
        num_draws=3000,
        num_chains=2,
        progress_bar=False,
    )
    return x, y, model, nuts


def _moments(posterior):
    tree = posterior.to_datatree(log_likelihood=False)
    out = {}
    for name in ("student.w", "student.b"):
        draws = posterior.flat_draws()[name].astype(np.float64).reshape(posterior.total_draws, -1)
        ess = np.atleast_1d(np.asarray(az.ess(tree)[name].values))
        out[name] = (draws.mean(0), draws.std(0), ess)
    return out


@pytest.mark.parametrize(
    ("sampler", "step_size", "batch_size", "friction"),
    [("sgld", 5e-4, 50, 0.1), ("sghmc", 3e-2, 100, 20.0)],
    ids=["sgld", "sghmc"],
)
def test_sgmcmc_agrees_with_nuts_on_a_logistic_student(
    logistic_problem, sampler, step_size, batch_size, friction
):
    """SGHMC without a gradient-noise estimate needs friction well above h * Var(grad) / 2:
    with friction 1 and batch 50 its sd came out ~4x too large (measured while writing this)."""
    x, y, model, nuts = logistic_problem
    post = mk.run_sgmcmc(
        jax.random.key(2),
        model,
        x,
        y,
        sampler=sampler,
        batch_size=batch_size,
        step_size=step_size,
        friction=friction,
        num_epochs=3000,
        num_burnin_epochs=50,
        draws_per_epoch=1,
        num_chains=4,
        chunk_epochs=1000,
        progress_bar=False,
    )
    reference = _moments(nuts)
    got = _moments(post)
    for name in reference:
        mean_r, sd_r, ess_r = reference[name]
        mean_g, sd_g, ess_g = got[name]
        assert np.all(ess_g > 400), f"{name}: SG-MCMC ESS {ess_g} too small"
        mcse = np.sqrt(sd_r**2 / ess_r + sd_g**2 / ess_g)
        # tolerance: Monte-Carlo error plus an allowance of 5% of the sd for the O(eps)
        # discretisation and minibatch bias (the step sizes keep it below ~2% here)
        z = np.abs(mean_g - mean_r) / (mcse + 0.05 * sd_r / Z)
        assert np.all(z < Z), f"{name}: means {mean_g} vs NUTS {mean_r}"
        np.testing.assert_allclose(sd_g, sd_r, rtol=0.12, err_msg=f"{name} sd vs NUTS")


def test_minibatch_gradients_average_to_the_full_gradient():
    """Over one epoch's partition of both plates, the mean stochastic gradient is exact."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = rng.integers(0, 3, 24).astype(np.int32)
    transfer = rng.normal(size=(12, 3)).astype(np.float32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 12, 3)))
    model = mk.MTBKDModel(mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0))), bank)
    potential = gradient_estimator(
        model,
        (jnp.asarray(x), jnp.asarray(y)),
        {"prior_inputs": jnp.asarray(transfer)},
        batch_size=6,
        prior_batch_size=3,
    )
    assert [(p.name, p.size, p.batch_size) for p in potential.plates] == [
        ("data", 24, 6),
        ("transfer", 12, 3),
    ]
    position = potential.initial_position(jax.random.key(0))
    perm_data, perm_transfer = rng.permutation(24), rng.permutation(12)
    grads = [
        potential.grad(
            position,
            {
                "data": jnp.asarray(perm_data[i * 6 : (i + 1) * 6]),
                "transfer": jnp.asarray(perm_transfer[i * 3 : (i + 1) * 3]),
            },
        )
        for i in range(4)
    ]
    mean_grad = jax.tree.map(lambda *g: sum(g) / 4, *grads)

    def full_log_density(params):
        return log_density(model, (x, y), {"prior_inputs": transfer}, params)[0]

    full = jax.grad(full_log_density)(position)
    for name in full:
        np.testing.assert_allclose(mean_grad[name], full[name], rtol=2e-4, atol=2e-4)
    # and a single minibatch is not the full gradient (the check has power)
    assert max(float(jnp.abs(grads[0][k] - full[k]).max()) for k in full) > 1e-2


def _small_run(x, y, model, **kwargs):
    return mk.run_sgmcmc(
        jax.random.key(5),
        model,
        x,
        y,
        batch_size=20,
        num_epochs=6,
        step_size=1e-4,
        draws_per_epoch=2,
        num_chains=2,
        chunk_epochs=2,
        progress_bar=False,
        warm_start_epochs=2,
        warm_start_optimizer=optax.adam(1e-2),
        **kwargs,
    )


@pytest.mark.parametrize("site", ["subsample", "param"])
def test_a_full_plate_pairs_subsampled_rows_with_the_hand_indexed_ones(site):
    """A plate that takes all N examples at every step (``subsample_size=N``) still gets each
    step's permuted indices; labels by ``numpyro.subsample(y, event_dim=0)`` (or per-example
    offsets by ``numpyro.param(..., event_dim=0)``), which NumPyro returns unpermuted when
    nothing is subsampled, must follow the order of ``x[idx]``: the log density on a
    permutation is the full data's, as with ``y[idx]`` (a deliberately unpermuted version
    pairs labels with other examples' inputs and fails)."""
    n = 8
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, 2)).astype(np.float32))
    y = jnp.asarray((rng.random(n) > 0.5).astype(np.int32))
    offsets = jnp.linspace(-1.0, 1.0, n)

    def model(x, y=None, by_hand=False):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("data", n, subsample_size=n) as idx:
            if site == "param":
                shift = offsets[idx] if by_hand else numpyro.param("shift", offsets, event_dim=0)
                labels = y[idx]
            else:
                shift = 0.0
                labels = y[idx] if by_hand else numpyro.subsample(y, event_dim=0)
            numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + shift), obs=labels)

    position = {"w": jnp.array([1.5, -2.0])}
    permutation = {"data": jnp.asarray(rng.permutation(n))}
    by_hand = gradient_estimator(model, (x, y), {"by_hand": True})
    via_numpyro = gradient_estimator(model, (x, y))
    expected = by_hand.logdensity(position, by_hand.full_batch())
    np.testing.assert_allclose(by_hand.logdensity(position, permutation), expected, rtol=1e-6)
    np.testing.assert_allclose(via_numpyro.logdensity(position, permutation), expected, rtol=1e-6)


def test_nan_stops_with_a_clear_error_and_keeps_the_draws(logistic_problem):
    x, y, model, _ = logistic_problem
    steps_per_epoch = 200 // 20

    def exploding(step):  # fine for 3 epochs, then absurd
        return jnp.where(step < 3 * steps_per_epoch, 1e-4, 1e12)

    with pytest.raises(mk.SamplerDivergedError, match="non-finite") as info:
        mk.run_sgmcmc(
            jax.random.key(7),
            model,
            x,
            y,
            batch_size=20,
            num_epochs=10,
            step_size=exploding,
            draws_per_epoch=2,
            num_chains=2,
            chunk_epochs=1,
            progress_bar=False,
        )
    kept = info.value.posterior
    assert kept is not None and kept.num_draws >= 6
    for value in kept.draws.values():
        assert np.isfinite(value).all()


def test_a_divergence_gives_back_finite_streamed_summaries_and_last_states(logistic_problem):
    """The streamed predictive and the last states a diverged run gives back are those of the
    last chunk in which every chain stayed finite (before: the sums took the diverged chunk's
    NaN draws in, and with ``keep_draws=False``, all a run keeps, ``predict`` gave NaN), on
    the device-resident and the streamed path; a run that diverged before any draw was kept
    (in its first chunk, or in burn-in) gives no posterior rather than a burn-in state."""
    x, y, model, _ = logistic_problem
    steps_per_epoch = 200 // 20
    common = dict(batch_size=20, num_epochs=4, draws_per_epoch=2, num_chains=2,
                  predict_inputs=x[:30], progress_bar=False)  # fmt: skip
    cases = [  # fine epochs, burn-in epochs, keep_draws, how it runs
        (2, 0, True, dict(chunk_epochs=1)), (2, 0, False, dict(chunk_epochs=1)),
        (2, 0, False, dict(stream=True, chunk_steps=steps_per_epoch)),
        (0, 0, False, dict(chunk_epochs=1)), (0, 0, True, dict(chunk_epochs=1)),
        (2, 3, False, dict(chunk_epochs=1)),
    ]  # fmt: skip
    for fine_epochs, burnin, keep_draws, how in cases:
        schedule = lambda step, n=fine_epochs: jnp.where(step < n * steps_per_epoch, 1e-4, 1e12)  # noqa: E731
        with pytest.raises(mk.SamplerDivergedError) as info:
            mk.run_sgmcmc(
                jax.random.key(7),
                model,
                x,
                y,
                step_size=schedule,
                num_burnin_epochs=burnin,
                keep_draws=keep_draws,
                **common,
                **how,
            )
        kept = info.value.posterior
        if fine_epochs <= burnin:
            assert kept is None and "error.posterior is None" in str(info.value)
            continue
        assert kept.streamed["num_draws"] == 2 * 2 * fine_epochs  # chains x draws x epochs
        for value in kept.streamed.values():
            assert np.isfinite(np.asarray(value)).all()
        assert np.isfinite(np.asarray(kept.predict(x[:30]))).all()


def test_streamed_predictive_equals_the_mean_over_kept_draws(logistic_problem, tmp_path):
    x, y, model, _ = logistic_problem
    post = _small_run(x, y, model, predict_inputs=x[:30])
    probs = np.asarray(post.predict(x[:30]))
    assert post.streamed["num_draws"] == post.total_draws
    np.testing.assert_allclose(post.streamed["predictive_mean"], probs.mean(0), atol=1e-5)
    np.testing.assert_allclose(
        post.streamed["mean_deviance"], np.asarray(mk.mean_deviance(probs)), rtol=1e-4, atol=1e-5
    )
    streamed_only = _small_run(x, y, model, predict_inputs=x[:30], keep_draws=False)
    np.testing.assert_allclose(
        streamed_only.streamed["predictive_mean"], post.streamed["predictive_mean"], atol=1e-6
    )
    assert streamed_only.num_draws == 1  # only the last state of each chain
    # flagged where a user looks: the repr and the ArviZ tree's posterior group
    assert "last states" in repr(streamed_only) and "last states" not in repr(post)
    with warnings.catch_warnings():  # not ArviZ's "chain dimension longer than draw" warning
        warnings.simplefilter("error", UserWarning)
        tree = streamed_only.to_datatree()
    assert "keep_draws=False" in tree["posterior"].attrs["mtbkd_draws"]
    assert "mtbkd_draws" not in post.to_datatree()["posterior"].attrs
    # and saved: the streamed summaries are all such a run keeps of its predictive
    streamed_only.save(tmp_path / "last.nc")
    loaded = mk.Posterior.load(tmp_path / "last.nc")
    assert "last states" in repr(loaded)
    assert loaded.streamed.keys() == streamed_only.streamed.keys()
    for name, value in streamed_only.streamed.items():
        np.testing.assert_array_equal(loaded.streamed[name], value)


def _cyclical(problem, **settings):
    """Cyclical SGLD on the logistic problem: one chain, batches of 20, peak step 1e-3."""
    x, y, model, _ = problem
    common = {"batch_size": 20, "step_size": 1e-3, "num_chains": 1, "progress_bar": False}
    return mk.run_sgmcmc(
        jax.random.key(8), model, x, y, sampler="cyclical_sgld", **{**common, **settings}
    )


def test_cyclical_sgld_keeps_draws_only_in_sampling_stages(logistic_problem):
    x, y, model, _ = logistic_problem
    post = _cyclical(
        logistic_problem, num_epochs=8, num_cycles=2, exploration_fraction=0.5, draws_per_epoch=5
    )
    # 80 steps, 2 cycles of 40: draws only from the second half of each cycle
    assert 0 < post.num_draws < 40
    steps = post.sample_stats["step_size"][0]
    peak = 1e-3 / 2 * (np.cos(np.pi * 20 / 40) + 1)
    assert np.all(steps <= peak + 1e-9)  # small steps only: the sampling stage
    # a setting whose kept steps all fall in exploration is refused, not run to 0 draws
    with pytest.raises(ValueError, match="exploration_fraction"):
        mk.run_sgmcmc(
            jax.random.key(8),
            model,
            x,
            y,
            sampler="cyclical_sgld",
            batch_size=20,
            num_epochs=1,
            num_cycles=1,
            exploration_fraction=0.95,
            draws_per_epoch=1,
            random_draw_positions=False,  # the kept step is the 9th of 10: exploring
            progress_bar=False,
        )


def test_schedules():
    schedule = mk.infer.schedules.polynomial_decay(0.1, 2.0, 0.55)
    np.testing.assert_allclose(schedule(jnp.asarray(10)), 0.1 * 12.0**-0.55, rtol=1e-6)
    cyc = mk.infer.schedules.cyclical(1.0, 10)
    np.testing.assert_allclose(
        [cyc(jnp.asarray(t)) for t in (0, 5, 10)], [1.0, 0.5, 1.0], atol=1e-6
    )
    with pytest.raises(ValueError, match="gamma"):
        mk.infer.schedules.polynomial_decay(0.1, 1.0, 0.4)


def test_paper_preset_and_validation(logistic_problem):
    x, y, model, _ = logistic_problem
    with pytest.warns(UserWarning, match="differs from the reference"):
        post = mk.run_paper_sgld(
            jax.random.key(9),
            model,
            x,
            y,
            batch_size=20,
            warm_start_epochs=2,
            num_epochs=3,
            progress_bar=False,
        )
    assert post.num_draws == 18 and post.method == "sgld"  # 6 random states per epoch
    np.testing.assert_allclose(post.sample_stats["step_size"], 8e-8)
    with pytest.raises(ValueError, match="sampler"):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, sampler="hmc")
    with pytest.raises(ValueError, match="batch_size"):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="draws_per_epoch"):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, batch_size=100, draws_per_epoch=3)
    with pytest.raises(ValueError, match="step_size"):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, step_size=-1.0)


def test_the_paper_preset_warns_for_another_model_and_not_for_the_papers(logistic_problem):
    x, y, model, _ = logistic_problem
    settings = dict(batch_size=20, warm_start_epochs=1, num_epochs=1, progress_bar=False)
    with pytest.warns(UserWarning, match=r"temperature=1.0 \(paper: 2.0\)"):
        mk.run_paper_sgld(jax.random.key(9), model, x, y, **settings)
    paper = mk.MTBKDModel.paper(model.student, model.teachers)
    assert paper.differs_from_paper() == []
    assert paper.distillation_weight == pytest.approx(0.1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the paper's step (8e-8) leaves the chains where the warm start did (T / tau ~ 32
        # there): the end-of-run check says so; the preset itself warns of nothing
        warnings.simplefilter("ignore", mk.infer.ConvergenceWarning)
        post = mk.run_paper_sgld(
            jax.random.key(9), paper, x, y, partial_last_batch=True, **settings
        )
    assert post.settings["end_temperature_ratio"] > 10
    assert post.settings["steps_per_epoch"] == 10 and post.settings["partial_last_batch"]
    assert post.settings["base_prior"] == "{'kind': 'flat'}"


def test_the_reference_warm_start_is_torch_adam_with_coupled_weight_decay():
    """``reference_optimizer(N)`` on the summed potential equals torch's
    ``Adam(lr=3e-4, weight_decay=1e-5)`` on the mean loss, written out here in NumPy
    (PyTorch's documented update: g += wd * theta; m, v moments; bias-corrected step). AdamW,
    which decays the weights apart from the moments, differs."""
    from mtbkd_jax.infer.warm_start import adamw_optimizer, reference_optimizer

    rng = np.random.default_rng(0)
    num_examples = 500
    theta0 = rng.normal(size=5) * 3.0
    mean_grads = [rng.normal(size=5) * 1e-4 for _ in range(6)]  # small: decay matters

    def torch_adam(theta, lr=3e-4, wd=1e-5, b1=0.9, b2=0.999, eps=1e-8):
        m = np.zeros_like(theta)
        v = np.zeros_like(theta)
        for t, g in enumerate(mean_grads, start=1):
            g = g + wd * theta
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        return theta

    def ours(optimizer):
        params = jnp.asarray(theta0)
        state = optimizer.init(params)
        for g in mean_grads:  # our potential's gradient is N times the mean loss's
            updates, state = optimizer.update(jnp.asarray(num_examples * g), state, params)
            params = optax.apply_updates(params, updates)
        return np.asarray(params)

    jax.config.update("jax_enable_x64", True)
    try:
        expected = torch_adam(theta0.copy())
        np.testing.assert_allclose(ours(reference_optimizer(num_examples)), expected, rtol=1e-9)
        assert np.abs(ours(adamw_optimizer()) - expected).max() > 1e-6
    finally:
        jax.config.update("jax_enable_x64", False)


def test_a_users_own_model_with_the_prior_primitive_samples_like_the_canonical_one(
    logistic_problem,
):
    """SG-MCMC on a hand-written NumPyro model that calls teacher_prior_factor inside its own
    subsampled plate gives exactly the canonical model's draws (same sites, same potential)."""
    x, y, model, _ = logistic_problem
    student, prior = model.student, model.teacher_prior

    def own_model(inputs, labels=None):
        network = student.network(inputs.shape[1:])
        with numpyro.plate("data", inputs.shape[0], subsample_size=20) as idx:
            logits = network(inputs[idx])
            numpyro.sample("y", dist.Categorical(logits=logits), obs=labels[idx])
            mk.teacher_prior_factor(
                "teacher_prior", logits, prior.take(idx), prior_power=model.prior_power
            )

    settings = dict(
        batch_size=20,
        num_epochs=3,
        step_size=1e-4,
        draws_per_epoch=2,
        num_chains=2,
        progress_bar=False,
    )
    canonical = mk.run_sgmcmc(jax.random.key(11), model, x, y, **settings)
    own = mk.run_sgmcmc(jax.random.key(11), own_model, x, y, logits_fn=student.logits, **settings)
    for name, value in canonical.draws.items():
        np.testing.assert_allclose(own.draws[name], value, rtol=1e-5, atol=1e-6)


def test_each_chain_starts_at_its_own_point_when_given_one_per_chain():
    """``init_params`` as a list: chain c starts at point c (SGLD at a tiny step stays there),
    and ``[a, a]`` gives exactly the draws of the shared start ``a``."""
    x = np.zeros((40, 1), np.float32)
    model = _gaussian_model(1.0, 8)
    common = {
        "batch_size": 8,
        "num_epochs": 1,
        "step_size": 1e-8,
        "draws_per_epoch": 2,
        "num_chains": 2,
        "progress_bar": False,
    }
    apart = [{"x": np.float32(-3.0)}, {"x": np.float32(5.0)}]
    draws = mk.run_sgmcmc(jax.random.key(0), model, x, init_params=apart, **common).draws["x"]
    np.testing.assert_allclose(draws[0], -3.0, atol=1e-2)
    np.testing.assert_allclose(draws[1], 5.0, atol=1e-2)
    same = mk.run_sgmcmc(jax.random.key(0), model, x, init_params=[apart[1]] * 2, **common)
    shared = mk.run_sgmcmc(jax.random.key(0), model, x, init_params=apart[1], **common)
    np.testing.assert_array_equal(same.draws["x"], shared.draws["x"])


def test_cyclical_sgld_runs_num_cycles_cycles_when_they_do_not_divide_the_steps(
    logistic_problem,
):
    """90 steps in 4 cycles: Zhang et al.'s cycle of ceil(90 / 4) = 23 steps starts the peak
    step 4 times (0, 23, 46, 69); a floored cycle of 22 would open a fifth at step 88 and keep
    its peak-step draws (exploration_fraction=0 keeps every step)."""
    post = _cyclical(
        logistic_problem,
        num_epochs=9,
        num_cycles=4,
        exploration_fraction=0.0,
        draws_per_epoch=10,
        random_draw_positions=False,
    )
    steps = np.asarray(post.sample_stats["step_size"][0])
    assert steps.shape == (90,)
    expected = 1e-3 / 2 * (np.cos(np.pi * (np.arange(90) % 23) / 23) + 1)
    np.testing.assert_allclose(steps, expected, rtol=1e-5, atol=1e-12)
    assert np.sum(np.isclose(steps, 1e-3, rtol=1e-6)) == 4


def test_a_cyclical_checkpoint_records_its_cycle_where_the_cycles_do_not_divide_the_steps(
    logistic_problem, tmp_path, monkeypatch
):
    """The cycle became ceil(steps / num_cycles) (it was the floor): where they differ the
    fingerprint holds the cycle, so a checkpoint written before (without it) is refused on
    resume, naming it; where num_cycles divides the steps nothing changed and nothing is added
    (those checkpoints still resume)."""
    from mtbkd_jax.infer import sgmcmc as sgmcmc_module
    from mtbkd_jax.infer.fingerprint import RunFingerprint

    seen, original = [], sgmcmc_module.fingerprint

    def recording(**kwargs):
        seen.append(original(**kwargs))
        return seen[-1]

    monkeypatch.setattr(sgmcmc_module, "fingerprint", recording)
    for epochs in (9, 8):  # 90 steps: cycles of 23 (floor 22); 80 steps: 20 either way
        path = tmp_path / f"run{epochs}.ckpt"
        _cyclical(logistic_problem, num_epochs=epochs, num_cycles=4, checkpoint_path=path)
    uneven, even = seen
    assert uneven.exact["cycle_length"] == 23
    assert "cycle_length" not in even.exact
    exact = {k: v for k, v in uneven.exact.items() if k != "cycle_length"}
    before = RunFingerprint(exact, uneven.approx)
    assert before.differences(uneven) == ["cycle_length: checkpoint '(absent)', this run 23"]
