"""Runs for ``tests/test_multiprocess.py``: one process of a multi-process run, or the single
process it is compared with.

``python tests/multiprocess_script.py PORT NUM_PROCESSES PROCESS_ID NUM_DEVICES OUT TASKS``
(``TASKS`` comma-separated): with ``NUM_PROCESSES > 1`` the process imports ``mtbkd_jax`` (which
must start no JAX backend) and joins the others through ``jax.distributed`` on
``127.0.0.1:PORT``; ``NUM_DEVICES`` CPU devices per process; every mesh is (1 x 4) over all
devices unless a task says otherwise. Tasks (``OUT`` holds the checkpoints the test prepared):

* ``sgld``: stratified SGLD (``shard_data=True``) on a softmax regression of the user's own,
  each process supplying only its rows (``multiprocess.shard_rows``), checkpointed to
  ``OUT/run.ckpt``; the posterior saved to ``OUT/p<PROCESS_ID>/posterior.nc`` (process 0 only).
* ``map``: ``run_map`` on the same global arrays (one process: also the host reference).
* ``kill``: the ``sgld`` run on ``OUT/killed.ckpt``; every process exits with status 3
  (``os._exit``, as if killed) once the second chunk's checkpoint is written. Last task.
* ``resume``: the ``sgld`` run on ``OUT/killed.ckpt`` again (it resumes).
* ``cross``: the ``sgld`` run on ``OUT/cross.ckpt``, a copy of a checkpoint that two processes
  wrote (one process: the fingerprint does not depend on the process layout).
* ``strata``: the ``sgld`` run on a (1 x 2) mesh on ``OUT/strata.ckpt``, such a copy: refused.
* ``disagree``: the ``sgld`` run, process ``i`` on ``OUT/disagree-i.ckpt`` (copies of
  checkpoints at different epochs): refused by every process.
* ``misuse``: global data without ``shard_data`` and ``initialize`` called again: refused.
* ``broadcast``: ``multiprocess.from_main_process``: computed on process 0 only, sent to all.
* ``teachers``: tiny Fashion-MNIST teachers: trained and cached by process 0, sent to all.
* ``identity``: the exact epoch-sum identity through the real programs, below.
* ``refusals``: a nested subsampled plate and a misplaced array with ``shard_data``.

Each process saves each task's results to ``OUT/results-<TASK>-<PROCESS_ID>.npz``, with the
number of checkpoint writes it made so far (``writes``). See ``multiprocess_identity.py`` for
``identity`` and ``refusals``.
"""

from __future__ import annotations

import os
import sys

import jax

if __name__ == "__main__":
    jax.config.update("jax_num_cpu_devices", int(sys.argv[4]))

import numpy as np  # noqa: E402

N, F, C, BATCH = 32, 3, 3, 8  # examples, features, classes, minibatch (2 rows per shard)


def problem() -> tuple[np.ndarray, np.ndarray]:
    """The full data set (every process can make it; each uses only its rows)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype(np.float32)
    w = rng.normal(size=(F, C))
    y = np.argmax(x @ w + rng.gumbel(size=(N, C)), axis=1).astype(np.int32)
    return x, y


def model(x, y=None, subsample_size=BATCH):  # noqa: ANN001, ANN201
    """Softmax regression with a minibatched data plate (a model of the user's own)."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1], C]).to_event(2))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([C]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=subsample_size) as index:
        logits = x[index] @ w + b
        numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[index])


def full_model(x, y=None):  # noqa: ANN001, ANN201
    """The same model without minibatches (``run_map``)."""
    return model(x, y, subsample_size=None)


def sharded_data(mesh: jax.sharding.Mesh) -> tuple[jax.Array, jax.Array]:
    from mtbkd_jax.infer import multiprocess

    rows = multiprocess.local_rows(N, mesh)
    x_local, y_local = (a[rows] for a in problem())  # this process keeps only its rows
    return multiprocess.shard_rows(x_local, mesh, N), multiprocess.shard_rows(y_local, mesh, N)


