"""A device mesh as an argument (``mtbkd_jax.infer.mesh``): the draws of every SG-MCMC sampler
on a mesh of 1, 2 and 4 CPU devices equal the run without one; ``shard_data=True`` leaves a
model's static keyword arguments alone and scales a plate declared with the data set's size as
one declared from the data's length; the minibatch gradient split over the ``data`` axis
equals the one-device gradient, and the classic mistake (a ``psum`` on top of the gradient
``jax.grad`` already all-reduced) is caught; bad meshes are refused with a message naming
``mesh``.

The device count is fixed when JAX starts, so the runs happen in ``tests/mesh_script.py``, one
process per device count (1, 2, 4), all started once for the module and sharing a compilation
cache in a temporary folder; the tests compare what they saved.

Tolerances (float32; a sharded sum adds the same terms in another order, so the last bits of
every potential and gradient move, and the chains carry that forward):

* SG-MCMC draws and streamed predictions: ``rtol=1e-5, atol=1e-6`` (measured: at most 6e-8
  absolute for sgld and sghmc, 3e-7 for psgld, with the minibatch split over 2 or 4 devices;
  splitting only the chains changes nothing at all);
* the minibatch gradient: ``rtol=1e-5``, and the doubled one must be off by the factor the
  data axis's size (2 or 4), far outside it;
* MAP and SVI (60 Adam steps): ``rtol=1e-4, atol=1e-4`` on the draws and losses (measured
  8e-6 absolute on losses near 60);
* NUTS (5 warm-up iterations, 5 draws): ``atol=2e-3`` (measured 3e-4): NUTS's step-size
  adaptation and its trajectory lengths amplify last-bit differences (here ~1e3-fold); a
  flipped discrete choice (another tree depth or acceptance) would move the draws by O(1),
  which this bound still catches. Longer NUTS runs on a mesh follow another, equally valid,
  trajectory: see ``run_nuts``'s ``mesh``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mtbkd_jax as mk

SCRIPT = Path(__file__).with_name("mesh_script.py")

# per device count, the tasks its process runs ("kind:CxD", C x D the chains x data axes)
TASKS = {
    1: [
        "sgld:none", "sgld:1x1", "sghmc:none", "psgld:none", "cyclical_sgld:none", "ncsgld:none",
        "nuts:none", "map:none", "svi:none", "auto:none",
    ],
    2: [
        "sgld:1x2", "sgld:2x1", "sghmc:1x2", "grad:1x2", "nuts:1x2", "map:1x2", "svi:1x2",
        "auto:1x2", "autoshard:1x2", "ownshard:1x2",
    ],
    4: [
        "sgld:2x2", "sgld:1x4", "sghmc:2x2", "sghmc:1x4", "psgld:2x2", "psgld:1x4",
        "cyclical_sgld:2x2", "ncsgld:2x2", "grad:1x4", "nuts:2x2", "map:1x4", "svi:2x2",
        "refuse:none",
    ],
}  # fmt: skip
# the fewest meshes each sampler runs on (besides none)
MIN_MESHES = {"sgld": 4, "sghmc": 3, "psgld": 2, "cyclical_sgld": 1, "ncsgld": 1}


def _run(num_devices: int, path: Path, cache: Path) -> dict[str, np.ndarray]:
    """The tasks of ``num_devices`` in a fresh process; on failure, the end of its output."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    process = subprocess.run(
        [sys.executable, str(SCRIPT), str(num_devices), str(path), *TASKS[num_devices]],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert process.returncode == 0, f"{num_devices} device(s) failed:\n{process.stderr[-4000:]}"
    with np.load(path) as data:
        return dict(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Every task's saved arrays, ``"<task>/<name>"``, from the three processes."""
    folder = tmp_path_factory.mktemp("mesh")
    out: dict[str, np.ndarray] = {}
    for num_devices in TASKS:
        out.update(_run(num_devices, folder / f"{num_devices}.npz", folder / "cache"))
    return out


def _results(runs: dict[str, np.ndarray], task: str) -> dict[str, np.ndarray]:
    prefix = task + "/"
    found = {k[len(prefix) :]: v for k, v in runs.items() if k.startswith(prefix)}
    assert found, f"no results for {task}"
    return found


def _assert_same_draws(
    runs: dict[str, np.ndarray], task: str, reference: str, **tolerance: float
) -> None:
    expected, actual = _results(runs, reference), _results(runs, task)
    names = [n for n in expected if n.startswith("draw_") or n in ("predictive", "losses")]
    assert any(n.startswith("draw_") for n in names)
    for name in names:
        np.testing.assert_allclose(
            actual[name], expected[name], err_msg=f"{task}: {name}", **tolerance
        )


# ---------------------------------------------------------------------------- SG-MCMC
@pytest.mark.slow
@pytest.mark.parametrize("sampler", sorted(MIN_MESHES))
def test_sgmcmc_draws_on_a_mesh_equal_the_run_without_one(runs, sampler):
    """Every sampler, whose info the loop carries (psgld's preconditioner, cyclical SGLD's step
    size, ncsgld's noise ratio vary over the chains on a mesh, other fields do not)."""
    meshes = [t.split(":")[1] for ts in TASKS.values() for t in ts if t.startswith(sampler + ":")]
    meshes = [m for m in meshes if m != "none"]
    assert len(meshes) >= MIN_MESHES[sampler]
    for mesh in meshes:
        task = f"{sampler}:{mesh}"
        _assert_same_draws(runs, task, f"{sampler}:none", rtol=1e-5, atol=1e-6)
        chains, data = (int(n) for n in mesh.split("x"))
        result = _results(runs, task)
        assert int(result["chain_devices"]) == chains and int(result["data_devices"]) == data
    # the chains differ from one another (a shared chain would pass the comparison above)
    first = _results(runs, f"{sampler}:none")["draw_student.layers.0.kernel"]
    assert first.shape[0] == 4 and not np.allclose(first[0], first[1])


@pytest.mark.slow
def test_shard_data_keeps_static_model_kwargs_and_a_plate_declared_with_the_data_size(runs):
    """``shard_data=True`` on a model of one's own (``mesh_script.own_sharded``): a Python int
    in ``model_kwargs`` (``subsample_size``) stays an int (placed on the mesh it was a traced
    value, and the model's plate failed), and a plate declared with the whole data set's size
    ``N`` (not the local data's length) is scaled as the one declared from the data: both give
    the draws of the model's default."""
    result = _results(runs, "ownshard:1x2")
    reference = result["reference_w"]
    assert reference.shape[:2] == (2, 6) and np.all(np.isfinite(reference))
    for name in ("static", "declared"):
        np.testing.assert_allclose(result[name + "_w"], reference, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_an_automatic_step_size_on_a_mesh_is_the_one_without_it(runs):
    """``step_size="auto"`` on a (1 x 2) mesh chooses the step of the run without a mesh and
    gives its draws (to float tolerance); with ``shard_data=True`` (stratified minibatches, so
    other draws) it runs, and its draws equal a run given the chosen step as a number, so the
    pilots leave the run's keys alone."""
    alone, split = _results(runs, "auto:none"), _results(runs, "auto:1x2")
    assert float(alone["step"]) > 0 and float(split["step"]) == float(alone["step"])
    _assert_same_draws(runs, "auto:1x2", "auto:none", rtol=1e-5, atol=1e-6)
    for result in (alone, split, _results(runs, "autoshard:1x2")):
        names = [n[len("draw_") :] for n in result if n.startswith("draw_")]
        assert names and float(result["step"]) > 0
        for name in names:
            np.testing.assert_allclose(
                result["draw_" + name], result["given_" + name], rtol=1e-5, atol=1e-6
            )


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["1x2", "1x4"])
def test_the_split_minibatch_gradient_is_the_one_device_gradient_and_a_doubled_psum_fails(
    runs, mesh
):
    result = _results(runs, f"grad:{mesh}")
    size = int(mesh.split("x")[1])
    names = [n[len("one_") :] for n in result if n.startswith("one_") and n != "one_logdensity"]
    assert names
    np.testing.assert_allclose(result["sharded_logdensity"], result["one_logdensity"], rtol=1e-5)
    assert int(result["num_all_reduces"]) == 1  # one all-reduce (of every leaf) per gradient
    for name in names:
        one, sharded, doubled = (result[f"{k}_{name}"] for k in ("one", "sharded", "doubled"))
        np.testing.assert_allclose(sharded, one, rtol=1e-5, atol=1e-5 * np.abs(one).max())
        # the trap: jax.grad already all-reduced; a psum on top multiplies by the axis size
        with pytest.raises(AssertionError):
            np.testing.assert_allclose(doubled, one, rtol=1e-5, atol=1e-5 * np.abs(one).max())
        np.testing.assert_allclose(doubled, size * one, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------- full batch
@pytest.mark.slow
@pytest.mark.parametrize("task", ["map:1x2", "map:1x4", "svi:1x2", "svi:2x2"])
def test_map_and_svi_on_a_mesh_equal_the_fit_without_one(runs, task):
    reference = task.split(":")[0] + ":none"
    _assert_same_draws(runs, task, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["nuts:1x2", "nuts:2x2"])
def test_nuts_on_a_mesh_equals_the_run_without_one(runs, task):
    _assert_same_draws(runs, task, "nuts:none", rtol=0, atol=2e-3)


# ---------------------------------------------------------------------------- refusals
@pytest.mark.slow
def test_meshes_that_do_not_divide_the_work_are_refused_naming_mesh(runs):
    """On 4 devices (``mesh_script.refusals``): each case's error type and message."""
    result = _results(runs, "refuse:none")
    expected = {
        "chains": "'chains' axis (size 4) must divide num_chains (2)",
        "batch": "'data' axis (size 4) must divide the minibatch of plate 'data' (6)",
        "transfer": "'data' axis (size 4) must divide the minibatch of plate 'transfer' (2)",
        "partial": "must divide the partial last batch of plate 'data' (2)",
        "nuts_data": "'data' axis (size 4) must divide the length of inputs (30)",
        "svi_data": "'data' axis (size 4) must divide the length of inputs (30)",
        "transfer_data": "must divide the length of prior_inputs (18)",
        "nuts_chains": "'chains' axis (size 4) must divide num_chains (2)",
        "names": "mesh must have exactly the axes 'chains' and 'data'",
        "parallel": "chain_method='parallel' cannot be combined with mesh",
    }
    assert sorted(n[: -len("_message")] for n in result if n.endswith("_message")) == sorted(
        expected
    )
    for case, text in expected.items():
        message = str(result[f"{case}_message"])
        assert str(result[f"{case}_type"]) == "ValueError", (case, message)
        assert "mesh" in message and text in message, (case, message)


def _tiny_model() -> tuple:
    from flax import nnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 8, 3)))
    student = mk.Student(mk.MLP(3, 3, hidden=(), rngs=nnx.Rngs(0)))
    return mk.MTBKDModel(student, bank), x, y


@pytest.mark.parametrize("front_end", ["run_sgmcmc", "run_nuts", "run_svi", "run_map"])
def test_a_mesh_without_the_chains_and_data_axes_is_refused(front_end):
    model, x, y = _tiny_model()
    front = getattr(mk, front_end)
    extra = {"batch_size": 4, "draws_per_epoch": 1} if front_end == "run_sgmcmc" else {}

    def run(mesh: object) -> None:
        front(jax.random.key(0), model, x, y, mesh=mesh, progress_bar=False, **extra)

    with pytest.raises(ValueError, match=r"mesh must have exactly the axes 'chains' and 'data'"):
        run(jax.make_mesh((1, 1), ("batch", "model")))
    with pytest.raises(ValueError, match=r"got axes \('data',\)"):
        run(jax.make_mesh((1,), ("data",)))
    with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh"):
        run(("chains", "data"))
