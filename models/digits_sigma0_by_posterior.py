"""Recipe: on digits, NUTS against its own MAP at each base prior scale (sigma0), by method.

The digits experiment's NUTS rows were worse than their MAP rows in NLL and ECE: each row's
sigma0 was chosen by its MAP's validation NLL and its posterior sampled there. This recipe
fits, for one method and each ``sigma0`` given (or ``hier``: the learned per-array scales of
:func:`mtbkd_jax.scale_priors.hierarchical_normal_prior`), the MAP and NUTS from it (the
experiment's budget: 2 chains x 300 draws after 300 warm-up steps), with ``lambda`` and
``beta`` at the values the experiment's MAP search chooses, and prints both fits' validation
and test NLL / ECE: which ``sigma0`` the posterior's own validation NLL would choose, and
whether NUTS is then no worse than its own MAP. (``posterior_tuning`` in the experiments makes
that choice; this recipe shows the whole curve.)

Run it (about 30 s to 3 min per value on 2 cores):

    .venv/bin/python models/digits_sigma0_by_posterior.py --method uniform \\
        --variants map-choice 0.2 0.3 0.5 1 2 4 hier
    .venv/bin/python models/digits_sigma0_by_posterior.py --smoke      # seconds
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import jax
import numpy as np

import mtbkd_jax as mk
from mtbkd_jax.experiments.digits import DigitsConfig, digits_problem
from mtbkd_jax.experiments.fit import build_model, fit_map, fit_posterior, tuned_map
from mtbkd_jax.metrics import classification_metrics, predictive_nll_from_logits
from mtbkd_jax.scale_priors import hierarchical_normal_prior

RULES = {"alone": None, "uniform": "uniform", "entropy": "paper"}


def fits(data, config, method, variant, map_choice):
    """The MAP and NUTS posterior for one variant: ``map-choice`` (the MAP search's sigma0),
    a number (that sigma0) or ``hier`` (learned scales)."""
    teachers = None if RULES[method] is None else data.teachers_prior
    rule = RULES[method] or "paper"
    settings = dict(map_choice.best)
    key = jax.random.key(config.seed)
    if variant == "hier":
        model = build_model(data, config, teachers, rule, settings)
        model = mk.MTBKDModel(
            model.student.with_prior(hierarchical_normal_prior()), teachers,
            concentration=settings["concentration"], prior_power=settings["prior_power"],
            temperature=config.temperature, weight_rule=rule,
        )  # fmt: skip
    else:
        if variant != "map-choice":
            settings["prior_scale"] = float(variant)
        model = build_model(data, config, teachers, rule, settings)
    mode = fit_map(key, data, config, model)
    posterior = fit_posterior(jax.random.key(config.seed + 1), data, config, model, mode)
    return settings, {"map": mode, "nuts": posterior}


def scores(data, fitted):
    out = {}
    for name, fit in fitted.items():
        logits = np.asarray(fit.predict_logits(data.x_validation))
        test = np.asarray(fit.predict(data.x_test), np.float64).mean(0)
        metrics = classification_metrics(test, data.y_test)
        out[name] = {
            "validation_nll": predictive_nll_from_logits(logits, np.asarray(data.y_validation)),
            **{k: float(metrics[k]) for k in ("accuracy", "nll", "ece")},
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(RULES), default="uniform")
    parser.add_argument("--variants", nargs="+", default=["map-choice", "0.5", "hier"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    config = DigitsConfig.smoke(args.seed) if args.smoke else DigitsConfig(seed=args.seed)
    variants = ["map-choice", "0.5", "hier"] if args.smoke else args.variants
    config = replace(config, posterior_tuning=False)
    data = digits_problem(args.seed)
    map_choice = tuned_map(jax.random.key(args.seed), data, config, None if
                           RULES[args.method] is None else data.teachers_prior,
                           RULES[args.method] or "paper")[2]  # fmt: skip
    print(f"{args.method}: the MAP search chose {dict(map_choice.best)}")
    rows = {}
    print("variant     sigma0  | MAP: val NLL  test NLL  ECE   | NUTS: val NLL  test NLL  ECE")
    for variant in variants:
        start = time.perf_counter()
        settings, fitted = fits(data, config, args.method, variant, map_choice)
        found = scores(data, fitted)
        m, n = found["map"], found["nuts"]
        sigma = "learned" if variant == "hier" else f"{settings['prior_scale']:g}"
        print(f"{variant:<11} {sigma:<7} | {m['validation_nll']:.4f}  {m['nll']:.4f}  "
              f"{m['ece']:.3f} | {n['validation_nll']:.4f}  {n['nll']:.4f}  {n['ece']:.3f}"
              f"  ({time.perf_counter() - start:.0f} s)")  # fmt: skip
        print(json.dumps({"variant": variant, **found}))
        rows.update({f"{variant} {fit}": metrics for fit, metrics in found.items()})
    return rows


if __name__ == "__main__":
    main()
