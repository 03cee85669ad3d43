"""Coordinate search over a hyperparameter grid, and per-method tuning in the experiments."""

import itertools
import json
import math
import types

import numpy as np
import pytest

import mtbkd_jax as mk


def _separable(settings):
    return (settings["a"] - 2) ** 2 + (math.log10(settings["b"]) + 1) ** 2


def test_coordinate_search_finds_the_grid_minimum_of_a_separable_score():
    grid = {"a": (0, 1, 2, 3), "b": (0.01, 0.1, 1.0)}
    result = mk.tuning.coordinate_search(_separable, grid, {"a": 0, "b": 1.0, "fixed": "x"})
    # an independent reference: the exhaustive grid
    exhaustive = min(
        ({"a": a, "b": b, "fixed": "x"} for a, b in itertools.product(*grid.values())),
        key=_separable,
    )
    assert result.best == exhaustive == {"a": 2, "b": 0.1, "fixed": "x"}
    assert result.best_score == pytest.approx(0.0)
    # each settings dict scored once: the start, then the other 3 + 2 values of each axis
    assert len(result.evaluated) == 1 + 3 + 2
    assert all("score" in row for row in result.evaluated)


def test_coordinate_search_treats_nan_as_worst_and_keeps_ties():
    scores = {0: float("nan"), 1: 1.0, 2: 1.0}
    result = mk.tuning.coordinate_search(lambda s: scores[s["a"]], {"a": (0, 1, 2)}, {"a": 0})
    assert result.best == {"a": 1}
    assert result.evaluated[0] == {"a": 0, "score": None}


def test_coordinate_search_sweeps_until_nothing_changes():
    """Worked by hand: from (0, 0), sweep 1 moves b to 1 (a tie with b = 2 keeps 1); sweep 2
    moves a to 1, then b to 2; sweep 3 moves a to 2; sweep 4 changes nothing."""

    def score(s):
        return (s["a"] - s["b"]) ** 2 + (s["b"] - 3) ** 2

    grid = {"a": range(5), "b": range(5)}
    one = mk.tuning.coordinate_search(score, grid, {"a": 0, "b": 0})
    assert (one.best, one.best_score) == ({"a": 0, "b": 1}, 5.0)
    more = mk.tuning.coordinate_search(score, grid, {"a": 0, "b": 0}, sweeps=10)
    assert (more.best, more.best_score) == ({"a": 2, "b": 2}, 1.0)


def test_a_later_sweep_keeps_an_extension_only_past_the_minimum_improvement():
    """An extension refused for gaining less than ``min_improvement`` stays refused when a
    later sweep (run because another axis changed) meets it again: a flat score must not walk
    the grid out one value per sweep."""

    def score(s):
        return (0.1 if s["c"] == "a" else 0.0) + 1e-5 * math.log10(s["beta"])  # flat in beta

    grid = {"c": ("a", "b"), "beta": (0.1, 0.3, 1.0)}
    result = mk.tuning.coordinate_search(
        score, grid, {"c": "a", "beta": 0.3}, sweeps=5, min_improvement=0.002
    )
    assert result.best == {"c": "b", "beta": 0.1}
    np.testing.assert_allclose(result.extended["beta"], [0.1 / 3])
    # a gain past the margin is still taken
    steep = mk.tuning.coordinate_search(
        lambda s: score(s) + 0.01 * math.log10(s["beta"]) * (s["c"] == "b"),
        grid, {"c": "a", "beta": 0.3}, sweeps=5, min_improvement=0.002,
    )  # fmt: skip
    assert steep.best["c"] == "b" and steep.best["beta"] < 0.1 / 3


@pytest.mark.parametrize(
    ("grid", "start", "sweeps", "match"),
    [
        ({}, {"a": 0}, 1, "at least one axis"),
        ({"a": ()}, {"a": 0}, 1, r"grid\['a'\]"),
        ({"a": (1,)}, {}, 1, "start has no value"),
        ({"a": (1,)}, {"a": 0}, 0, "sweeps"),
        ({"a": (1,)}, {"a": 0}, 1.9, "sweeps must be an integer >= 1, got 1.9"),  # ran 1 sweep
        ({"a": (1,)}, {"a": 0}, "2", "sweeps must be an integer"),  # was accepted
    ],
)
def test_coordinate_search_rejects_bad_input(grid, start, sweeps, match):
    with pytest.raises(ValueError, match=match):
        mk.tuning.coordinate_search(lambda s: 0.0, grid, start, sweeps=sweeps)


# ------------------------------------------------------------------ grids without edges
def _quadratic(optimum, name="x"):
    """A validation curve quadratic in log(value), lowest at ``optimum``."""
    return lambda s: (math.log(s[name]) - math.log(optimum)) ** 2


def _lattice_minimum(score, first, ratio, name="x"):
    """The independent reference: the best point of the whole geometric lattice
    ``first * ratio**k`` (k = -12..12), by exhaustive search."""
    lattice = [first * ratio**k for k in range(-12, 13)]
    return min(lattice, key=lambda v: score({name: v}))


@pytest.mark.parametrize(
    ("grid", "optimum", "ratio"),
    [((1.0, 3.0, 9.0), 40.0, 3.0), ((0.03, 0.1, 0.3), 0.01, 0.1 / 0.03), ((2.0, 4.0), 19.0, 2.0)],
)
def test_an_optimum_beyond_the_grid_is_found_by_extending_it(grid, optimum, ratio):
    score = _quadratic(optimum)
    result = mk.tuning.coordinate_search(score, {"x": grid}, {"x": grid[1]})
    expected = _lattice_minimum(score, grid[0], ratio)
    assert result.best["x"] == pytest.approx(expected, rel=1e-9)
    assert result.best["x"] not in grid and result.best["x"] in result.extended["x"]
    assert result.on_edge == []  # one value beyond the best was tried, and lost
    assert result.grid_note("x") == "grid extended"
    # a search without extension (the old behaviour) stops at the grid's edge: the test fails it
    plain = mk.tuning.coordinate_search(score, {"x": grid}, {"x": grid[1]}, max_extensions=0)
    assert plain.best["x"] in (min(grid), max(grid)) and plain.best["x"] != result.best["x"]
    assert plain.on_edge == ["x"] and plain.extended == {} and plain.grid_note("x") == "grid edge"


def test_an_optimum_inside_the_grid_is_not_extended():
    result = mk.tuning.coordinate_search(_quadratic(3.5), {"x": (1.0, 3.0, 9.0)}, {"x": 1.0})
    assert result.best == {"x": 3.0}
    assert result.extended == {} and result.on_edge == [] and result.grid_note("x") is None
    assert [r["x"] for r in result.evaluated] == [1.0, 3.0, 9.0]


