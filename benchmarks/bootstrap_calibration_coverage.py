"""How well the paired bootstrap's interval covers a calibration-error difference.

Two checks, each over ``--sims`` simulated test sets of ``--size`` examples, for the metrics
that are not means over examples (ECE, adaptive ECE, the debiased L2 calibration error):

- ``oracle``: a calibrated binary model (``q ~ U(0.5, 1)``, the label drawn from ``q``) against
  a one-hot oracle. Both are calibrated: the true difference is 0.
- ``population``: two tempered predictors of ``tests/test_comparison.py``'s population
  (200,000 examples); the truth is the difference on the whole population.

For each, the share of test sets whose 95% interval covers the truth, for the percentile
interval (``mtbkd_jax.comparison.paired_bootstrap``'s), the interval of the resamples centred
on the estimate, and the basic (reflected) interval. Command::

    .venv/bin/python benchmarks/bootstrap_calibration_coverage.py --sims 60 --size 1000
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from mtbkd_jax.comparison import METRICS, paired_bootstrap


def _tempered(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def _population(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (size, 3))
    truth = _tempered(logits, 1.3)
    labels = (truth.cumsum(-1) < rng.random((size, 1))).sum(-1)
    return _tempered(logits, 1.0), _tempered(logits, 1.6), labels


def _resampled(metric, a, b, y, resamples, seed) -> np.ndarray:
    """The differences on the resamples ``paired_bootstrap`` draws (the same indices: one
    generator, rows of ``len(y)`` draws), each scored in full."""
    score = METRICS[metric]
    index = np.random.default_rng(seed).integers(0, len(y), size=(resamples, len(y)))
    return np.array([score(a[i], y[i]) - score(b[i], y[i]) for i in index])


def _covers(metric, a, b, y, truth, resamples, seed) -> dict[str, bool]:
    found = paired_bootstrap(a, b, y, metric, num_resamples=resamples, seed=seed)
    estimate, low, high = found.estimate, found.low, found.high
    resampled = _resampled(metric, a, b, y, resamples, seed)
    assert np.allclose(np.quantile(resampled, [0.025, 0.975]), [low, high], atol=1e-12)
    centred = resampled - resampled.mean() + estimate
    c_low, c_high = np.quantile(centred, [0.025, 0.975])
    return {
        "percentile": bool(low <= truth <= high),
        "centred": bool(c_low <= truth <= c_high),
        "basic": bool(2 * estimate - high <= truth <= 2 * estimate - low),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=60)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    metrics = ("ece", "adaptive_ece", "debiased_l2_ce")
    pop_a, pop_b, pop_y = _population(200_000, 6)
    found: dict[str, dict[str, dict[str, float]]] = {"oracle": {}, "population": {}}
    for metric in metrics:
        score = METRICS[metric]
        truth = score(pop_a, pop_y) - score(pop_b, pop_y)
        tallies = {"oracle": [], "population": []}
        rng = np.random.default_rng(1)
        for k in range(args.sims):
            q = rng.uniform(0.5, 1.0, args.size)
            y = (rng.random(args.size) >= q).astype(int)
            a = np.stack([q, 1 - q], -1)
            tallies["oracle"].append(_covers(metric, a, np.eye(2)[y], y, 0.0, args.resamples, k))
            pick = rng.integers(0, len(pop_y), args.size)
            tallies["population"].append(
                _covers(metric, pop_a[pick], pop_b[pick], pop_y[pick], truth, args.resamples, k)
            )
        for check, rows in tallies.items():
            found[check][metric] = {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
            print(check, metric, found[check][metric], flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "coverage": found}, handle, indent=1)


if __name__ == "__main__":
    main()
