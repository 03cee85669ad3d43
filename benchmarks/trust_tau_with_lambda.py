"""How a learned trust's temperature reads beside its concentration: one teacher whose logits
are exactly the true logits (tau = 1 is its calibration) and one three times over-confident
(tau = 3), labels drawn from the truth. The label model's class probabilities are
``(1 + lambda p) / (C + lambda)``, flatter than ``p`` at any finite ``lambda``, so where the
hyperprior holds ``lambda`` finite (default median 10) ``tau`` comes out below those factors;
with a prior median of 1,000 it centres on them. Prints, per prior and N, the posterior
medians of tau over 4 simulated data sets and how many 90% intervals cover 1 and 3.

    .venv/bin/python benchmarks/trust_tau_with_lambda.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import warnings

import jax
import numpy as np
from scipy.special import log_softmax

from mtbkd_jax import TeacherBank
from mtbkd_jax.trust import TrustHyperprior, fit_teacher_trust

C = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny data set")
    smoke = parser.parse_args().smoke
    warnings.filterwarnings("ignore")
    sizes, reps, draws = ((50,), 1, 20) if smoke else ((100, 400, 1600), 4, 200)
    for concentration in (10.0, 1000.0):
        for n in sizes:
            medians, covered = [], []
            for rep in range(reps):
                rng = np.random.default_rng(100 * n + rep)
                z = 1.5 * rng.normal(size=(n, C))
                y = np.array([rng.choice(C, p=np.exp(row)) for row in log_softmax(z, -1)])
                trust = fit_teacher_trust(
                    jax.random.key(rep),
                    TeacherBank.from_logits(np.stack([z, 3 * z])),
                    y,
                    hyperprior=TrustHyperprior(
                        per_class=False, weight_rule="uniform", concentration=concentration
                    ),
                    num_warmup=draws,
                    num_draws=draws,
                )
                low, high = trust.interval("temperature")
                medians.append(np.median(trust.draws["temperature"], 0))
                covered.append([low[m] <= s <= high[m] for m, s in enumerate((1.0, 3.0))])
            medians, hits = np.array(medians), np.array(covered)
            print(json.dumps({
                "lambda_prior_median": concentration, "N": n,
                "tau_medians_calibrated": [round(float(v), 2) for v in medians[:, 0]],
                "tau_medians_x3": [round(float(v), 2) for v in medians[:, 1]],
                "covered_1": int(hits[:, 0].sum()), "covered_3": int(hits[:, 1].sum()),
                "of": len(hits),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
