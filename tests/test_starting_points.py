"""Starting points are given in the model's own space, and the samplers start there.

NumPyro's HMC reads ``init_params`` in its unconstrained space, as they are; ``run_nuts`` passed
the user's (constrained) point straight through, so a LogNormal scale given as 3 started at
exp(3) = 20, and a learned-trust model started from its MAP began NUTS at concentrations of
about 1,100 instead of 7. A point outside a site's support was accepted. These tests pin where
the chains start (with no warm-up and one draw at tree depth 1, the first draw is within one
leapfrog step of the start), for NUTS and SG-MCMC, and the refusal of a point outside the
support.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx

import mtbkd_jax as mk


def _scale_model(x, y=None):
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(probs=s / (1 + s)), obs=y)


def _minibatch_scale_model(x, y=None):
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=10) as i:
        numpyro.sample("y", dist.Bernoulli(probs=s / (1 + s)), obs=y[i])


X = np.zeros((50, 1), np.float32)
Y = (np.arange(50) < 38).astype(np.int32)


def _first_nuts_draw(init_params, num_chains=1):
    posterior = mk.run_nuts(
        jax.random.key(0), _scale_model, X, Y, num_warmup=0, num_draws=1,
        num_chains=num_chains, init_params=init_params, max_tree_depth=1, progress_bar=False,
    )  # fmt: skip
    return np.asarray(posterior.draws["s"])[:, 0]


def test_nuts_starts_at_the_given_constrained_point():
    first = _first_nuts_draw({"s": 3.0})
    # one leapfrog step of NUTS's initial step size from log(3); exp(3) = 20.1 was the bug
    assert abs(np.log(first[0]) - np.log(3.0)) < 0.5, first


def test_nuts_chains_start_at_their_own_points():
    first = _first_nuts_draw([{"s": 3.0}, {"s": 0.2}], num_chains=2)
    assert abs(np.log(first[0]) - np.log(3.0)) < 0.5, first
    assert abs(np.log(first[1]) - np.log(0.2)) < 0.5, first


@pytest.mark.parametrize("value", [-1.0, 0.0])
def test_a_start_outside_the_support_is_refused(value):
    with pytest.raises(ValueError, match=r"init_params\['s'\] lies outside the support"):
        mk.run_nuts(
            jax.random.key(0), _scale_model, X, Y, num_warmup=0, num_draws=1,
            init_params={"s": value}, progress_bar=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"init_params\['s'\] lies outside the support"):
        mk.run_sgmcmc(
            jax.random.key(0), _minibatch_scale_model, X, Y, num_epochs=1, draws_per_epoch=1,
            init_params={"s": value}, progress_bar=False,
        )  # fmt: skip


def test_sgmcmc_starts_at_the_given_constrained_point():
    posterior = mk.run_sgmcmc(
        jax.random.key(0), _minibatch_scale_model, X, Y, num_epochs=1, draws_per_epoch=1,
        step_size=1e-7, init_params={"s": 3.0}, random_draw_positions=False,
        progress_bar=False,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(posterior.draws["s"]).ravel()[0], 3.0, rtol=1e-2)


def test_learned_trust_nuts_from_its_map_starts_at_the_map():
    """The README's recipe: MAP, then NUTS from the MAP. Trust's positive sites must start
    at the MAP's values, not at their exponentials."""
    rng = np.random.default_rng(0)
    n, c = 60, 3
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = rng.integers(0, c, n)
    bank = mk.TeacherBank.from_logits(2.0 * rng.normal(size=(2, n, c)), names=["a", "b"])
    student = mk.Student(mk.MLP(2, c, hidden=(), rngs=nnx.Rngs(0)))
    model = mk.MTBKDModel(student, bank, trust="joint")
    key = jax.random.key(0)
    mode = mk.run_map(key, model, x, y, num_steps=300, progress_bar=False)
    start = mode.point()
    posterior = mk.run_nuts(
        key, model, x, y, num_warmup=0, num_draws=1, init_params=start, max_tree_depth=1,
        progress_bar=False,
    )  # fmt: skip
    positive = 0
    for name, value in start.items():
        value = np.asarray(value)
        if name.startswith("trust.") and np.all(value > 0):  # the sites NumPyro logs
            positive += 1
            first = np.asarray(posterior.draws[name])[0, 0]
            ratio = np.abs(np.log(first) - np.log(value))
            assert np.all(ratio < 1.0), (name, value, first)
    assert positive >= 2  # the temperatures and the concentrations


def test_one_bad_point_in_a_list_of_starts_is_named():
    with pytest.raises(ValueError, match=r"init_params\['s'\] lies outside the support"):
        mk.run_nuts(
            jax.random.key(0), _scale_model, X, Y, num_warmup=0, num_draws=1, num_chains=2,
            init_params=[{"s": 1.0}, {"s": -1.0}], progress_bar=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"init_params\[1\]\['s'\] lies outside the support"):
        mk.run_sgmcmc(
            jax.random.key(0), _minibatch_scale_model, X, Y, num_epochs=1, draws_per_epoch=1,
            num_chains=2, init_params=[{"s": 1.0}, {"s": -1.0}], progress_bar=False,
        )  # fmt: skip


def test_a_streamed_run_starts_from_the_canonical_models_map():
    """The support check ran the model on the first minibatch's rows with the full teacher
    bank, and refused the README's recipe under stream=True."""
    rng = np.random.default_rng(0)
    n, c = 40, 3
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(0, c, n)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, n, c)), names=["a", "b"])
    model = mk.MTBKDModel(mk.Student(mk.MLP(4, c, hidden=(4,), rngs=nnx.Rngs(0))), bank)
    key = jax.random.key(0)
    mode = mk.run_map(key, model, x, y, num_steps=3, progress_bar=False)
    for stream in (False, True):
        posterior = mk.run_sgmcmc(
            key, model, x, y, batch_size=10, num_epochs=1, draws_per_epoch=1,
            init_params=mode.point(), stream=stream, progress_bar=False,
        )  # fmt: skip
        assert np.all(np.isfinite(np.asarray(posterior.draws["student.layers.0.kernel"])))


def test_nuts_from_a_float32_map_under_x64_starts_there():
    """Under ``jax_enable_x64`` a MAP's float32 point as ``init_params`` made NumPyro's tree
    building fail ("cond branches must have equal output types"): the starts are taken in the
    default float type, and the chain still starts at the MAP."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    with jax.enable_x64(True):
        bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 30, 3)) * 3)
        model = mk.MTBKDModel(mk.Student(mk.MLP(4, 3, hidden=(4,), rngs=nnx.Rngs(0))), bank)
        mode = mk.run_map(jax.random.key(0), model, x, y, num_steps=20, progress_bar=False)
        point = mode.point()
        assert all(v.dtype == np.float32 for v in point.values())
        posterior = mk.run_nuts(
            jax.random.key(1), model, x, y, num_warmup=0, num_draws=1, num_chains=1,
            init_params=point, progress_bar=False, max_tree_depth=1,
        )  # fmt: skip
        assert set(posterior.samples(flat=True)) == set(point)
