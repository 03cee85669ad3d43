"""The digits experiment with ``posterior_tuning`` (DigitsConfig's default since 07ae3b8),
every row but learned trust's: that row's search already judges its posterior, and it takes
most of the experiment's time. The MAP rows and the keys are the full experiment's (the methods
run in the same order; learned trust is the last).

    .venv/bin/python benchmarks/digits_posterior_tuning.py OUT
    .venv/bin/python benchmarks/issue12_standing.py ...   # or read OUT/metrics.json, own_maps.json

The full experiment, learned trust included: ``mtbkd experiment digits --out OUT``.
"""

import sys
from dataclasses import replace

from mtbkd_jax.experiments import methods as plans
from mtbkd_jax.experiments.digits import DigitsConfig, run_digits

plans.METHOD_PLANS["fixed"] = lambda data: [
    m for m in plans.baseline_methods(data) if m.label != "MT-BKD (learned trust)"
]

if __name__ == "__main__":
    config = replace(DigitsConfig(seed=0), methods="fixed")
    assert config.posterior_tuning and config.tune
    run_digits(sys.argv[1], config=config)
