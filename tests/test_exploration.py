"""``exploration_report``: R-hat and ESS against a hand-written rank-normalised split R-hat
(Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, eqs. 1-4 and the rank normalisation of
section 4) and the AR(1) effective sample size; the distances against NumPy loops."""

import numpy as np
import pytest
from scipy import stats

from mtbkd_jax import Posterior
from mtbkd_jax.diagnostics import exploration_report

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------ references by hand
def classic_rhat(x):
    """Gelman-Rubin on chains ``x`` (m, n): sqrt(var+ / W), var+ = (n-1)/n W + B/n."""
    _, n = x.shape
    between = n * x.mean(axis=1).var(ddof=1)
    within = x.var(axis=1, ddof=1).mean()
    return np.sqrt(((n - 1) / n * within + between / n) / within)


def z_scale(x):
    ranks = stats.rankdata(x, method="average").reshape(x.shape)
    return stats.norm.ppf((ranks - 3 / 8) / (x.size + 1 / 4))


def rank_rhat(x):
    """max(bulk, folded) split R-hat of one coordinate's draws (chains, draws)."""
    half = x.shape[1] // 2
    split = np.concatenate([x[:, :half], x[:, -half:]])
    folded = np.abs(split - np.median(x))
    return max(classic_rhat(z_scale(split)), classic_rhat(z_scale(folded)))


def posterior_of(**sites):
    return Posterior({k: np.asarray(v, np.float64) for k, v in sites.items()})


# ------------------------------------------------------------------ R-hat and ESS
def test_rhat_is_the_rank_normalised_split_rhat_per_site_and_its_maximum():
    w = RNG.normal(size=(4, 300, 2, 3))
    w[2] += 0.3  # one chain a little off
    b = RNG.standard_t(3, size=(4, 300, 5))
    report = exploration_report(posterior_of(w=w, b=b))
    expected_w = max(rank_rhat(w[:, :, i, j]) for i in range(2) for j in range(3))
    expected_b = max(rank_rhat(b[:, :, i]) for i in range(5))
    assert report["rhat"]["w"] == pytest.approx(expected_w, rel=1e-6)
    assert report["rhat"]["b"] == pytest.approx(expected_b, rel=1e-6)
    assert report["max_rhat"] == pytest.approx(max(expected_w, expected_b), rel=1e-6)
    assert report["rhat"]["w"] > report["rhat"]["b"]


def test_chains_with_different_means_have_rhat_far_above_one_and_iid_chains_about_one():
    same = RNG.normal(size=(4, 1000, 3))
    apart = same + np.arange(4)[:, None, None] * 3.0  # chain means 0, 3, 6, 9 (sd 1)
    iid, stuck = exploration_report(posterior_of(x=same)), exploration_report(posterior_of(x=apart))
    assert abs(iid["max_rhat"] - 1) < 0.01
    assert stuck["max_rhat"] > 1.5
    assert iid["spread_to_separation"] > 5  # the chains' means agree to well within a sd
    assert stuck["spread_to_separation"] < 0.5  # each chain sits in its own place
    assert stuck["min_ess_bulk"] < iid["min_ess_bulk"] / 20


def test_norm_rhat_is_the_split_rhat_of_each_sites_norm_and_ignores_relabelled_modes():
    """Per site, ``norm_rhat`` is the rank-normalised split R-hat of ``||theta_site||`` (the
    hand-written reference). Chains in the same mode up to a permutation and sign flips of
    the coordinates (an MLP's hidden-unit symmetries) disagree in weight space but agree on
    the norm; chains at different scales, or one drifting outward, disagree on it."""
    centre = np.array([3.0, -2.0, 1.0, 0.5, -1.5, 2.5])
    draws = RNG.normal(size=(4, 800, 6)) * 0.3 + centre
    relabelled = draws.copy()
    relabelled[1::2] = relabelled[1::2][..., ::-1] * np.array([1, -1, 1, -1, 1, -1])
    report = exploration_report(posterior_of(w=relabelled))
    norms = np.linalg.norm(relabelled, axis=-1)
    assert report["norm_rhat"]["w"] == pytest.approx(rank_rhat(norms), rel=1e-6)
    assert report["max_rhat"] > 1.5 and abs(report["max_norm_rhat"] - 1) < 0.01
    assert report["min_norm_ess_bulk"] == pytest.approx(norms.size, rel=0.2)
    drifting = (
        draws * np.linspace(1.0, 1.5, 800)[None, :, None] ** (np.arange(4) % 2)[:, None, None]
    )
    scaled = exploration_report(posterior_of(w=drifting, b=RNG.normal(size=(4, 800, 3))))
    assert scaled["norm_rhat"]["w"] > 1.5 and abs(scaled["norm_rhat"]["b"] - 1) < 0.02
    assert scaled["max_norm_rhat"] == scaled["norm_rhat"]["w"]
    assert scaled["min_norm_ess_bulk"] == scaled["norm_ess_bulk"]["w"]