def test_the_cap_is_respected_and_reported():
    score = _quadratic(1e6)
    result = mk.tuning.coordinate_search(score, {"x": (1.0, 3.0)}, {"x": 1.0})
    assert result.extended == {"x": [9.0, 27.0, 81.0]}  # the default cap: 3 per end
    assert result.best == {"x": 81.0} and result.on_edge == ["x"]
    assert result.grid_note("x") == "grid extended, still on edge"
    one = mk.tuning.coordinate_search(score, {"x": (1.0, 3.0)}, {"x": 1.0}, max_extensions=1)
    assert one.extended == {"x": [9.0]} and one.on_edge == ["x"]
    # the cap counts over all sweeps
    more = mk.tuning.coordinate_search(score, {"x": (1.0, 3.0)}, {"x": 1.0}, sweeps=5)
    assert more.extended == {"x": [9.0, 27.0, 81.0]}


def test_only_numeric_sorted_grids_move_unless_named():
    def score(s):
        return (math.log(s["x"]) - math.log(20.0)) ** 2 + (s["n"] - 7) ** 2 + len(s["mode"])

    grid = {"x": (1.0, 3.0), "n": (-1, 0, 1, 2), "mode": ("ab", "a"), "fixed": (0.1,)}
    start = {"x": 1.0, "n": 0, "mode": "ab", "fixed": 0.1}
    result = mk.tuning.coordinate_search(score, grid, start)
    # "n" holds a negative number, "mode" is not numeric, "fixed" has one value: none moves
    assert result.extended == {"x": [9.0, 27.0, 81.0]} and result.best["x"] == 27.0
    assert result.best["fixed"] == 0.1
    assert result.best["n"] == 2 and result.best["mode"] == "a"
    assert result.on_edge == []  # n's grid is not a scale, so its edge is not reported
    # integers stay integers; extend=[] leaves every axis alone, and an axis left alone whose
    # best value is on its edge is reported
    ints = mk.tuning.coordinate_search(_quadratic(20), {"x": (1, 2, 4)}, {"x": 1})
    assert ints.extended == {"x": [8, 16, 32]} and ints.best == {"x": 16}
    assert all(isinstance(v, int) for v in ints.extended["x"])
    frozen = mk.tuning.coordinate_search(_quadratic(20), {"x": (1, 2, 4)}, {"x": 1}, extend=[])
    assert frozen.extended == {} and frozen.on_edge == ["x"]
    # a single value named in extend moves by factors of 3, up and then down
    single = mk.tuning.coordinate_search(_quadratic(0.1), {"x": (1.0,)}, {"x": 1.0}, extend=["x"])
    assert single.extended["x"] == pytest.approx([3.0, 1 / 3, 1 / 9, 1 / 27], rel=1e-11)
    assert single.best["x"] == pytest.approx(1 / 9, rel=1e-11) and single.on_edge == []


@pytest.mark.parametrize(
    "grid",
    [
        (0.0, 3.0, 10.0, 30.0),  # a 0 (a flat Dirichlet's lambda) below positive values
        (10.0, 3.0, 30.0),  # unsorted
        (3.0, 10.0, 10.0, 30.0),  # a value listed twice
        (30.0, 10.0, 3.0, 0.0),
    ],
)
def test_a_grid_with_a_zero_unsorted_or_repeated_values_is_extended_at_its_top(grid):
    """Such grids were neither extended nor reported on their edge: best 30, extended {},
    on_edge [] (a user-probe review). The edges are the smallest and largest values, the
    ratio the positive values' own; a 0 is the grid's lower end."""

    def score(s):
        return (s["lam"] - 300.0) ** 2

    result = mk.tuning.coordinate_search(score, {"lam": grid}, {"lam": 10.0})
    assert result.best["lam"] == pytest.approx(_lattice_minimum(score, 10.0, 3.0, "lam"))
    assert result.extended == {"lam": pytest.approx([90.0, 270.0, 810.0])}
    assert result.on_edge == [] and result.grid_note("lam") == "grid extended"
    values = [row["lam"] for row in result.evaluated]
    assert len(values) == len(set(values))  # each value scored once
    frozen = mk.tuning.coordinate_search(score, {"lam": grid}, {"lam": 10.0}, max_extensions=0)
    assert frozen.best == {"lam": 30.0} and frozen.on_edge == ["lam"]
    # nothing lies below a 0: a best 0 is neither extended nor on the edge
    if 0.0 in grid:
        low = mk.tuning.coordinate_search(lambda s: s["lam"], {"lam": grid}, {"lam": 10.0})
        assert low.best == {"lam": 0.0} and low.extended == {} and low.on_edge == []


def test_an_unsorted_grid_is_searched_in_its_order():
    """Only the edges come from the sorted values: ties keep the earlier value as listed."""
    scores = {3.0: 1.0, 10.0: 2.0, 30.0: 1.0, 90.0: 5.0}
    result = mk.tuning.coordinate_search(
        lambda s: scores[s["lam"]], {"lam": (30.0, 3.0, 10.0)}, {"lam": 10.0}
    )
    assert [row["lam"] for row in result.evaluated] == [10.0, 30.0, 3.0, 90.0]
    assert result.best == {"lam": 30.0} and result.extended == {"lam": [90.0]}


