"""The main job: multi-teacher Bayesian distillation on scikit-learn's bundled digits.

Methods (METHOD §7 baselines that fit in a few CPU minutes): the student alone, averaged-teacher
KD, single-teacher BKD with the best teacher (by accuracy on the labelled set), and MT-BKD with
entropy weights, each by MAP; MT-BKD and the student alone also by NUTS. Prints a table and,
with ``out_dir``, writes ``metrics.json``, the MT-BKD posterior ``posterior.nc`` (an ArviZ
DataTree) and ``reliability.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from mtbkd_jax._paths import prepare_output_dir
from mtbkd_jax.datasets import load_digits_distillation
from mtbkd_jax.infer import run_map, run_nuts
from mtbkd_jax.metrics import classification_metrics
from mtbkd_jax.model import MTBKDModel
from mtbkd_jax.students import MLP, Student
from mtbkd_jax.uncertainty import mean_deviance

__all__ = ["DemoSettings", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run (``quick`` shrinks them for smoke tests)."""

    seed: int = 0
    hidden: int = 16
    concentration: float = 10.0
    prior_power: float = 0.1
    temperature: float = 1.0
    map_steps: int = 2000
    num_warmup: int = 400
    num_samples: int = 400
    num_chains: int = 2

    @classmethod
    def quick(cls, seed: int = 0) -> DemoSettings:
        return cls(seed=seed, map_steps=200, num_warmup=30, num_samples=30, num_chains=1)


def _row(method, inference, probs_draws, labels):
    probs_draws = np.asarray(probs_draws)
    metrics = classification_metrics(probs_draws.mean(0), labels)
    bayesian = inference not in ("map", "teacher")
    return {
        "method": method,
        "inference": inference,
        "accuracy": metrics["accuracy"],
        "nll": metrics["nll"],
        "ece": metrics["ece"],
        "brier": metrics["brier"],
        "mean_deviance": float(np.mean(mean_deviance(probs_draws))) if bayesian else None,
    }


def _print_table(rows, file=None):
    header = f"{'method':<34}{'inference':<10}{'accuracy':>9}{'NLL':>8}{'ECE':>8}{'MD':>8}"
    print(header, file=file)
    print("-" * len(header), file=file)
    for r in rows:
        md = "-" if r["mean_deviance"] is None else f"{r['mean_deviance']:.3f}"
        print(
            f"{r['method']:<34}{r['inference']:<10}{r['accuracy']:>9.3f}{r['nll']:>8.3f}"
            f"{r['ece']:>8.3f}{md:>8}",
            file=file,
        )


def run_demo(out_dir=None, settings: DemoSettings | None = None, progress: bool = True):
    """Run the demo and return its rows ``{method, inference, accuracy, nll, ece, brier,
    mean_deviance}``.

    ``out_dir`` is created (parents too) if it is missing and checked for writing before any
    compute; :class:`NotADirectoryError`, :class:`PermissionError` or :class:`ValueError` say
    why it cannot be used.
    """
    if out_dir is not None:
        out_dir = prepare_output_dir(out_dir, "out_dir")
    settings = settings or DemoSettings()
    start = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)
    say("[1/4] data: scikit-learn digits; training three teachers ...", flush=True)
    data = load_digits_distillation(settings.seed)
    prior_inputs = data.prior_inputs
    accuracies = data.teachers_test.accuracy(data.y_test)
    for name, acc in zip(data.teachers_test.names, accuracies, strict=True):
        say(f"      teacher {name:<12} test accuracy {acc:.3f}")
    labelled_acc = data.teachers_prior.take(np.arange(len(data.y_train))).accuracy(data.y_train)
    best = int(np.argmax(labelled_acc))

    def student():
        rngs = nnx.Rngs(settings.seed)
        return Student(MLP(64, data.num_classes, hidden=(settings.hidden,), rngs=rngs))

    def model(teachers):
        return MTBKDModel(
            student(),
            teachers,
            concentration=settings.concentration,
            prior_power=settings.prior_power,
            temperature=settings.temperature,
            weights="paper",
        )

    models = {
        "student alone": model(None),
        "averaged-teacher KD": model(data.teachers_prior.average()),
        f"single-teacher BKD ({data.teachers_prior.names[best]})": model(
            data.teachers_prior.select([best])
        ),
        "MT-BKD (entropy weights)": model(data.teachers_prior),
    }

    def prior_kwargs(m):
        return {} if m.teachers is None else {"prior_inputs": prior_inputs}

    def fit_map(key, m, progress_bar):
        return run_map(
            key,
            m,
            data.x_train,
            data.y_train,
            num_steps=settings.map_steps,
            learning_rate=1e-2,
            progress_bar=progress_bar,
            model_kwargs=prior_kwargs(m),
        )

    key = jax.random.key(settings.seed)
    rows, curves, posteriors = [], {}, {}
    say(f"[2/4] MAP fits ({settings.map_steps} Adam steps each) ...", flush=True)
    for name, m in models.items():
        key, sub = jax.random.split(key)
        post = fit_map(sub, m, progress)
        probs = post.predict(data.x_test)
        rows.append(_row(name, "map", probs, data.y_test))
        if name in ("student alone", "averaged-teacher KD", "MT-BKD (entropy weights)"):
            curves[f"{name} (MAP)"] = np.asarray(probs).mean(0)
        posteriors[name] = post
        say(f"      {name:<34} accuracy {rows[-1]['accuracy']:.3f}", flush=True)

    say(
        f"[3/4] NUTS ({settings.num_chains} chains x {settings.num_samples} draws, "
        f"{settings.num_warmup} warm-up) ...",
        flush=True,
    )
    nuts = {}
    for name in ("student alone", "MT-BKD (entropy weights)"):
        m = models[name]
        key, sub = jax.random.split(key)
        # chain 0 starts at the MAP above, the others at MAPs from other random starts, so
        # that R-hat compares chains that began apart
        starts = [{k: v[0, 0] for k, v in posteriors[name].draws.items()}]
        for _chain in range(1, settings.num_chains):
            key, sub = jax.random.split(key)
            other = fit_map(sub, m, False)
            starts.append({k: v[0, 0] for k, v in other.draws.items()})
        key, sub = jax.random.split(key)
        post = run_nuts(
            sub,
            m,
            data.x_train,
            data.y_train,
            num_warmup=settings.num_warmup,
            num_samples=settings.num_samples,
            num_chains=settings.num_chains,
            init_params=starts,
            progress_bar=progress,
            model_kwargs=prior_kwargs(m),
        )
        probs = post.predict(data.x_test)
        rows.append(_row(name, "nuts", probs, data.y_test))
        if m.teachers is not None:
            curves[f"{name} (NUTS)"] = np.asarray(probs).mean(0)
        nuts[name] = post
        divergences = int(np.asarray(post.sample_stats["diverging"]).sum())
        say(f"      {name:<34} accuracy {rows[-1]['accuracy']:.3f}  divergences {divergences}")

    elapsed = time.perf_counter() - start
    say(f"[4/4] done in {elapsed:.0f} s\n")
    _print_table(rows)
    if out_dir is not None:
        from mtbkd_jax.plots import reliability_diagram

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(rows, indent=2) + "\n")
        nuts["MT-BKD (entropy weights)"].save(out / "posterior.nc")
        reliability_diagram(curves, data.y_test, out / "reliability.png")
        say(f"\nwrote {out / 'metrics.json'}, {out / 'posterior.nc'}, {out / 'reliability.png'}")
    return rows
