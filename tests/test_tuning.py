"""Coordinate search over a hyperparameter grid, and per-method tuning in the experiments."""

import itertools
import math

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


@pytest.mark.parametrize(
    ("grid", "start", "sweeps", "match"),
    [
        ({}, {"a": 0}, 1, "at least one axis"),
        ({"a": ()}, {"a": 0}, 1, r"grid\['a'\]"),
        ({"a": (1,)}, {}, 1, "start has no value"),
        ({"a": (1,)}, {"a": 0}, 0, "sweeps"),
    ],
)
def test_coordinate_search_rejects_bad_input(grid, start, sweeps, match):
    with pytest.raises(ValueError, match=match):
        mk.tuning.coordinate_search(lambda s: 0.0, grid, start, sweeps=sweeps)


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
    )
    rows, artifacts = run_baselines(problem, config, say=lambda *_: None)
    map_rows = {r["method"]: r for r in rows if r["inference"] == "map"}
    bayes_rows = {r["method"]: r for r in rows if r["inference"] == "sgld"}
    expected_methods = {
        "student alone",
        "KD (good)",
        "KD (bad)",
        "averaged KD",
        "MT-BKD (uniform weights)",
        "MT-BKD (entropy weights)",
    }
    assert set(artifacts["tuning"]) == set(map_rows) == expected_methods
    for method, tuning in artifacts["tuning"].items():
        # one MAP per grid value (the other axes have a single value, the start)
        assert sorted(r["prior_scale"] for r in tuning) == [0.01, 1.0], method
        scores = {r["prior_scale"]: r["score"] for r in tuning}
        assert scores[0.01] == pytest.approx(np.log(2), abs=1e-3), method
        assert scores[1.0] < np.log(2) - 0.05, method
        best = min(tuning, key=lambda r: r["score"])
        assert best["prior_scale"] == 1.0, method
        label = "σ0=1" if method == "student alone" else "σ0=1 λ=10 β=0.1"
        assert map_rows[method]["settings"] == label, method
    # the Bayesian rows use their MAP's settings (BKD's MAP is the KD row of its teacher)
    assert set(bayes_rows) == {
        "student alone",
        "BKD (good)",
        "BKD (bad)",
        "MT-BKD (uniform weights)",
        "MT-BKD (entropy weights)",
    }
    map_of = {"BKD (good)": "KD (good)", "BKD (bad)": "KD (bad)"}
    for method, row in bayes_rows.items():
        assert row["settings"] == map_rows[map_of.get(method, method)]["settings"], method
    with pytest.raises(ValueError, match="validation split"):
        run_baselines(replace(problem, x_validation=None), config, say=lambda *_: None)
