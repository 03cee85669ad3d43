"""NUTS on a one-weight student against the exact posterior by quadrature.

Student: logits = (0, w * x) for two classes, so the posterior of the single weight w under
likelihood + beta * teacher mixture prior + Normal(0, sigma0^2) base prior is a 1-D density we
can integrate on a grid with SciPy's Dirichlet (an independent implementation). The check is
BlackJAX's: |mean - truth| / (sd / sqrt(ESS)) < z once ESS is large enough, and the same for the
standard deviation with its delta-method MCSE.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from scipy.special import logsumexp

from mtbkd_jax import MTBKDModel, Student, TeacherBank, normal_prior, run_nuts, teacher_weights

LAMBDA, BETA, TEMPERATURE, SIGMA0 = 6.0, 0.5, 1.5, 2.0
Z = 4.0  # two-sided z for a handful of comparisons; false-alarm rate ~1e-4 each


class OneWeight(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros(()))

    def __call__(self, x):
        return jnp.stack([jnp.zeros(x.shape[0]), self.w * x[:, 0]], axis=-1)


def _problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(25, 1)).astype(np.float32)
    y = (rng.uniform(size=25) < 1 / (1 + np.exp(-0.8 * x[:, 0]))).astype(np.int32)
    teacher_logits = np.stack(
        [
            np.stack([np.zeros(25), 2.0 * x[:, 0]], -1),  # confident teacher
            np.stack([np.zeros(25), -0.5 * x[:, 0] + 0.3], -1),  # weak, disagreeing teacher
        ]
    )
    return x, y, TeacherBank.from_logits(teacher_logits)


def _exact_moments(x, y, bank, use_prior=True):
    grid = np.linspace(-6, 6, 24001)
    x0 = x[:, 0].astype(np.float64)
    logits = grid[:, None] * x0[None, :]  # class-1 logit, class-0 logit is 0
    loglik = np.where(y[None] == 1, -np.logaddexp(0, -logits), -np.logaddexp(0, logits)).sum(-1)
    log_post = loglik + stats.norm.logpdf(grid, 0, SIGMA0)
    if use_prior:
        probs = np.exp(np.asarray(bank.log_probs, np.float64) / TEMPERATURE)
        probs /= probs.sum(-1, keepdims=True)
        weights = np.asarray(teacher_weights(bank, "paper"), np.float64)
        q1 = 1 / (1 + np.exp(-logits / TEMPERATURE))  # (G, N)
        mix = np.zeros_like(grid)
        for i in range(len(x0)):
            q = np.stack([1 - q1[:, i], q1[:, i]], 0)
            comps = [
                np.log(weights[m, i]) + stats.dirichlet.logpdf(q, 1 + LAMBDA * probs[m, i])
                for m in range(bank.num_teachers)
            ]
            mix += logsumexp(comps, axis=0)
        log_post = log_post + BETA * mix
    density = np.exp(log_post - log_post.max())
    density /= np.trapezoid(density, grid)
    mean = np.trapezoid(grid * density, grid)
    sd = np.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid))
    return mean, sd


@pytest.mark.slow
def test_nuts_matches_quadrature_posterior():
    x, y, bank = _problem()
    model = MTBKDModel(
        Student(OneWeight(), prior=normal_prior(SIGMA0)),
        bank,
        concentration=LAMBDA,
        prior_power=BETA,
        temperature=TEMPERATURE,
    )
    posterior = run_nuts(
        jax.random.key(0),
        model,
        x,
        y,
        num_warmup=500,
        num_samples=2000,
        num_chains=2,
        progress_bar=False,
    )
    tree = posterior.to_datatree()
    ess = float(az.ess(tree, var_names=["student.w"])["student.w"])
    assert ess > 800, f"ESS {ess:.0f} too small for the test to mean anything"
    draws = posterior.flat_draws()["student.w"].astype(np.float64)
    mean, sd = _exact_moments(x, y, bank)
    z_mean = abs(draws.mean() - mean) / (sd / np.sqrt(ess))
    assert z_mean < Z, f"posterior mean {draws.mean():.4f} vs exact {mean:.4f} (z = {z_mean:.1f})"
    # MCSE of the sd by the delta method for a near-Gaussian posterior: sd / sqrt(2 ESS)
    z_sd = abs(draws.std() - sd) / (sd / np.sqrt(2 * ess))
    assert z_sd < Z, f"posterior sd {draws.std():.4f} vs exact {sd:.4f} (z = {z_sd:.1f})"

    # the check has power: the exact posterior without the teacher prior is many MCSEs away
    mean_no_prior, _ = _exact_moments(x, y, bank, use_prior=False)
    assert abs(mean_no_prior - mean) / (sd / np.sqrt(ess)) > 5 * Z
