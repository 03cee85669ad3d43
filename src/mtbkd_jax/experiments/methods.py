"""Which methods a run fits: the plans an :class:`~mtbkd_jax.experiments.ExperimentConfig`
names by its ``methods``.

A KD row is a posterior mode (MAP = KD, METHOD §4): a single-teacher model's MAP is vanilla KD
from that teacher and its posterior is single-teacher BKD. CA-MKD (:mod:`mtbkd_jax.camkd`) is KD
from one teacher too, the per-example weighted average of the teachers, weighted by their
cross-entropy against the labels (on transfer inputs: each teacher's mean weight). Its soft
labels, like averaged KD's, are averaged at temperature 1 (a plan does not see the config's
temperature; the experiments use ``T = 1``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mtbkd_jax.camkd import ca_mkd_teacher
from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.teachers import TeacherBank

__all__ = [
    "LEARNED",
    "MAIN",
    "METHOD_PLANS",
    "Method",
    "baseline_methods",
    "demo_methods",
    "kd_methods",
    "trust_methods",
]

MAIN = "MT-BKD (entropy weights)"


@dataclass(frozen=True, eq=False)
class Method:
    """One method: a model fitted by MAP (row ``label``) and, when ``posterior`` names its row,
    sampled from that MAP.

    Attributes:
        label: the MAP row's ``method``.
        teachers: the teacher bank of the prior, or ``None`` (the student alone).
        weight_rule: the mixture's weight rule (:func:`mtbkd_jax.weighting.teacher_weights`).
        posterior: the posterior row's ``method``, or ``None`` (MAP only).
        reliability: draw this method's curves (MAP and posterior) in ``reliability.png``.
        key_by_label: draw this method's random keys from its label, not its place in the plan
            (:func:`~mtbkd_jax.experiments.keys.method_keys`), so that adding it to a plan leaves
            the other methods' keys, and so their published rows, as they were.
        trust: learn the teachers' trust, the prior scales and ``beta`` on the posterior's
            validation NLL (:mod:`mtbkd_jax.experiments.trusted`); ``weight_rule`` is unused.
    """

    label: str
    teachers: TeacherBank | None
    weight_rule: str = "paper"
    posterior: str | None = None
    reliability: bool = False
    key_by_label: bool = False
    trust: bool = False


def _ca_mkd(data: DistillationData) -> Method:
    """CA-MKD's MAP row (keyed by its label: it was added after the plans' rows were published)."""
    teacher = ca_mkd_teacher(data.teachers_prior, data.y_train)
    return Method("CA-MKD", teacher, key_by_label=True)


LEARNED = "MT-BKD (learned trust)"


def _learned_trust(data: DistillationData) -> Method:
    """MT-BKD with learned trust and learned prior scales (keyed by its label)."""
    bank = data.teachers_prior
    return Method(LEARNED, bank, posterior=LEARNED, reliability=True, key_by_label=True, trust=True)


def baseline_methods(data: DistillationData) -> list[Method]:
    """Every baseline of METHOD §7: the student alone, KD and BKD from each teacher, averaged
    multi-teacher KD, CA-MKD, MT-BKD with uniform and with entropy weights, and MT-BKD with
    learned trust."""
    bank = data.teachers_prior
    methods = [Method("student alone", None, posterior="student alone", reliability=True)]
    methods += [Method(f"KD ({n})", bank.select([n]), posterior=f"BKD ({n})") for n in bank.names]
    methods += [
        Method("averaged KD", bank.average(), reliability=True),
        _ca_mkd(data),
        Method("MT-BKD (uniform weights)", bank, "uniform", posterior="MT-BKD (uniform weights)"),
        Method(MAIN, bank, posterior=MAIN, reliability=True),
        _learned_trust(data),
    ]
    return methods


def demo_methods(data: DistillationData) -> list[Method]:
    """The demo's six: the student alone, averaged-teacher KD, CA-MKD, the best teacher (by
    accuracy on the labelled set) distilled alone, MT-BKD with entropy weights and MT-BKD with
    learned trust; the student alone and the MT-BKD rows are also sampled."""
    bank = data.teachers_prior
    labelled = bank.take(np.arange(len(data.y_train))).accuracy(data.y_train)
    best = int(np.argmax(labelled))
    return [
        Method("student alone", None, posterior="student alone", reliability=True),
        Method("averaged-teacher KD", bank.average(), reliability=True),
        _ca_mkd(data),
        Method(f"single-teacher BKD ({bank.names[best]})", bank.select([best])),
        Method(MAIN, bank, posterior=MAIN, reliability=True),
        _learned_trust(data),
    ]


def kd_methods(data: DistillationData) -> list[Method]:
    """The KD baselines against MT-BKD, without the single-teacher posteriors (a shorter run):
    KD from each teacher, averaged KD, CA-MKD, MT-BKD with entropy weights (MAP and
    posterior) and MT-BKD with learned trust (MAP and posterior)."""
    bank = data.teachers_prior
    methods = [Method(f"KD ({n})", bank.select([n])) for n in bank.names]
    methods += [
        Method("averaged KD", bank.average(), reliability=True),
        _ca_mkd(data),
        Method(MAIN, bank, posterior=MAIN, reliability=True),
        _learned_trust(data),
    ]
    return methods


def trust_methods(data: DistillationData) -> list[Method]:
    """MT-BKD with learned trust alone (MAP and posterior): the row is the one the other plans
    give (its keys come from its label), so that it can be rerun without the rest."""
    return [_learned_trust(data)]


METHOD_PLANS: dict[str, Callable[[DistillationData], list[Method]]] = {
    "baselines": baseline_methods,
    "demo": demo_methods,
    "kd": kd_methods,
    "trust": trust_methods,
}
