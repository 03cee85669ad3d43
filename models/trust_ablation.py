"""Recipe: which part of learned trust helps or hurts, one part at a time (synthetic case, MAP).

On the synthetic cases (teachers that are each an expert of one sector of the plane) the
learned-trust row loses to the paper's fixed model. This recipe takes the trust apart. Every
variant uses the same student (an MLP with a Normal(0, sigma0^2) prior, or with
``--base-prior hierarchical`` the learned per-layer scales of the learned-trust row) and the
same MAP fit, at each beta given; only the teacher prior changes:

* ``no teachers``: the student alone (the limit beta -> 0 of every variant);
* ``paper``: one ``lambda`` for all teachers, entropy weights, ``tau = 1``;
* ``learned trust``: ``fit_teacher_trust``'s posterior median (tau, lambda per consensus class,
  learned weight link), as the experiments' learned-trust row;
* ``learned trust, confidence``: the same with ``calibration="confidence"`` (each teacher's
  temperature also moves with its own entropy on the input);
* ``learned lambda and weights, tau = 1``: the learned trust without its temperatures;
* ``learned weights, tau = 1, lambda fixed``: only the learned weight link.

First it prints each teacher's temperature fitted alone on the labelled inputs of its own
sector and on the others (the synthetic data know each input's expert).

Validation and test NLL of the MAP are printed for each (variant, beta); nothing is chosen
here, so the test figures are a diagnosis, not a result to pick from.

Run it (the paper row's tuned sigma0 and lambda from docs/results.md):

    .venv/bin/python models/trust_ablation.py --case linear_5 --sigma0 1 --concentration 3
    .venv/bin/python models/trust_ablation.py --smoke      # seconds
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.experiments.synthetic import synthetic_problem
from mtbkd_jax.metrics import classification_metrics, negative_log_likelihood
from mtbkd_jax.scale_priors import hierarchical_normal_prior
from mtbkd_jax.trust import TrustHyperprior, fit_teacher_trust


def variants(bank, labels, concentration, warmup, draws):
    """``{name: MTBKDModel options}`` of the teacher prior's variants."""
    labelled = bank.take(np.arange(len(labels)))

    def trust(calibration):
        hyperprior = TrustHyperprior(concentration=10.0, calibration=calibration)
        return fit_teacher_trust(
            jax.random.key(1),
            labelled,
            labels,
            hyperprior=hyperprior,
            num_warmup=warmup,
            num_draws=draws,
        )

    learned, confident = trust("teacher"), trust("confidence")
    for name, fitted in (("teacher", learned), ("confidence", confident)):
        for row in fitted.summary():
            numbers = {
                k: np.round(v, 2).tolist()
                for k, v in row.items()
                if k != "teacher" and v is not None and not isinstance(v, bool)
            }
            print(name, row["teacher"], numbers)
    point = learned.point()
    ones = jnp.ones(bank.num_teachers)
    fixed_concentration = jnp.full((bank.num_teachers, 1), float(concentration))
    return {
        "no teachers": None,
        "paper": {"concentration": concentration},
        "learned trust": {"trust": learned},
        "learned trust, confidence": {"trust": confident},
        "learned lambda and weights, tau = 1": {
            "trust": point._replace(temperature=ones, temperature_slope=None),
            "weight_rule": "learned",
        },
        "learned weights, tau = 1, lambda fixed": {
            "trust": point._replace(
                temperature=ones, temperature_slope=None, concentration=fixed_concentration
            ),
            "weight_rule": "learned",
        },
    }


def sector_temperatures(bank, labels, expert, warmup, draws):
    """Each teacher's temperature fitted alone (one ``tau``, one ``lambda``) on the labelled
    inputs of its own sector and on the others: ``{teacher: (inside, outside)}`` medians."""
    hyperprior = TrustHyperprior(per_class=False, weight_rule="uniform")
    out = {}
    for m, name in enumerate(bank.names):
        medians = []
        for where in (expert == m, expert != m):
            rows = np.flatnonzero(where)
            fitted = fit_teacher_trust(
                jax.random.key(3),
                bank.select([m]).take(rows),
                labels[rows],
                hyperprior=hyperprior,
                num_warmup=warmup,
                num_draws=draws,
            )
            medians.append(round(fitted.summary()[0]["temperature"], 2))
        out[name] = tuple(medians)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="linear_5", help="KIND_C, e.g. nonlinear_5")
    parser.add_argument("--sigma0", type=float, default=1.0)
    parser.add_argument("--concentration", type=float, default=3.0, help="the paper row's")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument(
        "--base-prior",
        choices=("normal", "hierarchical"),
        default="normal",
        help="the student's weight prior: Normal(0, sigma0^2) or learned per-layer scales",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    kind, num_classes = args.case.rsplit("_", 1)
    size, steps, warmup, draws = (440, 50, 20, 20) if args.smoke else (2200, 2000, 300, 300)
    betas = args.betas[:1] if args.smoke else args.betas
    data, synthetic = synthetic_problem(kind, int(num_classes), num_examples=size, seed=args.seed)
    bank = data.teachers_prior
    labelled = bank.take(np.arange(len(data.y_train)))
    sectors = sector_temperatures(labelled, data.y_train, synthetic.expert_train, warmup, draws)
    print("tau fitted alone (inside its sector, outside it):", sectors)
    options = variants(bank, data.y_train, args.concentration, warmup, draws)
    rows = {}
    print("| variant | beta | validation NLL | test NLL | test accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, option in options.items():
        for beta in [None] if option is None else betas:
            network = mk.MLP(data.num_features, data.num_classes, hidden=(16,), rngs=nnx.Rngs(0))
            base = (
                mk.normal_prior(args.sigma0)
                if args.base_prior == "normal"
                else hierarchical_normal_prior()
            )
            student = mk.Student(network).with_prior(base)
            teachers = None if option is None else bank
            model = mk.MTBKDModel(student, teachers, prior_power=beta or 0.1, **(option or {}))
            mode = mk.run_map(
                jax.random.key(2),
                model,
                data.x_train,
                data.y_train,
                num_steps=steps,
                progress_bar=False,
            )
            validation = np.asarray(mode.predict(data.x_validation), np.float64)[0]
            test = np.asarray(mode.predict(data.x_test), np.float64)[0]
            label = name if beta is None else f"{name} beta={beta:g}"
            rows[label] = classification_metrics(test, data.y_test)
            print(
                f"| {name} | {'–' if beta is None else f'{beta:g}'} "
                f"| {negative_log_likelihood(validation, data.y_validation):.3f} "
                f"| {rows[label]['nll']:.3f} | {rows[label]['accuracy']:.3f} |",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