def test_norm_mean_and_sd_are_those_of_each_sites_norm_over_all_draws():
    """``norm_mean`` / ``norm_sd`` per site equal NumPy's mean and sd of ``||theta_site||``
    over chains and draws, are unchanged by relabelling the coordinates, and tell two runs
    at different scales apart though each run's chains agree (norm R-hat near 1 for both)."""
    centre = np.array([3.0, -2.0, 1.0, 0.5])
    draws = RNG.normal(size=(3, 600, 2, 2)) * 0.2 + centre.reshape(2, 2)
    bias = RNG.normal(size=(3, 600))
    report = exploration_report(posterior_of(w=draws, b=bias))
    norms = np.sqrt((draws**2).sum(axis=(-2, -1)))
    assert report["norm_mean"]["w"] == pytest.approx(norms.mean(), rel=1e-12)
    assert report["norm_sd"]["w"] == pytest.approx(norms.std(), rel=1e-12)
    assert report["norm_mean"]["b"] == pytest.approx(np.abs(bias).mean(), rel=1e-12)
    flipped = exploration_report(posterior_of(w=-draws[..., ::-1, :]))
    assert flipped["norm_mean"]["w"] == pytest.approx(report["norm_mean"]["w"], rel=1e-12)
    shrunk = exploration_report(posterior_of(w=draws * 0.6))
    assert abs(shrunk["norm_rhat"]["w"] - 1) < 0.02 and abs(report["norm_rhat"]["w"] - 1) < 0.02
    assert shrunk["norm_mean"]["w"] == pytest.approx(0.6 * norms.mean(), rel=1e-12)


def test_bulk_ess_matches_the_ar1_formula():
    """For AR(1) draws of coefficient rho the ESS of the mean is n (1 - rho) / (1 + rho);
    tolerance 20% (ArviZ's Geyer truncation is an estimate; iid draws: ESS = n)."""
    num_chains, num_draws, rho = 4, 2000, 0.6
    noise = RNG.normal(size=(num_chains, num_draws, 2))
    draws = np.empty_like(noise)
    draws[:, 0] = noise[:, 0]
    for t in range(1, num_draws):
        draws[:, t] = rho * draws[:, t - 1] + np.sqrt(1 - rho**2) * noise[:, t]
    n = num_chains * num_draws
    report = exploration_report(posterior_of(a=draws, iid=noise))
    assert report["ess_bulk"]["a"] == pytest.approx(n * (1 - rho) / (1 + rho), rel=0.2)
    assert report["ess_bulk"]["iid"] == pytest.approx(n, rel=0.2)
    assert report["min_ess_bulk"] == report["ess_bulk"]["a"]


