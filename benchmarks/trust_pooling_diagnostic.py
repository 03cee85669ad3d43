"""Why the learned trust lost on Fashion-MNIST under the paper's mixture, by MAP fits only
(``docs/results.md``, "Learned teacher trust pooled as one product").

The learned trust (``calibration="none"``) is fitted once; its concentrations are rescaled so
that their geometric mean is each of ``--lambdas``, and for each ``beta`` of ``--betas`` the
learned-trust student is fitted by MAP, with the teachers' Dirichlets pooled as the mixture or
as one product (``--pooling``), under a Normal(0, ``--sigma0``) prior on the weights or the
learned-scale prior (``--sigma0 hier``). Prints each fit's validation and test NLL.

Usage: ``python benchmarks/trust_pooling_diagnostic.py --pooling mixture,product
--lambdas 10,30,100,400 --betas 0.3,1 --sigma0 1`` (needs the Fashion-MNIST data, see
``mtbkd_jax.datasets.fashion_mnist``; about 10 s per fit on 2 cores).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import jax
import numpy as np

from mtbkd_jax.experiments.fashion_mnist import FashionMNISTConfig, fashion_mnist_problem
from mtbkd_jax.experiments.fit import build_student, fit_map
from mtbkd_jax.experiments.trusted import learned_trust, trusted_model
from mtbkd_jax.metrics import negative_log_likelihood
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.priors import normal_prior
from mtbkd_jax.trust import TrustPosterior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pooling", default="mixture,product")
    parser.add_argument("--lambdas", default="10,30,100,400")
    parser.add_argument("--betas", default="0.3,1")
    parser.add_argument("--sigma0", default="1")
    args = parser.parse_args()
    config = FashionMNISTConfig()
    data, _ = fashion_mnist_problem(config=config)
    bank = data.teachers_prior
    for pooling in args.pooling.split(","):
        trust = learned_trust(jax.random.key(1), data, config, bank, "none", pooling)
        learned = np.exp(np.log(np.median(trust.draws["concentration"], 0)).mean())
        print(f"pooling={pooling}: learned lambda, geometric mean {learned:.0f}", flush=True)
        for target in (float(v) for v in args.lambdas.split(",")):
            draws = {
                **trust.draws,
                "concentration": trust.draws["concentration"] * target / learned,
            }
            scaled = replace(trust, draws=draws)
            for beta in (float(v) for v in args.betas.split(",")):
                model = _model(data, config, bank, scaled, beta, args.sigma0)
                mode = fit_map(jax.random.key(2), data, config, model)
                nll = [
                    negative_log_likelihood(
                        np.asarray(mode.predict(x), np.float64).reshape(-1, len(y), 10).mean(0), y
                    )
                    for x, y in ((data.x_validation, data.y_validation), (data.x_test, data.y_test))
                ]
                print(
                    f"  lambda={target:g} beta={beta:g} sigma0={args.sigma0}: "
                    f"validation NLL {nll[0]:.4f}, test NLL {nll[1]:.4f}",
                    flush=True,
                )


def _model(data, config, bank, trust: TrustPosterior, beta: float, sigma0: str) -> MTBKDModel:  # noqa: ANN001
    if sigma0 == "hier":
        return trusted_model(data, config, bank, trust, beta)
    student = build_student(data, config).with_prior(normal_prior(float(sigma0)))
    return MTBKDModel(student, bank, trust=trust, prior_power=beta, temperature=config.temperature)


if __name__ == "__main__":
    main()
