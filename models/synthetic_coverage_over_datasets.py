"""Recipe: the 95% interval coverage of one synthetic case over many simulated data sets.

The coverage of one data set's intervals is a noisy figure: every (example, class) interval of a
test set comes from the same posterior, so when that posterior leans one way (the draw of 1,540
labels moved it) many intervals miss together. A Bayesian model's promise is about the average
over data sets, so this recipe repeats the experiments' learned-trust model (``tau = 1``, the
mixture, learned scales per weight array, ``beta`` as given; the settings the synthetic
experiment chose on validation, ``docs/results.md``) on the case simulated with seeds ``a`` to
``b - 1`` (each seed draws new generator parameters, inputs, labels and teachers), NUTS from the
MAP as in the experiments (2 chains, 400 warm-up steps, 500 draws), and reports each data set's
coverage, accuracy and NLL, then the mean coverage with its standard error and how many data sets
fall inside the 0.92-0.98 band.

``--hidden`` is the student's hidden widths joined by ``x`` (``16``, ``32x32``; empty: no hidden
layer, a multinomial logistic regression, the generator's own family on the linear cases) and
``--activation`` their units (``tanh``, the experiments', or ``relu``).

    .venv/bin/python models/synthetic_coverage_over_datasets.py --case linear_5 \\
        --prior-power 0.0333333333333 --seeds 0:8 --hidden ""
    .venv/bin/python models/synthetic_coverage_over_datasets.py --smoke       # seconds
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import mtbkd_jax as mk
from mtbkd_jax.experiments import ExperimentConfig
from mtbkd_jax.experiments.fit import build_student, fit_map
from mtbkd_jax.experiments.synthetic import synthetic_problem
from mtbkd_jax.experiments.trusted import learned_trust
from mtbkd_jax.metrics import classification_metrics, interval_coverage
from mtbkd_jax.scale_priors import hierarchical_normal_prior
from mtbkd_jax.uncertainty import class_intervals

BAND = (0.92, 0.98)


def parse_seeds(text):
    """``a:b`` -> ``range(a, b)``, refusing an empty or malformed range."""
    first, sep, stop = text.partition(":")
    try:
        seeds = range(int(first), int(stop)) if sep else range(int(first), int(first) + 1)
    except ValueError:
        raise ValueError(f"--seeds must be 'a:b' with integers a < b, got {text!r}") from None
    if len(seeds) == 0:
        raise ValueError(f"--seeds must be 'a:b' with integers a < b, got {text!r}")
    return seeds


def one_data_set(case, seed, args, smoke):
    """The case simulated with ``seed``: its learned-trust posterior's test figures."""
    kind, num_classes = case.rsplit("_", 1)
    data, synthetic = synthetic_problem(
        kind, int(num_classes), num_examples=440 if smoke else 2200, seed=seed
    )
    config = ExperimentConfig(
        seed=seed,  # the student's initial weights
        hidden=tuple(int(h) for h in args.hidden.split("x") if h),
        activation=args.activation,
        trust_calibration="none",
        trust_warmup=20 if smoke else 300,
        trust_draws=20 if smoke else 300,
        map_steps=50 if smoke else 2000,
    )
    keys = jax.random.split(jax.random.key(seed), 3)
    trust = learned_trust(keys[0], data, config, data.teachers_prior, "none", "mixture")
    student = build_student(data, config).with_prior(hierarchical_normal_prior())
    model = mk.MTBKDModel(student, data.teachers_prior, trust=trust,
                          prior_power=args.prior_power, temperature=config.temperature)  # fmt: skip
    kwargs = {"prior_inputs": data.prior_inputs}
    start = fit_map(keys[1], data, config, model).point()
    warmup, draws = (10, 10) if smoke else (400, 500)
    posterior = mk.run_nuts(keys[2], model, data.x_train, data.y_train, num_warmup=warmup,
                            num_draws=draws, num_chains=2, init_params=start,
                            progress_bar=False, model_kwargs=kwargs)  # fmt: skip
    probs = np.asarray(posterior.predict(data.x_test), np.float64)
    flat = probs.reshape(-1, *probs.shape[-2:])
    row = classification_metrics(flat.mean(0), data.y_test)
    intervals = np.asarray(class_intervals(flat, level=0.95))
    row["coverage_95"] = interval_coverage(intervals, synthetic.true_probs_test)
    return row


def summary(coverages):
    """Mean coverage, its standard error over data sets, and how many fall in ``BAND``."""
    values = np.asarray(coverages, np.float64)
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
    inside = int(np.sum((values >= BAND[0]) & (values <= BAND[1])))
    return {"mean": float(values.mean()), "standard_error": float(error), "in_band": inside}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="linear_5", help="KIND_C")
    parser.add_argument("--prior-power", type=float, default=0.0333333333333)
    parser.add_argument("--seeds", default="0:8", help="data-set seeds a:b (b excluded)")
    parser.add_argument("--hidden", default="16", help="hidden widths joined by 'x'")
    parser.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    seeds = parse_seeds("0:2" if args.smoke else args.seeds)
    units = f" {args.activation}" if args.hidden else " (no hidden layer)"
    print(f"{args.case}, beta = {args.prior_power:g}, student {args.hidden or 'linear'}{units}"
          f"\n| data-set seed | accuracy | NLL | 95% coverage | time |\n"
          "| ---: | ---: | ---: | ---: | ---: |")  # fmt: skip
    rows = {}
    for seed in seeds:
        start = time.perf_counter()
        rows[seed] = row = one_data_set(args.case, seed, args, args.smoke)
        print(f"| {seed} | {row['accuracy']:.3f} | {row['nll']:.3f} | {row['coverage_95']:.3f} "
              f"| {time.perf_counter() - start:.0f} s |", flush=True)  # fmt: skip
    result = summary([row["coverage_95"] for row in rows.values()])
    print(f"\nmean coverage {result['mean']:.3f} (standard error {result['standard_error']:.3f}); "
          f"{result['in_band']} of {len(rows)} data sets in {BAND[0]}-{BAND[1]}")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
