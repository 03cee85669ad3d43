"""Recipe: a teacher that is confidently wrong on one class, and learned trust, cut vs joint.

Four Gaussian classes in five dimensions; three teachers: a good one (the Bayes posterior plus
noise), an over-confident one (its logits x 3) and one that says class 3, confidently, wherever
the Bayes rule says 2. A linear student on 150 labelled inputs is fitted (MAP, then NUTS from
it) under three priors:

* the paper's fixed model (one lambda, entropy weights);
* learned trust, *cut*: ``fit_teacher_trust`` on the labels first, the student given it;
* learned trust, *joint*: ``MTBKDModel(trust="joint")``, trust sampled with the student.

Run it:

    .venv/bin/python models/trust_cut_vs_joint.py            # ~2 min on 2 CPUs
    .venv/bin/python models/trust_cut_vs_joint.py --smoke    # seconds
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.metrics import classification_metrics
from mtbkd_jax.trust import fit_teacher_trust


def wrong_teacher_problem(seed: int = 1, num_train: int = 150, num_test: int = 3000):
    """``(bank, x, y, x_test, y_test)``: the teachers on the labelled inputs and the data."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1.2, (4, 5))

    def blobs(n):
        y = rng.integers(0, 4, n)
        x = mu[y] + rng.normal(size=(n, 5))
        log_joint = -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(-1)
        return x.astype(np.float32), y, log_joint - np.logaddexp.reduce(log_joint, 1, keepdims=True)

    x, y, log_post = blobs(num_train)
    x_test, y_test, _ = blobs(num_test)
    wrong = log_post.copy()
    where = np.argmax(log_post, 1) == 2
    wrong[where] = 0.0
    wrong[where, 3] = 8.0
    logits = np.stack([log_post + rng.normal(0, 0.3, log_post.shape), 3 * log_post, wrong])
    bank = mk.TeacherBank.from_logits(logits, names=["good", "overconfident", "wrong_on_2"])
    return bank, x, y, x_test, y_test


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    bank, x, y, x_test, y_test = wrong_teacher_problem(args.seed)
    steps, warmup, draws = (100, 20, 20) if args.smoke else (2000, 300, 300)
    trust = fit_teacher_trust(jax.random.key(0), bank, y, num_warmup=warmup, num_draws=draws)
    for row in trust.summary():
        print(
            f"{row['teacher']:<14} tau {row['temperature']:.2f}  lambda by consensus class",
            np.round(row["concentration_by_class"], 2),
        )
    rows = {}
    for name, options in (("fixed", {}), ("cut", {"trust": trust}), ("joint", {"trust": "joint"})):
        student = mk.Student(mk.MLP(5, 4, hidden=(), rngs=nnx.Rngs(0)))
        model = mk.MTBKDModel(student, bank, **options)
        mode = mk.run_map(jax.random.key(1), model, x, y, num_steps=steps, progress_bar=False)
        posterior = mk.run_nuts(
            jax.random.key(2),
            model,
            x,
            y,
            num_warmup=warmup,
            num_draws=draws,
            init_params=mode.point(),
            progress_bar=False,
        )
        probs = np.asarray(posterior.predict(x_test), np.float64)
        probs = probs.reshape(-1, *probs.shape[-2:]).mean(0)
        rows[name] = classification_metrics(probs, y_test)
        rows[f"{name} (MAP)"] = classification_metrics(np.asarray(mode.predict(x_test))[0], y_test)
        divergent = int(np.asarray(posterior.sample_stats["diverging"]).sum())
        print(
            f"{name:<6} NUTS accuracy {rows[name]['accuracy']:.3f} nll {rows[name]['nll']:.3f} "
            f"ece {rows[name]['ece']:.3f}  MAP nll {rows[f'{name} (MAP)']['nll']:.3f}  "
            f"divergent {divergent} of {posterior.total_draws}"
        )
    return rows


if __name__ == "__main__":
    main()
