"""Recipe: three image teachers (a CNN, an MLP, a logistic regression) distilled into a small
MLP on downsampled Fashion-MNIST, with an unlabelled transfer set and minibatch SGLD.

The images come from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``,
or ``--data PATH``). The teachers are trained once with optax on the full 28x28 images and their
logits cached (``~/.cache/mtbkd_jax/fashion-mnist``; about 3 min the first time). The student
sees 2,000 labelled 14x14 images; the teacher prior is evaluated on those plus 8,000 unlabelled
ones, so SGLD draws a minibatch from each plate at every step. The prior settings are those the
experiment's validation search chose for MT-BKD (σ0 = 1, λ = 10, β = 0.3). Run it:

    .venv/bin/python models/fashion_mnist_sgld.py            # ~25 s, teachers cached
    .venv/bin/python models/fashion_mnist_sgld.py --smoke    # under a minute (tiny teachers)

The full experiment with every baseline and tuning is ``mtbkd experiment fashion-mnist``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.datasets import fashion_mnist_available, load_fashion_mnist_distillation
from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings
from mtbkd_jax.metrics import classification_metrics


def skip_reason(data_path=None) -> str | None:
    """Why this recipe cannot run here (its data are absent), or None."""
    return None if fashion_mnist_available(data_path) else "the Fashion-MNIST data are absent"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the Fashion-MNIST folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)

    sizes = {"num_labelled": 200, "num_transfer": 400} if args.smoke else {}
    data, teachers = load_fashion_mnist_distillation(
        args.data,
        seed=args.seed,
        teacher_settings=TeacherSettings.smoke() if args.smoke else TeacherSettings(),
        **sizes,
    )
    for name in teachers.names:
        print(f"teacher {name:<7} test accuracy {teachers.info[name]['test_accuracy']:.3f}")
    student = mk.Student(
        mk.MLP(data.x_train.shape[1], 10, hidden=(32,), rngs=nnx.Rngs(args.seed)),
        prior=mk.normal_prior(1.0),
    )
    model = mk.MTBKDModel(student, data.teachers_prior, concentration=10.0, prior_power=0.3)
    kwargs = {"prior_inputs": data.prior_inputs}  # the teacher bank describes these inputs
    key_map, key_sgld = jax.random.split(jax.random.key(args.seed))
    mode = mk.run_map(
        key_map,
        model,
        data.x_train,
        data.y_train,
        num_steps=50 if args.smoke else 1500,
        model_kwargs=kwargs,
        progress_bar=False,
    )
    posterior = mk.run_sgmcmc(
        key_sgld,
        model,
        data.x_train,
        data.y_train,
        sampler="sgld",
        batch_size=64,  # the transfer plate's batch is proportional: 64 * 10,000 / 2,000
        num_epochs=2 if args.smoke else 40,
        step_size=1e-5,
        draws_per_epoch=2 if args.smoke else 4,
        num_chains=1 if args.smoke else 2,
        init_params={k: v[0, 0] for k, v in mode.draws.items()},
        model_kwargs=kwargs,
        progress_bar=not args.smoke,
    )
    rows = {}
    for name, post in (("MT-BKD MAP", mode), ("MT-BKD SGLD", posterior)):
        probs = np.asarray(post.predict(data.x_test))
        rows[name] = classification_metrics(probs.mean(0), data.y_test)
        print(f"{name:<12} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items()))
    return rows


if __name__ == "__main__":
    main()
