"""``posterior_tuning``: a Bayesian row's σ0 chosen by its posterior predictive's validation
NLL (``mtbkd_jax.experiments.posterior_tuning``), with the fits replaced by fakes whose
validation NLL is known, so the choice can be checked against a hand-computed one."""

import math
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from mtbkd_jax.experiments import posterior_tuning
from mtbkd_jax.experiments.keys import MethodKeys

C, N = 3, 4
Y = np.array([0, 1, 2, 0])


class _Fit:
    """A MAP or posterior whose validation logits give the label the logit ``value``."""

    def __init__(self, kind, sigma, value):
        self.kind, self.sigma, self.value = kind, sigma, value

    def predict_logits(self, x):
        logits = np.zeros((2, N, C))
        logits[:, np.arange(N), Y] = self.value
        return logits


def _nll(value):
    return math.log1p((C - 1) * math.exp(-value))


@pytest.fixture
def fakes(monkeypatch):
    """The MAP is best at σ0 = 3, the posterior at ``best`` (set per test)."""
    calls = []
    state = SimpleNamespace(posterior_value=None)

    def build_model(data, config, teachers, rule, settings):
        calls.append(("build", dict(settings)))
        return dict(settings)

    def fit_map(key, data, config, model):
        return _Fit("map", model["prior_scale"], 5 - abs(math.log(model["prior_scale"] / 3)))

    def fit_posterior(key, data, config, model, mode, starts):
        assert mode.sigma == model["prior_scale"]  # sampled from its own model's MAP
        return _Fit("posterior", model["prior_scale"], state.posterior_value(model["prior_scale"]))

    monkeypatch.setattr(posterior_tuning, "build_model", build_model)
    monkeypatch.setattr(posterior_tuning, "fit_map", fit_map)
    monkeypatch.setattr(posterior_tuning, "fit_posterior", fit_posterior)
    return state, calls


def _run(grid, min_improvement=0.0, extensions=2):
    data = SimpleNamespace(x_validation=np.zeros((N, 2)), y_validation=Y)
    config = SimpleNamespace(prior_scale_grid=grid, grid_extensions=extensions,
                             grid_min_improvement=min_improvement)  # fmt: skip
    method = SimpleNamespace(label="m", teachers=None, weight_rule="paper")
    keys = MethodKeys(jax.random.key(0), jax.random.key(1), ())
    start = {"prior_scale": 3.0, "concentration": 30.0, "prior_power": 0.1}
    return posterior_tuning.tuned_posterior(keys, data, config, method, start)


def test_the_posterior_predictive_chooses_sigma0_not_the_map(fakes):
    """The MAP search chose σ0 = 3; the posterior's validation NLL is lowest at 0.3, which is
    chosen (judging by the MAP's NLL, the broken version, would keep 3). λ and β stay at the
    MAP search's values in every fit, and the returned MAP is the posterior's own model's."""
    state, calls = fakes
    state.posterior_value = lambda s: 5 - 2 * abs(math.log(s / 0.3))
    found = _run((0.1, 0.3, 1.0, 3.0))
    assert found.posterior.sigma == found.mode.sigma == 0.3
    assert found.settings["prior_scale"] == 0.3
    assert {(s["concentration"], s["prior_power"]) for _, s in calls} == {(30.0, 0.1)}
    scores = {r["prior_scale"]: r["score"] for r in found.search.evaluated}
    expected = {s: _nll(5 - 2 * abs(math.log(s / 0.3))) for s in (0.1, 0.3, 1.0, 3.0)}
    assert scores == pytest.approx(expected, rel=1e-12)
    assert min(scores, key=scores.get) == 0.3


def test_an_extension_that_gains_too_little_is_refitted_back_to_the_grids_choice(fakes):
    """The posterior prefers σ0 below the grid: 0.1 / 3 is tried and scores lower, but by
    less than ``grid_min_improvement``, so the search keeps 0.1; the posterior returned is
    0.1's (refitted), not the lower-scoring extension's that was held in memory."""
    state, calls = fakes
    state.posterior_value = lambda s: 5 - 3 * abs(math.log(s / 0.05))
    gain = _nll(5 - 3 * math.log(2)) - _nll(5 - 3 * abs(math.log(0.1 / 3 / 0.05)))
    assert 0 < gain < 0.1
    found = _run((0.1, 0.3, 1.0, 3.0), min_improvement=0.1)
    assert found.settings["prior_scale"] == 0.1
    assert found.posterior.sigma == found.mode.sigma == 0.1
    assert [s["prior_scale"] for _, s in calls].count(0.1) == 2  # scored, then refitted
    assert any(r["prior_scale"] < 0.1 for r in found.search.evaluated)


def test_a_method_without_a_posterior_row_is_refused():
    data = SimpleNamespace(x_validation=np.zeros((N, 2)), y_validation=Y)
    keys = MethodKeys(jax.random.key(0), None, ())
    method = SimpleNamespace(label="KD", teachers=None, weight_rule="paper")
    with pytest.raises(ValueError, match="'KD' has no posterior row"):
        posterior_tuning.tuned_posterior(keys, data, SimpleNamespace(), method, {})


def test_a_value_without_a_stable_sgmcmc_posterior_scores_worst(fakes, monkeypatch):
    """SG-MCMC at some σ0 may find no stable step (``UnstableStepSizes``) or diverge: that
    value is not a candidate (scored ``None`` in the search's record), the others compete."""
    from mtbkd_jax.infer import SamplerDivergedError

    state, _ = fakes
    state.posterior_value = lambda s: 5 - 2 * abs(math.log(s / 0.3))
    sample = posterior_tuning.fit_posterior

    def diverging_at_03(key, data, config, model, mode, starts):
        if model["prior_scale"] == 0.3:
            raise SamplerDivergedError("NaN at epoch 3", None)
        return sample(key, data, config, model, mode, starts)

    monkeypatch.setattr(posterior_tuning, "fit_posterior", diverging_at_03)
    found = _run((0.1, 0.3, 1.0, 3.0))
    assert found.settings["prior_scale"] == 0.1  # the best of the others: |log(1/3)| < log(10/3)
    scores = {r["prior_scale"]: r["score"] for r in found.search.evaluated}
    assert scores[0.3] is None
