"""Runs for ``tests/test_mesh.py`` in a fresh process with a given number of CPU devices.

``python tests/mesh_script.py NUM_DEVICES OUT.npz TASK [TASK ...]``; each task is
``kind:mesh`` with ``mesh`` either ``none`` or ``CxD`` (the sizes of the ``chains`` and
``data`` axes), e.g. ``sgld:none``, ``sghmc:2x2``, ``psgld:2x2`` (any SG-MCMC sampler),
``nuts:1x4``, ``map:1x2``, ``svi:1x2``, ``grad:1x2`` (the sharded minibatch gradient, right and
with a deliberately doubled ``psum``), ``ownshard:1x2`` (a model of one's own with
``shard_data=True``, its plate's sizes given three ways), ``refuse:none`` (meshes that must be
refused; needs 4 devices). Every array a task
returns is saved as ``"<task>/<name>"``. The device count must be set before JAX starts,
hence a process per count.
"""

from __future__ import annotations

import re
import sys

import jax

if __name__ == "__main__":
    jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))

import numpy as np  # noqa: E402

N, T = 32, 16  # labelled examples, transfer inputs
BATCH = 8  # data plate; the transfer plate takes ceil(8 * 16 / 32) = 4
SAMPLERS = ("sgld", "sghmc", "psgld", "cyclical_sgld", "ncsgld")


def _mesh(spec: str) -> jax.sharding.Mesh | None:
    if spec == "none":
        return None
    chains, data = (int(n) for n in spec.split("x"))
    return jax.make_mesh((chains, data), ("chains", "data"))


def _problem(transfer: bool = True, num_examples: int = N, num_transfer: int = T) -> tuple:
    """A tiny canonical model: 3 features, 3 classes, one hidden layer of 4, two teachers
    (on ``num_transfer`` transfer inputs, or on the labelled ones)."""
    from flax import nnx

    import mtbkd_jax as mk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 3)).astype(np.float32)
    y = rng.integers(0, 3, num_examples).astype(np.int32)
    student = mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0)))
    if transfer:
        u = rng.normal(size=(num_transfer, 3)).astype(np.float32)
        bank = mk.TeacherBank.from_logits(rng.normal(size=(2, num_transfer, 3)))
        return mk.MTBKDModel(student, bank), x, y, {"prior_inputs": u}
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, num_examples, 3)))
    return mk.MTBKDModel(student, bank), x, y, None


def sgmcmc(sampler: str, mesh: jax.sharding.Mesh | None) -> dict:
    import mtbkd_jax as mk

    model, x, y, kwargs = _problem()
    post = mk.run_sgmcmc(
        jax.random.key(1), model, x, y, sampler=sampler, batch_size=BATCH, num_epochs=3,
        step_size=1e-3, draws_per_epoch=2, num_chains=4, warm_start_epochs=1,
        chunk_epochs=2, progress_bar=False, predict_inputs=x[:5], model_kwargs=kwargs,
        mesh=mesh,
    )  # fmt: skip
    return {
        "predictive": np.asarray(post.streamed["predictive_mean"]),
        "chain_devices": np.asarray(post.settings["chain_devices"]),
        "data_devices": np.asarray(post.settings["data_devices"]),
        **{"draw_" + k: np.asarray(v) for k, v in post.draws.items()},
    }


def auto(mesh: jax.sharding.Mesh | None, shard_data: bool = False) -> dict:
    """``step_size="auto"`` on a mesh: the chosen step, the draws, and the draws of the same run
    with that step passed as a number (the pilots must not move the run's own keys)."""
    import mtbkd_jax as mk

    model, x, y, kwargs = _problem()
    common = dict(
        sampler="sgld", batch_size=BATCH, num_epochs=2, draws_per_epoch=2, num_chains=2,
        warm_start_epochs=1, progress_bar=False, model_kwargs=kwargs, mesh=mesh,
        shard_data=shard_data,
    )  # fmt: skip
    chosen = mk.run_sgmcmc(jax.random.key(3), model, x, y, step_size="auto", **common)
    step = float(chosen.settings["step_size"])
    given = mk.run_sgmcmc(jax.random.key(3), model, x, y, step_size=step, **common)
    return {
        "step": np.asarray(step),
        **{"draw_" + k: np.asarray(v) for k, v in chosen.draws.items()},
        **{"given_" + k: np.asarray(v) for k, v in given.draws.items()},
    }


