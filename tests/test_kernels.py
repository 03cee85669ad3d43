"""The SG-MCMC kernels alone: each against the exact stationary variance of its discretised
chain on a Gaussian with exact gradients (a linear chain, so the oracle is a Lyapunov
equation), pSGLD's correction term against autodiff, cyclical SGLD's stages, and the gradient
estimator's unbiasedness on a model of one's own with two plates."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density
from scipy.linalg import solve_discrete_lyapunov

from mtbkd_jax.infer import cyclical_sgld, gradient_estimator, ncsgld, psgld, sghmc, sgld, sgnht
from mtbkd_jax.infer.psgld import correction_term

SIGMA = 1.0
DIM = 64  # independent coordinates: thermostat and preconditioner average over them
Z = 4.0


def gaussian_grad(position, minibatch):
    return jax.tree.map(lambda x: -x / SIGMA**2, position)


def run_chain(kernel, step_size, num_steps, burn_in, thin=5, seed=0, start=0.0):
    """Every ``thin``-th position after ``burn_in`` steps, and the infos, via lax.scan."""
    state = kernel.init({"x": jnp.full(DIM, start)})

    def one(state, key):
        state, info = kernel.step(key, state, None, step_size)
        return state, (state.position["x"], info)

    keys = jax.random.split(jax.random.key(seed), num_steps)
    state, (xs, infos) = jax.jit(lambda s: jax.lax.scan(one, s, keys))(state)
    xs = np.asarray(xs[burn_in::thin], np.float64)
    return state, xs, jax.tree.map(lambda v: np.asarray(v[burn_in:]), infos)


def lyapunov_variance(step_size, damping, noise, temperature=1.0):
    """Stationary variance of x for the SGHMC/SGNHT chain with a fixed damping, momentum first:
    p' = (1 - damping h) p - h x / s^2 + e, e ~ N(0, 2 noise h tau); x' = x + h p'."""
    h = step_size
    a = np.array(
        [[1.0 - h**2 / SIGMA**2, h * (1.0 - damping * h)], [-h / SIGMA**2, 1.0 - damping * h]]
    )
    q = 2.0 * noise * h * temperature * np.array([[h**2, h], [h, 1.0]])
    return solve_discrete_lyapunov(a, q)[0, 0]


def z_score(variance, exact, draws):
    """|var - exact| in standard errors, for roughly independent draws."""
    return abs(variance - exact) / (exact * np.sqrt(2.0 / draws.size))


def test_sgld_kernel_settles_at_the_discretised_variance():
    eta = 0.3
    _, xs, infos = run_chain(sgld(gaussian_grad), eta, 20_000, 1000, thin=10)
    exact = SIGMA**2 / (1 - eta / (2 * SIGMA**2))
    assert z_score(xs.var(), exact, xs) < Z
    assert z_score(SIGMA**2, exact, xs) > 2 * Z  # the continuous-time answer is rejected
    np.testing.assert_allclose(infos.step_size, eta)


def test_sgld_kernel_temperature_scales_the_variance():
    eta, tau = 0.2, 0.25
    _, xs, _ = run_chain(sgld(gaussian_grad, temperature=tau), eta, 20_000, 1000, thin=10)
    exact = tau * SIGMA**2 / (1 - eta / (2 * SIGMA**2))
    assert z_score(xs.var(), exact, xs) < Z