@pytest.mark.parametrize("search", ["coordinate", "profile"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan")])
@pytest.mark.parametrize("where", ["grid", "start"])
def test_a_setting_that_is_not_a_finite_number_is_refused(search, bad, where):
    """A NaN or inf in a grid used to be scored, and could be returned as the best."""
    from mtbkd_jax.tuning import coordinate_search, profile_search

    grid = {"m": ("a", "b"), "lam": [1.0, 3.0, 10.0] + ([bad] if where == "grid" else [])}
    start = {"m": "a", "lam": bad if where == "start" else 3.0}

    def score(s):
        return -s["lam"] if math.isfinite(s["lam"]) else -1e9  # a NaN or inf would be best

    message = r"grid\['lam'\] values" if where == "grid" else r"start\['lam'\]"
    with pytest.raises(ValueError, match=message + " must not be NaN or infinite, got"):
        if search == "profile":
            profile_search(score, grid, start, over="m")
        else:
            coordinate_search(score, grid, start)


def test_numpy_integer_grids_are_extended_with_python_integers():
    """``list(np.array([2, 4, 8]))`` (or the array) was extended with floats: best h=16.0."""
    score, seen = _quadratic(20, "h"), []
    for grid in (list(np.array([2, 4, 8])), np.array([2, 4, 8]), np.array([2, 4, 8], np.int32)):
        result = mk.tuning.coordinate_search(
            lambda s: seen.append(type(s["h"])) or score(s), {"h": grid}, {"h": np.int64(2)}
        )
        assert result.best == {"h": 16} and type(result.best["h"]) is int
        assert result.extended == {"h": [16, 32]}
        assert all(type(v) is int for v in result.extended["h"]) and set(seen) == {int}
    start = mk.tuning.coordinate_search(_quadratic(8, "h"), {"h": np.arange(2, 9, 2)}, {"h": 8})
    assert start.best == {"h": 8} and type(start.best["h"]) is int
    floats = mk.tuning.coordinate_search(
        _quadratic(20, "h"), {"h": np.array([2.0, 4.0, 8.0])}, {"h": np.float64(2.0)}
    )
    assert floats.best == {"h": 16.0} and type(floats.best["h"]) is float


def test_prior_settings_grids_keep_working():
    """The experiments' axes: the single-value smoke grids of lambda and beta never move; beta's
    three-point grid extends downward when the best beta is its smallest."""
    from mtbkd_jax.experiments.config import SMOKE_TUNING

    def score(s):
        return (
            (math.log(s["prior_scale"]) - math.log(0.5)) ** 2
            + (math.log(s["prior_power"]) - math.log(0.004)) ** 2
            + (s["concentration"] - 10.0) ** 2
        )

    start = {"prior_scale": 1.0, "concentration": 10.0, "prior_power": 0.1}
    grid = {name: SMOKE_TUNING[f"{name}_grid"] for name in start}
    smoke = mk.tuning.coordinate_search(score, grid, start)
    # sigma0: 0.3 beats 1, so 0.3 / (1 / 0.3) = 0.09 is tried; it loses, and 0.3 is inside
    assert smoke.extended == {"prior_scale": [0.09]} and smoke.best["prior_scale"] == 0.3
    assert smoke.best["concentration"] == 10.0 and smoke.best["prior_power"] == 0.1
    grid["prior_power"] = (0.03, 0.1, 0.3)
    full = mk.tuning.coordinate_search(score, grid, start)
    assert full.best["prior_power"] == pytest.approx(0.0027)
    assert full.extended["prior_power"] == pytest.approx([0.009, 0.0027, 0.00081])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"extend": ["y"]}, ValueError, "extend names 'y', which is not an axis"),
        ({"extend": ["mode"]}, ValueError, "extend names 'mode', whose grid"),
        ({"extend": "x"}, TypeError, "extend must be a list"),
        ({"max_extensions": -1}, ValueError, "max_extensions"),
        ({"max_extensions": 1.5}, TypeError, "max_extensions"),
    ],
)
def test_extension_arguments_are_checked(kwargs, error, match):
    grid = {"x": (1.0, 2.0), "mode": ("a", "b")}
    with pytest.raises(error, match=match):
        mk.tuning.coordinate_search(lambda s: 0.0, grid, {"x": 1.0, "mode": "a"}, **kwargs)


def test_settings_labels_say_where_a_value_came_from():
    from mtbkd_jax.experiments.fit import settings_label

    settings = {"prior_scale": 9.0, "concentration": 10.0, "prior_power": 0.1}
    bank = mk.TeacherBank.from_logits(np.zeros((1, 2, 2)))
    assert settings_label(settings, bank) == "σ0=9 λ=10 β=0.1"
    result = mk.tuning.SearchResult(
        settings, 0.0, extended={"prior_scale": [9.0]}, on_edge=["prior_power"]
    )
    label = "σ0=9 (grid extended) λ=10 β=0.1 (grid edge)"
    assert settings_label(settings, bank, result) == label
    assert settings_label(settings, None, result) == "σ0=9 (grid extended)"


@pytest.mark.slow
def test_tuned_baselines_pick_the_validation_best_prior_scale():
    """With tune=True each method's MAP uses the grid value with the lowest validation NLL,
    and its Bayesian row is sampled with the same settings.

    An independent reference for the scores: sigma0 = 0.01 squashes every logit of the MLP to
    ~0, so its validation NLL is log 2 (within 1e-3; measured within 6e-5), while sigma0 = 1
    fits the data (validation NLL 0.20..0.57 across the methods, measured), so every method
    must choose sigma0 = 1.
    """
    from dataclasses import replace

    from mtbkd_jax.datasets import DistillationData
    from mtbkd_jax.experiments import ExperimentConfig, run_baselines

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 3)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=160) > 0).astype(np.int32)
    # "good" predicts class 1 where x0 > 0, as the labels mostly are; "bad" looks at x1
    logits = np.stack([np.stack([-x[:, 0], x[:, 0]], -1), np.stack([x[:, 1], -x[:, 1]], -1)])
    bank = mk.TeacherBank.from_logits(logits[:, :100] * 3, names=("good", "bad"))
    problem = DistillationData(
        name="toy",
        x_train=x[:100],
        y_train=y[:100],
        x_test=x[130:],
        y_test=y[130:],
        teachers_prior=bank,
        teachers_test=mk.TeacherBank.from_logits(logits[:, 130:] * 3, names=("good", "bad")),
        x_validation=x[100:130],
        y_validation=y[100:130],
    )
    config = ExperimentConfig(
        hidden=(4,),
        map_steps=200,
        bayes="sgld",
        sgld_epochs=1,
        sgld_draws_per_epoch=1,
        num_chains=1,
        tune=True,
        prior_scale_grid=(0.01, 1.0),
        concentration_grid=(10.0,),
        prior_power_grid=(0.1,),
        # the learned-trust row's own search (calibration x pooling x beta, each a posterior)
        # is tested below; one calibration and one pooling keep this test's share of it small
        trust_calibration_grid=("teacher",),
        trust_pooling_grid=("mixture",),
    )
    rows, artifacts = run_baselines(problem, config, say=lambda *_: None)
    map_rows = {r["method"]: r for r in rows if r["inference"] == "map"}
    bayes_rows = {r["method"]: r for r in rows if r["inference"] == "sgld"}
    expected_methods = {
        "student alone",
        "KD (good)",
        "KD (bad)",
        "averaged KD",
        "CA-MKD",
        "MT-BKD (uniform weights)",
        "MT-BKD (entropy weights)",
    }
    # the learned-trust row tunes its trust's calibration and beta, by its posterior's
    # validation NLL (SGLD here, with the step size chosen by pilot runs), over the default
    # calibrations and beta grid and its extensions
    learned = artifacts["tuning"].pop("MT-BKD (learned trust)")
    assert set(map_rows) == expected_methods | {"MT-BKD (learned trust)"}
    assert "MT-BKD (learned trust)" in bayes_rows
    assert {r["prior_power"] for r in learned} >= set(config.trust_prior_power_grid)
    assert {r["calibration"] for r in learned} == set(config.trust_calibration_grid)
    assert {r["pooling"] for r in learned} == set(config.trust_pooling_grid)
    assert all(set(r) == {"calibration", "pooling", "prior_power", "score"} for r in learned)
    assert set(artifacts["tuning"]) == expected_methods
    for method, tuning in artifacts["tuning"].items():
        # one MAP per grid value (the other axes have a single value, the start), then, since
        # sigma0 = 1 beats 0.01 and is the grid's top, the grid extended by its ratio 100 (up
        # to 3 times, while each new value is the best)
        tried = [r["prior_scale"] for r in tuning]
        assert tried[:2] == [1.0, 0.01] and 1 <= len(tried) - 2 <= 3, method
        assert tried[2:] == [100.0, 1e4, 1e6][: len(tried) - 2], method
        scores = {r["prior_scale"]: r["score"] for r in tuning}
        assert scores[0.01] == pytest.approx(np.log(2), abs=1e-3), method
        assert scores[1.0] < np.log(2) - 0.05, method
        best = min(tuning, key=lambda r: r["score"])["prior_scale"]
        note = ""
        if best > 1.0:
            note = " (grid extended, still on edge)" if best == 1e6 else " (grid extended)"
        label = f"σ0={best:g}{note}" + ("" if method == "student alone" else " λ=10 β=0.1")
        assert map_rows[method]["settings"] == label, method
    # the Bayesian rows use their MAP's settings (BKD's MAP is the KD row of its teacher)
    assert set(bayes_rows) == {
        "student alone",
        "BKD (good)",
        "BKD (bad)",
        "MT-BKD (uniform weights)",
        "MT-BKD (entropy weights)",
        "MT-BKD (learned trust)",
    }
    map_of = {"BKD (good)": "KD (good)", "BKD (bad)": "KD (bad)"}
    for method, row in bayes_rows.items():
        assert row["settings"] == map_rows[map_of.get(method, method)]["settings"], method
    no_split = {"x_validation": None, "y_validation": None, "teachers_validation": None}
    with pytest.raises(ValueError, match="validation split"):
        run_baselines(replace(problem, **no_split), config, say=lambda *_: None)


