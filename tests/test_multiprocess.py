"""Several processes (``mtbkd_jax.infer.multiprocess``) and stratified minibatches over sharded
data (``mtbkd_jax.infer.stratified``).

Two processes on 127.0.0.1 with 2 CPU devices each (``jax.distributed``, gloo collectives)
run stratified SGLD (``shard_data=True``) on a (1 x 4) mesh, each supplying only its own
rows, and are compared with one process with 4 CPU devices. Three launches, all running
``tests/multiprocess_script.py`` and sharing a compilation cache in a temporary folder:

1. two processes: refusals of misuse, the uninterrupted SGLD run (checkpointed), ``run_map``,
   and a second SGLD run that both processes leave (``os._exit``) after 2 of 4 chunks;
2. two processes: each on a copy of a checkpoint at another epoch (refused), then the killed
   run again (it resumes);
3. one process with 4 devices (at the same time as 2): the reference runs, a resume of the
   two processes' checkpoint, a resume with 2 data shards instead of 4 (refused), the exact
   epoch-sum identity on the canonical model (``tests/multiprocess_identity.py``) and the
   ``shard_data`` refusals.

Tolerances (float32):

* 2 processes x 2 devices against 1 process x 4 devices, and a resume across those layouts:
  ``rtol=1e-5, atol=1e-6``: the same stratified minibatches and the same reductions, on
  devices that another runtime connects; the all-reduce may sum in another order.
* resumed against uninterrupted (the same two processes): equal, bit for bit.
* ``run_map`` with the data spread over processes against the one-device fit: ``rtol=1e-4,
  atol=1e-4`` as in ``tests/test_mesh.py``.
* the epoch-sum identity, ``(|B| / N) * sum over an epoch's steps = the full-batch value``:
  log density ``rtol=1e-5`` (measured 1.2e-7 relative), gradients ``rtol=1e-5, atol=1e-5``
  (measured 5e-7 absolute on values up to 3), the warm start's sum, read back as
  ``(z1 - z0) / 1e-2``, ``rtol=1e-4, atol=1e-4`` (a difference of positions near 1 divided
  by 1e-2 loses about two digits). The same run with the epoch loop on the global plates
  (the bug) must miss it (it gives NaN).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from mtbkd_jax.infer._orders import EpochOrders
from mtbkd_jax.infer.fingerprint import array_digest
from mtbkd_jax.infer.minibatch import PlateSpec

SCRIPT = Path(__file__).with_name("multiprocess_script.py")
TIMEOUT = 300


def _start(
    num_processes: int,
    num_devices: int,
    out: Path,
    tasks: str,
    cache: Path,
    die: Callable,
    port: int,
) -> list:
    """Start the script in ``num_processes`` processes at once (``die``: the
    ``die_with_parent`` fixture; ``port``: the coordinator's, free)."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    out.mkdir(parents=True, exist_ok=True)
    arguments = [str(port), str(num_processes), "I", str(num_devices), str(out), tasks]
    return [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), *[str(i) if a == "I" else a for a in arguments]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # a group of its own: teardown stops all of it
            preexec_fn=die,
        )
        for i in range(num_processes)
    ]


def _finish(processes: list, expected: int = 0) -> None:
    """Wait for the processes; each must exit with ``expected`` (else: the end of its
    output)."""
    try:
        for i, process in enumerate(processes):
            output, _ = process.communicate(timeout=TIMEOUT)
            status = process.returncode
            assert status == expected, f"process {i}: exit {status}\n{output[-4000:]}"
    finally:  # whatever happened, nothing of the launch outlives the test
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _copy_checkpoint(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    shutil.copyfile(f"{source}.draws", f"{target}.draws")


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, die_with_parent: Callable, free_port: Callable
) -> dict[str, Path]:
    """The folders of the two processes' launches (``two``) and the one process's (``one``)."""
    root = tmp_path_factory.mktemp("multiprocess")
    cache, two, one = root / "cache", root / "two", root / "one"
    first = "misuse,broadcast,teachers,sgld,map,kill"
    _finish(_start(2, 2, two, first, cache, die_with_parent, free_port()), expected=3)  # kill: 3
    for name in ("cross", "strata"):  # the killed run's checkpoint, for the one process
        _copy_checkpoint(two / "killed.ckpt", one / f"{name}.ckpt")
    _copy_checkpoint(two / "killed.ckpt", two / "disagree-0.ckpt")  # next epoch 2
    _copy_checkpoint(two / "run.ckpt", two / "disagree-1.ckpt")  # next epoch 4
    second = _start(2, 2, two, "disagree,resume", cache, die_with_parent, free_port())
    single = _start(
        1, 4, one, "sgld,map,cross,strata,identity,refusals", cache, die_with_parent, free_port()
    )
    _finish(second)
    _finish(single)
    return {"one": one, "two": two}


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


