"""Recipe: does SG-MCMC explore as NUTS does? 95% interval coverage on a synthetic case.

One synthetic case (known class probabilities), one model: MT-BKD with the paper's entropy
weights at the settings its tuned row uses in docs/results.md (``--sigma0``, ``--concentration``,
``--prior-power``). NUTS gives the reference posterior; SG-MCMC variants are judged by how close
their 95% class-interval coverage comes to NUTS's on the same model (issue 12: within 0.05),
and by how well their chains agree in *function space* (split R-hat of the predictive
probabilities at the test inputs; weight-space R-hat of an MLP also counts its symmetries):

* ``nuts``: 2 chains from the MAP, 400 warm-up steps and 500 draws each;
* ``sgld (MAP, 80 epochs)``: the experiments' SGLD: 2 chains from the MAP, step size ``"auto"``;
* ``sgld (4 MAPs, 320 epochs)``: 4 chains, each from a MAP of its own random start, 80 of the
  320 epochs burn-in;
* ``psgld (4 MAPs, 320 epochs)``: the same with preconditioned SGLD.

Run it (about 15 min on 2 CPUs):

    .venv/bin/python models/synthetic_sgmcmc_coverage.py --case nonlinear_2 --sigma0 3 \\
        --concentration 10 --prior-power 0.1
    .venv/bin/python models/synthetic_sgmcmc_coverage.py --smoke      # seconds
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx
from numpyro.diagnostics import split_gelman_rubin

import mtbkd_jax as mk
from mtbkd_jax.datasets import make_synthetic
from mtbkd_jax.metrics import classification_metrics, interval_coverage
from mtbkd_jax.uncertainty import class_intervals


def function_space_rhat(probs: np.ndarray) -> tuple[float, float]:
    """(max, median) split R-hat of the predictive probabilities, (chains, draws, N, C)."""
    rhat = np.asarray(split_gelman_rubin(probs))
    rhat = rhat[np.isfinite(rhat)]
    return float(rhat.max()), float(np.median(rhat))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="nonlinear_2", help="KIND_C")
    parser.add_argument("--sigma0", type=float, default=3.0)
    parser.add_argument("--concentration", type=float, default=10.0)
    parser.add_argument("--prior-power", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    kind, num_classes = args.case.rsplit("_", 1)
    data = make_synthetic(
        kind, int(num_classes), num_examples=440 if args.smoke else 2200, seed=args.seed
    )
    steps, warmup, draws, epochs = (
        (50, 10, 10, (2, 4)) if args.smoke else (2000, 400, 500, (80, 320))
    )
    student = mk.Student(
        mk.MLP(data.x_train.shape[1], data.num_classes, hidden=(16,), rngs=nnx.Rngs(args.seed))
    ).with_prior(mk.normal_prior(args.sigma0))
    model = mk.MTBKDModel(
        student,
        data.teachers_train,
        concentration=args.concentration,
        prior_power=args.prior_power,
        weight_rule="paper",
    )
    keys = jax.random.split(jax.random.key(args.seed), 8)

    def fit_map(key):
        mode = mk.run_map(
            key, model, data.x_train, data.y_train, num_steps=steps, progress_bar=False
        )
        return {k: v[0, 0] for k, v in mode.draws.items()}

    maps = [fit_map(keys[0])] + [fit_map(k) for k in keys[1:4]]
    runs = {
        "nuts": lambda: mk.run_nuts(
            keys[4],
            model,
            data.x_train,
            data.y_train,
            num_warmup=warmup,
            num_draws=draws,
            num_chains=2,
            init_params=maps[0],
            progress_bar=False,
        ),
    }
    long_burnin = epochs[1] // 4
    for name, sampler, chains, starts, burnin, num_epochs in (
        ("sgld (MAP, 80 epochs)", "sgld", 2, maps[0], 0, epochs[0]),
        ("sgld (4 MAPs, 320 epochs)", "sgld", 4, maps, long_burnin, epochs[1] - long_burnin),
        ("psgld (4 MAPs, 320 epochs)", "psgld", 4, maps, long_burnin, epochs[1] - long_burnin),
    ):
        options = {
            "sampler": sampler,
            "num_chains": chains,
            "init_params": starts,
            "num_burnin_epochs": burnin,
            "num_epochs": num_epochs,
        }
        runs[name] = lambda options=options: mk.run_sgmcmc(
            keys[5],
            model,
            data.x_train,
            data.y_train,
            batch_size=64,
            step_size="auto",
            draws_per_epoch=2 if args.smoke else 6,
            progress_bar=False,
            **options,
        )
    rows = {}
    print("| posterior | accuracy | NLL | 95% coverage | R-hat max | R-hat median | time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, run in runs.items():
        start = time.perf_counter()
        posterior = run()
        seconds = time.perf_counter() - start
        probs = np.asarray(posterior.predict(data.x_test), np.float64)  # (chains, draws, N, C)
        flat = probs.reshape(-1, *probs.shape[-2:])
        metrics = classification_metrics(flat.mean(0), data.y_test)
        metrics["coverage_95"] = interval_coverage(
            class_intervals(flat, level=0.95), data.true_probs_test
        )
        metrics["rhat_max"], metrics["rhat_median"] = function_space_rhat(probs)
        rows[name] = metrics
        print(
            f"| {name} | {metrics['accuracy']:.3f} | {metrics['nll']:.3f} "
            f"| {metrics['coverage_95']:.3f} | {metrics['rhat_max']:.2f} "
            f"| {metrics['rhat_median']:.2f} | {seconds:.0f} s |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