def test_sghmc_kernel_is_stable_where_explicit_euler_diverges():
    """Curvature w^2 = 400 (a posterior sharpened by N), friction 0.1, h = 0.02: explicit Euler
    (BlackJAX's order) has |eigenvalue| > 1 (h w^2 = 8 > alpha) and diverges; the momentum-first
    step (h w = 0.4 < 2) settles at its Lyapunov variance."""
    sigma, h, alpha = 0.05, 0.02, 0.1

    def grad(position, minibatch):
        return jax.tree.map(lambda x: -x / sigma**2, position)

    explicit = np.array([[1.0, h], [-h / sigma**2, 1.0 - alpha * h]])
    assert max(abs(np.linalg.eigvals(explicit))) > 1.0
    kernel = sghmc(grad, friction=alpha)
    state = kernel.init({"x": jnp.zeros(DIM)})
    keys = jax.random.split(jax.random.key(0), 20_000)
    state, xs = jax.lax.scan(lambda s, k: (kernel.step(k, s, None, h)[0],) * 2, state, keys)
    xs = np.asarray(xs.position["x"][5000::20], np.float64)
    a = np.array([[1.0 - h**2 / sigma**2, h * (1.0 - alpha * h)], [-h / sigma**2, 1.0 - alpha * h]])
    q = 2.0 * alpha * h * np.array([[h**2, h], [h, 1.0]])
    exact = solve_discrete_lyapunov(a, q)[0, 0]
    assert np.isfinite(xs).all()
    assert abs(xs.var() - exact) / exact < 0.1, (xs.var(), exact)


def test_sghmc_kernel_settles_at_the_lyapunov_variance():
    h, alpha = 0.5, 1.0
    _, xs, _ = run_chain(sghmc(gaussian_grad, friction=alpha), h, 40_000, 2000, thin=20)
    exact = lyapunov_variance(h, alpha, alpha)
    assert z_score(xs.var(), exact, xs) < Z
    assert z_score(SIGMA**2, exact, xs) > 2 * Z


def test_sgnht_thermostat_settles_the_kinetic_energy_and_the_variance():
    """The thermostat rises or falls until the mean kinetic energy per coordinate is tau; at
    its stationary value the chain is SGHMC with that damping (the Lyapunov oracle)."""
    h, noise = 0.2, 1.0
    kernel = sgnht(gaussian_grad, noise=noise)
    state = kernel.init({"x": jnp.zeros(DIM)})

    def one(state, key):
        state, _ = kernel.step(key, state, None, h)
        return state, (state.position["x"], state.thermostat, jnp.mean(state.momentum["x"] ** 2))

    keys = jax.random.split(jax.random.key(0), 40_000)
    _, (xs, thermostats, momentum) = jax.jit(lambda s: jax.lax.scan(one, s, keys))(state)
    xs = np.asarray(xs[4000::20], np.float64)
    thermostats, momentum = np.asarray(thermostats[4000:]), np.asarray(momentum[4000:])
    xi = np.mean(thermostats)
    assert abs(np.mean(momentum) - 1.0) < 0.05, np.mean(momentum)
    exact = lyapunov_variance(h, xi, noise)
    assert abs(xs.var() - exact) / exact < 0.05, (xs.var(), exact, xi)
    # power: a thermostat driven the wrong way diverges or freezes; a fixed damping far from
    # the thermostat's gives another variance
    assert abs(lyapunov_variance(h, 3 * noise, noise) - exact) / exact > 0.05


def test_sgnht_absorbs_unknown_gradient_noise():
    """With noisy gradients (variance unknown to the sampler), SGHMC at the nominal friction
    runs hot; SGNHT's thermostat compensates and keeps the kinetic energy at tau."""

    def noisy_grad(position, minibatch):
        key = minibatch
        return jax.tree.map(
            lambda x: -x / SIGMA**2 + 2.0 * jax.random.normal(key, x.shape), position
        )

    kernel = sgnht(noisy_grad, noise=0.5)
    state = kernel.init({"x": jnp.zeros(DIM)})

    def one(state, key):
        noise_key, batch_key = jax.random.split(key)
        state, _ = kernel.step(noise_key, state, batch_key, 0.05)
        return state, jnp.mean(state.momentum["x"] ** 2)

    keys = jax.random.split(jax.random.key(1), 20_000)
    state, kinetic = jax.jit(lambda s: jax.lax.scan(one, s, keys))(state)
    assert abs(float(kinetic[5000:].mean()) - 1.0) < 0.05
    assert float(state.thermostat) > 0.5  # it rose above the injected noise to absorb it


