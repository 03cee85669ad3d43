"""``mtbkd experiment ... --mesh`` over the devices of several processes.

Two processes on 127.0.0.1 with 2 CPU devices each run a tiny experiment
(``tests/cli_processes_script.py``: MT-BKD by MAP and by stratified SGLD on the synthetic smoke
problem) on a global (1 x 4) mesh, connected by ``--coordinator``; one process with 4 CPU
devices runs the same command with ``--mesh 1x4``. Their metrics must agree to float32
rounding carried through the run (``atol=1e-5``: the draws agree to ``rtol=1e-5, atol=1e-6``,
``tests/test_multiprocess.py``, and each metric is an average of their predictions), and only
process 0 may write its ``--out``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtbkd_jax.cli import main

SCRIPT = Path(__file__).with_name("cli_processes_script.py")
TIMEOUT = 600


def _launch(num_devices: int, out: Path, die: Callable, *arguments: str) -> subprocess.Popen:
    """The script in a process group of its own (so that the test can stop all of it)."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(num_devices), str(out), "--", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"},
        start_new_session=True,
        preexec_fn=die,
    )


def _finish(processes: list[subprocess.Popen]) -> list[str]:
    """Wait for every process; each must exit 0 (else: the end of its output); returns their
    outputs. Whatever is left is killed with its children, whatever happened."""
    outputs = []
    try:
        for i, process in enumerate(processes):
            output, _ = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, (
                f"process {i}: exit {process.returncode}\n{output[-4000:]}"
            )
            outputs.append(output)
        return outputs
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def outputs(
    tmp_path_factory: pytest.TempPathFactory, die_with_parent: Callable, free_port: Callable
) -> dict[str, Any]:
    """The three ``--out`` folders (``two``: process 0's, ``second``: process 1's, ``one``: the
    single process's) and ``logs``, the three processes' outputs in that order."""
    root = tmp_path_factory.mktemp("cli-processes")
    folders = {"two": root / "two", "second": root / "second-process", "one": root / "one"}
    port = str(free_port())
    processes = [
        _launch(
            2,
            folders[name],
            die_with_parent,
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--mesh",
            "1x4",
        )
        for i, name in enumerate(("two", "second"))
    ]
    processes.append(_launch(4, folders["one"], die_with_parent, "--mesh", "1x4"))
    return {**folders, "logs": _finish(processes)}


def _rows(folder: Path) -> list[dict]:
    metrics = json.loads((folder / "metrics.json").read_text())
    return metrics["rows"] if isinstance(metrics, dict) else metrics


@pytest.mark.slow
def test_two_processes_give_the_rows_of_one_process_with_as_many_devices(outputs):
    two, one = _rows(outputs["two"]), _rows(outputs["one"])
    assert [(r["method"], r["inference"]) for r in two] == [
        (r["method"], r["inference"]) for r in one
    ]
    assert {r["inference"] for r in one} == {"map", "sgld"}
    for a, b in zip(two, one, strict=True):
        for name in ("accuracy", "nll", "ece", "brier"):
            np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=f"{a['method']} {name}")


@pytest.mark.slow
def test_the_runs_record_that_their_sgld_split_each_minibatch_over_the_4_devices(outputs):
    """Without this the rows could agree because both ignored the mesh (chain placement does
    not change the draws)."""
    for name, processes in (("two", 2), ("one", 1)):
        run = json.loads((outputs[name] / "linear_2" / "run.json").read_text())
        assert run["mesh"] == {"chains": 1, "data": 4} and run["processes"] == processes
        assert run["data_devices"] == {"MT-BKD (entropy weights)": 4}


@pytest.mark.slow
def test_only_process_0_writes_its_out_folder(outputs):
    assert (outputs["two"] / "metrics.json").is_file()
    assert not outputs["second"].exists()


@pytest.mark.slow
def test_only_process_0_prints_the_log_and_the_table(outputs):
    first, second, single = outputs["logs"]
    assert "[synthetic linear_2]" in first and "[synthetic linear_2]" in single
    assert "[synthetic" not in second and "MT-BKD" not in second


def test_a_mesh_of_more_devices_than_the_command_has_is_refused(tmp_path, capsys):
    """A usage error (exit 2, as a malformed --mesh), though only JAX can tell; the --out
    folder the command created for the run is not left behind (it exited 1 and kept it)."""
    out = tmp_path / "new" / "run"
    status = main(["experiment", "synthetic", "--smoke", "--mesh", "1x999", "--out", str(out)])
    error = capsys.readouterr().err
    assert status == 2
    assert "--mesh 1x999 needs 999 devices" in error
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["experiment", "synthetic", "--smoke", "--mesh", "1x999", "--out", str(kept)]) == 2
    assert kept.is_dir()  # a folder the user made stays


@pytest.mark.parametrize("shape", ["4", "2by2", "0x4", "1x-2", "x"])
def test_a_malformed_mesh_is_refused_before_any_compute(shape, tmp_path, capsys):
    status = main(["experiment", "synthetic", "--smoke", "--mesh", shape, "--out", str(tmp_path)])
    assert status == 2
    assert "--mesh: must be CHAINSxDATA" in capsys.readouterr().err


@pytest.mark.slow
def test_a_mesh_that_does_not_divide_the_chains_is_refused_before_any_fit(
    tmp_path, die_with_parent
):
    """The tiny experiment has 2 chains: a (4 x 1) mesh is refused once, before the first fit,
    not by every method's fit in turn (each would fail alike)."""
    process = _launch(4, tmp_path / "out", die_with_parent, "--mesh", "4x1")
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1, output[-3000:]
    assert "mesh's 'chains' axis (size 4) must divide num_chains (2)" in output
    assert " map " not in output and "failed" not in output  # no method was fitted
    assert not (tmp_path / "out" / "metrics.json").exists()
