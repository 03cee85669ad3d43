"""The PyTorch comparison on the reference head (optional: needs ``.venv-torch``).

``torch_sgld.py`` runs in a separate interpreter with torch, once per round of the reference
head (interleaved with the JAX figures), on the same data, labels, initial weights and
teacher-prior constants (``lambda p``, ``log B(1 + lambda p)``, ``log w``, computed by
mtbkd_jax), shared through ``.npy`` files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from cases import Case
from floors import STEP_SIZE
from machine import HERE, ROOT, log, summary

INSTALL = (
    "no torch interpreter: create it with `/root/.pyenv/versions/3.11.7/bin/python -m venv "
    ".venv-torch && .venv-torch/bin/pip install torch==2.13.0 numpy`"
)


def torch_python(explicit: str | None) -> Path | None:
    candidate = Path(explicit) if explicit else ROOT / ".venv-torch" / "bin" / "python"
    return candidate if candidate.exists() else None


def write_torch_data(case: Case, arrays: dict, directory: Path, position: dict) -> None:
    """The reference head's data, teacher-prior constants and initial weights as .npy files."""
    directory.mkdir(parents=True, exist_ok=True)
    prior = case.model.teacher_prior
    np.save(directory / "x.npy", np.ascontiguousarray(arrays["features"], np.float32))
    np.save(directory / "y.npy", np.asarray(arrays["labels"], np.int32))
    np.save(directory / "scaled_probs.npy", np.asarray(prior.scaled_probs, np.float32))
    np.save(directory / "log_normalizer.npy", np.asarray(prior.log_normalizer, np.float32))
    np.save(directory / "log_weights.npy", np.asarray(prior.log_weights, np.float32))
    for i, layer in enumerate(("0", "1")):
        np.save(
            directory / f"w{i + 1}.npy",
            np.asarray(position[f"student.layers.{layer}.kernel"], np.float32),
        )
        np.save(
            directory / f"b{i + 1}.npy",
            np.asarray(position[f"student.layers.{layer}.bias"], np.float32),
        )
    meta = {
        "batch_size": case.batch_size,
        "prior_power": case.model.prior_power,
        "temperature": case.model.temperature,
        "step_size": STEP_SIZE,
    }
    (directory / "meta.json").write_text(json.dumps(meta))


def make_torch_runner(python: Path, directory: Path, cfg: dict, threads: int):
    def run() -> dict:
        command = [
            str(python),
            str(HERE / "torch_sgld.py"),
            "--data",
            str(directory),
            "--steps",
            str(cfg["torch"]["steps"]),
            "--reps",
            str(cfg["torch"]["reps"]),
            "--threads",
            str(threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"torch_sgld.py failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


class TorchComparison:
    """Sets up the PyTorch runner (or records why it is skipped); ``setup`` is handed to
    ``bench_sgld`` of the reference head, which calls it with the initial weights."""

    def __init__(self, skip: bool, explicit_python: str | None, cfg: dict, threads: int):
        self.note, self.python, self.directory = None, None, None
        self.cfg, self.threads = cfg, threads
        if skip:
            self.note = {"skipped": True, "note": "skipped (--skip torch)"}
            return
        self.python = torch_python(explicit_python)
        if self.python is None:
            self.note = {"skipped": True, "note": INSTALL}
            log(INSTALL)

    def setup_for(self, case: Case, arrays: dict):
        """The ``torch_setup(position)`` callable, or None when skipped."""
        if self.python is None:
            return None
        self.directory = Path(tempfile.mkdtemp(prefix="mtbkd_bench_torch_"))

        def setup(position):
            write_torch_data(case, arrays, self.directory, position)
            return make_torch_runner(self.python, self.directory, self.cfg, self.threads)

        return setup

    def cleanup(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _per_round_ratios(reference: dict, rounds: list) -> list:
    per_round_jax = [
        float(np.median(v))
        for v in np.array_split(reference["sgld_steps_per_s"]["values"], max(1, len(rounds)))
    ]
    return [
        j / float(np.median(r["sgld_steps_per_s"]))
        for j, r in zip(per_round_jax, rounds, strict=True)
    ]


def torch_summary(reference: dict, threads: int) -> dict:
    rounds = reference.pop("torch_rounds", [])
    if not rounds:
        return {"skipped": True}
    sgld = [v for r in rounds for v in r["sgld_steps_per_s"]]
    grad = [v for r in rounds for v in r["grad_steps_per_s"]]
    ours = reference["sgld_steps_per_s"]["median"]
    ours_raw = reference["raw_gradient_steps_per_s"]["median"]
    return {
        "skipped": False,
        "torch_version": rounds[0]["torch_version"],
        "threads": rounds[0]["threads"],
        "jax_threads": threads,
        "finite": all(r["finite"] for r in rounds),
        "torch_sgld_steps_per_s": summary(sgld),
        "torch_gradient_steps_per_s": summary(grad),
        "ours_vs_torch_sgld": ours / float(np.median(sgld)),
        "ours_vs_torch_sgld_per_round": _per_round_ratios(reference, rounds),
        "ours_raw_vs_torch_raw_gradient": ours_raw / float(np.median(grad)),
        "ours_4_chains_draws_vs_torch_1_chain": (
            reference["chains"]["steps_per_s_all_chains"] / float(np.median(sgld))
            if reference.get("chains")
            else None
        ),
    }
