"""Recipe: where SG-MCMC's draws of a learned-trust student sit, against NUTS's.

One synthetic case (known class probabilities), one model: MT-BKD with learned trust (``tau = 1``,
the mixture, the learned-scale base prior) at the ``beta`` its experiment chose
(``docs/results.md``). NUTS gives the reference posterior (2 chains from the MAP, 400 warm-up
steps, 500 draws each); each SG-MCMC run has 4 chains, each from a MAP of its own random start,
a quarter of its epochs burn-in, and a step size ``"auto"`` times a factor.

Per run: accuracy, NLL, the 95% class-interval coverage (overall, for true probabilities below
0.01 and at least 0.9; NaN where none), the mean interval width, the mean over draws of the
weights' norm, and the largest split R-hat of a weight array's norm (``exploration_report``'s
``max_norm_rhat``: the hidden units' permutations and sign flips leave it unchanged, so it is
near 1 only when the chains agree on the scale of every layer).

``--runs`` is a comma-separated list of ``nuts``, ``svi`` (a mean-field Gaussian guide,
``run_svi(guide="normal")``, 5,000 full-batch Adam steps, 500 draws) or ``SAMPLER:FACTOR:EPOCHS``
(``FACTOR`` times the SGLD step chosen by ``choose_step_size`` from the MAP with minibatches of
64, as in the experiments; ``0``: the sampler's own ``"auto"`` at the run's batch size), the
latter ending in ``@nuts`` to start its 4 chains at draws of the last NUTS run before it (the
last and the middle draw of each NUTS chain: in the posterior's typical set, not at a MAP) or in
``@svi`` to start them at 4 independent draws of the last SVI run before it (what a user without
NUTS can afford). Where ``--runs`` has an SG-MCMC run, the recipe also prints, after a NUTS run,
the step ``choose_step_size`` picks from its last draw (the pilots run only then). A second
table gives each weight array's norm (mean and standard deviation over the draws).

``--noncentred`` runs every SG-MCMC run on the model with its learned scales non-centred
(``mtbkd_jax.noncentred``: each weight array as ``sigma^2`` and ``z`` with ``w = sigma z``, the
same posterior of the weights), its chains started at the same points in those coordinates
(``noncentred_point``); the figures are of the weights ``w``. NUTS and SVI stay centred.

``--batch-size`` is the minibatch of every SG-MCMC run (1,400 = full batch), ``--draws-per-epoch``
the draws it keeps per epoch (at most its steps per epoch), ``--base-prior`` the student's prior
on its weights: ``learned`` (the row's learned scale per weight array, the default),
``learned:GROUPS`` (learned scales shared by ``GROUPS``, ``layer`` or ``network``:
``hierarchical_normal_prior``'s ``groups``) or a number ``s`` for a fixed ``Normal(0, s^2)`` on
every weight (the paper's base prior), everything else unchanged. ``--hidden`` is the student's
hidden widths joined by ``x`` (default ``16``, the experiments'; empty: no hidden layer) and
``--activation`` their units (``tanh``, the experiments', or ``relu``).

    .venv/bin/python models/synthetic_trust_sgmcmc.py --case linear_5 --prior-power 0.0333333 \\
        --runs nuts,sgld:1:240,sgld:1:4000,sgld:0.25:16000
    .venv/bin/python models/synthetic_trust_sgmcmc.py --smoke      # seconds
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import mtbkd_jax as mk
from mtbkd_jax.diagnostics import exploration_report
from mtbkd_jax.experiments import ExperimentConfig
from mtbkd_jax.experiments.fit import build_student, fit_map
from mtbkd_jax.experiments.synthetic import synthetic_problem
from mtbkd_jax.experiments.trusted import learned_trust
from mtbkd_jax.infer import choose_step_size
from mtbkd_jax.metrics import (
    classification_metrics,
    interval_coverage,
    interval_coverage_by_probability,
)
from mtbkd_jax.noncentred import centred_posterior, noncentred, noncentred_point
from mtbkd_jax.priors import normal_prior
from mtbkd_jax.scale_priors import hierarchical_normal_prior
from mtbkd_jax.uncertainty import class_intervals


def run_one(
    spec,
    model,
    data,
    starts,
    keys,
    eta,
    epochs_scale,
    batch_size,
    draws_per_epoch,
    kwargs,
    centred=True,
):
    """The posterior of one ``--runs`` entry (SG-MCMC non-centred unless ``centred``)."""
    if spec == "svi":
        return mk.run_svi(keys[2], model, data.x_train, data.y_train, guide="normal",
                          num_steps=50 if epochs_scale < 1 else 5000, num_draws=500,
                          progress_bar=False, model_kwargs=kwargs)  # fmt: skip
    if spec == "nuts":
        warmup, draws = (10, 10) if epochs_scale < 1 else (400, 500)
        return mk.run_nuts(keys[0], model, data.x_train, data.y_train, num_warmup=warmup,
                           num_draws=draws, num_chains=2, init_params=starts[0],
                           progress_bar=False, model_kwargs=kwargs)  # fmt: skip
    sampler, factor, epochs = spec.split(":")
    epochs = max(2, int(int(epochs) * epochs_scale))
    if not centred:
        starts = [noncentred_point(model, s, data.x_train, data.y_train, **kwargs) for s in starts]
        model = noncentred(model)
    posterior = mk.run_sgmcmc(
        keys[1], model, data.x_train, data.y_train, sampler=sampler, batch_size=batch_size,
        num_epochs=epochs - epochs // 4, num_burnin_epochs=epochs // 4,
        step_size="auto" if float(factor) == 0 else eta * float(factor),
        draws_per_epoch=min(draws_per_epoch, len(data.y_train) // batch_size),
        num_chains=len(starts),
        init_params=starts, progress_bar=False, model_kwargs=kwargs,
    )  # fmt: skip
    return centred_posterior(posterior)


def describe(posterior, data, truth):
    """The row's figures (module docstring)."""
    probs = np.asarray(posterior.predict(data.x_test), np.float64)
    flat = probs.reshape(-1, *probs.shape[-2:])
    intervals = np.asarray(class_intervals(flat, level=0.95))
    row = classification_metrics(flat.mean(0), data.y_test)
    row["coverage_95"] = interval_coverage(intervals, truth)
    bins = {
        b["low"]: b["coverage"]
        for b in interval_coverage_by_probability(intervals, truth, edges=(0.0, 0.01, 0.9, 1.0))
    }
    row["coverage_low"], row["coverage_high"] = (bins.get(low, np.nan) for low in (0.0, 0.9))
    row["width"] = float(np.mean(intervals[..., 1] - intervals[..., 0]))
    squares = sum((np.asarray(v, np.float64) ** 2).reshape(*v.shape[:2], -1).sum(-1)
                  for v in posterior.draws.values())  # fmt: skip
    row["weight_norm"] = float(np.sqrt(squares).mean())
    report = exploration_report(posterior)
    row["max_norm_rhat"] = report["max_norm_rhat"]
    row["array_norms"] = {
        name.removeprefix("student."): (mean, report["norm_sd"][name])
        for name, mean in report["norm_mean"].items()
    }
    return row