def _toy_trust_problem():
    """60 labelled 2-d inputs, 15 validation, 15 test; teacher ``a`` knows the rule (the sign
    of the first coordinate), teacher ``b`` looks at the second."""
    from mtbkd_jax.datasets import DistillationData

    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    logits = np.stack([np.stack([-x[:, 0], x[:, 0]], -1), np.stack([x[:, 1], -x[:, 1]], -1)])
    return DistillationData(
        name="toy",
        x_train=x[:60],
        y_train=y[:60],
        x_test=x[75:],
        y_test=y[75:],
        teachers_prior=mk.TeacherBank.from_logits(2 * logits[:, :60], names=("a", "b")),
        teachers_test=mk.TeacherBank.from_logits(2 * logits[:, 75:], names=("a", "b")),
        x_validation=x[60:75],
        y_validation=y[60:75],
    )


def _stub_trust_fits(monkeypatch, fit_posterior, learned_trust=None, score_by_first_prob=True):
    """Stub the learned-trust row's fits: a trust is its (calibration, pooling), a model that
    plus beta, no MAP, the posterior ``fit_posterior``'s; with ``score_by_first_prob`` a
    setting's validation NLL is its posterior's first predicted logit."""
    from mtbkd_jax.experiments import trusted

    def trust_of(key, data, config, teachers, calibration, pooling):
        return calibration, pooling

    monkeypatch.setattr(trusted, "learned_trust", learned_trust or trust_of)
    monkeypatch.setattr(trusted, "trusted_model", lambda d, c, t, trust, b: (*trust, b))
    monkeypatch.setattr(trusted, "fit_map", lambda key, data, config, model: None)
    monkeypatch.setattr(trusted, "fit_posterior", fit_posterior)
    if score_by_first_prob:
        first = lambda z, y: float(np.ravel(z)[0])  # noqa: E731
        monkeypatch.setattr(trusted, "predictive_nll_from_logits", first)


def _toy_trust_config(**options):
    """A tuned run of the toy problem's learned-trust row: a 3-unit student, 50 MAP steps, one
    chain, a short trust fit and the two-point beta grid (0.1, 1) without extensions."""
    from mtbkd_jax.experiments import ExperimentConfig

    settings = {
        "hidden": (3,),
        "map_steps": 50,
        "num_chains": 1,
        "tune": True,
        "trust_warmup": 20,
        "trust_draws": 20,
        "trust_prior_power_grid": (0.1, 1.0),
        "trust_pooling_grid": ("mixture",),
        "grid_extensions": 0,
    }
    return ExperimentConfig(**{**settings, **options})


def test_the_map_search_scores_from_logits_where_float32_probabilities_underflow(monkeypatch):
    """Two prior scales whose MAPs are confidently wrong on one validation input, by logit
    gaps of 150 and 300: both float32 label probabilities are 0 (NLL inf, no setting could be
    chosen); from the logits the smaller miss wins. Fits are stubbed: a setting's "MAP"
    predicts the label everywhere but on the first input."""
    import jax
    import jax.numpy as jnp

    from mtbkd_jax.experiments import ExperimentConfig, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.arange(40) % 2
    bank = mk.TeacherBank.from_logits(np.zeros((1, 20, 2)), names=("t",))
    on_test = mk.TeacherBank.from_logits(np.zeros((1, 10, 2)), names=("t",))
    data = mk.datasets.DistillationData(
        name="toy", x_train=x[:20], y_train=y[:20], x_test=x[30:], y_test=y[30:],
        x_validation=x[20:30], y_validation=y[20:30], teachers_prior=bank, teachers_test=on_test,
    )  # fmt: skip

    class Mode:
        def __init__(self, gap):
            self.gap = gap

        def predict_logits(self, inputs):
            logits = 20.0 * np.eye(2, dtype=np.float32)[data.y_validation]
            logits[0] = self.gap * np.eye(2, dtype=np.float32)[1 - data.y_validation[0]]
            return logits[None]

    monkeypatch.setattr(fit, "build_model", lambda d, c, t, w, settings: settings)
    monkeypatch.setattr(fit, "fit_map", lambda k, d, c, model: Mode(model["prior_scale"]))
    config = ExperimentConfig(
        tune=True, prior_scale=300.0, prior_scale_grid=(300.0, 150.0), grid_extensions=0
    )
    mode, settings, _ = fit.tuned_map(None, data, config, None, "paper")
    assert settings["prior_scale"] == 150.0 and mode.gap == 150.0
    probs = np.asarray(jax.nn.softmax(jnp.asarray(mode.predict_logits(None)[0])))
    assert mk.metrics.negative_log_likelihood(probs, data.y_validation) == np.inf


