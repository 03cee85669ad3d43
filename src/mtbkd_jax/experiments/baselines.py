"""The experiment runner: the methods of a config's plan on one problem, with one row format.

Methods (``config.methods``, :mod:`mtbkd_jax.experiments.methods`): by default each teacher
itself (for context), the student alone, vanilla KD from each teacher, averaged multi-teacher
KD, single-teacher BKD from each teacher, MT-BKD with uniform weights and MT-BKD with entropy
weights. KD rows are posterior modes (MAP = KD, METHOD §4); Bayesian rows are sampled by NUTS
(small students) or SGLD (the paper's sampler), started at their MAP.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import jax
import numpy as np

from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.diagnostics import exploration_report
from mtbkd_jax.experiments._method_warnings import named_by_method
from mtbkd_jax.experiments._problem_checks import check_problem
from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.fit import (
    build_model,
    default_settings,
    fit_map,
    fit_posterior,
    settings_label,
    tuned_map,
)
from mtbkd_jax.experiments.keys import MethodKeys, method_keys
from mtbkd_jax.experiments.methods import METHOD_PLANS, Method
from mtbkd_jax.experiments.placement import check_run_mesh, placement
from mtbkd_jax.experiments.posterior_tuning import TunedPosterior, tuned_posterior
from mtbkd_jax.experiments.provenance import run_provenance
from mtbkd_jax.experiments.report import write_partial
from mtbkd_jax.experiments.trusted import fit_trusted
from mtbkd_jax.metrics import classification_metrics, error_detection_auroc, interval_coverage
from mtbkd_jax.selective import ood_auroc
from mtbkd_jax.uncertainty import entropy_decomposition, predictive_summary

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from mtbkd_jax.infer import Posterior
    from mtbkd_jax.model import MTBKDModel

__all__ = ["run_baselines"]

# what a run keeps besides its rows, by kind (most kinds keyed by a row's label; test_probs by
# (method, inference))
Artifacts = dict[str, dict[Any, Any]]
# what a run keeps beside its rows (report.write_report writes them)
_ARTIFACTS = (
    "posteriors summaries extra map_probs test_probs tuning curves trust trust_fit "
    "search_unsampled exploration own_maps failures run"
).split()


def _row(
    method: str,
    inference: str,
    probs: ArrayLike,
    data: DistillationData,
    summary: Mapping[str, np.ndarray] | None = None,
    seconds: float | None = None,
    ood: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The row format of every experiment: ``method``, ``inference``, the classification
    metrics of ``probs`` on the test set (selective prediction included: ``aurc``,
    ``accuracy_at_90``), ``mean_deviance`` (posteriors only), the AUROC of error detection by
    it, the 95% interval coverage (with true probabilities), the OOD-detection AUROCs (with an
    OOD set, :func:`_ood_columns`) and the seconds.

    ``summary`` is a posterior's :func:`~mtbkd_jax.uncertainty.predictive_summary` on the test
    inputs (``None`` for a MAP or a teacher) and ``ood`` the same on ``data.ood_inputs``
    (:func:`_ood_summary`; ``None`` where there is none, e.g. a teacher's row)."""
    row = {
        "method": method,
        "inference": inference,
        **classification_metrics(probs, data.y_test),
        "mean_deviance": None,
    }
    if summary is not None:
        errors = summary["predictive_mean"].argmax(-1) != data.y_test
        row["mean_deviance"] = float(summary["mean_deviance"].mean())
        row["error_auroc_md"] = error_detection_auroc(summary["mean_deviance"], errors)
        if data.true_probs_test is not None:
            row["coverage_95"] = interval_coverage(summary["class_intervals"], data.true_probs_test)
    if data.ood_inputs is not None:
        row.update(_ood_columns(probs, summary, ood))
    if seconds is not None:
        row["seconds"] = round(seconds, 2)
    return row


def _ood_summary(predictor: Posterior, data: DistillationData) -> dict[str, np.ndarray] | None:
    """``predictor``'s :func:`~mtbkd_jax.uncertainty.predictive_summary` on
    ``data.ood_inputs`` (a MAP is a one-draw posterior), or ``None`` without an OOD set."""
    if data.ood_inputs is None:
        return None
    return predictive_summary(predictor, data.ood_inputs)


