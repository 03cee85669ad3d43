"""How far the demo's learned-trust MAP is from converged (``docs/results.md``, the demo).

Fits the demo's learned trust once (as ``mtbkd demo`` does, same keys), then the learned-trust
student by MAP for each ``STEPS:LEARNING_RATE[:POLISH]`` given (``POLISH``: at most that many
L-BFGS iterations after the Adam steps, ``run_map(polish_steps=)``), from the demo's MAP key and
from ``--starts K`` keys in all (the demo's, then ``fold_in(key, 1)``, ...), and prints the
loss's final change (``settings["final_loss_change"]``; of the polish where there is one), the
L-BFGS iterations run, the final loss and the test NLL, accuracy and ECE. About 1 min for the
trust fit, then 3-20 s per MAP on 2 cores.

With ``--digits`` the same for the digits experiment's learned-trust row (``mtbkd experiment
digits``: its data and config, seed 0) at the setting its search chose at 8e78e98 (τ per
teacher, the product, β = 1), the trust fitted from that row's keys for that setting alone;
its MAPs take 20-60 s each.

Usage: ``python benchmarks/demo_map_convergence.py [--digits] [--starts K] 2000:1e-2
6000:1e-2 2000:1e-2:3000``
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
from mtbkd_jax.experiments.digits import DigitsConfig, digits_problem
from mtbkd_jax.experiments.fit import fit_map
from mtbkd_jax.experiments.keys import method_keys
from mtbkd_jax.experiments.methods import LEARNED, METHOD_PLANS
from mtbkd_jax.metrics import classification_metrics


def main(settings: list[str], starts: int = 1, digits: bool = False) -> None:
    config = DigitsConfig() if digits else DemoConfig.for_run(smoke=False, seed=0)
    data = digits_problem(0) if digits else load_digits_distillation(config.seed)
    methods = METHOD_PLANS[config.methods](data)
    index = [m.label for m in methods].index(LEARNED)
    method, keys = methods[index], method_keys(config, methods)[index]
    chosen = ("teacher", "product") if digits else ()  # the search's choice at 8e78e98
    trust_key = jax.random.fold_in(keys.map, 1)
    trust = trusted.learned_trust(trust_key, data, config, method.teachers, *chosen)
    beta = 1.0 if digits else config.prior_power
    model = trusted.trusted_model(data, config, method.teachers, trust, beta)
    print(
        "steps  learning rate  start  final_loss_change  L-BFGS  final loss  test NLL"
        "  accuracy  ECE"
    )
    for setting in settings:
        steps, rate, *polish = setting.split(":")
        fit_config = dataclasses.replace(
            config,
            map_steps=int(steps),
            learning_rate=float(rate),
            map_polish_steps=int(polish[0]) if polish else 0,
        )
        for start in range(starts):
            key = keys.map if start == 0 else jax.random.fold_in(keys.map, start)
            with warnings.catch_warnings():  # the figure is printed; the warning would repeat it
                warnings.simplefilter("ignore")
                mode = fit_map(key, data, fit_config, model)
            probs = np.asarray(mode.predict(data.x_test))[0]
            metrics = classification_metrics(probs, data.y_test)
            change, loss = mode.settings["final_loss_change"], float(mode.losses[-1])
            lbfgs = mode.settings.get("polish_steps_run", 0)
            print(
                f"{int(steps):>5}  {float(rate):>13g}  {start:>5}  {change:>17.2e}  {lbfgs:>6}"
                f"  {loss:>10.1f}  {metrics['nll']:>8.4f}  {metrics['accuracy']:>8.4f}"
                f"  {metrics['ece']:.4f}"
            )


if __name__ == "__main__":
    arguments = sys.argv[1:]
    digits = "--digits" in arguments
    arguments = [a for a in arguments if a != "--digits"]
    starts = 1
    if arguments[:1] == ["--starts"]:
        starts, arguments = int(arguments[1]), arguments[2:]
    main(arguments or ["2000:1e-2"], starts, digits)