def test_a_reduced_search_budget_scores_each_beta_cheaply_then_samples_the_winner_in_full(
    monkeypatch,
):
    """With ``trust_search_budget=0.5`` every beta of the learned-trust search is sampled with
    half the NUTS warm-up and draws, and the winner alone again with the full budget, from the
    same key and MAP; the row's posterior is that full run, and it equals the run without a
    search at the winning beta (the same key, model and start give the same draws)."""
    from dataclasses import replace

    import jax

    from mtbkd_jax.experiments import trusted

    problem = _toy_trust_problem()
    config = _toy_trust_config(
        num_warmup=40, num_draws=40, trust_search_budget=0.5, trust_calibration_grid=("teacher",)
    )
    budgets = []
    real_fit_posterior = trusted.fit_posterior

    def recording_fit_posterior(key, data, budget, model, mode, start_keys=()):
        budgets.append((budget.num_warmup, budget.num_draws, model.prior_power))
        return real_fit_posterior(key, data, budget, model, mode, start_keys)

    monkeypatch.setattr(trusted, "fit_posterior", recording_fit_posterior)
    keys = tuple(jax.random.split(jax.random.key(0), 3))
    fit = trusted.fit_trusted(keys, problem, config, problem.teachers_prior)
    best = float(fit.search.best["prior_power"])
    assert budgets[:-1] == [(20, 20, 1.0), (20, 20, 0.1)] or budgets[:-1] == [
        (20, 20, 0.1),
        (20, 20, 1.0),
    ]
    assert budgets[-1] == (40, 40, best) and fit.model.prior_power == best
    assert fit.posterior.draws[next(iter(fit.posterior.draws))].shape[:2] == (1, 40)
    # the row's posterior is what a run without the search at the winning beta gives
    budgets.clear()
    untuned = trusted.fit_trusted(
        keys, problem, replace(config, tune=False, prior_power=best), problem.teachers_prior
    )
    assert budgets == [(40, 40, best)]
    for name, value in fit.posterior.draws.items():
        np.testing.assert_allclose(value, untuned.posterior.draws[name], rtol=1e-6, atol=1e-6)
    # the full budget scores each beta by the row's own run: no refit
    budgets.clear()
    trusted.fit_trusted(
        keys, problem, replace(config, trust_search_budget=1.0), problem.teachers_prior
    )
    assert budgets == [(40, 40, p) for _, _, p in budgets] and len(budgets) == 2


@pytest.mark.parametrize("budget", [0.0, -0.5, 1.5, float("nan")])
def test_the_search_budget_must_be_a_fraction(budget):
    from mtbkd_jax.experiments import ExperimentConfig

    with pytest.raises(ValueError, match="trust_search_budget must be a fraction in"):
        ExperimentConfig(trust_search_budget=budget)


def test_the_trust_calibration_reaches_the_learned_trust():
    """``trust_calibration`` is the trust hyperprior's ``calibration`` (the fitted trust has
    confidence slopes), and an unknown value is refused when the config is made."""
    import jax

    from mtbkd_jax.experiments import ExperimentConfig, trusted
    from mtbkd_jax.experiments.synthetic import synthetic_problem

    problem, _ = synthetic_problem("linear", 3, num_examples=220, seed=0)
    config = ExperimentConfig(trust_warmup=20, trust_draws=20, trust_calibration="confidence")
    trust = trusted.learned_trust(jax.random.key(0), problem, config, problem.teachers_prior)
    assert trust.hyperprior.calibration == "confidence"
    slopes = trust.draws["temperature_slope"]
    assert slopes.shape == (40, problem.teachers_prior.num_teachers) and np.all(slopes != 0)
    with pytest.raises(ValueError, match="trust_calibration must be one of"):
        ExperimentConfig(trust_calibration="per_example")


def test_the_trust_calibration_and_pooling_are_chosen_by_the_posteriors_validation_nll(
    monkeypatch,
):
    """With ``tune``, the learned-trust search runs, for each pooling of
    ``trust_pooling_grid``, a search that scores each calibration of ``trust_calibration_grid``
    (first, at the middle beta) and then the betas, by its posterior's validation NLL, fits
    each (calibration, pooling) trust once, and the row is the best setting's: its trust has
    that calibration (``"none"``: every temperature 1) and pooling, and its label says
    ``τ = 1`` and ``product`` exactly then."""
    import jax

    from mtbkd_jax.experiments import trusted

    problem = _toy_trust_problem()
    config = _toy_trust_config(
        num_warmup=20, num_draws=20, trust_pooling_grid=("mixture", "product")
    )
    fitted_trusts = []
    real_learned_trust = trusted.learned_trust

    def recording_learned_trust(key, data, cfg, teachers, calibration=None, pooling=None):
        fitted_trusts.append((calibration, pooling))
        return real_learned_trust(key, data, cfg, teachers, calibration, pooling)

    monkeypatch.setattr(trusted, "learned_trust", recording_learned_trust)
    keys = tuple(jax.random.split(jax.random.key(0), 3))
    fit = trusted.fit_trusted(keys, problem, config, problem.teachers_prior)
    evaluated = fit.search.evaluated
    settings = [(e["calibration"], e["pooling"], e["prior_power"]) for e in evaluated]
    assert settings[:2] == [("teacher", "mixture", 1.0), ("none", "mixture", 1.0)]
    assert ("teacher", "product", 1.0) in settings  # the product's own search, from the start
    assert len(settings) == len(set(settings))  # each setting scored once
    assert len(fitted_trusts) == len(set(fitted_trusts)) <= 4  # each trust once
    best = min(evaluated, key=lambda e: e["score"])
    assert fit.search.best_score == best["score"]
    # here the search ends on a pass that changed nothing (not guaranteed in general, with
    # at most trust_search_sweeps passes): at the chosen beta and pooling, every calibration
    # of its grid was scored
    at_best = {
        e["calibration"]
        for e in evaluated
        if e["prior_power"] == best["prior_power"] and e["pooling"] == best["pooling"]
    }
    assert at_best == set(config.trust_calibration_grid), evaluated
    assert fit.search.best == {k: best[k] for k in ("calibration", "pooling", "prior_power")}
    assert fit.trust.hyperprior.calibration == best["calibration"]
    assert fit.trust.hyperprior.pooling == best["pooling"]
    assert fit.model.prior_power == best["prior_power"]
    assert ("τ = 1" in fit.label) == (best["calibration"] == "none")
    assert ("product" in fit.label) == (best["pooling"] == "product")
    component_count = fit.model.teacher_prior.scaled_probs.shape[1]
    assert component_count == (
        1 if best["pooling"] == "product" else problem.teachers_prior.num_teachers
    )
    none = trusted.learned_trust(keys[0], problem, config, problem.teachers_prior, "none")
    np.testing.assert_array_equal(none.draws["temperature"], 1.0)
    assert np.ptp(none.draws["concentration"]) > 0  # lambda is still learned