def test_psgld_settles_at_the_preconditioned_discretised_variance():
    """N(0, s^2) with s = 2 and exact gradients: V tracks E[g^2] = 1 / s^2, so G ~ s; a chain
    with the preconditioner frozen at its mean has variance s^2 / (1 - eta G / (2 s^2))."""
    sigma, eta = 2.0, 0.4

    def grad(position, minibatch):
        return jax.tree.map(lambda x: -x / sigma**2, position)

    kernel = psgld(grad, decay=0.999)
    # started off the mode: at a zero gradient V stays 0 and G = 1 / lambda (pSGLD as published)
    _, xs, infos = run_chain(kernel, eta, 30_000, 3000, thin=10, start=1.0)
    g = float(infos.mean_preconditioner.mean())
    exact = sigma**2 / (1 - eta * g / (2 * sigma**2))
    assert abs(xs.var() - exact) / exact < 0.04, (xs.var(), exact, g)
    # power: G is far from 1 here, and a pSGLD whose noise left G out (sqrt(2 eta) xi) would
    # settle at exact / G, half the variance
    assert abs(g - sigma) / sigma < 0.1, g
    wrong = exact / g
    assert abs(wrong - exact) / exact > 0.04


@pytest.mark.parametrize("eta", [0.01, 0.003])
def test_psgld_with_its_preconditioner_fixed_samples_the_target_at_small_steps(eta):
    """N(0, 1) with exact gradients, 2,000 coordinates (each its own chain: V is diagonal).
    A preconditioner that keeps adapting (decay 0.99: 100 steps of memory) follows the chain,
    G ~ 1 / |z|, and the chain samples p / G: variance 1.33 at eta = 0.01 and 1.58 at 0.003
    (2 in the limit). Fixed after the burn-in, the chain is SGLD in rescaled coordinates:
    variance 1 up to eta G / 2 (within 0.03 here)."""
    burn_in, steps = 3000, int(300 / eta)

    def grad(position, minibatch):
        return jax.tree.map(lambda x: -x, position)

    def variance(adapt_steps):
        kernel = psgld(grad, decay=0.99, adapt_steps=adapt_steps)
        state = kernel.init({"x": jnp.full(2000, 1.0)})

        def one(i, carry):
            state, total = carry
            state, _ = kernel.step(jax.random.fold_in(jax.random.key(0), i), state, None, eta)
            kept = i >= burn_in
            return state, total + jnp.where(kept, state.position["x"] ** 2, 0.0)

        run = jax.jit(lambda s: jax.lax.fori_loop(0, burn_in + steps, one, (s, jnp.zeros(2000))))
        state, total = run(state)
        assert int(state.count) == burn_in + steps
        return float(total.mean() / steps)

    assert abs(variance(burn_in) - 1.0) < 0.03
    assert variance(None) > 1.2  # Li et al.'s always-adapting pSGLD: another density


def test_psgld_correction_term_is_dG_dz():
    """Gamma_i = dG_i/dz_i, checked against autodiff of G(z) = 1 / (lambda + sqrt(alpha V +
    (1 - alpha) g(z)^2)) on a non-quadratic log density (so g and H vary with z)."""
    decay, reg = 0.9, 1e-3
    v_prev = jnp.array([0.5, 1.5, 0.2])

    def logdensity(z):
        return -jnp.sum(z**4) / 4 - jnp.sum(jnp.sin(z))

    def preconditioner(z):
        g = jax.grad(logdensity)(z)
        return 1.0 / (reg + jnp.sqrt(decay * v_prev + (1 - decay) * g**2))

    z = jnp.array([0.3, -1.2, 0.8])
    expected = jnp.diag(jax.jacfwd(preconditioner)(z))
    g = jax.grad(logdensity)(z)
    h = jnp.diag(jax.hessian(logdensity)(z))
    v = decay * v_prev + (1 - decay) * g**2
    got = correction_term(g, h, v, decay, reg)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    wrong = correction_term(g, h, v, decay, 10 * reg)  # a deliberately wrong constant fails
    assert not np.allclose(wrong, expected, rtol=1e-3)