# ------------------------------------------------------------------ distances
def test_the_distances_equal_numpy_loops():
    w = RNG.normal(size=(3, 50, 2, 2)) + RNG.normal(size=(3, 1, 2, 2))
    b = RNG.normal(size=(3, 50, 3)) * 2.0
    mode = {"w": RNG.normal(size=(2, 2)), "b": RNG.normal(size=3)}
    report = exploration_report(posterior_of(w=w, b=b), mode=mode)

    theta = np.concatenate([w.reshape(3, 50, -1), b], axis=-1)  # (chains, draws, 7)
    centre = np.concatenate([mode["w"].ravel(), mode["b"]])
    distances = [np.linalg.norm(theta[c, s] - centre) for c in range(3) for s in range(50)]
    assert report["distance_from_mode"] == pytest.approx(np.mean(distances), rel=1e-6)
    relative = np.mean(distances) / np.linalg.norm(centre)
    assert report["relative_distance_from_mode"] == pytest.approx(relative, rel=1e-6)

    variance = sum(np.var(theta[c, :, i], ddof=1) for c in range(3) for i in range(7)) / 3
    assert report["within_chain_sd"] == pytest.approx(np.sqrt(variance), rel=1e-6)
    means = [theta[c].mean(axis=0) for c in range(3)]
    pairs = [np.linalg.norm(means[a] - means[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert report["between_chain_distance"] == pytest.approx(np.mean(pairs), rel=1e-6)
    ratio = np.sqrt(variance) / np.mean(pairs)
    assert report["spread_to_separation"] == pytest.approx(ratio, rel=1e-6)
    assert (report["num_chains"], report["num_draws"]) == (3, 50)


def test_a_mode_may_be_a_posterior_and_is_checked():
    draws = RNG.normal(size=(2, 20, 3))
    posterior = posterior_of(w=draws)
    mode = Posterior({"w": np.ones((1, 1, 3))})  # as run_map returns it
    by_posterior = exploration_report(posterior, mode=mode)
    by_dict = exploration_report(posterior, mode={"w": np.ones(3)})
    assert by_posterior["distance_from_mode"] == by_dict["distance_from_mode"]
    at_origin = exploration_report(posterior, mode={"w": np.zeros(3)})
    assert at_origin["relative_distance_from_mode"] == float("inf")
    with pytest.raises(ValueError, match=r"mode lacks the posterior's sites \['w'\]"):
        exploration_report(posterior, mode={"v": np.ones(3)})
    with pytest.raises(ValueError, match=r"mode\['w'\] has shape \(2,\), the draws \(3,\)"):
        exploration_report(posterior, mode={"w": np.ones(2)})
    with pytest.raises(TypeError, match="mode must be a Posterior or a dict"):
        exploration_report(posterior, mode=np.ones(3))


def test_one_chain_has_no_between_chain_numbers():
    report = exploration_report(posterior_of(w=RNG.normal(size=(1, 100, 2))))
    assert np.isnan(report["max_rhat"])
    assert report["between_chain_distance"] is None
    assert report["spread_to_separation"] is None
    assert report["distance_from_mode"] is None
    assert report["min_ess_bulk"] > 30


def test_a_diverged_chain_is_refused_by_name_not_left_out():
    """NaN draws dropped out of the maxima and minima before: a chain that diverged after 150
    draws gave max_rhat 1.007 and spread_to_separation inf ("the same region")."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 200, 3)), rng.normal(size=(2, 200, 2))
    w[1, 150:] = np.nan
    with pytest.raises(ValueError, match="'w' are not finite from chain 1, draw 150"):
        exploration_report(Posterior({"w": w, "b": b}))
    w[1, 150:] = np.inf
    with pytest.raises(ValueError, match="chain 1, draw 150"):
        exploration_report(Posterior({"w": w, "b": b}))


def test_draws_that_never_move_are_worth_no_draws():
    """ArviZ gives a constant series the ESS of every draw; a sampler stuck at its start
    read as 2,000 independent draws and a spread ratio of inf before."""
    stuck = exploration_report(Posterior({"w": np.full((4, 500, 10), 0.3, np.float32)}))
    for key in ("max_rhat", "min_ess_bulk", "min_norm_ess_bulk", "spread_to_separation"):
        assert np.isnan(stuck[key]), (key, stuck[key])
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(2, 300, 3))
    draws[:, :, 0] = 1.0  # one coordinate stuck, the others move
    report = exploration_report(Posterior({"w": draws}))
    assert 100 < report["min_ess_bulk"] < 1000 and np.isfinite(report["max_rhat"])


def test_a_summary_pattern_that_matches_nothing_is_named():
    from mtbkd_jax.diagnostics import summary

    tree = Posterior({"w": np.random.default_rng(0).normal(size=(2, 50, 3))}).to_datatree()
    assert "w" in str(summary(tree, "w").index[0])
    with pytest.raises(ValueError, match="no posterior variable's name contains 'kernel'"):
        summary(tree, "kernel")
