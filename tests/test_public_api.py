"""The public surface: every ``__all__`` resolves, the top level fits on a card, the names that
left it still work (with a warning naming their home), and names agree across the API."""

import importlib
import inspect
import os
import pkgutil
import types
import warnings

import numpy as np
import pytest
from flax import nnx

import mtbkd_jax

CARD_SIZE_LIMIT = 22

# the top level of 0.1.0; every name must still resolve, from the card or with a warning
FORMER_TOP_LEVEL = [
    "CNN",
    "CheckpointError",
    "MLP",
    "LinenMLP",
    "MTBKDModel",
    "Posterior",
    "SamplerDivergedError",
    "SearchResult",
    "Student",
    "TeacherBank",
    "TeacherMixtureDirichlet",
    "TeacherPrior",
    "accuracy",
    "brier_score",
    "class_intervals",
    "classification_metrics",
    "classwise_calibration_error",
    "coordinate_search",
    "credible_threshold",
    "dirichlet_mixture_log_density",
    "entropy_decomposition",
    "error_detection_auroc",
    "expected_calibration_error",
    "flat_prior",
    "interval_coverage",
    "inverse_entropy_weights",
    "kde_mode_prediction",
    "mean_deviance",
    "negative_log_likelihood",
    "normal_prior",
    "paper_weights",
    "predictive_mean",
    "predictive_summary",
    "run_map",
    "run_nuts",
    "run_paper_sgld",
    "run_sgmcmc",
    "run_svi",
    "schedules",
    "softmax_weights",
    "teacher_prior_factor",
    "teacher_weights",
    "uniform_weights",
]

# where each name that left the top level lives now
MOVED = {
    "accuracy": "mtbkd_jax.metrics",
    "brier_score": "mtbkd_jax.metrics",
    "classification_metrics": "mtbkd_jax.metrics",
    "classwise_calibration_error": "mtbkd_jax.metrics",
    "error_detection_auroc": "mtbkd_jax.metrics",
    "expected_calibration_error": "mtbkd_jax.metrics",
    "interval_coverage": "mtbkd_jax.metrics",
    "negative_log_likelihood": "mtbkd_jax.metrics",
    "class_intervals": "mtbkd_jax.uncertainty",
    "credible_threshold": "mtbkd_jax.uncertainty",
    "entropy_decomposition": "mtbkd_jax.uncertainty",
    "kde_mode_prediction": "mtbkd_jax.uncertainty",
    "inverse_entropy_weights": "mtbkd_jax.weighting",
    "paper_weights": "mtbkd_jax.weighting",
    "softmax_weights": "mtbkd_jax.weighting",
    "uniform_weights": "mtbkd_jax.weighting",
    "TeacherMixtureDirichlet": "mtbkd_jax.priors",
    "dirichlet_mixture_log_density": "mtbkd_jax.priors",
    "CNN": "mtbkd_jax.students",
    "LinenMLP": "mtbkd_jax.students",
    "SearchResult": "mtbkd_jax.tuning",
    "coordinate_search": "mtbkd_jax.tuning",
    "schedules": "mtbkd_jax.infer",
}

# the submodules users reach for what is not on the card: each lists all it offers
USER_MODULES = [
    "mtbkd_jax.datasets",
    "mtbkd_jax.diagnostics",
    "mtbkd_jax.experiments",
    "mtbkd_jax.infer",
    "mtbkd_jax.infer.schedules",
    "mtbkd_jax.metrics",
    "mtbkd_jax.model",
    "mtbkd_jax.plots",
    "mtbkd_jax.priors",
    "mtbkd_jax.scale_priors",
    "mtbkd_jax.selective",
    "mtbkd_jax.streaming_metrics",
    "mtbkd_jax.students",
    "mtbkd_jax.camkd",
    "mtbkd_jax.teachers",
    "mtbkd_jax.trust",
    "mtbkd_jax.tuning",
    "mtbkd_jax.uncertainty",
    "mtbkd_jax.weighting",
]


def _public_modules() -> list[str]:
    """The package and every submodule whose dotted path has no ``_`` component."""
    found = pkgutil.walk_packages(mtbkd_jax.__path__, prefix="mtbkd_jax.")
    names = [m.name for m in found if not any(p.startswith("_") for p in m.name.split("."))]
    return ["mtbkd_jax", *sorted(names)]