def base_prior(spec):
    """``--base-prior``: ``learned``, ``learned:GROUPS`` or a fixed scale."""
    kind, _, groups = spec.partition(":")
    if kind == "learned":
        return hierarchical_normal_prior(groups=groups or "parameter")
    return normal_prior(float(spec))


def typical_starts(posterior):
    """Four draws: of a 2-chain posterior (NUTS) each chain's last draw and its middle one; of
    a 1-chain one (SVI's independent draws) its first four."""
    if posterior.num_chains == 1:
        return [posterior.point(draw=d) for d in range(4)]
    return [posterior.point(chain=c % 2, draw=(-1, posterior.num_draws // 2)[c // 2])
            for c in range(4)]  # fmt: skip


def pilot(key, model, data, start):
    """``choose_step_size`` from ``start`` with the experiments' minibatches of 64."""
    kwargs = {"prior_inputs": data.prior_inputs}
    return choose_step_size(key, model, data.x_train, data.y_train, batch_size=64,
                            init_params=start, model_kwargs=kwargs)  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="linear_5", help="KIND_C")
    parser.add_argument("--prior-power", type=float, default=0.0333333333333)
    parser.add_argument("--runs", default="nuts,sgld:1:240")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--draws-per-epoch", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--base-prior", default="learned", help="learned[:GROUPS] or a scale")
    parser.add_argument("--noncentred", action="store_true", help="SG-MCMC non-centred")
    parser.add_argument("--hidden", default="16", help="hidden widths joined by 'x'")
    parser.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    specs = args.runs.split(",")
    for i, spec in enumerate(specs):
        origin = spec.partition("@")[2]
        if origin not in ("", "nuts", "svi"):
            raise ValueError(f"--runs: {spec!r} must start '@nuts', '@svi' or at the MAPs")
        if origin and origin not in specs[:i]:
            raise ValueError(f"--runs: {spec!r} starts at {origin} draws, but no {origin} "
                             "run precedes it")  # fmt: skip
    kind, num_classes = args.case.rsplit("_", 1)
    data, synthetic = synthetic_problem(
        kind, int(num_classes), num_examples=440 if args.smoke else 2200, seed=0
    )
    config = ExperimentConfig(
        trust_calibration="none",
        trust_warmup=20 if args.smoke else 300,
        trust_draws=20 if args.smoke else 300,
        map_steps=50 if args.smoke else 2000,
        hidden=tuple(int(h) for h in args.hidden.split("x") if h),
        activation=args.activation,
    )
    keys = jax.random.split(jax.random.key(args.seed), 8)
    trust = learned_trust(keys[0], data, config, data.teachers_prior, "none", "mixture")
    student = build_student(data, config).with_prior(base_prior(args.base_prior))
    model = mk.MTBKDModel(student, data.teachers_prior, trust=trust, prior_power=args.prior_power,
                          temperature=config.temperature)  # fmt: skip
    kwargs = {"prior_inputs": data.prior_inputs}

    starts = [fit_map(k, data, config, model).point() for k in keys[1:5]]
    sgmcmc = any(spec.partition("@")[0] not in ("nuts", "svi") for spec in specs)
    print(f"{args.case}, beta = {args.prior_power:g}, student {student.module.architecture}")
    eta = None
    if sgmcmc:  # the pilots only where an SG-MCMC run takes their step
        choice = pilot(keys[5], model, data, starts[0])
        eta = choice.step_size
        print(f"SGLD step chosen from the MAP {eta:.3g}, minibatch noise ratio there "
              f"{choice.noise_ratio:.3g}")  # fmt: skip
    print("| run | accuracy | NLL | 95% coverage | p < 0.01 | p >= 0.9 | width | weight norm "
          "| max norm R-hat | time |\n| --- |" + " ---: |" * 9)  # fmt: skip
    rows, reference = {}, {}
    for spec in specs:
        start = time.perf_counter()
        sampler_spec, _, origin = spec.partition("@")
        posterior = run_one(sampler_spec, model, data,
                            typical_starts(reference[origin]) if origin else starts,
                            keys[6:], eta, 0.01 if args.smoke else 1, args.batch_size,
                            args.draws_per_epoch, kwargs, not args.noncentred)  # fmt: skip
        rows[spec] = row = describe(posterior, data, synthetic.true_probs_test)
        if spec in ("nuts", "svi"):
            reference[spec] = posterior
        if spec == "nuts" and sgmcmc:
            row["step_at_last_draw"] = pilot(keys[5], model, data, typical_starts(posterior)[0])
        print(
            f"| {spec} | {row['accuracy']:.3f} | {row['nll']:.3f} | {row['coverage_95']:.3f} "
            f"| {row['coverage_low']:.2f} | {row['coverage_high']:.2f} | {row['width']:.3f} "
            f"| {row['weight_norm']:.1f} | {row['max_norm_rhat']:.2f} "
            f"| {time.perf_counter() - start:.0f} s |",
            flush=True,
        )
    for spec, row in rows.items():
        if "step_at_last_draw" in row:
            there = row["step_at_last_draw"]
            print(f"\nSGLD step chosen from {spec}'s last draw instead of the MAP: "
                  f"{there.step_size:.3g} (noise ratio {there.noise_ratio:.3g})")  # fmt: skip
    names = list(next(iter(rows.values()))["array_norms"])
    print("\nNorm of each weight array (mean ± sd over the draws):\n| run | " + " | ".join(names)
          + " |\n| --- |" + " ---: |" * len(names))  # fmt: skip
    for spec, row in rows.items():
        cells = " | ".join(f"{m:.1f} ± {sd:.1f}" for m, sd in row["array_norms"].values())
        print(f"| {spec} | {cells} |")
    return rows


if __name__ == "__main__":
    main()