def _own_model(x, y=None, subsample_size=BATCH, size=None):  # noqa: ANN001, ANN201
    """A model of one's own: the plate declared from the data's length, or with ``size``."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0, 1).expand([3, 3]).to_event(2))
    declared = x.shape[0] if size is None else size
    with numpyro.plate("data", declared, subsample_size=subsample_size) as idx:
        numpyro.sample("y", dist.Categorical(logits=x[idx] @ w), obs=y[idx])


def own_sharded(mesh: jax.sharding.Mesh) -> dict:
    """``shard_data=True`` on a model of one's own: the plate's minibatch size from the model's
    default (``"reference"``), from ``model_kwargs={"subsample_size": 8}`` (a Python int, which
    must stay one), and the plate declared with the whole data set's size ``N`` instead of the
    local data's length."""
    import mtbkd_jax as mk

    _, x, y, _ = _problem(transfer=False)
    kwargs = {
        "reference": None,
        "static": {"subsample_size": BATCH},
        "declared": {"subsample_size": BATCH, "size": N},
    }
    out = {}
    for name, model_kwargs in kwargs.items():
        post = mk.run_sgmcmc(
            jax.random.key(5), _own_model, x, y, batch_size=None, num_epochs=3, step_size=1e-3,
            draws_per_epoch=2, num_chains=2, warm_start_epochs=1, progress_bar=False,
            logits_fn=lambda d, x: x @ d["w"], model_kwargs=model_kwargs, mesh=mesh,
            shard_data=True,
        )  # fmt: skip
        out[name + "_w"] = np.asarray(post.draws["w"])
    return out


def gradients(mesh: jax.sharding.Mesh) -> dict:
    """The minibatch gradient of the tiny model at a random point: one device, the sharded
    estimator under shard_map, and the trap (a psum added to the already all-reduced
    gradient)."""
    from jax.sharding import PartitionSpec as P

    from mtbkd_jax.infer.gradients import gradient_estimator
    from mtbkd_jax.infer.mesh import DATA, DataShardedEstimator, check_mesh

    model, x, y, kwargs = _problem()
    estimator = gradient_estimator(model, (x, y), kwargs, batch_size=BATCH)
    position = estimator.initial_position(jax.random.key(3))
    batch = {p.name: jnp_perm(p.size, p.batch_size, i) for i, p in enumerate(estimator.plates)}
    mesh = check_mesh(mesh, batch_sizes={p.name: p.batch_size for p in estimator.plates})
    size = mesh.shape[DATA]
    sharded = DataShardedEstimator(estimator, DATA, size)

    def doubled(position: dict, minibatch: dict) -> dict:
        grad = sharded.grad(position, minibatch)  # already all-reduced by jax.grad
        return jax.tree.map(lambda g: jax.lax.psum(g, DATA), grad)  # the trap

    def run(fn) -> dict:  # noqa: ANN001
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P()), out_specs=P())
        return jax.jit(mapped)(position, batch)

    out = {"one_" + k: np.asarray(v) for k, v in estimator.grad(position, batch).items()}
    # the all-reduces XLA keeps in the compiled gradient (the forward pmean's value is unused)
    mapped = jax.shard_map(sharded.grad, mesh=mesh, in_specs=(P(), P()), out_specs=P())
    hlo = jax.jit(mapped).lower(position, batch).compile().as_text()
    out["num_all_reduces"] = np.asarray(len(re.findall(r"\ball-reduce(?:-start)?\(", hlo)))
    out.update({"sharded_" + k: np.asarray(v) for k, v in run(sharded.grad).items()})
    out.update({"doubled_" + k: np.asarray(v) for k, v in run(doubled).items()})
    value = jax.jit(
        jax.shard_map(sharded.logdensity, mesh=mesh, in_specs=(P(), P()), out_specs=P())
    )(position, batch)
    out["one_logdensity"] = np.asarray(estimator.logdensity(position, batch))
    out["sharded_logdensity"] = np.asarray(value)
    return out


def jnp_perm(size: int, batch_size: int, seed: int) -> jax.Array:
    return jax.random.permutation(jax.random.key(10 + seed), size)[:batch_size]