PUBLIC_MODULES = _public_modules()


def _check_all(module: types.ModuleType) -> None:
    """Raise unless ``module.__all__`` is a list of distinct names that all import, without a
    deprecation warning, both one by one and by ``from module import *``."""
    names = module.__all__
    assert isinstance(names, list | tuple), f"{module.__name__}.__all__ is {type(names)}"
    assert all(isinstance(n, str) for n in names), module.__name__
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"{module.__name__}.__all__ repeats {duplicates}"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"mtbkd_jax\..* is deprecated")
        for name in names:
            exec(f"from {module.__name__} import {name}", {})  # AttributeError/ImportError
        namespace: dict = {}
        exec(f"from {module.__name__} import *", namespace)
    missing = [n for n in names if n not in namespace]
    assert not missing, f"from {module.__name__} import * gave no {missing}"


def _unlisted(module: types.ModuleType) -> list[str]:
    """Public functions and classes defined in ``module`` that its ``__all__`` leaves out."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", None) == module.__name__
        and name not in module.__all__
    )


# ------------------------------------------------------------------ every __all__ resolves
def test_the_walk_finds_the_public_modules_and_skips_private_ones():
    assert set(USER_MODULES) <= set(PUBLIC_MODULES)
    assert not [m for m in PUBLIC_MODULES if "._" in m]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_every_all_imports(name):
    module = importlib.import_module(name)
    if hasattr(module, "__all__"):
        _check_all(module)


@pytest.mark.parametrize("name", USER_MODULES)
def test_each_user_module_has_an_all_that_lists_what_it_defines(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    _check_all(module)
    assert not _unlisted(module), f"{name}.__all__ leaves out {_unlisted(module)}"


def test_a_broken_all_entry_fails_the_checks(monkeypatch):
    metrics = importlib.import_module("mtbkd_jax.metrics")
    monkeypatch.setattr(metrics, "__all__", [*metrics.__all__, "no_such_metric"])
    with pytest.raises((AttributeError, ImportError)):
        _check_all(metrics)
    monkeypatch.setattr(metrics, "__all__", [*metrics.__all__[:-1], "accuracy"])
    with pytest.raises(AssertionError, match="repeats"):
        _check_all(metrics)
    monkeypatch.setattr(metrics, "__all__", [n for n in metrics.__all__ if n != "brier_score"])
    assert "brier_score" in _unlisted(metrics)
    # a deprecated name on the card is caught too
    monkeypatch.setattr(mtbkd_jax, "__all__", [*mtbkd_jax.__all__, "accuracy"])
    with pytest.raises(DeprecationWarning, match="mtbkd_jax.metrics.accuracy"):
        _check_all(mtbkd_jax)


# ------------------------------------------------------------------ the card
def test_the_top_level_fits_on_a_card():
    card = mtbkd_jax.__all__
    assert len(card) <= CARD_SIZE_LIMIT, f"{len(card)} names: {card}"
    assert not set(card) & set(MOVED)
    for name in ("TeacherBank", "teacher_weights", "TeacherPrior", "teacher_prior_factor"):
        assert name in card
    for name in ("Student", "MLP", "MTBKDModel", "Posterior", "mean_deviance"):
        assert name in card
    assert {n for n in card if n.startswith("run_")} == {
        "run_map",
        "run_nuts",
        "run_svi",
        "run_sgmcmc",
        "run_paper_sgld",
    }


def test_dir_shows_the_card_and_the_submodules_not_the_moved_names():
    listed = dir(mtbkd_jax)
    assert set(mtbkd_jax.__all__) <= set(listed)
    assert not set(listed) & set(MOVED)
    for module in USER_MODULES:
        top = module.split(".")[1]
        assert top in listed
        assert isinstance(getattr(mtbkd_jax, top), types.ModuleType)  # imported on first use
    assert "__version__" in listed


def test_every_former_top_level_name_is_on_the_card_or_moved():
    assert set(FORMER_TOP_LEVEL) == set(mtbkd_jax.__all__) | set(MOVED)
    assert not set(mtbkd_jax.__all__) - set(FORMER_TOP_LEVEL)  # the card only shrank


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_moved_name_warns_and_is_its_new_homes_object(name):
    home = MOVED[name]
    expected = getattr(importlib.import_module(home), name)
    assert name in importlib.import_module(home).__all__
    message = rf"mtbkd_jax\.{name} is deprecated; use {home.replace('.', r'\.')}\.{name}$"
    with pytest.warns(DeprecationWarning, match=message) as record:
        found = getattr(mtbkd_jax, name)
    assert found is expected
    assert record[0].filename == __file__  # points at the user's line
    with pytest.warns(DeprecationWarning, match=message):
        exec(f"from mtbkd_jax import {name} as found", namespace := {})
    assert namespace["found"] is expected


def test_an_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        mtbkd_jax.no_such_name  # noqa: B018
    assert not hasattr(mtbkd_jax, "no_such_name")


# ------------------------------------------------------------------ names agree
def _keywords(function) -> list[str]:
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def test_the_models_weight_arguments_are_teacher_weights_with_a_prefix():
    rule_keywords = ["rule", "temperature", "tau"]
    assert _keywords(mtbkd_jax.teacher_weights)[1:] == rule_keywords
    weighting = importlib.import_module("mtbkd_jax.weighting")
    assert _keywords(weighting.teacher_log_weights)[1:4] == rule_keywords
    prefixed = [f"weight_{k}" for k in rule_keywords]
    for function in (mtbkd_jax.MTBKDModel, mtbkd_jax.TeacherPrior.build):
        keywords = _keywords(function)
        assert [k for k in keywords if k.startswith("weight")] == prefixed, function
        assert "weights" not in keywords


@pytest.fixture(scope="module")
def small():
    bank = mtbkd_jax.TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 8, 3)))
    student = mtbkd_jax.Student(mtbkd_jax.MLP(4, 3, rngs=nnx.Rngs(0)))
    return bank, student


def test_the_former_weights_keyword_still_works_with_a_warning(small):
    bank, student = small
    match = r"mtbkd_jax\.MTBKDModel\(weights=\) is deprecated; use weight_rule="
    with pytest.warns(DeprecationWarning, match=match) as record:
        old = mtbkd_jax.MTBKDModel(student, bank, weights="inverse_entropy")
    assert record[0].filename == __file__
    new = mtbkd_jax.MTBKDModel(student, bank, weight_rule="inverse_entropy")
    assert old.weight_rule == new.weight_rule == "inverse_entropy"
    np.testing.assert_array_equal(old.teacher_weights, new.teacher_weights)
    with pytest.warns(DeprecationWarning, match=r"MTBKDModel\.paper\(weights=\)"):
        paper = mtbkd_jax.MTBKDModel.paper(student, bank, weights="uniform")
    assert paper.weight_rule == "uniform"
    assert paper.differs_from_paper() == ["weight_rule='uniform' (paper: 'paper')"]
    with pytest.warns(DeprecationWarning, match=r"TeacherPrior\.build\(weights=\)"):
        prior = mtbkd_jax.TeacherPrior.build(bank, concentration=2.0, weights="softmax")
    same = mtbkd_jax.TeacherPrior.build(bank, concentration=2.0, weight_rule="softmax")
    np.testing.assert_array_equal(prior.log_weights, same.log_weights)
    with pytest.raises(TypeError, match="both weights= .* and weight_rule="):
        mtbkd_jax.MTBKDModel(student, bank, weights="paper", weight_rule="paper")


def test_the_paper_model_warns_about_nothing(small):
    bank, student = small
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = mtbkd_jax.MTBKDModel.paper(student, bank)
    assert model.differs_from_paper() == []


def test_one_name_for_the_logits_of_one_draw(small):
    """``Student.logits``, ``MTBKDModel.logits`` and the front-ends' ``logits_fn=`` (a
    function like them, defaulting to ``model.logits``)."""
    bank, student = small
    model = mtbkd_jax.MTBKDModel(student, bank)
    assert _keywords(mtbkd_jax.Student.logits) == ["self", "weights", "features"]
    assert _keywords(mtbkd_jax.MTBKDModel.logits) == ["self", "weights", "features"]
    for front_end in (  # run_map passes its keywords on to run_svi
        mtbkd_jax.run_nuts,
        mtbkd_jax.run_svi,
        mtbkd_jax.run_sgmcmc,
        mtbkd_jax.Posterior,
        mtbkd_jax.Posterior.load,
    ):
        assert "logits_fn" in _keywords(front_end), front_end
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    import jax

    weights = student.init_weights(jax.random.key(0), x)
    np.testing.assert_array_equal(student.logits(weights, x), model.logits(weights, x))
    with pytest.warns(DeprecationWarning, match=r"Student\.apply is deprecated") as record:
        apply = student.apply
    assert record[0].filename == __file__
    assert apply == student.logits
    np.testing.assert_array_equal(apply(weights, x), student.logits(weights, x))


def test_the_draw_counts_of_a_posterior():
    """``Posterior.num_draws`` is per chain, as ``run_svi(num_draws=)`` and
    ``run_nuts(num_draws=)``; ``Posterior.total_draws`` is chains x draws."""
    draws = {"w": np.zeros((2, 3, 4), np.float32)}
    post = mtbkd_jax.Posterior(draws)
    assert (post.num_chains, post.num_draws, post.total_draws) == (2, 3, 6)
    for front_end in (mtbkd_jax.run_nuts, mtbkd_jax.run_svi):
        keywords = _keywords(front_end)
        assert "num_draws" in keywords and "num_samples" not in keywords, front_end
    message = (
        r"Posterior\.num_samples is deprecated; use Posterior\.total_draws \(chains x draws\) "
        r"or Posterior\.num_draws \(per chain\)$"
    )
    with pytest.warns(DeprecationWarning, match=message) as record:
        old = post.num_samples
    assert record[0].filename == __file__
    assert old == post.total_draws == 6


def test_the_former_num_samples_keyword_of_run_nuts_still_works_with_a_warning():
    """``run_nuts(num_samples=)`` is ``num_draws=`` (draws per chain), with a warning; the
    posterior's settings name it ``num_draws``."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    settings = dict(num_warmup=3, num_chains=2, chain_method="sequential", progress_bar=False)
    match = r"mtbkd_jax\.run_nuts\(num_samples=\) is deprecated; use num_draws="
    with pytest.warns(DeprecationWarning, match=match) as record:
        old = mtbkd_jax.run_nuts(jax.random.key(0), model, x, y, num_samples=4, **settings)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "error", message=r"mtbkd_jax\.run_nuts", category=DeprecationWarning
        )
        new = mtbkd_jax.run_nuts(jax.random.key(0), model, x, y, num_draws=4, **settings)
    for post in (old, new):
        assert (post.num_chains, post.num_draws, post.total_draws) == (2, 4, 8)
        assert post.settings["num_draws"] == 4 and "num_samples" not in post.settings
    np.testing.assert_array_equal(old.draws["w"], new.draws["w"])
    with pytest.raises(TypeError, match=r"both num_samples= .* and num_draws="):
        mtbkd_jax.run_nuts(jax.random.key(0), model, x, y, num_samples=4, num_draws=4)
    with pytest.raises(ValueError, match=r"num_draws must be an integer >= 1"):
        mtbkd_jax.run_nuts(jax.random.key(0), model, x, y, num_draws=0)
    with pytest.raises(ValueError, match=r"num_draws must be >= thinning"):
        mtbkd_jax.run_nuts(jax.random.key(0), model, x, y, num_draws=2, thinning=3)


def test_importing_arviz_first_leaves_numpyro_whole():
    """ArviZ registers numpyro as a lazy module; with ``import arviz`` before the package (a
    notebook's usual order), numpyro.distributions lost its submodule attributes and every
    teacher prior's numpyro.factor failed. In a fresh process, in that order, a factor runs."""
    import subprocess
    import sys

    script = (
        "import arviz, numpyro.distributions as d\n"
        "broken = not hasattr(d, 'distribution')\n"
        "import mtbkd_jax, numpyro\n"
        "from numpyro.handlers import trace\n"
        "t = trace(lambda: numpyro.factor('f', 1.0)).get_trace()\n"
        "print(broken, hasattr(d, 'distribution'), float(t['f']['fn'].log_prob(0)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "1.0"]  # broken before the package, whole after
