"""The ``identity`` and ``refusals`` tasks of ``tests/multiprocess_script.py`` (one process,
4 CPU devices, a (1 x 4) mesh: D = 4 data shards).

``identity``: the canonical :class:`~mtbkd_jax.MTBKDModel` with a transfer set
(``prior_inputs``: a data plate of N = 32, |B| = 8 and a transfer plate of 16, 4 a step, so
both take K = 4 steps an epoch) under ``run_sgmcmc(..., mesh=mesh, shard_data=True)``, one
epoch of warm start and one of sampling, through the real chunk programs, with two recorders:

* a warm-start "optimiser" whose updates are 0 except at the epoch's last step, where it
  applies ``-scale`` times the sum of the K gradients it saw (of ``-log p``), all taken at the
  start ``z0`` (``init_params``): so ``(z1 - z0) / scale`` is the sum over the epoch;
* a "kernel" that never moves and sums the K stratified log densities and gradients at
  ``z1``, read back from the final state.

With |B| dividing N, every epoch visits every row of every plate once, so
``(|B| / N) * sum over the epoch's steps = the full-batch value``, exactly up to float
rounding (the sites outside the plates are counted K times, and ``K * |B| / N = 1``). The
same run with the epoch loop on the whole data set's plates (the bug this guards against)
is saved as ``wrong_*``.

``refusals``: the messages of a model with a site inside two subsampled plates and of one
that reads an array with the data's length whole (placed over ``data`` by the rule).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

N, T, BATCH, SCALE = 32, 16, 8, 1e-2


class _State(NamedTuple):
    position: Any
    logdensity: jax.Array
    grad: Any


class _Info(NamedTuple):
    step_size: jax.Array


def _recording_kernel(sampler, estimator, **settings):  # noqa: ANN001, ANN003, ANN202
    """``build_sampler``'s stand-in: a kernel that sums the estimates and never moves."""
    from blackjax.base import SamplingAlgorithm

    def init(position):  # noqa: ANN001, ANN202
        zeros = jax.tree.map(jnp.zeros_like, position)
        return _State(position, jnp.zeros(()), zeros)

    def step(key, state, batch, step_size):  # noqa: ANN001, ANN202
        value, grad = jax.value_and_grad(estimator.logdensity)(state.position, batch)
        total = jax.tree.map(jnp.add, state.grad, grad)
        return _State(state.position, state.logdensity + value, total), _Info(step_size)

    return SamplingAlgorithm(init, step)


def _recording_optimizer(num_steps: int):  # noqa: ANN202
    import optax

    def init(params):  # noqa: ANN001, ANN202
        return jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params=None):  # noqa: ANN001, ANN202
        count, total = state
        total = jax.tree.map(jnp.add, total, grads)
        last = count + 1 == num_steps
        updates = jax.tree.map(lambda t: jnp.where(last, -SCALE * t, 0.0), total)
        return updates, (count + 1, total)

    return optax.GradientTransformation(init, update)


def _problem() -> tuple:
    from flax import nnx

    import mtbkd_jax as mk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 3)).astype(np.float32)
    y = rng.integers(0, 3, N).astype(np.int32)
    u = rng.normal(size=(T, 3)).astype(np.float32)
    student = mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0)))
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, T, 3)))
    return mk.MTBKDModel(student, bank), x, y, {"prior_inputs": u}