def test_the_trust_search_compares_each_pooling_at_its_own_best_beta(monkeypatch):
    """The product's best beta is not the mixture's. Here the product loses at the mixture's
    best (the middle) beta and wins at its own, so one coordinate search over the three axes
    stops at the mixture however many passes it makes (as on DeepLoc, seed 2); the search
    profiles the pooling (a search over calibration and beta for each) and finds the product.
    Fits are stubbed: each setting's validation NLL is a table."""
    import jax

    from mtbkd_jax.experiments import trusted
    from mtbkd_jax.tuning import coordinate_search

    table = {("mixture", 1.0): 0.4, ("mixture", 0.1): 0.45}
    table |= {("product", 1.0): 0.5, ("product", 0.1): 0.3}

    class Fitted:
        def __init__(self, setting):
            self.setting = setting

        def predict_logits(self, x):
            calibration, pooling, beta = self.setting
            score = table[pooling, beta] + (0.1 if calibration == "none" else 0.0)
            return np.full((1, len(x), 2), score)

    trusts, posteriors = [], []

    def learned_trust(key, data, config, teachers, calibration, pooling):
        trusts.append((calibration, pooling))
        return calibration, pooling

    def fit_posterior(key, data, budget, model, mode, start_keys):
        posteriors.append(model)
        return Fitted(model)

    _stub_trust_fits(monkeypatch, fit_posterior, learned_trust)
    problem = _toy_trust_problem()
    keys = tuple(jax.random.split(jax.random.key(0), 3))
    options = {"trust_calibration_grid": ("teacher", "none")}
    options |= {"trust_pooling_grid": ("mixture", "product")}
    found = {}
    for sweeps in (1, 3):
        config = _toy_trust_config(trust_search_sweeps=sweeps, **options)
        trusts.clear(), posteriors.clear()
        fit = trusted.fit_trusted(keys, problem, config, problem.teachers_prior)
        found[sweeps] = (fit.search.best, fit.search.best_score)
        # each setting sampled once, each (calibration, pooling) trust fitted once
        assert len(posteriors) == len(set(posteriors)) == len(fit.search.evaluated)
        assert len(trusts) == len(set(trusts)) <= 4
    product = {"calibration": "teacher", "pooling": "product", "prior_power": 0.1}
    assert found[1] == found[3] == (product, 0.3)

    def score(settings):
        return table[settings["pooling"], settings["prior_power"]] + (
            0.1 if settings["calibration"] == "none" else 0.0
        )

    grid = {"calibration": ("teacher", "none"), "pooling": ("mixture", "product")}
    grid |= {"prior_power": (0.1, 1.0)}
    start = {"calibration": "teacher", "pooling": "mixture", "prior_power": 1.0}
    trapped = coordinate_search(score, grid, start, sweeps=3, max_extensions=0)
    assert trapped.best["pooling"] == "mixture" and trapped.best_score == 0.4


@pytest.mark.parametrize("extension_score", [0.2995, 0.25])
def test_the_trust_search_holds_one_posterior_and_resamples_a_winner_it_did_not_keep(
    extension_score, monkeypatch
):
    """While the learned-trust search runs, only the lowest-scoring setting's posterior is held
    (with the one being fitted). The row's posterior is the winner's: kept when it also scored
    lowest (each setting sampled once), sampled again with the same keys when the search
    refused a lower score (an extension of beta that gains less than ``min_improvement``)."""
    import weakref

    import jax

    from mtbkd_jax.experiments import trusted

    table = {1.0: 0.5, 0.1: 0.3, 0.01: extension_score}
    alive, sampled = weakref.WeakSet(), []

    class Fitted:
        def __init__(self, beta):
            self.beta = beta

        def predict_logits(self, x):
            return np.full((1, len(x), 2), table[round(self.beta, 6)])

    def fit_posterior(key, data, budget, model, mode, start_keys):
        assert len(alive) <= 1, "the search holds more than the best posterior"
        sampled.append(round(model[-1], 6))
        posterior = Fitted(model[-1])
        alive.add(posterior)
        return posterior

    _stub_trust_fits(monkeypatch, fit_posterior)
    problem = _toy_trust_problem()
    keys = tuple(jax.random.split(jax.random.key(0), 3))
    config = _toy_trust_config(
        trust_calibration_grid=("teacher",), grid_extensions=1, grid_min_improvement=0.002
    )
    fit = trusted.fit_trusted(keys, problem, config, problem.teachers_prior)
    chosen = round(fit.model[-1], 6)
    assert round(fit.posterior.beta, 6) == chosen
    if extension_score == 0.2995:  # lower than 0.3 by less than min_improvement: refused
        assert chosen == 0.1 and sampled == [1.0, 0.1, 0.01, 0.1]
    else:
        assert chosen == 0.01 and sampled == [1.0, 0.1, 0.01]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trust_calibration_grid": ()}, "trust_calibration_grid must be a non-empty tuple"),
        ({"trust_calibration_grid": ("none", "sharp")}, "trust_calibration_grid must be"),
        ({"trust_calibration_grid": "none"}, "trust_calibration_grid must be"),
        ({"trust_pooling_grid": ("mixture", "sum")}, "trust_pooling_grid must be a non-empty"),
        ({"trust_pooling": "sum"}, "trust_pooling must be one of"),
        ({"trust_search_sweeps": 0}, "trust_search_sweeps must be an integer >= 1"),
        ({"trust_search_sweeps": 1.5}, "trust_search_sweeps must be an integer >= 1"),
        ({"sgld_burnin_epochs": -1}, "sgld_burnin_epochs must be an integer >= 0"),
        ({"sgld_burnin_epochs": 2.5}, "sgld_burnin_epochs must be an integer >= 0"),
        # accepted before, then run (tune="False" is a true string: the search ran) or failed
        # inside run_baselines, which records the method's failure and goes on
        ({"tune": "False"}, "tune must be True or False, got 'False'"),
        ({"teacher_rows": "no"}, "teacher_rows must be True or False"),
        ({"num_draws": 0}, "num_draws must be an integer >= 1, got 0"),
        ({"num_chains": 0}, "num_chains must be an integer >= 1"),
        ({"trust_warmup": -1}, "trust_warmup must be an integer >= 0"),
        ({"map_steps": -10}, "map_steps must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"concentration": -1.0}, "concentration must be a finite number >= 0"),
        ({"temperature": -2.0}, "temperature must be a finite number > 0"),
        ({"prior_power": 0.0}, "prior_power must be a finite number > 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0"),
        ({"sgld_step_size": -1e-5}, "sgld_step_size must be 'auto' or a finite number > 0"),
        ({"trust_sgld_step_size": "fast"}, "trust_sgld_step_size must be 'auto' or"),
        ({"trust_prior_power_grid": ()}, "trust_prior_power_grid must be a non-empty tuple"),
        (
            {"concentration_grid": (-3.0,)},
            "concentration_grid must be a non-empty tuple of numbers >= 0",
        ),
        ({"prior_scale_grid": (0.0,)}, "prior_scale_grid must be a non-empty tuple of numbers"),
        ({"hidden": (0,)}, r"hidden must be a tuple of layer widths >= 1, got \(0,\)"),
    ],
)
def test_bad_trust_calibration_grids_and_burn_in_are_refused(options, message):
    from mtbkd_jax.experiments import ExperimentConfig

    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**options)
    ExperimentConfig(concentration_grid=(0.0, 10.0))  # lambda = 0: a flat Dirichlet, allowed