def _ood_columns(
    probs: ArrayLike,
    summary: Mapping[str, np.ndarray] | None,
    ood: Mapping[str, np.ndarray] | None,
) -> dict[str, float | None]:
    """``ood_auroc_entropy`` and ``ood_auroc_mi``: :func:`~mtbkd_jax.selective.ood_auroc` of
    the OOD inputs (positives) against the test inputs, scored by the predictive entropy
    (``total_entropy``) and by the mutual information (``epistemic``). Both are ``None``
    without ``ood``; ``ood_auroc_mi`` is ``None`` without a posterior ``summary`` (a MAP's one
    draw has no mutual information), and the test inputs' entropy is then that of ``probs``."""
    if ood is None:
        return {"ood_auroc_entropy": None, "ood_auroc_mi": None}
    if summary is None:
        inside = entropy_decomposition(np.asarray(probs)[None])["total"]
        return {"ood_auroc_entropy": ood_auroc(inside, ood["total_entropy"]), "ood_auroc_mi": None}
    return {
        "ood_auroc_entropy": ood_auroc(summary["total_entropy"], ood["total_entropy"]),
        "ood_auroc_mi": ood_auroc(summary["epistemic"], ood["epistemic"]),
    }


def _teacher_rows(data: DistillationData, artifacts: Artifacts) -> list[dict]:
    rows = []
    for m, name in enumerate(data.teachers_test.names):
        probs = np.exp(np.asarray(data.teachers_test.log_probs[m], np.float64))
        rows.append(_row(f"teacher {name}", "teacher", probs, data))
        artifacts["test_probs"][(rows[-1]["method"], "teacher")] = probs
    return rows


def _fit_mode(
    keys: MethodKeys,
    data: DistillationData,
    config: ExperimentConfig,
    method: Method,
    artifacts: Artifacts,
) -> tuple[Posterior, MTBKDModel, dict[str, Any]]:
    """The method's MAP (tuned if ``config.tune``): ``(mode, model, settings)``."""
    if config.tune:
        mode, model, search = tuned_map(keys.map, data, config, method.teachers, method.weight_rule)
        artifacts["tuning"][method.label] = search.evaluated
        return mode, model, search.best
    settings = default_settings(config)
    model = build_model(data, config, method.teachers, method.weight_rule, settings)
    mode = fit_map(keys.map, data, config, model, progress_bar=config.progress_bar)
    return mode, model, settings


def _record_trust(artifacts: Artifacts, label: str, fitted: Any) -> None:
    """A learned-trust row's trust summary (``trust.json``: per teacher), its record with
    the hyperprior and the chains' largest R-hat (``trust_fit.json``), and the settings of its
    search that could not be sampled, with the reasons (``search_unsampled.json``)."""
    artifacts["trust"][label] = fitted.trust.summary()
    artifacts["trust_fit"][label] = {**fitted.trust.description, "max_rhat": fitted.trust.max_rhat}
    if fitted.unsampled:  # settings of the search without a stable SGLD step size
        artifacts["search_unsampled"][label] = dict(fitted.unsampled)


def _run_method(
    keys: MethodKeys,
    data: DistillationData,
    config: ExperimentConfig,
    method: Method,
    out: tuple[list[dict[str, Any]], Artifacts],
    say: Callable[..., object],
) -> None:
    artifacts = out[1]
    start = time.perf_counter()
    posterior: Posterior | None = None
    if method.trust:
        assert method.teachers is not None  # a learned-trust method has teachers
        trust_key = jax.random.fold_in(keys.map, 1)
        fitted = fit_trusted(
            (trust_key, keys.map, cast("jax.Array", keys.posterior)),
            data,
            config,
            method.teachers,
            keys.starts,
        )
        mode, model, posterior, settings = fitted.mode, fitted.model, fitted.posterior, fitted.label
        _record_trust(artifacts, method.label, fitted)
        if fitted.search is not None:
            artifacts["tuning"][method.label] = fitted.search.evaluated
    else:
        mode, model, tuned = _fit_mode(keys, data, config, method, artifacts)
        settings = settings_label(tuned, method.teachers)
    # with tuning, a MAP row's seconds include every fit of its search (for a learned-trust
    # row, the trust and every posterior of its search too)
    _map_row(method, mode, data, settings, time.perf_counter() - start, out, say)
    if method.posterior is None:
        return
    start = time.perf_counter()
    if posterior is None and config.tune and config.posterior_tuning:
        tuned_row = tuned_posterior(keys, data, config, method, tuned)
        posterior, mode = tuned_row.posterior, tuned_row.mode  # the draws' own MAP
        settings = settings_label(tuned_row.settings, method.teachers)
        _record_own_map(method, tuned_row, data, config, artifacts)
    elif posterior is None:
        # a method with a posterior row has a posterior key (see method_keys)
        posterior_key = cast("jax.Array", keys.posterior)
        posterior = fit_posterior(posterior_key, data, config, model, mode, keys.starts)
    _posterior_row(method, posterior, data, config, settings, start, out, say)
    # what the draws explore: R-hat/ESS across chains, spread, distance travelled from the MAP
    artifacts["exploration"][method.posterior] = exploration_report(posterior, mode)
    if "data_devices" in posterior.settings:  # SG-MCMC: the devices each minibatch was split over
        devices = int(posterior.settings["data_devices"])
        artifacts["run"].setdefault("data_devices", {})[method.posterior] = devices