def test_psgld_with_correction_runs_and_differs_only_by_gamma():
    """correction=True adds eta * tau * Gamma to the drift (Hutchinson's estimate of H_ii is
    exact for a diagonal Hessian), and the noise is the same."""
    eta = 0.1
    state = psgld(gaussian_grad).init({"x": jnp.ones(4)})
    key = jax.random.key(3)
    plain, _ = psgld(gaussian_grad).step(key, state, None, eta)
    corrected, _ = psgld(gaussian_grad, correction=True).step(key, state, None, eta)
    g = -jnp.ones(4) / SIGMA**2
    v = g**2  # the first step sets V = g * g
    gamma = correction_term(g, -jnp.ones(4) / SIGMA**2, v, 0.99, 1e-5)
    np.testing.assert_allclose(
        corrected.position["x"] - plain.position["x"], eta * gamma, rtol=1e-4, atol=1e-6
    )


def test_cyclical_sgld_explores_without_noise_then_samples():
    cycle, fraction, eta = 10, 0.3, 0.1
    kernel = cyclical_sgld(gaussian_grad, cycle, fraction)
    state = kernel.init({"x": jnp.ones(3)})
    etas, flags = [], []
    for i in range(2 * cycle):
        keys = jax.random.split(jax.random.key(i), 2)
        a, info = kernel.step(keys[0], state, None, eta)
        b, _ = kernel.step(keys[1], state, None, eta)
        same = bool(jnp.array_equal(a.position["x"], b.position["x"]))
        assert same == bool(info.exploring)  # noise-free exactly in the exploration stages
        etas.append(float(info.step_size))
        flags.append(bool(info.exploring))
        state = a
    t = np.arange(2 * cycle) % cycle
    np.testing.assert_allclose(etas, eta / 2 * (np.cos(np.pi * t / cycle) + 1), rtol=1e-6)
    assert flags == list(t < fraction * cycle)
    assert int(state.count) == 2 * cycle


@pytest.mark.parametrize("sampler", [sgld, sghmc, sgnht, psgld])
def test_kernels_vmap_over_chains(sampler):
    kernel = sampler(gaussian_grad)
    states = jax.vmap(kernel.init)({"x": jnp.ones((5, 3))})
    keys = jax.random.split(jax.random.key(0), 5)
    step = jax.vmap(kernel.step, in_axes=(0, 0, None, None))
    new, _ = step(keys, states, None, 0.1)
    new, _ = step(jax.vmap(jax.random.split)(keys)[:, 0], new, None, 0.1)  # momentum moves x
    assert new.position["x"].shape == (5, 3)
    assert not np.allclose(new.position["x"][0], new.position["x"][1])


def _ncsgld(grad):
    return ncsgld(grad, lambda batch: (batch, batch))  # both halves the whole (exact) batch


@pytest.mark.parametrize("sampler", [sgld, sghmc, sgnht, psgld, _ncsgld])
@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), np.array([0.1, -0.1])])
def test_kernels_refuse_a_step_size_that_is_negative_or_not_finite(sampler, bad):
    """A negative step took the square root of a negative variance: NaN positions, no error."""
    kernel = sampler(gaussian_grad)
    state = kernel.init({"x": jnp.ones(2)})
    with pytest.raises(ValueError, match="step_size must be finite and >= 0"):
        kernel.step(jax.random.key(0), state, None, bad)


def test_cyclical_sgld_names_the_peak_step_it_was_given_when_refusing_it():
    """Mid-cycle the step is scaled by the cosine; the refusal names the peak the caller gave
    (-0.5), not the scaled step (before: "got -0.25" half-way through a cycle)."""
    kernel = cyclical_sgld(gaussian_grad, cycle_length=4)
    state = kernel.init({"x": jnp.ones(2)})
    for _ in range(2):
        state, _ = kernel.step(jax.random.key(0), state, None, 0.1)
    with pytest.raises(ValueError, match=r"step_size must be finite and >= 0, got -0\.5$"):
        kernel.step(jax.random.key(1), state, None, -0.5)


