"""NUTS on a one-weight student against the exact posterior by quadrature.

Student: logits = (0, w * x) for two classes, so the posterior of the single weight w under
likelihood + beta * teacher mixture prior + Normal(0, sigma0^2) base prior is a 1-D density we
can integrate on a grid with SciPy's Dirichlet (an independent implementation; the teachers'
tempered probabilities and the paper's entropy weights are computed here from the raw logits
with SciPy, not taken from the package). The check is
BlackJAX's: |mean - truth| / (sd / sqrt(ESS)) < z once ESS is large enough, and the same for the
standard deviation with its delta-method MCSE.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import stats
from scipy.special import logsumexp, softmax

from mtbkd_jax import MTBKDModel, Student, TeacherBank, normal_prior, run_nuts

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
    return x, y, teacher_logits


def _reference_paper_weights(teacher_logits):
    """The paper's rule for two teachers (METHOD §3): ``w_1 = H_2 / (H_1 + H_2)``, with the
    entropy of each teacher's ``softmax(z)`` (weighting temperature 1; the base of the log
    cancels in the ratio). Shape (M, N)."""
    entropies = stats.entropy(softmax(teacher_logits, axis=-1), axis=-1)  # (2, N)
    return entropies[::-1] / entropies.sum(0)


def _exact_moments(x, y, teacher_logits, use_prior=True, weights=None):
    grid = np.linspace(-6, 6, 24001)
    x0 = x[:, 0].astype(np.float64)
    logits = grid[:, None] * x0[None, :]  # class-1 logit, class-0 logit is 0
    loglik = np.where(y[None] == 1, -np.logaddexp(0, -logits), -np.logaddexp(0, logits)).sum(-1)
    log_post = loglik + stats.norm.logpdf(grid, 0, SIGMA0)
    if use_prior:
        probs = softmax(teacher_logits / TEMPERATURE, axis=-1)  # tempered teachers (M, N, C)
        if weights is None:
            weights = _reference_paper_weights(teacher_logits)
        q1 = 1 / (1 + np.exp(-logits / TEMPERATURE))  # (G, N)
        mix = np.zeros_like(grid)
        for i in range(len(x0)):
            q = np.stack([1 - q1[:, i], q1[:, i]], 0)
            comps = [
                np.log(weights[m, i]) + stats.dirichlet.logpdf(q, 1 + LAMBDA * probs[m, i])
                for m in range(len(teacher_logits))
            ]
            mix += logsumexp(comps, axis=0)
        log_post = log_post + BETA * mix
    density = np.exp(log_post - log_post.max())
    density /= np.trapezoid(density, grid)
    mean = np.trapezoid(grid * density, grid)
    sd = np.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid))
    return mean, sd


def test_nuts_matches_quadrature_posterior():
    x, y, teacher_logits = _problem()
    model = MTBKDModel(
        Student(OneWeight(), prior=normal_prior(SIGMA0)),
        TeacherBank.from_logits(teacher_logits),
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
        num_draws=2000,
        num_chains=2,
        progress_bar=False,
    )
    tree = posterior.to_datatree()
    ess = float(az.ess(tree, var_names=["student.w"])["student.w"])
    assert ess > 800, f"ESS {ess:.0f} too small for the test to mean anything"
    draws = posterior.flat_draws()["student.w"].astype(np.float64)
    mean, sd = _exact_moments(x, y, teacher_logits)
    z_mean = abs(draws.mean() - mean) / (sd / np.sqrt(ess))
    assert z_mean < Z, f"posterior mean {draws.mean():.4f} vs exact {mean:.4f} (z = {z_mean:.1f})"
    # MCSE of the sd by the delta method for a near-Gaussian posterior: sd / sqrt(2 ESS)
    z_sd = abs(draws.std() - sd) / (sd / np.sqrt(2 * ess))
    assert z_sd < Z, f"posterior sd {draws.std():.4f} vs exact {sd:.4f} (z = {z_sd:.1f})"

    # the check has power: the exact posterior without the teacher prior is many MCSEs away,
    # and so is the one with uniform instead of entropy weights (~24 MCSEs at ESS 800)
    mean_no_prior, _ = _exact_moments(x, y, teacher_logits, use_prior=False)
    assert abs(mean_no_prior - mean) / (sd / np.sqrt(ess)) > 5 * Z
    uniform = np.full(teacher_logits.shape[:2], 0.5)
    mean_uniform, _ = _exact_moments(x, y, teacher_logits, weights=uniform)
    assert abs(mean_uniform - mean) / (sd / np.sqrt(ess)) > 4 * Z