def _draws(results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    found = {k: v for k, v in results.items() if k.startswith("draw_")}
    assert found
    return found


def _close_draws(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_two_processes_give_the_draws_of_one_process_with_as_many_devices(runs):
    one = _draws(_load(runs["one"] / "results-sgld-0.npz"))
    for process in (0, 1):  # every process ends with the whole posterior
        _close_draws(_draws(_load(runs["two"] / f"results-sgld-{process}.npz")), one)
    assert np.ptp(one["draw_w"], axis=1).min() > 0  # the chain moves


@pytest.mark.slow
def test_only_process_0_writes_the_checkpoint_and_the_posterior(runs):
    two = runs["two"]
    assert _load(two / "results-sgld-0.npz")["writes"] == 4  # one per chunk
    assert _load(two / "results-resume-0.npz")["writes"] == 2  # resumed after 2 of 4
    for task in ("sgld", "resume"):
        assert _load(two / f"results-{task}-1.npz")["writes"] == 0
    assert (two / "p0" / "posterior.nc").is_file()
    assert not (two / "p1").exists()  # process 1's Posterior.save wrote nothing


@pytest.mark.slow
def test_a_run_killed_in_both_processes_resumes_exactly(runs):
    uninterrupted = _draws(_load(runs["two"] / "results-sgld-0.npz"))
    for process in (0, 1):
        resumed = _draws(_load(runs["two"] / f"results-resume-{process}.npz"))
        for name, expected in uninterrupted.items():
            np.testing.assert_array_equal(resumed[name], expected, err_msg=name)


@pytest.mark.slow
def test_processes_that_read_different_checkpoints_are_refused_by_all(runs):
    for process in (0, 1):
        message = str(_load(runs["two"] / f"results-disagree-{process}.npz")["message"])
        assert f"disagree-{process}.ckpt" in message, message
        assert "the 2 processes read different checkpoints" in message, message
        assert "process 0: next epoch 2; process 1: next epoch 4" in message, message


@pytest.mark.slow
def test_a_checkpoint_resumes_on_another_process_layout_but_not_other_data_shards(runs):
    """The fingerprint depends on D (the draws do), not on the processes (they do not)."""
    uninterrupted = _draws(_load(runs["two"] / "results-sgld-0.npz"))
    _close_draws(_draws(_load(runs["one"] / "results-cross-0.npz")), uninterrupted)
    message = str(_load(runs["one"] / "results-strata-0.npz")["message"])
    assert "strata.ckpt" in message and "minibatch_strata: checkpoint 4, this run 2" in message
    # the same data, digested per stratum: not listed as changed (it misled)
    assert "inputs:" not in message and "digested per stratum" in message, message


@pytest.mark.slow
def test_run_map_takes_data_spread_over_processes(runs):
    one = _load(runs["one"] / "results-map-0.npz")
    two = _load(runs["two"] / "results-map-0.npz")
    for name in ("w", "b"):
        np.testing.assert_allclose(two[f"map_{name}"], one[f"ref_{name}"], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_an_epoch_of_stratified_estimates_sums_to_the_full_batch_value(runs):
    """On the canonical model with a transfer set, through the real warm-start and sampling
    programs (``tests/multiprocess_identity.py``); the global-plates loop fails it."""
    r = _load(runs["one"] / "results-identity-0.npz")
    keys = [k.removeprefix("warm_") for k in r if k.startswith("warm_")]
    assert len(keys) == 4  # the student's two layers' kernels and biases
    for key in keys:
        np.testing.assert_allclose(r[f"warm_{key}"], r[f"full_warm_{key}"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(r[f"right_grad_{key}"], r[f"right_full_grad_{key}"], 1e-5, 1e-5)
    np.testing.assert_allclose(r["right_logdensity"], r["right_full_logdensity"], rtol=1e-5)
    wrong = abs(r["wrong_logdensity"] - r["wrong_full_logdensity"])
    assert not wrong <= 1e-5 * abs(r["wrong_full_logdensity"]), wrong  # NaN or far off


@pytest.mark.slow
def test_shard_data_refuses_nested_plates_and_names_a_misplaced_array(runs):
    r = _load(runs["one"] / "results-refusals-0.npz")
    assert "shard_data=True: sample site 'x' lies inside 2 subsampled plates" in str(r["nested"])
    whole = str(r["whole"])
    assert "the data layout does not fit the model" in whole, whole
    assert "model_kwargs['offsets'] (split over 'data', should be replicated)" in whole, whole


@pytest.mark.slow
def test_misuse_in_several_processes_is_refused_clearly(runs):
    for process in (0, 1):
        r = _load(runs["two"] / f"results-misuse-{process}.npz")
        assert not r["backend_started_by_import"]  # import mtbkd_jax, then initialize: fine
        assert "ValueError: inputs is a global array spread over 2 processes" in str(r["global"])
        assert "shard_data=True" in str(r["global"])
        assert "already initialized with num_processes=2" in str(r["again"]), r["again"]


@pytest.mark.slow
def test_from_main_process_computes_on_process_0_and_sends_it_to_all(runs):
    for process in (0, 1):
        r = _load(runs["two"] / f"results-broadcast-{process}.npz")
        expected = np.full((3, 2), 7.0, np.float32)
        expected[0, :] = (-0.0, 1e-45)
        np.testing.assert_array_equal(r["bits"], expected.view(np.uint32))  # bit for bit
        assert r["b"].dtype == np.float64 and float(r["b"]) == 2.5
        assert int(r["calls"]) == (1 if process == 0 else 0)
        failure = str(r["failure"])
        if process == 0:
            assert failure == "ValueError: no teachers here"
        else:
            assert "RuntimeError: process 0 failed to compute" in failure


@pytest.mark.slow
def test_fashion_mnist_teachers_are_trained_by_process_0_and_sent_to_the_other(runs):
    first, second = (_load(runs["two"] / f"results-teachers-{p}.npz") for p in (0, 1))
    for name in ("train_logits", "test_logits"):
        assert first[name].shape == (3, {"train_logits": 128, "test_logits": 32}[name], 10)
        np.testing.assert_array_equal(first[name], second[name])  # bit for bit
    assert "cnn" in first["info_keys"] and list(second["info_keys"]) == ["from_process"]
    assert int(first["said"]) > 0 and int(second["said"]) == 0  # process 1 trained nothing
    assert len(first["cached"]) == 1 and str(first["cached"][0]).endswith(".npz")  # no .tmp


# ---------------------------------------------------------------------------- fast checks
def test_stratified_orders_permute_each_shard_of_its_own_rows():
    plates = (PlateSpec("data", 12, 4), PlateSpec("transfer", 8, 4))
    keys = jax.random.split(jax.random.key(0), 2)
    plain = EpochOrders(keys, plates).take(0, 3)
    one = EpochOrders(keys, plates, num_strata=1).take(0, 3)
    for name in plain:  # one stratum: the unstratified orders
        np.testing.assert_array_equal(one[name], plain[name])
    orders = EpochOrders(keys, plates, num_strata=4)
    first = orders.take(0, 3)
    for plate in plates:
        size = plate.size // 4
        blocks = first[plate.name].reshape(2, 3, 4, size)
        expected = np.broadcast_to(np.arange(size), blocks.shape)
        np.testing.assert_array_equal(np.sort(blocks, axis=-1), expected)
    # an epoch's order does not depend on how epochs are grouped (exact resumes)
    again = EpochOrders(keys, plates, num_strata=4)
    later = {k: np.concatenate([a, b], 1) for (k, a), b in zip(
        again.take(0, 1).items(), again.take(1, 3).values(), strict=True)}  # fmt: skip
    for name in first:
        np.testing.assert_array_equal(later[name], first[name])
    with pytest.raises(ValueError, match="plate 'data' has 12 examples, which 5 strata"):
        EpochOrders(keys, plates, num_strata=5)


def test_the_data_digest_in_blocks_depends_on_the_rows_and_the_blocks_only():
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    assert array_digest(x, 4) == array_digest(jax.numpy.asarray(x), 4)  # host or device
    assert array_digest(x, 4) != array_digest(x)  # D is part of it
    assert array_digest(x, 1) == array_digest(x)  # D = 1: the digest checkpoints always had
    assert array_digest(x, 3) == array_digest(x)  # 3 does not divide 8 rows: plain
    changed = x.copy()
    changed[5, 1] += 1
    assert array_digest(changed, 4) != array_digest(x, 4)


def test_shard_data_needs_a_mesh_and_initialize_needs_all_three_or_none():
    import mtbkd_jax as mk
    from mtbkd_jax.infer import multiprocess

    def model(x):  # noqa: ANN001, ANN202
        import numpyro
        import numpyro.distributions as dist

        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0], subsample_size=4) as index:
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[index, 0])

    x = np.zeros((8, 1), np.float32)
    with pytest.raises(ValueError, match=r"shard_data=True needs mesh="):
        mk.run_sgmcmc(jax.random.key(0), model, x, shard_data=True, progress_bar=False)
    with pytest.raises(ValueError, match="give coordinator_address, num_processes and process_id"):
        multiprocess.initialize("127.0.0.1:1234")


def test_importing_the_package_starts_no_jax_backend():
    """So that ``jax.distributed.initialize`` may follow ``import mtbkd_jax`` (BlackJAX, whose
    import computes, is imported where a kernel is built)."""
    code = (
        "import mtbkd_jax, mtbkd_jax.infer, mtbkd_jax.cli\n"
        "from jax._src import xla_bridge\n"
        "assert not xla_bridge.backends_are_initialized()\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