@pytest.mark.parametrize("sampler", [sgld, sghmc, sgnht, psgld, _ncsgld])
def test_kernels_take_a_traced_step_size_unchecked(sampler):
    """Inside jit the step is a tracer; its value is checked where it is concrete."""
    kernel = sampler(gaussian_grad)
    state = kernel.init({"x": jnp.ones(2)})
    step = jax.jit(lambda s, eta: kernel.step(jax.random.key(0), s, None, eta)[0])
    assert np.isfinite(np.asarray(step(state, 0.01).position["x"])).all()


def test_gradient_estimator_is_unbiased_on_an_own_model_with_two_plates():
    """Over one epoch's partition of both plates, the mean minibatch gradient equals the
    full-data gradient of NumPyro's own log density; a single minibatch does not."""
    rng = np.random.default_rng(0)
    x, extra = jnp.asarray(rng.normal(size=(30, 2))), jnp.asarray(rng.normal(size=(12, 2)))
    y = jnp.asarray(rng.normal(size=30))

    def model(x, y=None, extra=None, subsample=(6, 4)):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("obs", x.shape[0], subsample_size=subsample[0]) as i:
            numpyro.sample("y", dist.Normal(x[i] @ w, scale), obs=None if y is None else y[i])
        with numpyro.plate("aux", extra.shape[0], subsample_size=subsample[1]) as j:
            numpyro.factor("pull", -0.5 * (extra[j] @ w) ** 2)

    estimator = gradient_estimator(model, (x, y), {"extra": extra})
    assert [(p.name, p.size, p.batch_size) for p in estimator.plates] == [
        ("obs", 30, 6),
        ("aux", 12, 4),
    ]
    position = {"w": jnp.array([0.3, -0.7]), "scale": jnp.array(0.2)}  # unconstrained
    perm_obs, perm_aux = rng.permutation(30), rng.permutation(12)
    grads = [  # every pair of minibatches of one epoch's partitions (5 of obs, 3 of aux)
        estimator(
            position, {"obs": perm_obs[k * 6 : k * 6 + 6], "aux": perm_aux[m * 4 : m * 4 + 4]}
        )
        for k in range(5)
        for m in range(3)
    ]
    mean = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
    full_kwargs = {"extra": extra, "subsample": (None, None)}

    def full(params):  # NumPyro's own full-data log density, on the unconstrained space
        constrained = {"w": params["w"], "scale": jnp.exp(params["scale"])}
        return log_density(model, (x, y), full_kwargs, constrained)[0] + params["scale"]

    exact = jax.grad(full)(position)
    for name in exact:
        np.testing.assert_allclose(mean[name], exact[name], rtol=1e-4, atol=1e-5)
    # power: one minibatch is not the full gradient
    assert max(float(jnp.abs(grads[0][k] - exact[k]).max()) for k in exact) > 1e-2


def test_psgld_first_step_stays_near_its_start():
    """V = 0 at the start: the first step sets V = g * g, so G = 1 / (lambda + |g|); with
    Li et al.'s V = (1 - alpha) g * g the preconditioner is 10x larger at alpha = 0.99 and the
    noise throws the chain about +-4 from a start near the mode of N(0, 1) (found by review)."""
    kernel = psgld(gaussian_grad)
    state = kernel.init({"x": jnp.full(DIM, 0.5)})
    moved, info = kernel.step(jax.random.key(0), state, None, 1e-3)
    np.testing.assert_allclose(float(info.mean_preconditioner), 2.0, rtol=1e-3)  # 1 / |g|
    assert float(jnp.abs(moved.position["x"] - 0.5).max()) < 0.5