def _record_own_map(
    method: Method,
    tuned_row: TunedPosterior,
    data: DistillationData,
    config: ExperimentConfig,
    artifacts: Artifacts,
) -> None:
    """A posterior-tuned row's search (``tuning.json``, under ``"<label> (<bayes>)"``) and
    the test metrics of its own model's MAP (``own_maps.json``)."""
    label = cast(str, method.posterior)
    artifacts["tuning"][f"{label} ({config.bayes})"] = tuned_row.search.evaluated
    probs = np.asarray(tuned_row.mode.predict(data.x_test))[0]
    record = _row(label, "map", probs, data)
    record["settings"] = settings_label(tuned_row.settings, method.teachers)
    artifacts["own_maps"][label] = record


def _map_row(
    method: Method,
    mode: Posterior,
    data: DistillationData,
    settings: str,
    seconds: float,
    out: tuple[list[dict[str, Any]], Artifacts],
    say: Callable[..., object],
) -> None:
    rows, artifacts = out
    probs = np.asarray(mode.predict(data.x_test))[0]
    rows.append(
        _row(method.label, "map", probs, data, seconds=seconds, ood=_ood_summary(mode, data))
    )
    rows[-1]["settings"] = settings
    rows[-1].update(_map_convergence(getattr(mode, "settings", {})))
    artifacts["map_probs"][method.label] = probs
    artifacts["test_probs"][(method.label, "map")] = probs
    if method.reliability:
        artifacts["curves"][f"{method.label} (MAP)"] = probs
    say(f"  {method.label:<28} map   accuracy {rows[-1]['accuracy']:.3f} nll {rows[-1]['nll']:.3f}")