def test_the_trust_search_keeps_the_reasons_of_failed_settings_not_their_draws(monkeypatch):
    """A diverged chain's error carries its partial draws; the search keeps the reason of each
    failed setting (and the first error, to raise if all fail), not every error's draws."""
    import weakref

    import jax

    from mtbkd_jax.experiments import trusted
    from mtbkd_jax.infer import SamplerDivergedError

    class Draws:  # a failed run's partial draws
        pass

    alive = weakref.WeakSet()

    class Fitted:
        def predict_logits(self, x):
            return np.full((1, len(x), 2), 0.5)

    def fit_posterior(key, data, budget, model, mode, start_keys):
        assert len(alive) <= 1, "the search holds the draws of more than one failed run"
        calibration, _, beta = model
        if beta == 1.0:  # both calibrations fail at the first beta
            draws = Draws()
            alive.add(draws)
            raise SamplerDivergedError(f"{calibration} diverged", draws)
        return Fitted()

    _stub_trust_fits(monkeypatch, fit_posterior, score_by_first_prob=False)
    problem = _toy_trust_problem()
    keys = tuple(jax.random.split(jax.random.key(0), 3))
    config = _toy_trust_config(trust_calibration_grid=("teacher", "none"))
    fit = trusted.fit_trusted(keys, problem, config, problem.teachers_prior)
    assert fit.model[-1] == 0.1
    assert fit.unsampled == {"teacher, β=1": "teacher diverged", "none, β=1": "none diverged"}
    # the experiment's record: the trust summary per teacher in trust.json, the unsampled
    # settings beside it (the summary is a list: indexing it by a key raised a TypeError)
    from mtbkd_jax.experiments.baselines import _record_trust

    artifacts = {"trust": {}, "trust_fit": {}, "search_unsampled": {}}
    fit.trust = types.SimpleNamespace(
        summary=lambda: [{"teacher": "a"}, {"teacher": "b"}],
        description={"kind": "cut"},
        max_rhat=1.01,
    )
    _record_trust(artifacts, "MT-BKD (learned trust)", fit)
    assert json.loads(json.dumps(artifacts)) == {
        "trust": {"MT-BKD (learned trust)": [{"teacher": "a"}, {"teacher": "b"}]},
        "trust_fit": {"MT-BKD (learned trust)": {"kind": "cut", "max_rhat": 1.01}},
        "search_unsampled": {"MT-BKD (learned trust)": fit.unsampled},
    }


def test_numpy_integers_are_integers_to_the_config_and_bools_are_not():
    """A count read from a NumPy array (``np.int64``) is an integer; ``True`` is not."""
    from mtbkd_jax.experiments import ExperimentConfig

    config = ExperimentConfig(trust_search_sweeps=np.int64(2), sgld_burnin_epochs=np.int32(3))
    assert (config.trust_search_sweeps, config.sgld_burnin_epochs) == (2, 3)
    for name in ("trust_search_sweeps", "sgld_burnin_epochs"):
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            ExperimentConfig(**{name: True})


@pytest.mark.parametrize("failure", ["unstable", "diverged"])
def test_a_beta_without_a_stable_step_size_is_skipped_by_the_search_and_recorded(
    failure, monkeypatch
):
    """A (calibration, beta) whose posterior no SGLD step size can sample
    (``UnstableStepSizes``), or whose chains diverge (``SamplerDivergedError``), scores worst;
    the search chooses among the others and the row records the reason. When every setting
    tried fails, the error is raised."""
    import jax

    from mtbkd_jax.experiments import trusted
    from mtbkd_jax.infer import SamplerDivergedError, UnstableStepSizes

    def error(text):
        if failure == "unstable":
            return UnstableStepSizes(text)
        return SamplerDivergedError(text, None)

    problem = _toy_trust_problem()
    config = _toy_trust_config(num_warmup=20, num_draws=20, trust_calibration_grid=("teacher",))
    real_fit_posterior = trusted.fit_posterior

    def unstable_at_1(key, data, budget, model, mode, start_keys=()):
        if model.prior_power == 1.0:
            raise error("candidates: every step size tried is unstable (test)")
        return real_fit_posterior(key, data, budget, model, mode, start_keys)

    monkeypatch.setattr(trusted, "fit_posterior", unstable_at_1)
    keys = tuple(jax.random.split(jax.random.key(0), 3))
    fit = trusted.fit_trusted(keys, problem, config, problem.teachers_prior)
    assert fit.model.prior_power == 0.1
    assert fit.unsampled == {"teacher, β=1": "candidates: every step size tried is unstable (test)"}
    scores = {e["prior_power"]: e["score"] for e in fit.search.evaluated}
    assert scores[1.0] is None and np.isfinite(scores[0.1])

    def always_unstable(*args, **kwargs):
        raise error("candidates: every step size tried is unstable (always)")

    monkeypatch.setattr(trusted, "fit_posterior", always_unstable)
    with pytest.raises((UnstableStepSizes, SamplerDivergedError), match="always"):
        trusted.fit_trusted(keys, problem, config, problem.teachers_prior)