def nuts(mesh: jax.sharding.Mesh | None) -> dict:
    import mtbkd_jax as mk

    model, x, y, _ = _problem(transfer=False)
    post = mk.run_nuts(
        jax.random.key(2), model, x, y, num_warmup=5, num_draws=5, num_chains=2,
        progress_bar=False, mesh=mesh,
    )  # fmt: skip
    return {"draw_" + k: np.asarray(v) for k, v in post.draws.items()}


def svi(guide: str, mesh: jax.sharding.Mesh | None) -> dict:
    import mtbkd_jax as mk

    model, x, y, kwargs = _problem()
    run = mk.run_map if guide == "delta" else mk.run_svi
    extra = {} if guide == "delta" else {"num_draws": 5}
    post = run(
        jax.random.key(4), model, x, y, num_steps=60, learning_rate=1e-2, chunk_size=30,
        progress_bar=False, model_kwargs=kwargs, mesh=mesh, **extra,
    )  # fmt: skip
    return {
        "losses": np.asarray(post.losses),
        **{"draw_" + k: np.asarray(v) for k, v in post.draws.items()},
    }


def refusals() -> dict:
    """Meshes that do not divide the work (4 devices): each case's error type and message."""
    import mtbkd_jax as mk

    key = jax.random.key(0)
    quiet = {"progress_bar": False}
    by_chains, by_data = _mesh("4x1"), _mesh("1x4")
    plain = _problem(transfer=False)
    thirty = _problem(transfer=False, num_examples=30)
    transfer, odd_transfer = _problem(), _problem(num_transfer=18)
    sg = {"num_epochs": 1, "draws_per_epoch": 1, **quiet}
    cases = {
        "chains": lambda: mk.run_sgmcmc(key, *plain[:3], num_chains=2, mesh=by_chains, **sg),
        "batch": lambda: mk.run_sgmcmc(key, *plain[:3], batch_size=6, mesh=by_data, **sg),
        "transfer": lambda: mk.run_sgmcmc(
            key, *transfer[:3], batch_size=4, model_kwargs=transfer[3], mesh=by_data, **sg
        ),
        "partial": lambda: mk.run_sgmcmc(
            key, *thirty[:3], batch_size=4, partial_last_batch=True, mesh=by_data, **sg
        ),
        "nuts_data": lambda: mk.run_nuts(key, *thirty[:3], mesh=by_data, **quiet),
        "svi_data": lambda: mk.run_svi(key, *thirty[:3], mesh=by_data, **quiet),
        "transfer_data": lambda: mk.run_map(
            key, *odd_transfer[:3], model_kwargs=odd_transfer[3], mesh=by_data, **quiet
        ),
        "nuts_chains": lambda: mk.run_nuts(key, *plain[:3], num_chains=2, mesh=by_chains, **quiet),
        "names": lambda: mk.run_sgmcmc(
            key, *plain[:3], mesh=jax.make_mesh((1, 4), ("chains", "batch")), **sg
        ),
        "parallel": lambda: mk.run_nuts(
            key, *plain[:3], chain_method="parallel", mesh=by_data, **quiet
        ),
    }
    out = {}
    for name, call in cases.items():
        try:
            call()
        except Exception as error:  # noqa: BLE001 - recorded for the test to judge
            out[f"{name}_type"] = np.asarray(type(error).__name__)
            out[f"{name}_message"] = np.asarray(str(error))
        else:
            out[f"{name}_type"] = np.asarray("no error")
            out[f"{name}_message"] = np.asarray("")
    return out


def main(argv: list[str]) -> None:
    assert len(jax.devices()) == int(argv[1]), jax.devices()
    saved: dict[str, np.ndarray] = {}
    for task in argv[3:]:
        kind, spec = task.split(":")
        mesh = _mesh(spec)
        if kind in SAMPLERS:
            result = sgmcmc(kind, mesh)
        elif kind == "grad":
            assert mesh is not None
            result = gradients(mesh)
        elif kind == "nuts":
            result = nuts(mesh)
        elif kind == "ownshard":
            assert mesh is not None
            result = own_sharded(mesh)
        elif kind in ("auto", "autoshard"):
            result = auto(mesh, shard_data=kind == "autoshard")
        elif kind == "refuse":
            result = refusals()
        elif kind in ("map", "svi"):
            result = svi("delta" if kind == "map" else "normal", mesh)
        else:
            raise ValueError(f"unknown task {task!r}")
        saved.update({f"{task}/{name}": value for name, value in result.items()})
    np.savez(argv[2], **saved)


if __name__ == "__main__":
    main(sys.argv)