def count_writes() -> list[int]:
    """Count the checkpoint writes of this process (``Checkpoint.save`` past its gate)."""
    from mtbkd_jax.infer.checkpoint import Checkpoint

    writes = [0]
    save = Checkpoint.save

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        save(self, *args, **kwargs)
        writes[0] += int(self.writer)

    Checkpoint.save = counted  # type: ignore[method-assign]
    return writes


def stop_after(chunks: int) -> None:
    """Exit at once (no clean-up, as a kill) after the ``chunks``-th checkpoint of a run."""
    from mtbkd_jax.infer.checkpoint import Checkpoint

    seen = [0]
    save_in_background = Checkpoint.save_in_background

    def stopping(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        save_in_background(self, *args, **kwargs)
        seen[0] += 1
        if seen[0] == chunks:
            self.wait()
            os._exit(3)

    Checkpoint.save_in_background = stopping  # type: ignore[method-assign]


def sgld(mesh: jax.sharding.Mesh, checkpoint: str, save_to: str | None = None) -> dict:
    import mtbkd_jax as mk

    x, y = sharded_data(mesh)
    posterior = mk.run_sgmcmc(
        jax.random.key(1), model, x, y, num_epochs=4, step_size=1e-3, draws_per_epoch=2,
        num_chains=1, chunk_epochs=1, progress_bar=False, mesh=mesh,
        shard_data=True, checkpoint_path=checkpoint,
    )  # fmt: skip
    if save_to is not None:
        posterior.save(os.path.join(save_to, f"p{jax.process_index()}", "posterior.nc"))
    return {"draw_" + k: np.asarray(v) for k, v in posterior.draws.items()}


def refused(run) -> dict:  # noqa: ANN001
    """The message of the error ``run()`` must raise (``""``: none)."""
    try:
        run()
    except (ValueError, RuntimeError) as error:
        return {"message": np.asarray(f"{type(error).__name__}: {error}")}
    return {"message": np.asarray("")}


def fit_map(mesh: jax.sharding.Mesh) -> dict:
    import mtbkd_jax as mk

    x, y = sharded_data(mesh)
    fit = dict(num_steps=20, learning_rate=1e-2, chunk_size=20, progress_bar=False)
    posterior = mk.run_map(jax.random.key(4), full_model, x, y, mesh=mesh, **fit)
    out = {"map_" + k: np.asarray(v) for k, v in posterior.draws.items()}
    if jax.process_count() == 1:  # the reference: no mesh, host arrays
        reference = mk.run_map(jax.random.key(4), full_model, *problem(), **fit)
        out.update({"ref_" + k: np.asarray(v) for k, v in reference.draws.items()})
    return out


def misuse(mesh: jax.sharding.Mesh, port: int) -> dict:
    """Global data without ``shard_data``; ``initialize`` again (the same arguments: nothing
    happens; another process id: refused)."""
    import mtbkd_jax as mk
    from mtbkd_jax.infer import multiprocess

    x, y = sharded_data(mesh)
    out = {"global": refused(lambda: mk.run_sgmcmc(jax.random.key(0), model, x, y, mesh=mesh))}
    address, pid = f"127.0.0.1:{port}", jax.process_index()
    multiprocess.initialize(address, jax.process_count(), pid)  # already connected: fine
    other = refused(lambda: multiprocess.initialize(address, jax.process_count(), 1 - pid))
    return {"global": out["global"]["message"], "again": other["message"]}


def broadcast() -> dict:
    """``from_main_process``: process 0 computes (a value only it would give, with a -0.0 and a
    subnormal that arithmetic would change, after 35 s: longer than a first meeting of CPU
    collectives waits), every process receives its bytes; the others never compute. Then a
    ``compute`` that raises in process 0: its error there, a RuntimeError in the others."""
    import time

    from mtbkd_jax.infer import multiprocess

    calls = []

    def compute() -> dict:
        calls.append(1)
        time.sleep(35.0)
        value = np.full((3, 2), 7.0 + jax.process_index(), np.float32)
        value[0, :] = (-0.0, 1e-45)
        return {"a": value, "b": np.float64(2.5)}

    like = {"a": jax.ShapeDtypeStruct((3, 2), np.float32), "b": np.zeros((), np.float64)}
    shared = multiprocess.from_main_process(compute, like)

    def failing() -> dict:
        raise ValueError("no teachers here")

    failure = refused(lambda: multiprocess.from_main_process(failing, like))
    return {
        "bits": shared["a"].view(np.uint32),
        "b": shared["b"],
        "calls": np.asarray(len(calls)),
        "failure": failure["message"],
    }


def teachers(out: str) -> dict:
    """The Fashion-MNIST teachers (tiny, on random images) in two processes: process 0 trains
    and caches them, the other receives its logits."""
    from mtbkd_jax.datasets.fashion_mnist import FashionMNISTSplit
    from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings, fashion_mnist_teachers

    rng = np.random.default_rng(0)
    split = lambda n: FashionMNISTSplit(  # noqa: E731
        rng.random((n, 28, 28), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)
    )
    train, test = split(128), split(32)
    settings = TeacherSettings(
        epochs={"cnn": 1, "mlp": 1, "logreg": 1}, batch_size=64, num_train=128, num_test=32
    )
    said: list[str] = []
    cache = os.path.join(out, "teacher-cache")
    made = fashion_mnist_teachers(
        train, test, settings=settings, cache_dir=cache, say=lambda *a: said.append(str(a))
    )
    return {
        "train_logits": made.train_logits,
        "test_logits": made.test_logits,
        "info_keys": np.array(sorted(made.info)),
        "said": np.asarray(len(said)),
        "cached": np.array(sorted(os.listdir(cache)) if os.path.isdir(cache) else []),
    }


def main(argv: list[str]) -> None:
    port, num_processes, process_id, num_devices = (int(a) for a in argv[1:5])
    out, tasks = argv[5], argv[6].split(",")
    imported = {}
    if num_processes > 1:
        from jax._src import xla_bridge  # the test's own check, not the package's

        import mtbkd_jax  # noqa: F401  # before initialize: must start no backend
        from mtbkd_jax.infer import multiprocess

        imported["backend_started_by_import"] = np.asarray(xla_bridge.backends_are_initialized())
        multiprocess.initialize(f"127.0.0.1:{port}", num_processes, process_id)
    assert len(jax.devices()) == num_processes * num_devices, jax.devices()
    writes = count_writes()
    mesh = jax.make_mesh((1, 4), ("chains", "data"))
    path = lambda name: os.path.join(out, name)  # noqa: E731
    runners = {
        "sgld": lambda: sgld(mesh, path("run.ckpt"), save_to=out),
        "map": lambda: fit_map(mesh),
        "resume": lambda: sgld(mesh, path("killed.ckpt")),
        "cross": lambda: sgld(mesh, path("cross.ckpt")),
        "strata": lambda: refused(lambda: sgld(two_of_four(), path("strata.ckpt"))),
        "disagree": lambda: refused(lambda: sgld(mesh, path(f"disagree-{process_id}.ckpt"))),
        "misuse": lambda: misuse(mesh, port),
        "broadcast": broadcast,
        "teachers": lambda: teachers(out),
    }
    for name in tasks:
        if name == "kill":
            stop_after(2)
            sgld(mesh, path("killed.ckpt"))
            raise AssertionError("the killed run went on")
        if name in ("identity", "refusals"):
            import multiprocess_identity

            result = getattr(multiprocess_identity, name)(mesh)
        else:
            result = runners[name]()
        result.update(imported, writes=np.asarray(writes[0]))
        np.savez(path(f"results-{name}-{process_id}.npz"), **result)


def two_of_four() -> jax.sharding.Mesh:
    """A (1 x 2) mesh on two of this process's four devices (2 data shards, not 4)."""
    devices = np.asarray(jax.devices()[:2]).reshape(1, 2)
    return jax.sharding.Mesh(devices, ("chains", "data"))


if __name__ == "__main__":
    main(sys.argv)