def test_profile_search_keeps_every_inner_evaluation_and_refuses_an_unknown_axis():
    """Each value of the profiled axis gets its own coordinate search (its start first); the
    result is the best of them, ties keeping the earlier value, with every evaluation."""
    from mtbkd_jax.tuning import profile_search

    def score(s):
        return {"a": 1.0, "b": 1.0, "c": 0.5}[s["m"]] + (s["x"] - 2) ** 2

    grid = {"m": ["a", "b", "c"], "x": [1, 2, 3]}
    result = profile_search(score, grid, {"m": "b", "x": 1}, over="m")
    assert result.best == {"m": "c", "x": 2} and result.best_score == 0.5
    assert [e["m"] for e in result.evaluated][:1] == ["b"]  # the start's value first
    assert {(e["m"], e["x"]) for e in result.evaluated} == {
        (m, x) for m in "abc" for x in (1, 2, 3)
    }
    tie = profile_search(lambda s: 0.0, {"m": ["a", "b"], "x": [1]}, {"m": "b", "x": 1}, over="m")
    assert tie.best == {"m": "b", "x": 1}
    only = profile_search(lambda s: s["m"], {"m": [2, 1]}, {"m": 2}, over="m")
    assert only.best == {"m": 1}
    with pytest.raises(ValueError, match="over must name an axis of grid"):
        profile_search(score, grid, {"m": "a", "x": 1}, over="y")


def test_profile_search_says_when_the_profiled_axis_stops_at_its_edge():
    """The profiled axis is not extended; it used to be left out of on_edge too, so a best
    value at the grid's end read as an interior optimum."""
    import math

    from mtbkd_jax.tuning import profile_search

    def score(s):
        return (math.log(s["sigma"]) - math.log(10.0)) ** 2 + (s["beta"] - 0.3) ** 2

    grid, start = {"sigma": [0.1, 0.3, 1.0], "beta": [0.1, 0.3, 1.0]}, {"sigma": 0.3, "beta": 0.1}
    result = profile_search(score, grid, start, over="sigma")
    assert result.best == {"sigma": 1.0, "beta": 0.3}
    assert "sigma" in result.on_edge and result.grid_note("sigma") == "grid edge"
    inside = profile_search(score, {**grid, "sigma": [3.0, 10.0, 30.0]}, start, over="sigma")
    assert inside.best["sigma"] == 10.0 and "sigma" not in inside.on_edge
    with pytest.raises(ValueError, match="does not extend the profiled axis 'sigma'"):
        profile_search(score, grid, start, over="sigma", extend=["sigma"])


def test_profile_search_never_extends_the_profiled_axis_and_refuses_it_empty():
    """``over`` alone was searched by a coordinate search that extended it ({'x': [4, 8]});
    an empty ``over`` axis was searched at the start's value alone."""
    from mtbkd_jax.tuning import profile_search

    alone = profile_search(lambda s: -s["x"], {"x": [1, 2]}, {"x": 1}, over="x")
    assert alone.best == {"x": 2} and alone.extended == {} and alone.on_edge == ["x"]
    assert [row["x"] for row in alone.evaluated] == [1, 2]
    with pytest.raises(ValueError, match=r"grid\['m'\] must list at least one value"):
        profile_search(lambda s: s["x"], {"m": [], "x": [1, 2]}, {"m": "a", "x": 1}, over="m")
    with pytest.raises(ValueError, match=r"grid\['m'\] must list at least one value"):
        profile_search(lambda s: 0.0, {"m": []}, {"m": "a"}, over="m")


@pytest.mark.parametrize("bad", [float("nan"), math.inf, -math.inf])
def test_coordinate_search_refuses_when_no_setting_scores_a_finite_value(bad):
    """The start used to come back as "best", with score inf; the message names the settings
    tried."""
    from mtbkd_jax.tuning import coordinate_search

    with pytest.raises(ValueError, match="no setting scored a finite value") as caught:
        coordinate_search(lambda s: bad, {"x": [1.0, 2.0, 4.0]}, {"x": 2.0})
    assert "3 settings tried: {'x': 2.0}, {'x': 1.0}, {'x': 4.0}" in str(caught.value)
    # one finite score anywhere is enough, even at an extended value
    result = coordinate_search(
        lambda s: 1.0 if s["x"] == 8.0 else bad, {"x": [2.0, 4.0]}, {"x": 4.0}
    )
    assert result.best == {"x": 8.0} and result.best_score == 1.0


def test_profile_search_leaves_a_search_where_every_setting_failed_to_its_caller():
    """An inner search where every setting of one profiled value fails does not end the
    profile; where every setting fails, the result is the start at score inf, for the caller
    that knows why (the learned-trust search raises the start's sampler error: see
    test_a_beta_without_a_stable_step_size_is_skipped_by_the_search_and_recorded)."""
    from mtbkd_jax.tuning import profile_search

    grid, start = {"m": ["a", "b"], "x": [1, 2, 3]}, {"m": "a", "x": 1}
    result = profile_search(lambda s: math.nan if s["m"] == "a" else s["x"], grid, start, over="m")
    assert result.best == {"m": "b", "x": 1} and result.best_score == 1
    failed = profile_search(lambda s: math.nan, grid, start, over="m")
    assert failed.best == start and failed.best_score == math.inf
    assert len(failed.evaluated) == 6 and all(e["score"] is None for e in failed.evaluated)


@pytest.mark.parametrize("search", ["coordinate", "profile"])
@pytest.mark.parametrize(
    ("grid", "start", "message"),
    [
        ({"x": [1, 2]}, {"x": 1, "hidden": [64, 64]}, r"start\['hidden'\] must be hashable"),
        ({"x": [1, 2], "h": [[1], [2]]}, {"x": 1, "h": (1,)}, r"grid\['h'\] values must be"),
        ({"x": [1, 2], "h": [(1,), (2,)]}, {"x": 1, "h": [1]}, r"start\['h'\] must be hashable"),
    ],
)
def test_unhashable_setting_values_are_refused_with_the_setting_named(search, grid, start, message):
    """A list value used to fail in the score cache: ``TypeError: unhashable type: 'list'``."""
    from mtbkd_jax.tuning import coordinate_search, profile_search

    def run(grid, start):
        def score(s):
            return s["x"] + sum(s.get("h", ()))

        if search == "profile":
            return profile_search(score, grid, start, over="x")
        return coordinate_search(score, grid, start)

    with pytest.raises(TypeError, match=message + r".*use a tuple"):
        run(grid, start)

    def fixed(value):
        return tuple(value) if isinstance(value, list) else value

    grid = {name: [fixed(v) for v in values] for name, values in grid.items()}
    assert run(grid, {name: fixed(v) for name, v in start.items()}).best["x"] == 1
