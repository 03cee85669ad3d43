"""Recipe: on DeepLoc, where SGLD's chains start, and what learned trust does with teachers that
have seen the labelled proteins.

Three questions, each answered on the validation *and* the test split (the choices in the
experiment are made on validation only; the test column is for the record):

1. Do the teachers behave on the labelled split as they do on new proteins? (Their accuracy and
   NLL on train, validation and test.)
2. Does SGLD from one MAP explore enough, or do chains started at MAPs fitted from different
   initialisations (``chain_starts="maps"``) give a better posterior predictive? Averaged KD
   (one MAP, and the mean of four MAPs: an ensemble a KD practitioner could build) and MT-BKD
   with entropy weights (4 chains from 4 MAPs, the fixed step 1e-5 and ``"auto"``).
3. MT-BKD with learned trust (the cut trust posterior's median) under ``normal_prior(0.2)`` and
   the learned-scale ``hierarchical_normal_prior()``, at small ``beta``, by MAP and by SGLD
   (``step_size="auto"``) from one MAP (2 chains) and from four MAPs (4 chains).

Run it (the data from ``../shared/data/deeploc`` or ``$MTBKD_DEEPLOC_DIR``):

    .venv/bin/python models/deeploc_chain_starts.py            # ~15 min on 2 CPUs
    .venv/bin/python models/deeploc_chain_starts.py --smoke    # a minute
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import jax
import numpy as np

from mtbkd_jax.datasets import load_deeploc
from mtbkd_jax.experiments.deeploc import DeepLocConfig
from mtbkd_jax.experiments.fit import build_model, build_student, fit_map, fit_posterior
from mtbkd_jax.experiments.trusted import learned_trust
from mtbkd_jax.metrics import negative_log_likelihood
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.priors import normal_prior
from mtbkd_jax.scale_priors import hierarchical_normal_prior


def skip_reason() -> str | None:
    """Why this recipe cannot run here (no DeepLoc data), or None."""
    from mtbkd_jax.datasets import find_deeploc_dir

    try:
        find_deeploc_dir()
    except FileNotFoundError:
        return "DeepLoc data not found (../shared/data/deeploc or $MTBKD_DEEPLOC_DIR)"
    return None


def _mean_probs(posterior, x) -> np.ndarray:
    draws = np.asarray(posterior.predict(x), np.float64)
    return draws.reshape(-1, *draws.shape[-2:]).mean(0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)

    deeploc = load_deeploc()
    data = deeploc.distillation_data(ood_seed=args.seed)
    config = DeepLocConfig(seed=args.seed, num_chains=2, chain_starts="map")
    if args.smoke:
        config = replace(
            config, map_steps=30, sgld_epochs=1, sgld_draws_per_epoch=1, trust_warmup=10,
            trust_draws=10,
        )  # fmt: skip
    splits = {
        "validation": (data.x_validation, data.y_validation),
        "test": (data.x_test, data.y_test),
    }
    rows: dict[str, dict] = {}

    def record(name: str, probs_by_split: dict[str, np.ndarray]) -> None:
        scores = {
            split: (
                negative_log_likelihood(p, splits[split][1]),
                float((p.argmax(-1) == splits[split][1]).mean()),
            )
            for split, p in probs_by_split.items()
        }
        rows[name] = {
            "accuracy": scores["test"][1],
            "nll": scores["test"][0],
            "validation_nll": scores["validation"][0],
        }
        (v_nll, v_acc), (t_nll, t_acc) = scores["validation"], scores["test"]
        print(
            f"{name:<58} validation NLL {v_nll:.4f} acc {v_acc:.3f}"
            f" | test NLL {t_nll:.4f} acc {t_acc:.3f}",
            flush=True,
        )

    def evaluate(name: str, *posteriors) -> None:
        record(
            name,
            {
                s: np.mean([_mean_probs(p, x) for p in posteriors], 0)
                for s, (x, _) in splits.items()
            },
        )

    # 1. the teachers on the labelled splits and on new proteins
    for split in ("train", "validation", "test"):
        part = getattr(deeploc, split)
        probs = np.exp(np.asarray(part.teachers.log_probs, np.float64))
        each = ", ".join(
            f"{name} acc {float((p.argmax(-1) == part.y).mean()):.3f} "
            f"NLL {negative_log_likelihood(p, part.y):.3f}"
            for name, p in zip(part.teachers.names, probs, strict=True)
        )
        average = negative_log_likelihood(probs.mean(0), part.y)
        print(f"teachers on {split}: {each}; their average NLL {average:.3f}")

    bank = data.teachers_prior
    start_keys = [jax.random.key(100 + i) for i in range(3)]
    apart = replace(config, chain_starts="maps", num_chains=4)

    # 2. averaged KD (one MAP and four) and MT-BKD with entropy weights, chains from 4 MAPs
    kd = build_model(
        data,
        config,
        bank.average(),
        "paper",
        {"prior_scale": 0.2, "concentration": 10.0, "prior_power": 0.1},
    )
    maps = [fit_map(k, data, config, kd) for k in [jax.random.key(1), *start_keys]]
    evaluate("averaged KD, MAP", maps[0])
    evaluate("averaged KD, mean of 4 MAPs", *maps)
    fixed = build_model(
        data, config, bank, "paper", {"prior_scale": 0.2, "concentration": 30.0, "prior_power": 0.1}
    )
    mode = fit_map(jax.random.key(1), data, config, fixed)
    evaluate("MT-BKD (entropy weights), MAP", mode)
    # a smoke run's 30-step MAP is no warm start for the pilots of "auto": a fixed step there
    auto = 1e-5 if args.smoke else "auto"
    for step in (1e-5, auto):
        posterior = fit_posterior(
            jax.random.key(2), data, replace(apart, sgld_step_size=step), fixed, mode, start_keys
        )
        evaluate(f"MT-BKD (entropy weights), SGLD 4 chains from 4 MAPs, step {step}", posterior)

    # 3. learned trust
    trust = learned_trust(jax.random.key(3), data, config, bank)
    for prior_name, prior in (
        ("normal_prior(0.2)", normal_prior(0.2)),
        ("hierarchical", hierarchical_normal_prior()),
    ):
        for beta in (0.01,) if args.smoke else (0.01, 0.03, 0.1):
            model = MTBKDModel(
                build_student(data, config).with_prior(prior), bank, trust=trust, prior_power=beta
            )
            mode = fit_map(jax.random.key(1), data, config, model)
            label = f"learned trust, {prior_name}, beta {beta}"
            evaluate(f"{label}, MAP", mode)
            for starts, chains in (("map", 2), ("maps", 4)):
                sampling = replace(
                    config, sgld_step_size=auto, chain_starts=starts, num_chains=chains
                )
                posterior = fit_posterior(
                    jax.random.key(2), data, sampling, model, mode, start_keys[: chains - 1]
                )
                how = "2 chains from one MAP" if chains == 2 else "4 chains from 4 MAPs"
                evaluate(f"{label}, SGLD {how}", posterior)
    return rows


if __name__ == "__main__":
    main()
