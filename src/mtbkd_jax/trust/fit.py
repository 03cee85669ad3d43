"""Fitting teacher trust from labelled data: the modular ("cut") posterior of trust.

:func:`fit_teacher_trust` samples the label model of :mod:`mtbkd_jax.trust` with NUTS: the
teachers' predictions on labelled inputs are evidence about each teacher's calibration
``tau``, concentration ``lambda`` and mixing weights. Its :class:`TrustPosterior` then goes to
:class:`~mtbkd_jax.MTBKDModel` as ``trust=``; the student's posterior is sampled *given* it.

**Why the cut is the default, and double counting.** In the joint posterior
(``MTBKDModel(trust="joint")``) the labels inform trust only *through the student*: a label
moves the student's probabilities, and their Dirichlet densities move the trust. Nothing else
may use the labels there; adding the label model's likelihood to the joint model would count
every label twice (once as the student's likelihood, once as evidence about trust), and the
student's posterior would be overconfident. The cut posterior instead takes trust from the
labels directly (its own model, fitted first) and then conditions the student on it; the student
sees each label once in its likelihood, and once more only through the ``M (C + 2)`` trust
numbers, a leak that does not grow with N (the usual price of a modular, empirical-Bayes
prior; Plummer 2015, Jacob et al. 2017 on cut posteriors). The cut is the default because

* trust is identified from the labels whatever the student's capacity (in the joint model a
  flexible student can match any teacher and hide its unreliability),
* the student's sampler does not have to explore trust and weights together (a funnel for NUTS
  along ``lambda``, a stiff direction for SG-MCMC), and
* it is cheap: a few hundred NUTS draws over ``M (C + 2)`` numbers.

With many labelled examples the trust posterior is narrow (``tau`` concentrates at rate about
``1 / sqrt(N)``; a reliable teacher's ``lambda`` keeps growing with ``N`` instead, its label
model's limit being ``lambda -> inf``), so the student is conditioned on its posterior *median*
(:meth:`TrustPosterior.point`); its spread is reported in :meth:`TrustPosterior.summary`.
Read ``tau`` together with ``lambda``: the labels' probabilities under a teacher are
``(1 + lambda p) / (C + lambda)``, flatter than ``p`` at any finite ``lambda``, so where the
hyperprior holds ``lambda`` finite (its default median is 10) ``tau`` comes out below the factor
by which the teacher is over-confident (measured on simulated teachers whose logits are
exactly 1 and 3 times the true ones: medians 0.80–1.06 and 2.1–2.9 at N = 100, 0.93–0.97 and
2.8–2.9 at N = 1,600; with a prior median of 1,000 for ``lambda``, 0.88–1.31 and 2.6–3.7;
``benchmarks/trust_tau_with_lambda.py``). A calibrated teacher's ``tau`` below 1 is that, not
under-confidence.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS

from mtbkd_jax._checks import (
    as_labels,
    require_counts,
    require_key,
    require_positive,
)
from mtbkd_jax.priors import TeacherPrior
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.trust.checks import check_draws
from mtbkd_jax.trust.consensus import consensus_weights
from mtbkd_jax.trust.labels import mixing_weight_model, teacher_trust_model
from mtbkd_jax.trust.sites import TrustHyperprior, TrustValues, trusted_teacher_prior

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["RHAT_WARNING", "TrustPosterior", "fit_teacher_trust"]

#: fit_teacher_trust warns above this largest split R-hat (its chains disagree)
RHAT_WARNING = 1.1
_SITES = ("temperature", "concentration", "weight_bias", "weight_slope", "temperature_slope")


@dataclass(frozen=True, eq=False)
class TrustPosterior:
    """Draws of the trust sites from the label model.

    Attributes:
        draws: ``{"temperature": (S, M), "concentration": (S, M, K), "weight_bias": (S, M),
            "weight_slope": (S,), "temperature_slope": (S, M)}`` (chains flattened; the slopes
            are zero unless the hyperprior's ``calibration`` is ``"confidence"``, and every
            temperature is 1 where it is ``"none"``).
        hyperprior: the hyperpriors they were drawn under.
        teacher_names: the teachers, in order.
        temperature: the prior's ``T`` used in the label model.
        max_rhat: the largest rank-normalised split R-hat over all trust numbers (ArviZ's).
        labelled_by_class: per class, the labelled examples whose consensus it is (ties
            shared), the evidence behind each per-class ``lambda``; a class with none has
            ``lambda`` drawn from its hyperprior alone (``None`` where unknown: a posterior
            built by hand).
    """

    draws: dict[str, np.ndarray]
    hyperprior: TrustHyperprior
    teacher_names: tuple[str, ...]
    temperature: float = 1.0
    max_rhat: float = float("nan")
    labelled_by_class: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_draws(self.draws, len(self.teacher_names))
        for name, reason in self._fixed_sites().items():  # the prior would use them, while
            value = 1.0 if name == "temperature" else 0.0  # the record says they are fixed
            used = name in ("temperature", "temperature_slope")  # (a fixed rule drops a link)
            if used and name in self.draws and not np.all(np.asarray(self.draws[name]) == value):
                raise ValueError(
                    f"the trust draws of {name} must all be {value:g} under this hyperprior "
                    f"({reason}), got values {np.min(self.draws[name]):.3g} to "
                    f"{np.max(self.draws[name]):.3g}"
                )
        if self.labelled_by_class is not None:
            counts = np.asarray(self.labelled_by_class, dtype=np.float64)
            groups = self.draws["concentration"].shape[-1]
            if counts.ndim != 1 or (groups > 1 and counts.size != groups) or (counts < 0).any():
                raise ValueError(
                    "labelled_by_class must hold one count >= 0 per class"
                    f"{f' ({groups})' if groups > 1 else ''}, got {self.labelled_by_class}"
                )

    @property
    def num_draws(self) -> int:
        """S, the number of draws."""
        return int(self.draws["temperature"].shape[0])

    def point(self) -> TrustValues:
        """The posterior median of every trust number. ``MTBKDModel(trust=posterior)`` is
        ``MTBKDModel(trust=posterior.point(), weight_rule=posterior.hyperprior.weight_rule,
        trust_hyperprior=posterior.hyperprior)``: the values alone do not say which weight rule
        and pooling they were learned under."""
        return TrustValues(
            *(jnp.asarray(np.median(self._site(name), axis=0), jnp.float32) for name in _SITES)
        )

    def draw(self, index: int) -> TrustValues:
        """Draw ``index`` of the trust."""
        return TrustValues(*(jnp.asarray(self._site(name)[index], jnp.float32) for name in _SITES))

    def _site(self, name: str) -> np.ndarray:
        """The draws of ``name``; where absent (a trust of one temperature per teacher, or
        built by hand), the fixed model's zero slopes and weight link."""
        if name not in self.draws:
            return np.zeros_like(
                self.draws["temperature"][:, 0]
                if name == "weight_slope"
                else self.draws["temperature"]
            )
        return self.draws[name]

    def interval(self, name: str, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """The central ``level`` interval of the site ``name`` (e.g. ``"temperature"``)."""
        if name not in _SITES:
            raise ValueError(f"name must be one of {_SITES}, got {name!r}")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        fixed = self._fixed_sites()
        if name in fixed:
            raise ValueError(f"name={name!r} has no interval: {fixed[name]}, not learned")
        tail = 50.0 * (1.0 - level)
        return tuple(np.percentile(self._site(name), [tail, 100.0 - tail], axis=0))

    def _fixed_sites(self) -> dict[str, str]:
        """The sites this trust's hyperprior did not learn, each with the reason."""
        rule, calibration = self.hyperprior.weight_rule, self.hyperprior.calibration
        fixed = {}
        if calibration == "none":
            fixed["temperature"] = "this trust was fitted with calibration='none', so every "
            fixed["temperature"] += "teacher's temperature is fixed at 1"
        if calibration != "confidence":
            fixed["temperature_slope"] = f"under calibration={calibration!r} it is fixed at 0"
        if rule != "learned":
            for link in ("weight_bias", "weight_slope"):
                fixed[link] = f"the weight rule {rule!r} is fixed, so the weight link is unused"
        elif len(self.teacher_names) == 1:
            for link in ("weight_bias", "weight_slope"):
                fixed[link] = "with one teacher its weight is 1, so the weight link is unused"
        return fixed

    def teacher_prior(
        self, teachers: TeacherBank, temperature: float | None = None, pooling: str | None = None
    ) -> TeacherPrior:
        """The teacher prior's constants on ``teachers``' inputs at the posterior median
        (``pooling``: default the hyperprior's; ``"mixture"`` keeps one component per teacher,
        with the weights a product pooling sums them by)."""
        self._check_bank(teachers)
        if temperature is not None and abs(self.temperature - temperature) > 1e-9:
            raise ValueError(
                f"trust was fitted at temperature {self.temperature} but the model's "
                f"temperature is {temperature}; fit it at the model's temperature"
            )
        return trusted_teacher_prior(
            teachers.log_probs,
            consensus_weights(teachers.log_probs),
            self.point(),
            temperature=self.temperature if temperature is None else temperature,
            weight_rule=self.hyperprior.weight_rule,
            pooling=self.hyperprior.pooling if pooling is None else pooling,
        )

    @property
    def temperature_learned(self) -> bool:
        """Whether the temperatures are sites of the trust model (``False`` for
        ``calibration="none"``, whose draws hold the fixed ``tau = 1``)."""
        return self.hyperprior.calibration != "none"

    def summary(self) -> list[dict[str, Any]]:
        """Per teacher: the median and 90% interval of ``tau`` (the interval ``None`` where
        ``tau`` is fixed at 1, see ``temperature_learned``), the median ``lambda`` (over
        classes) and, for the learned link, the weight bias. Where the labelled examples per
        consensus class are known and the concentration is per class, ``prior_only_classes``
        lists the classes no labelled example informed (their ``lambda`` is the hyperprior's)."""
        rows = []
        learned = self.temperature_learned
        intervals = list(zip(*self.interval("temperature"), strict=True)) if learned else None
        for m, name in enumerate(self.teacher_names):
            row = {
                "teacher": name,
                "temperature": float(np.median(self.draws["temperature"][:, m])),
                "temperature_learned": learned,
                "temperature_90": (
                    None if intervals is None else tuple(float(v) for v in intervals[m])
                ),
                "concentration": float(np.median(self.draws["concentration"][:, m])),
                "concentration_by_class": np.median(
                    self.draws["concentration"][:, m], axis=0
                ).tolist(),
            }
            if self.hyperprior.calibration == "confidence":
                row["temperature_slope"] = float(np.median(self._site("temperature_slope")[:, m]))
            if "weight_bias" not in self._fixed_sites():
                row["weight_bias"] = float(np.median(self._site("weight_bias")[:, m]))
                row["weight_slope"] = float(np.median(self._site("weight_slope")))  # shared
            if self.labelled_by_class is not None and self.hyperprior.per_class:
                counts = np.asarray(self.labelled_by_class)
                row["prior_only_classes"] = np.flatnonzero(counts == 0).tolist()
            rows.append(row)
        return rows

    @property
    def description(self) -> dict[str, Any]:
        """Plain values identifying this trust (for model settings and fingerprints)."""
        point = self.point()
        return {
            "kind": "cut",
            "hyperprior": self.hyperprior.description,
            "temperature": np.asarray(point.temperature).round(6).tolist(),
            "concentration": np.asarray(point.concentration).round(6).tolist(),
            **{
                name: np.asarray(getattr(point, name)).round(6).tolist()
                for name in ("temperature_slope", "weight_bias", "weight_slope")
                if name not in self._fixed_sites()
            },
            "num_draws": self.num_draws,
        }

    def _check_bank(self, teachers: TeacherBank) -> None:
        if not isinstance(teachers, TeacherBank):
            raise TypeError(f"teachers must be a TeacherBank, got {type(teachers).__name__}")
        if tuple(teachers.names) != self.teacher_names:
            raise ValueError(
                f"this trust was fitted for the teachers {list(self.teacher_names)} but the bank "
                f"has {list(teachers.names)}; fit the trust on the same teachers, in order"
            )
        num_groups = self.draws["concentration"].shape[-1]
        if num_groups not in (1, teachers.num_classes):
            raise ValueError(
                f"this trust has {num_groups} concentration classes but the bank has "
                f"{teachers.num_classes} classes"
            )


def fit_teacher_trust(
    rng_key: jax.Array,
    teachers: TeacherBank,
    labels: ArrayLike,
    *,
    hyperprior: TrustHyperprior | None = None,
    temperature: float = 1.0,
    num_warmup: int = 500,
    num_draws: int = 500,
    num_chains: int = 2,
    progress_bar: bool = False,
) -> TrustPosterior:
    """Sample the trust posterior from labelled data (the label model, by NUTS).

    Args:
        rng_key: a JAX PRNG key.
        teachers: the teachers on the labelled inputs, (M, N, C); when a bank also describes
            unlabelled transfer inputs after the labelled ones, pass
            ``bank.take(np.arange(len(labels)))``.
        labels: the labels (N,).
        hyperprior: the trust hyperpriors (default :class:`~mtbkd_jax.trust.TrustHyperprior`).
        temperature: the prior's ``T`` (the model's ``temperature``).
        num_warmup, num_draws, num_chains: NUTS settings (draws per chain).
        progress_bar: show NumPyro's progress bar.

    Returns:
        A :class:`TrustPosterior`, to pass to :class:`~mtbkd_jax.MTBKDModel` as ``trust=``.
    """
    require_key(rng_key)
    if not isinstance(teachers, TeacherBank):
        raise TypeError(f"teachers must be a TeacherBank, got {type(teachers).__name__}")
    require_counts(num_warmup=(num_warmup, 0), num_draws=(num_draws, 1), num_chains=(num_chains, 1))
    temperature = require_positive(temperature, "temperature")
    if np.ndim(labels) == 1 and np.shape(labels)[0] != teachers.num_examples:
        raise ValueError(
            f"labels has {np.shape(labels)[0]} entries but the teachers describe "
            f"{teachers.num_examples} examples: pass the teachers on the labelled inputs alone "
            "(a bank of labelled then transfer inputs: bank.take(np.arange(len(labels))))"
        )
    labels = as_labels(labels, "labels", teachers.num_examples, teachers.num_classes)
    hyperprior = TrustHyperprior() if hyperprior is None else hyperprior
    if not isinstance(hyperprior, TrustHyperprior):
        raise TypeError(f"hyperprior must be a TrustHyperprior, got {type(hyperprior).__name__}")
    settings = {"num_warmup": num_warmup, "num_draws": num_draws, "num_chains": num_chains}
    data = (teachers.log_probs, jnp.asarray(labels))
    common = {"hyperprior": hyperprior, "temperature": float(temperature)}
    key_calibration, key_weights = jax.random.split(rng_key)
    draws, rhat = _nuts(key_calibration, teacher_trust_model, data, common, settings, progress_bar)
    size = int(num_chains) * int(num_draws)
    if "temperature" not in draws:  # calibration="none": tau = 1
        draws["temperature"] = np.ones((size, teachers.num_teachers), np.float32)
    if "temperature_slope" not in draws:
        draws["temperature_slope"] = np.zeros((size, teachers.num_teachers), np.float32)
    draws["weight_bias"] = np.zeros((size, teachers.num_teachers), np.float32)
    draws["weight_slope"] = np.zeros((size,), np.float32)
    if hyperprior.weight_rule == "learned" and teachers.num_teachers > 1:  # else a weight of 1
        calibration = TrustPosterior(draws, hyperprior, tuple(teachers.names)).point()
        link, link_rhat = _nuts(
            key_weights, mixing_weight_model, (*data, calibration), common, settings, progress_bar
        )
        draws.update(link)
        rhat = max(rhat, link_rhat)
    if rhat > RHAT_WARNING:  # NaN (one chain) compares False
        warnings.warn(
            f"the trust's chains disagree (largest split R-hat {rhat:.3g} > {RHAT_WARNING}): its "
            "summary, and a model built on it, may not describe the trust posterior; sample "
            "longer (num_warmup, num_draws) and check TrustPosterior.max_rhat",
            UserWarning,
            stacklevel=2,
        )
    counts = np.asarray(consensus_weights(teachers.log_probs), np.float64).sum(axis=0)
    return TrustPosterior(
        draws,
        hyperprior,
        tuple(teachers.names),
        float(temperature),
        rhat,
        tuple(float(c) for c in counts.round(6)),
    )


def _nuts(
    rng_key: jax.Array,
    model: Callable[..., None],
    args: tuple,
    kwargs: dict[str, Any],
    settings: dict[str, int],
    progress_bar: bool,
) -> tuple[dict[str, np.ndarray], float]:
    """NUTS draws of ``model``'s trust sites (chains flattened) and their largest R-hat."""
    mcmc = MCMC(
        NUTS(model),
        num_warmup=int(settings["num_warmup"]),
        num_samples=int(settings["num_draws"]),
        num_chains=int(settings["num_chains"]),
        chain_method="sequential",
        progress_bar=progress_bar,
    )
    mcmc.run(rng_key, *args, **kwargs)
    grouped = mcmc.get_samples(group_by_chain=True)
    draws = {
        name: np.asarray(grouped[f"trust.{name}"]).reshape(-1, *grouped[f"trust.{name}"].shape[2:])
        for name in _SITES
        if f"trust.{name}" in grouped
    }
    return draws, _max_rhat(grouped)


def _max_rhat(grouped: dict[str, jax.Array]) -> float:
    """The largest rank-normalised split R-hat (ArviZ's, Vehtari et al. 2021, as
    :func:`~mtbkd_jax.diagnostics.exploration_report`'s) over every trust number that moves
    (NaN with a single chain). NumPyro's classic split R-hat misses chains that agree in mean
    but not in spread: 1.04 where ArviZ gives 1.33 on a trust's concentrations."""
    import arviz as az

    first = next(iter(grouped.values()))
    if first.shape[0] < 2:
        return float("nan")
    values = []
    with warnings.catch_warnings():  # a constant number (a fixed site): NaN, left out
        warnings.simplefilter("ignore", RuntimeWarning)
        for value in grouped.values():
            draws = np.asarray(value, np.float64).reshape(*value.shape[:2], -1)
            values.append(np.asarray(az.rhat(draws), np.float64).ravel())
    found = np.concatenate(values)
    return float(np.nanmax(found)) if np.isfinite(found).any() else float("nan")
