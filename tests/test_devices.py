"""Chains sharded over several devices give the same draws as on one device."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
    import numpy as np
    from flax import nnx
    import mtbkd_jax as mk
    from mtbkd_jax.infer._devices import ChainPlacement

    assert len(jax.local_devices()) == int(sys.argv[1])
    placement = {n: ChainPlacement(n).num_devices for n in (1, 3, 4)}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.integers(0, 3, 60).astype(np.int32)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 60, 3)))
    model = mk.MTBKDModel(mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0))), bank)
    post = mk.run_sgmcmc(
        jax.random.key(1), model, x, y, batch_size=10, num_epochs=5, step_size=1e-4,
        draws_per_epoch=2, num_chains=4, warm_start_epochs=3, chunk_epochs=2,
        progress_bar=False, predict_inputs=x[:7],
    )
    np.savez(
        sys.argv[2],
        chain_devices=post.settings["chain_devices"],
        placement=np.array([placement[n] for n in (1, 3, 4)]),
        predictive=post.streamed["predictive_mean"],
        **{"draw_" + k: v for k, v in post.draws.items()},
    )
    """
)


def _run(num_devices: int, path) -> dict:
    """Run SCRIPT with ``num_devices`` CPU devices in a fresh process (the device count is
    fixed when JAX starts); on failure, show the end of its output."""
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(num_devices), str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert process.returncode == 0, f"{num_devices} device(s) failed:\n{process.stderr[-3000:]}"
    with np.load(path) as data:
        return dict(data)


@pytest.mark.slow
def test_chains_sharded_over_two_cpu_devices_equal_one_device(tmp_path):
    """Agreement to rtol 1e-6 (float32 rounding of a different reduction order at most) of
    every draw and the streamed predictive mean. Each process spends most of its ~20 s
    compiling (JAX starts cold in a new process); running the two side by side on two cores
    was measured no faster, so they run one after the other."""
    one = _run(1, tmp_path / "one.npz")
    two = _run(2, tmp_path / "two.npz")
    assert int(one["chain_devices"]) == 1 and int(two["chain_devices"]) == 2
    # the largest device count that divides the chains: 1 chain -> 1, 3 -> 1, 4 -> 2
    np.testing.assert_array_equal(two["placement"], [1, 1, 2])
    draws = [k for k in one if k.startswith("draw_")]
    assert draws and one[draws[0]].shape[0] == 4
    for name in [*draws, "predictive"]:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-6, atol=1e-7)
    # the chains differ from one another (a shared chain would pass the comparison above)
    first = one[draws[0]]
    assert not np.allclose(first[0], first[1])
