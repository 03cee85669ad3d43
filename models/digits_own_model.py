"""Recipe: write your own NumPyro model with the teacher-informed prior, on bundled digits.

The canonical `mtbkd_jax.MTBKDModel` is one way to assemble the pieces; this recipe writes the
model by hand so you can change any part of it. Here the student is a linen network with a
per-layer base prior, the likelihood is tempered by a labelled-data weight, and the teacher prior
uses inverse-entropy weights on a transfer set. Run it:

    .venv/bin/python models/digits_own_model.py            # full run (about a minute on 2 CPUs)
    .venv/bin/python models/digits_own_model.py --smoke    # seconds
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import mtbkd_jax as mk
from mtbkd_jax.datasets import load_digits_distillation
from mtbkd_jax.metrics import classification_metrics
from mtbkd_jax.students import LinenMLP


def make_model(student: mk.Student, prior: mk.TeacherPrior, power: float):
    """A NumPyro model ``model(inputs, labels=None, *, prior_inputs)``."""

    def model(inputs, labels=None, *, prior_inputs):
        network = student.network(inputs.shape[1:])  # weights sampled once, reused below
        with numpyro.plate("data", inputs.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=network(inputs)), obs=labels)
        with numpyro.plate("transfer", prior_inputs.shape[0]):
            mk.teacher_prior_factor(
                "teacher_prior",
                network(prior_inputs),
                prior,
                prior_power=power,
            )

    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_digits_distillation(args.seed)
    student = mk.Student(
        LinenMLP(10, hidden=(16,)),
        prior=mk.normal_prior(1.0, scales={"Dense_1": 0.5}),  # a tighter prior on the output layer
    )
    temperature, power = 2.0, 0.1
    prior = mk.TeacherPrior.build(
        data.teachers_prior,
        concentration=10.0,
        temperature=temperature,
        weight_rule="inverse_entropy",
    )
    model = make_model(student, prior, power)
    kwargs = {"prior_inputs": jnp.asarray(data.prior_inputs)}
    steps, warmup, samples = (100, 20, 20) if args.smoke else (2000, 300, 300)
    key_map, key_nuts = jax.random.split(jax.random.key(args.seed))
    mode = mk.run_map(
        key_map,
        model,
        data.x_train,
        data.y_train,
        num_steps=steps,
        model_kwargs=kwargs,
        logits_fn=student.logits,
        progress_bar=not args.smoke,
    )
    posterior = mk.run_nuts(
        key_nuts,
        model,
        data.x_train,
        data.y_train,
        num_warmup=warmup,
        num_draws=samples,
        num_chains=1,
        init_params={k: v[0, 0] for k, v in mode.draws.items()},
        model_kwargs=kwargs,
        logits_fn=student.logits,
        progress_bar=not args.smoke,
    )
    rows = {}
    for name, post in (("MAP", mode), ("NUTS", posterior)):
        probs = np.asarray(post.predict(data.x_test))
        rows[name] = classification_metrics(probs.mean(0), data.y_test)
        print(f"{name:<5} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items()))
    return rows


if __name__ == "__main__":
    main()