def _epoch_sums(mesh: jax.sharding.Mesh, init: dict, warm_start_epochs: int = 1) -> dict:
    """One epoch of warm start (or none) and one of sampling with the recorders; the sums."""
    import mtbkd_jax as mk
    from mtbkd_jax.infer import _driver, sgmcmc

    model, x, y, kwargs = _problem()
    kept: dict = {}
    package = _driver.SamplerRun._package

    def keep(self, draws, carry, *args):  # noqa: ANN001, ANN002, ANN202
        kept["state"] = carry.kernel
        return package(self, draws, carry, *args)

    build, sgmcmc.build_sampler = sgmcmc.build_sampler, _recording_kernel
    _driver.SamplerRun._package = keep  # type: ignore[method-assign]
    try:
        run = lambda: mk.run_sgmcmc(  # noqa: E731
            jax.random.key(2), model, x, y, model_kwargs=kwargs, batch_size=BATCH,
            num_epochs=1, draws_per_epoch=1, random_draw_positions=False, init_params=init,
            warm_start_epochs=warm_start_epochs,
            warm_start_optimizer=_recording_optimizer(N // BATCH),
            progress_bar=False, mesh=mesh, shard_data=True,
        )  # fmt: skip
        try:
            run()
        except mk.SamplerDivergedError:  # the wrong loop: NaN (its sums are still kept)
            pass
    finally:
        sgmcmc.build_sampler, _driver.SamplerRun._package = build, package
    state = kept["state"]
    return {
        "z1": jax.tree.map(lambda v: np.asarray(v)[0], state.position),
        "logdensity": np.asarray(state.logdensity)[0],
        "grad": jax.tree.map(lambda v: np.asarray(v)[0], state.grad),
    }


def identity(mesh: jax.sharding.Mesh) -> dict:
    from mtbkd_jax.infer import gradients
    from mtbkd_jax.infer.stratified import ShardedDataPlacement

    model, x, y, kwargs = _problem()
    estimator = gradients.gradient_estimator(model, (x, y), kwargs, batch_size=BATCH)
    z0 = estimator.initial_position(jax.random.key(5))
    init = {k: np.asarray(v) for k, v in estimator.constrain(z0).items()}
    full = jax.jit(jax.value_and_grad(lambda z: estimator.logdensity(z, estimator.full_batch())))
    out: dict[str, np.ndarray] = {}
    right = _epoch_sums(mesh, init)
    loop_plates = ShardedDataPlacement.loop_plates
    ShardedDataPlacement.loop_plates = lambda self, plates: tuple(plates)  # the bug
    try:
        wrong = _epoch_sums(mesh, init, warm_start_epochs=0)  # the sampling loop alone
    finally:
        ShardedDataPlacement.loop_plates = loop_plates  # type: ignore[method-assign]
    factor = BATCH / N  # |B| / N
    _, grad0 = full(z0)
    warm = jax.tree.map(lambda a, b: (a - b) / SCALE * factor, right["z1"], z0)
    for key in grad0:  # the warm start's epoch: (|B| / N) * the sum of grad log p at z0
        out[f"warm_{key}"], out[f"full_warm_{key}"] = np.asarray(warm[key]), np.asarray(grad0[key])
    for name, sums in (("right", right), ("wrong", wrong)):  # sampling's epoch, at z1
        value1, grad1 = full(sums["z1"])
        out[f"{name}_logdensity"] = np.asarray(factor * sums["logdensity"])
        out[f"{name}_full_logdensity"] = np.asarray(value1)
        for key in grad1:
            out[f"{name}_grad_{key}"] = factor * np.asarray(sums["grad"][key])
            out[f"{name}_full_grad_{key}"] = np.asarray(grad1[key])
    return out


def _nested(x, y=None):  # noqa: ANN001, ANN202
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("rows", x.shape[0], subsample_size=8, dim=-2) as i:
        with numpyro.plate("columns", x.shape[1], subsample_size=4, dim=-1) as j:
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[i][:, j])


def _reads_whole(x, y=None, offsets=None):  # noqa: ANN001, ANN202
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.factor("shift", -jnp.sum((offsets - mu) ** 2))  # all N offsets, read whole
    with numpyro.plate("data", x.shape[0], subsample_size=8) as i:
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[i, 0])


def refusals(mesh: jax.sharding.Mesh) -> dict:
    from multiprocess_script import refused

    import mtbkd_jax as mk

    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    common = dict(num_epochs=1, draws_per_epoch=1, progress_bar=False, mesh=mesh, shard_data=True)
    nested = refused(lambda: mk.run_sgmcmc(jax.random.key(0), _nested, x, **common))
    offsets = {"offsets": rng.normal(size=N).astype(np.float32)}
    whole = refused(
        lambda: mk.run_sgmcmc(jax.random.key(0), _reads_whole, x, model_kwargs=offsets, **common)
    )
    return {"nested": nested["message"], "whole": whole["message"]}
