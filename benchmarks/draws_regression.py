"""run_sgmcmc's draws on nine settings, saved once and compared after a refactor, bit for bit.

    .venv/bin/python benchmarks/draws_regression.py save DIR      # before the change
    .venv/bin/python benchmarks/draws_regression.py compare DIR   # after: "differing: 0"

The settings cover every sampler path the driver has: SGLD, two chains with a warm start and
burn-in, SGHMC, cyclical SGLD, a transfer plate with the streamed predictive at a cold
temperature, a partial last batch with evenly spaced draws, a step-size schedule, a model of
one's own with two plates, and keep_draws=False. The issue-11 redesign (kernels, estimator,
driver) was checked this way against a383e54: differing 0. Since SGHMC's position moves
after its momentum (semi-implicit Euler, later in issue 11), its two settings differ by
design. Draws depend on the JAX/XLA
version and the CPU, so compare on the machine and environment that saved them.
"""

import os
import sys

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from flax import nnx

import mtbkd_jax as mk

mode, folder = sys.argv[1], sys.argv[2]  # save | compare, a folder
rng = np.random.default_rng(0)
x = rng.normal(size=(150, 6)).astype(np.float32)
y = rng.integers(0, 3, 150).astype(np.int32)
xt = rng.normal(size=(60, 6)).astype(np.float32)
teach = rng.normal(size=(2, 210, 3)).astype(np.float32) * 2
bank = mk.TeacherBank.from_logits(teach)
bank_l = mk.TeacherBank.from_logits(teach[:, :150])


def student():
    return mk.Student(mk.MLP(6, 3, hidden=(8,), rngs=nnx.Rngs(0)))


transfer = mk.MTBKDModel(student(), bank, concentration=5.0, prior_power=0.2)
plain = mk.MTBKDModel(student(), bank_l, concentration=5.0, prior_power=0.2)
st = student()


def own(inputs, labels=None, extra=None):
    net = st.network(inputs.shape[1:])
    with numpyro.plate("a", inputs.shape[0], subsample_size=30) as i:
        numpyro.sample("y", dist.Categorical(logits=net(inputs[i])), obs=labels[i])
    with numpyro.plate("b", extra.shape[0], subsample_size=16) as j:
        numpyro.factor("f", -0.5 * (net(jax.numpy.asarray(extra)[j]) ** 2).sum(-1))


base = dict(num_epochs=3, draws_per_epoch=2, progress_bar=False, batch_size=32)
cases = {
    "sgld": (plain, {}, dict(sampler="sgld", step_size=1e-4)),
    "sgld_2chains_warm": (
        plain,
        {},
        dict(
            sampler="sgld", step_size=1e-4, num_chains=2, warm_start_epochs=2, num_burnin_epochs=1
        ),
    ),
    "sghmc": (plain, {}, dict(sampler="sghmc", step_size=1e-2, friction=0.5, num_chains=2)),
    "cyclical": (
        plain,
        {},
        dict(
            sampler="cyclical_sgld", step_size=1e-3, num_epochs=6, num_cycles=2, draws_per_epoch=3
        ),
    ),
    "transfer_predict": (
        transfer,
        {"prior_inputs": np.concatenate([x, xt])},
        dict(sampler="sgld", step_size=1e-4, predict_inputs=xt, chunk_epochs=2, temperature=0.5),
    ),
    "partial_even": (
        plain,
        {},
        dict(
            sampler="sgld",
            step_size=1e-4,
            batch_size=40,
            partial_last_batch=True,
            random_draw_positions=False,
        ),
    ),
    "schedule": (
        plain,
        {},
        dict(sampler="sgld", step_size=mk.infer.schedules.polynomial_decay(1e-4, 1.0, 0.55)),
    ),
    "own_two_plates": (
        own,
        {"extra": xt},
        dict(sampler="sgld", step_size=1e-4, batch_size=None, logits_fn=st.logits),
    ),
    "nodraws_predict": (
        plain,
        {},
        dict(sampler="sghmc", step_size=1e-2, keep_draws=False, predict_inputs=xt),
    ),
}
bad = 0
for name, (model, kw, settings) in cases.items():
    s = {**base, **settings}
    post = mk.run_sgmcmc(jax.random.key(3), model, x, y, model_kwargs=kw or None, **s)
    out = {k: np.asarray(v) for k, v in post.draws.items()}
    if getattr(post, "streamed", None):
        out["streamed_mean"] = np.asarray(post.streamed["predictive_mean"])
        out["streamed_dev"] = np.asarray(post.streamed["mean_deviance"])
    path = f"{folder}/{name}.npz"
    if mode == "save":
        os.makedirs(folder, exist_ok=True)
        np.savez(path, **out)
        print(name, {k: v.shape for k, v in out.items()})
    else:
        ref = np.load(path)
        same = set(ref.files) == set(out)
        diff = (
            max(
                float(np.max(np.abs(ref[k] - out[k]))) if ref[k].shape == out[k].shape else np.inf
                for k in ref.files
            )
            if same
            else np.inf
        )
        exact = same and all(np.array_equal(ref[k], out[k]) for k in ref.files)
        print(f"{name:20s} bit-identical={exact} max|diff|={diff:.3g}")
        bad += not exact
print("done; differing:", bad)
