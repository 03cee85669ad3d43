"""Recipe: teachers of different expertise on data with known class probabilities, and the
95% credible intervals checked against the truth.

Three teachers, each expert on one sector of the plane, inform an MLP student through the
mixture prior; the posterior (MAP warm start, then NUTS) gives per-class 95% intervals, and
because the generator knows ``p(y | x)`` their coverage can be measured, overall and by the size
of the true probability. Entropy (paper) and uniform mixing weights are compared; with three
teachers the paper's rule is close to uniform (METHOD §3), so at these settings the two rows
differ little. Run it:

    .venv/bin/python models/synthetic_coverage.py                              # ~4 min on 2 CPUs
    .venv/bin/python models/synthetic_coverage.py --kind linear --classes 2
    .venv/bin/python models/synthetic_coverage.py --smoke                      # seconds

The full experiment with every baseline and tuning is ``mtbkd experiment synthetic``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.datasets import make_synthetic
from mtbkd_jax.metrics import (
    classification_metrics,
    interval_coverage,
    interval_coverage_by_probability,
)
from mtbkd_jax.uncertainty import class_intervals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["linear", "nonlinear"], default="nonlinear")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)

    data = make_synthetic(
        args.kind, args.classes, num_examples=440 if args.smoke else 2200, seed=args.seed
    )
    print(data, f"Bayes accuracy on test {data.bayes_accuracy:.3f}")
    steps, warmup, samples = (100, 10, 10) if args.smoke else (2000, 400, 500)
    rows = {}
    for weights in ("paper", "uniform"):
        student = mk.Student(
            mk.MLP(data.x_train.shape[1], args.classes, hidden=(16,), rngs=nnx.Rngs(args.seed))
        )
        model = mk.MTBKDModel(
            student, data.teachers_train, concentration=10.0, prior_power=0.1, weight_rule=weights
        )
        key_map, key_nuts = jax.random.split(jax.random.key(args.seed))
        mode = mk.run_map(
            key_map, model, data.x_train, data.y_train, num_steps=steps, progress_bar=False
        )
        posterior = mk.run_nuts(
            key_nuts,
            model,
            data.x_train,
            data.y_train,
            num_warmup=warmup,
            num_draws=samples,
            num_chains=1 if args.smoke else 2,
            init_params={k: v[0, 0] for k, v in mode.draws.items()},
            progress_bar=not args.smoke,
        )
        probs = np.asarray(posterior.predict(data.x_test))  # (draws, N, C)
        intervals = class_intervals(probs, level=0.95)  # (N, C, 2)
        name = f"MT-BKD ({'entropy' if weights == 'paper' else weights} weights)"
        metrics = classification_metrics(probs.mean(0), data.y_test)
        metrics["coverage_95"] = interval_coverage(intervals, data.true_probs_test)
        rows[name] = metrics
        print(f"{name}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        for row in interval_coverage_by_probability(intervals, data.true_probs_test):
            print(
                f"    true p in [{row['low']:.2f}, {row['high']:.2f}]: coverage "
                f"{row['coverage']:.2f} over {row['count']} (example, class) pairs; truth "
                f"below / above the interval {row['below']:.2f} / {row['above']:.2f}"
            )
    return rows


if __name__ == "__main__":
    main()
