"""``mtbkd experiment`` in one of several processes, for ``tests/test_cli_processes.py``.

Usage: ``python cli_processes_script.py NUM_DEVICES OUT_DIR -- MTBKD_ARGS...``. The script
gives this process ``NUM_DEVICES`` CPU devices, registers a tiny experiment ``tiny`` (the
synthetic problem of :meth:`SyntheticConfig.smoke`, 280 labelled inputs; MT-BKD with entropy
weights by MAP and by stratified SGLD, 2 epochs of batch 64, untuned) and runs
``mtbkd experiment tiny --out OUT_DIR MTBKD_ARGS...``; its exit status is the command's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import jax


def main(argv: list[str]) -> int:
    num_devices, out_dir, rest = int(argv[0]), argv[1], argv[3:]
    jax.config.update("jax_num_cpu_devices", num_devices)  # before JAX starts
    from mtbkd_jax.cli import main as mtbkd
    from mtbkd_jax.experiments import EXPERIMENTS, Experiment
    from mtbkd_jax.experiments.methods import MAIN, METHOD_PLANS, Method
    from mtbkd_jax.experiments.synthetic import SyntheticConfig

    METHOD_PLANS["tiny"] = lambda data: [Method(MAIN, data.teachers_prior, posterior=MAIN)]

    @dataclass(frozen=True)
    class TinyConfig(SyntheticConfig):
        @classmethod
        def smoke(cls, seed: int = 0) -> TinyConfig:
            return cls(
                seed=seed,
                cases=(("linear", 2),),
                num_examples=440,
                methods="tiny",
                teacher_rows=False,
                tune=False,
                map_steps=50,
                bayes="sgld",
                sgld_epochs=2,
                sgld_draws_per_epoch=2,
                num_chains=2,
            )

    sys.modules[__name__].TinyConfig = TinyConfig  # importable by the registry's "module:Class"
    EXPERIMENTS["tiny"] = Experiment(
        "tiny",
        "the test's tiny experiment",
        "mtbkd_jax.experiments.synthetic:run_synthetic",
        f"{__name__}:TinyConfig",
    )
    return mtbkd(["experiment", "tiny", "--smoke", "--no-compile-cache", "--out", out_dir, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
