"""Recipe: two protein language-model teachers distilled into a small student by the paper's
minibatch SGLD, and the uncertainty check on proteins with several locations.

The DeepLoc subset (outside the package: ``--data PATH``, ``$MTBKD_DEEPLOC_DIR`` or
``../shared/data/deeploc``) gives ESM-2 650M and ProtT5 logits for every protein; the student
is an MLP on 48 features computed from the sequence. MAP warm start, then SGLD from it; the
posterior's mean deviance should be higher for multi-location proteins than for single-location
ones (a one-sided Mann-Whitney test). The prior settings are the ones the experiment's
validation search chose at seed 0 (σ0 = 0.2, λ = 30, β = 0.1). Run it:

    .venv/bin/python models/deeploc_sgld.py            # about 20 s on 2 CPUs
    .venv/bin/python models/deeploc_sgld.py --smoke    # seconds

The full experiment with every baseline and tuning is ``mtbkd experiment deeploc``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx
from scipy import stats

import mtbkd_jax as mk
from mtbkd_jax.datasets import deeploc_available, load_deeploc
from mtbkd_jax.metrics import classification_metrics
from mtbkd_jax.uncertainty import mean_deviance


def skip_reason(data_path=None) -> str | None:
    """Why this recipe cannot run here (its data are absent), or None."""
    return None if deeploc_available(data_path) else "the DeepLoc data are absent"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the DeepLoc folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)

    data = load_deeploc(args.data)  # FileNotFoundError, naming the places tried, when absent
    student = mk.Student(
        mk.MLP(data.num_features, data.num_classes, hidden=(128,), rngs=nnx.Rngs(args.seed)),
        prior=mk.normal_prior(0.2),
    )
    model = mk.MTBKDModel(student, data.train.teachers, concentration=30.0, prior_power=0.1)
    key_map, key_sgld = jax.random.split(jax.random.key(args.seed))
    mode = mk.run_map(
        key_map,
        model,
        data.train.x,
        data.train.y,
        num_steps=50 if args.smoke else 2000,
        learning_rate=3e-3,
        progress_bar=False,
    )
    posterior = mk.run_sgmcmc(
        key_sgld,
        model,
        data.train.x,
        data.train.y,
        sampler="sgld",
        batch_size=64,
        num_epochs=2 if args.smoke else 80,
        step_size=1e-5,
        draws_per_epoch=2 if args.smoke else 6,
        num_chains=1 if args.smoke else 2,
        init_params={k: v[0, 0] for k, v in mode.draws.items()},
        progress_bar=not args.smoke,
    )
    rows = {}
    for name, post in (("MT-BKD MAP", mode), ("MT-BKD SGLD", posterior)):
        probs = np.asarray(post.predict(data.test.x))
        rows[name] = classification_metrics(probs.mean(0), data.test.y)
        print(f"{name:<12} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items()))

    single = np.asarray(mean_deviance(posterior.predict(data.test.x)), np.float64)
    multi = np.asarray(mean_deviance(posterior.predict(data.multilocation.x)), np.float64)
    test = stats.mannwhitneyu(multi, single, alternative="greater")
    print(
        f"mean deviance, median: single-location {np.median(single):.2f}, multi-location "
        f"{np.median(multi):.2f}; P(multi > single) = "
        f"{test.statistic / (len(multi) * len(single)):.3f}, one-sided p = {test.pvalue:.2g}"
    )
    return rows


if __name__ == "__main__":
    main()