def _map_convergence(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A MAP row's convergence record from its ``run_map`` settings: the share of the loss's
    fall made in the last tenth of the run (``map_final_loss_change``, of the L-BFGS polish
    where there was one; ``None`` where not measured: under 100 steps) and, for a polished
    MAP, ``map_polish_steps_run``, ``map_polish_converged`` and ``map_polish_grad_norm``.
    JSON-safe (no NaN)."""
    change = settings.get("final_loss_change")
    value = None if change is None or not np.isfinite(change) else float(change)
    record: dict[str, Any] = {"map_final_loss_change": value}
    for key in ("polish_steps_run", "polish_converged", "polish_grad_norm"):
        if key in settings:
            value = settings[key]
            finite = not isinstance(value, float) or np.isfinite(value)
            record[f"map_{key}"] = value if finite else None
    return record


def _posterior_row(
    method: Method,
    posterior: Posterior,
    data: DistillationData,
    config: ExperimentConfig,
    settings: str,
    start: float,
    out: tuple[list[dict[str, Any]], Artifacts],
    say: Callable[..., object],
) -> None:
    rows, artifacts = out
    label = cast(str, method.posterior)
    summary = predictive_summary(posterior, data.x_test)
    seconds = time.perf_counter() - start
    rows.append(
        _row(
            label,
            config.bayes,
            summary["predictive_mean"],
            data,
            summary,
            seconds,
            ood=_ood_summary(posterior, data),
        )
    )
    rows[-1]["settings"] = settings
    artifacts["posteriors"][label] = posterior
    artifacts["summaries"][label] = summary
    artifacts["test_probs"][(label, config.bayes)] = summary["predictive_mean"]
    artifacts["extra"][label] = {
        name: predictive_summary(posterior, inputs)["mean_deviance"]
        for name, inputs in data.extra_inputs.items()
    }
    if method.reliability:
        artifacts["curves"][f"{label} ({config.bayes.upper()})"] = summary["predictive_mean"]
    line = f"  {label:<28} {config.bayes:<5} accuracy {rows[-1]['accuracy']:.3f} "
    line += f"nll {rows[-1]['nll']:.3f} md {rows[-1]['mean_deviance']:.3f}"
    if "diverging" in posterior.sample_stats:
        line += f" divergences {int(np.asarray(posterior.sample_stats['diverging']).sum())}"
    say(line)


def run_baselines(
    data: DistillationData,
    config: ExperimentConfig,
    *,
    say: Callable[..., object] = print,
    report: Callable[[list[dict[str, Any]], Artifacts], object] | None = None,
) -> tuple[list[dict[str, Any]], Artifacts]:
    """Fit every method of ``config.methods``'s plan; returns ``(rows, artifacts)``.

    ``artifacts`` holds, per Bayesian method, its posterior and per-example summary on the test
    set (and on ``extra_inputs``), each MAP's test probabilities, the validation scores of every
    search (``tuning``), the curves of ``reliability.png`` and every row's test probabilities
    by ``(method, inference)`` (``test_probs``, written to ``predictions.npz``).

    A method that raises does not stop the run (in one process; with several, the error is
    raised at once, as the processes would otherwise fall out of step): its exception is kept
    in ``artifacts["failures"]`` by label (its frames' locals cleared, so that the failed
    fit's arrays are freed; the rows it finished, e.g. its MAP's, are kept), and the other
    methods run. :func:`~mtbkd_jax.experiments.report.write_report` records the
    failures and :func:`~mtbkd_jax.experiments.report.raise_failures` then raises, so that
    hours of other methods' work are written before the run reports the error.

    ``artifacts["run"]`` records the run's provenance
    (:func:`~mtbkd_jax.experiments.provenance.run_provenance`) and whether it is ``complete``.
    An exception that escapes the methods' loop (``KeyboardInterrupt``; any error with
    several processes) is raised after ``report(rows, artifacts)`` (a runner's
    :func:`~mtbkd_jax.experiments.report.write_report`) has written the rows finished so far,
    marked ``complete: false`` with the ``missing`` methods
    (:func:`~mtbkd_jax.experiments.report.write_partial`).

    Raises:
        ValueError: ``config.tune`` on a problem without a validation split,
            ``config.trust_labels="validation"`` (with a learned-trust row) on one without
            ``teachers_validation``, ``x_train`` not of shape (N, D) (the MLP student's), or a
            ``config.mesh`` whose axes do not divide the chains, the SGLD minibatch or the
            data (:func:`~mtbkd_jax.infer.mesh.check_mesh`).
    """
    methods = METHOD_PLANS[config.methods](data)
    check_problem(data, config, methods)
    artifacts: dict[str, dict] = {name: {} for name in _ARTIFACTS}
    artifacts["run"].update(placement(config), provenance=run_provenance(config))
    check_run_mesh(data, config)
    rows = _teacher_rows(data, artifacts) if config.teacher_rows else []
    done: list[str] = []
    try:
        for method, keys in zip(methods, method_keys(config, methods), strict=True):
            _run_kept(keys, data, config, method, (rows, artifacts), say)
            done.append(method.label)
    except BaseException as stop:  # KeyboardInterrupt: what finished is written first
        missing = [method.label for method in methods if method.label not in done]
        write_partial(report, rows, artifacts, missing, stop)
        raise
    artifacts["run"]["complete"] = True
    return rows, artifacts


def _run_kept(
    keys: MethodKeys,
    data: DistillationData,
    config: ExperimentConfig,
    method: Method,
    out: tuple[list[dict[str, Any]], Artifacts],
    say: Callable[..., object],
) -> None:
    """:func:`_run_method`, its error kept in ``artifacts["failures"]`` (one process)."""
    try:
        with named_by_method(method.label):
            _run_method(keys, data, config, method, out, say)
    except Exception as error:  # the other methods still run; raise_failures reports it
        if jax.process_count() > 1:  # the processes would leave each other's collectives
            raise
        traceback.clear_frames(error.__traceback__)  # not the failed fit's arrays
        out[1]["failures"][method.label] = error
        say(f"  {method.label:<28} failed: {type(error).__name__}: {error}")
