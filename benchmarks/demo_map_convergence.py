"""How far the demo's learned-trust MAP is from converged (``docs/results.md``, the demo).

Fits the demo's learned trust once (as ``mtbkd demo`` does, same keys), then the learned-trust
student by MAP for each ``STEPS:LEARNING_RATE`` given, and prints the loss's relative change
over the last tenth of the steps (``settings["final_loss_change"]``), the final loss and the
test NLL and accuracy. About 1 min for the trust fit, then 3-20 s per MAP on 2 cores.

Usage: ``python benchmarks/demo_map_convergence.py 2000:1e-2 6000:1e-2 6000:3e-3 15000:3e-3``
"""

from __future__ import annotations

import dataclasses
import sys
import warnings

import jax
import numpy as np

from mtbkd_jax.datasets import load_digits_distillation
from mtbkd_jax.demo import DemoConfig
from mtbkd_jax.experiments import trusted
from mtbkd_jax.experiments.fit import fit_map
from mtbkd_jax.experiments.keys import method_keys
from mtbkd_jax.experiments.methods import LEARNED, METHOD_PLANS
from mtbkd_jax.metrics import classification_metrics


def main(settings: list[str]) -> None:
    config = DemoConfig.for_run(smoke=False, seed=0)
    data = load_digits_distillation(config.seed)
    methods = METHOD_PLANS[config.methods](data)
    index = [m.label for m in methods].index(LEARNED)
    method, keys = methods[index], method_keys(config, methods)[index]
    trust = trusted.learned_trust(jax.random.fold_in(keys.map, 1), data, config, method.teachers)
    model = trusted.trusted_model(data, config, method.teachers, trust, config.prior_power)
    print("steps  learning rate  final_loss_change  final loss  test NLL  accuracy")
    for setting in settings:
        steps, rate = setting.split(":")
        fit_config = dataclasses.replace(config, map_steps=int(steps), learning_rate=float(rate))
        with warnings.catch_warnings():  # the figure is printed; the warning would repeat it
            warnings.simplefilter("ignore")
            mode = fit_map(keys.map, data, fit_config, model)
        probs = np.asarray(mode.predict(data.x_test))[0]
        metrics = classification_metrics(probs, data.y_test)
        change, loss = mode.settings["final_loss_change"], float(mode.losses[-1])
        print(
            f"{int(steps):>5}  {float(rate):>13g}  {change:>17.2e}  {loss:>10.1f}"
            f"  {metrics['nll']:>8.4f}  {metrics['accuracy']:>8.4f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["2000:1e-2"])
