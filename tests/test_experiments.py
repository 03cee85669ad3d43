"""The experiments run from the CLI in their smoke setting and write their outputs."""

import json

import numpy as np
import pytest

import mtbkd_jax as mk
from mtbkd_jax.cli import main
from mtbkd_jax.experiments import markdown_table


@pytest.mark.slow
def test_digits_experiment_smoke(tmp_path):
    """Every baseline runs from the CLI and writes its outputs; the rows say what the full run
    shows where that already holds at the smoke settings (100 MAP steps, 10 NUTS draws).

    Measured over seeds 0..4 (MT-BKD = entropy weights, against the student alone): NUTS NLL
    ratio 0.45..0.55, mean deviance ratio 0.51..0.59, MAP NLL ratio 0.65..0.80, NUTS accuracy
    higher by 0.016..0.061. Bounds: NUTS NLL < 0.8x, mean deviance < 0.7x, MAP NLL and NUTS
    accuracy plain orderings.
    """
    assert main(["experiment", "digits", "--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())
    by_key = {(r["method"], r["inference"]): r for r in rows}
    assert len(by_key) == len(rows)
    expected = {("student alone", "map"), ("student alone", "nuts"), ("averaged KD", "map")}
    expected |= {("CA-MKD", "map")}
    for teacher in ("logreg", "forest", "naive_bayes"):
        expected |= {(f"teacher {teacher}", "teacher"), (f"KD ({teacher})", "map")}
        expected |= {(f"BKD ({teacher})", "nuts")}
    for weights in ("uniform", "entropy"):
        expected |= {(f"MT-BKD ({weights} weights)", i) for i in ("map", "nuts")}
    expected |= {("MT-BKD (learned trust)", i) for i in ("map", "nuts")}
    assert set(by_key) == expected
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0 and row["ece"] >= 0
        assert (row["mean_deviance"] is None) == (row["inference"] in ("map", "teacher"))

    student = {i: by_key[("student alone", i)] for i in ("map", "nuts")}
    mt_bkd = {i: by_key[("MT-BKD (entropy weights)", i)] for i in ("map", "nuts")}
    assert mt_bkd["nuts"]["nll"] < 0.8 * student["nuts"]["nll"]
    assert mt_bkd["map"]["nll"] < student["map"]["nll"]
    assert 0 < mt_bkd["nuts"]["mean_deviance"] < 0.7 * student["nuts"]["mean_deviance"]
    assert mt_bkd["nuts"]["accuracy"] >= student["nuts"]["accuracy"]

    for name in (
        "reliability.png",
        "teacher_weights.png",
        "deviance_by_class.png",
        "trace.png",
        "posterior.nc",
        "table.md",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    _all_outputs_known(tmp_path)
    # predictions.npz holds every row's test probabilities: they give the row's metrics, and
    # compare_runs pairs two rows on them
    from mtbkd_jax.experiments import compare_runs, load_predictions
    from mtbkd_jax.metrics import classification_metrics

    probs, labels = load_predictions(tmp_path)
    assert set(probs) == set(by_key)
    # in metrics.json's order, so that probs_000, probs_001, ... are the table's rows (they
    # were in the order the methods ran: 7 of 9 demo rows read by index were another's)
    assert list(probs) == [(row["method"], row["inference"]) for row in rows]
    for key, row in by_key.items():
        again = classification_metrics(probs[key], labels)
        assert again == pytest.approx({k: row[k] for k in again}, abs=1e-12), key
    (found,) = compare_runs(
        [tmp_path], ("MT-BKD (learned trust)", "nuts"), [("averaged KD", "map")], ["nll"]
    )
    gap = by_key[("MT-BKD (learned trust)", "nuts")]["nll"] - by_key[("averaged KD", "map")]["nll"]
    assert found["estimate"] == pytest.approx(gap, abs=1e-12)
    assert found["low"] <= found["estimate"] <= found["high"]
    # every method chose its prior settings on validation: its row reports the grid point of
    # lowest validation NLL, and says when that point lies on an edge of the smoke grid
    # (0.3, 1.0), which smoke runs do not extend (SMOKE_TUNING's grid_extensions=0)
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    fixed_nuts = {m for m, i in by_key if i == "nuts" and m != "MT-BKD (learned trust)"}
    assert set(tuning) == {method for method, inference in by_key if inference == "map"} | {
        f"{m} (nuts)" for m in fixed_nuts
    }
    # each NUTS row but learned trust's chose its σ0 again by its posterior predictive's
    # validation NLL (DigitsConfig.posterior_tuning), λ and β held at its MAP search's; the
    # MAP of the chosen posterior's own model is kept in own_maps.json
    own_maps = json.loads((tmp_path / "own_maps.json").read_text())
    assert set(own_maps) == fixed_nuts
    for method in fixed_nuts:
        tried = tuning.pop(f"{method} (nuts)")
        assert sorted(r["prior_scale"] for r in tried) == [0.3, 1.0], method
        best = min(tried, key=lambda r: r["score"])
        row = by_key[(method, "nuts")]
        assert row["settings"].startswith(f"σ0={best['prior_scale']:g} (grid edge)"), method
        assert own_maps[method]["settings"] == row["settings"], method
        assert own_maps[method]["inference"] == "map" and own_maps[method]["nll"] > 0
    # the learned-trust row chose beta by its posterior's validation NLL, from the smoke's
    # one-point grid, and wrote its trust summary
    learned = tuning.pop("MT-BKD (learned trust)")
    assert [r["prior_power"] for r in learned] == [0.3]
    assert by_key[("MT-BKD (learned trust)", "map")]["settings"] == (
        "σ learned, trust learned, β=0.3"
    )
    trust = json.loads((tmp_path / "trust.json").read_text())["MT-BKD (learned trust)"]
    assert [row["teacher"] for row in trust] == ["logreg", "forest", "naive_bayes"]
    # and its record: the hyperprior the trust was fitted under and its chains' R-hat
    record = json.loads((tmp_path / "trust_fit.json").read_text())["MT-BKD (learned trust)"]
    assert record["kind"] == "cut" and set(record["hyperprior"]) >= {"calibration", "pooling"}
    assert record["max_rhat"] > 0.9 and len(record["temperature"]) == 3
    for method, tried in tuning.items():
        assert len(tried) == 2, method
        best = min(tried, key=lambda r: r["score"])
        label = f"σ0={best['prior_scale']:g} (grid edge)"
        if method != "student alone":
            label += f" λ={best['concentration']:g} β={best['prior_power']:g}"
        assert by_key[(method, "map")]["settings"] == label, method


def _all_outputs_known(out) -> None:
    """Every file a run wrote is one ``--overwrite`` removes (provenance.OUTPUT_FILES): a
    file missing there would outlive a rerun into the folder beside the new outputs."""
    from mtbkd_jax.experiments.provenance import OUTPUT_FILES

    written = {path.name for path in out.rglob("*") if path.is_file()}
    assert written and written <= set(OUTPUT_FILES), written - set(OUTPUT_FILES)
    constants: list[str] = []  # strict JSON: NaN / Infinity would break other readers
    for path in out.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=constants.append)
    assert constants == []


def test_digits_validation_split_is_held_out_and_keeps_the_test_set():
    import numpy as np

    from mtbkd_jax.datasets import load_digits_distillation

    plain = load_digits_distillation(0)
    held = load_digits_distillation(0, num_transfer=300, num_validation=150)
    assert plain.x_validation is None and plain.y_validation is None
    assert held.x_validation.shape == (150, 64) and held.y_validation.shape == (150,)
    np.testing.assert_array_equal(held.x_test, plain.x_test)  # the same 397 test digits
    np.testing.assert_array_equal(held.x_train, plain.x_train)
    # the validation digits are the demo's last 150 transfer digits: no split sees them twice
    np.testing.assert_array_equal(held.x_validation, plain.x_transfer[300:])
    np.testing.assert_array_equal(held.x_transfer, plain.x_transfer[:300])
    assert held.teachers_prior.num_examples == 450  # labelled + transfer, not validation
    with pytest.raises(ValueError, match="num_validation"):
        load_digits_distillation(0, num_validation=-1)
    with pytest.raises(ValueError, match="together at most 1795"):
        load_digits_distillation(0, num_validation=1000)
    # a bool, a float or a float seed is named (True gave one labelled digit; 2.5 NumPy's
    # "slice indices must be integers"; 1.5 a SeedSequence message)
    for name, value in (("num_labelled", True), ("num_validation", 1.5), ("seed", 1.5)):
        with pytest.raises(TypeError, match=rf"{name} must be an integer"):
            load_digits_distillation(**{name: value})


def test_markdown_table_formats_missing_and_nan():
    table = markdown_table(
        [
            {"method": "a", "inference": "map", "accuracy": 0.5, "nll": 1.0, "mean_deviance": None},
            {
                "method": "b",
                "inference": "nuts",
                "accuracy": 0.25,
                "nll": float("nan"),
                "mean_deviance": 0.1,
            },
        ]
    )
    lines = table.splitlines()
    assert lines[0].startswith("| method | inference | accuracy | NLL | mean dev.")
    assert "| a | map | 0.500 | 1.000 | – |" in lines
    assert "| b | nuts | 0.250 | nan | 0.100 |" in lines


@pytest.mark.slow
def test_synthetic_experiment_smoke_reports_coverage(tmp_path):
    """The synthetic experiment reports the coverage of 95% intervals, and the figure it
    reports is the one the saved posterior gives, recomputed here with NumPy quantiles
    against the regenerated true probabilities (tolerance: one (example, class) pair, for a
    truth within float32 rounding of a bound).

    Whether the intervals are calibrated is tested where the truth is exactly known
    (tests/test_uncertainty.py); at the smoke settings (5 NUTS draws after 5 warm-up steps,
    40 test examples) the coverage ranged from 0.10 to 0.93 across methods and seeds 0..5,
    so no band narrower than [0, 1] holds for it here.
    """
    import numpy as np

    from mtbkd_jax.experiments.fit import build_student
    from mtbkd_jax.experiments.synthetic import (
        SyntheticConfig,
        coverage_breakdown,
        synthetic_problem,
    )
    from mtbkd_jax.infer.posterior import Posterior
    from mtbkd_jax.model import MTBKDModel

    assert main(["experiment", "synthetic", "--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())
    bayesian = [r for r in rows if r["inference"] == "nuts"]
    assert bayesian and all(0 <= r["coverage_95"] <= 1 for r in bayesian)
    assert all(r["dataset"] == "linear_2" for r in rows)
    assert (tmp_path / "linear_2" / "reliability.png").exists()
    _all_outputs_known(tmp_path)
    main_row = next(r for r in bayesian if r["method"] == "MT-BKD (entropy weights)")

    config = SyntheticConfig.smoke()
    problem, _ = synthetic_problem("linear", 2, num_examples=config.num_examples, seed=0)
    logits = MTBKDModel(build_student(problem, config), None).logits
    posterior = Posterior.load(tmp_path / "linear_2" / "posterior.nc", logits_fn=logits)
    draws = np.asarray(posterior.predict(problem.x_test), np.float64)  # (S, N, C)
    assert draws.shape[0] == 5
    low, high = np.quantile(draws, [0.025, 0.975], axis=0)
    truth = problem.true_probs_test
    inside = (low <= truth) & (truth <= high)
    assert abs(inside.mean() - main_row["coverage_95"]) <= 1 / truth.size

    # the coverage breakdown partitions the test pairs and pools to the row's coverage
    breakdown = json.loads((tmp_path / "linear_2" / "coverage_by_probability.json").read_text())
    pairs = sum(b["count"] for b in breakdown)
    assert pairs == truth.size
    pooled = sum(b["coverage"] * b["count"] for b in breakdown) / pairs
    assert abs(pooled - main_row["coverage_95"]) < 1e-9
    below = sum(b["below"] * b["count"] for b in breakdown) / pairs
    assert abs(below - (truth < low).mean()) <= 1 / truth.size

    again = coverage_breakdown(tmp_path, num_examples=440)["linear_2"]
    assert [b["count"] for b in again] == [b["count"] for b in breakdown]
    assert abs(sum(b["coverage"] * b["count"] for b in again) / pairs - pooled) < 1e-6
    with pytest.raises(ValueError, match="pass the run's hidden and activation"):
        coverage_breakdown(tmp_path, num_examples=440, activation="relu")
    # a posterior saved before the units were recorded is read as the tanh student it was
    from mtbkd_jax.infer.posterior import Posterior

    path = tmp_path / "linear_2" / "posterior.nc"
    old = Posterior.load(path)
    old.settings = {**old.settings, "student": "Student(MLP, name='student')"}
    old.save(path)
    legacy = coverage_breakdown(tmp_path, num_examples=440)["linear_2"]
    assert [b["coverage"] for b in legacy] == [b["coverage"] for b in again]
    with pytest.raises(ValueError, match="pass the run's hidden and activation"):
        coverage_breakdown(tmp_path, num_examples=440, activation="relu")


# ---------------------------------------------------------------------- the runner's parts
def test_distillation_data_is_the_one_problem_type():
    import numpy as np

    from mtbkd_jax.datasets import DistillationData, load_digits_distillation, make_synthetic

    digits = load_digits_distillation(0, num_transfer=300, num_validation=150)
    assert isinstance(digits, DistillationData) and digits.name == "digits"
    assert (digits.num_classes, digits.num_features) == (10, 64)
    assert (digits.num_transfer, digits.num_validation) == (300, 150) and digits.has_validation
    assert digits.prior_inputs.shape == (450, 64)
    assert "train/transfer/validation/test=150/300/150/397" in repr(digits)

    synthetic = make_synthetic("nonlinear", 3, num_examples=110, seed=1)
    data = synthetic.distillation_data()
    assert data.name == "nonlinear_3" and data.x_transfer is None
    assert data.prior_inputs is data.x_train and data.teachers_prior is synthetic.teachers_train
    np.testing.assert_array_equal(data.true_probs_test, synthetic.true_probs_test)
    np.testing.assert_array_equal(data.x_validation, synthetic.x_validation)


def test_every_experiment_has_a_smoke_config_and_a_full_one():
    """Each experiment's ``.smoke()`` is its tiny run (one chain); ``for_run`` picks it."""
    from mtbkd_jax.demo import DemoConfig
    from mtbkd_jax.experiments.deeploc import DeepLocConfig
    from mtbkd_jax.experiments.digits import DigitsConfig
    from mtbkd_jax.experiments.fashion_mnist import FashionMNISTConfig
    from mtbkd_jax.experiments.synthetic import CASES, SyntheticConfig

    for cls in (DigitsConfig, SyntheticConfig, DeepLocConfig, FashionMNISTConfig, DemoConfig):
        smoke, full = cls.smoke(seed=2), cls(seed=2)
        assert type(smoke) is cls and smoke.num_chains == 1 and full.num_chains >= 2, cls
        assert smoke.map_steps < full.map_steps, cls
        assert cls.for_run(smoke=True, seed=2) == smoke, cls
        assert cls.for_run(seed=2) == full, cls
    assert SyntheticConfig().cases == CASES and SyntheticConfig.smoke().cases == CASES[:1]
    assert (DeepLocConfig().bayes, DeepLocConfig().hidden) == ("sgld", (128,))
    # DeepLoc's SGLD chains start apart: 4 chains, each at its own MAP
    assert (DeepLocConfig().num_chains, DeepLocConfig().chain_starts) == (4, "maps")
    # the synthetic learned-trust search scores each beta by a quarter of the NUTS budget; the
    # other experiments score it by the row's full run
    assert SyntheticConfig().trust_search_budget == 0.25
    assert {c().trust_search_budget for c in (DigitsConfig, DeepLocConfig)} == {1.0}
    assert FashionMNISTConfig.smoke().teachers is not None
    with pytest.raises(ValueError, match="key_schedule"):
        DigitsConfig(key_schedule="random")
    with pytest.raises(ValueError, match="methods"):
        DigitsConfig(methods="all of them")


def test_method_keys_follow_the_schedules():
    """``per-method``: (next, MAP, posterior) split from the seed's key for each method in
    turn; ``maps-first`` (the demo's): every MAP key first, then per posterior one skipped
    key, the extra chain starts' keys and the sampler's key."""
    import jax
    import numpy as np

    from mtbkd_jax.experiments import ExperimentConfig, Method
    from mtbkd_jax.experiments.keys import method_keys

    def same(a, b):
        return np.array_equal(jax.random.key_data(a), jax.random.key_data(b))

    methods = [
        Method("a", None, posterior="a"),
        Method("b", None),
        Method("c", None, posterior="c"),
    ]
    keys = method_keys(ExperimentConfig(seed=5), methods)
    key = jax.random.key(5)
    for got in keys:
        key, map_key, posterior_key = jax.random.split(key, 3)
        assert same(got.map, map_key) and same(got.posterior, posterior_key) and got.starts == ()

    config = ExperimentConfig(seed=5, key_schedule="maps-first", chain_starts="maps", num_chains=3)
    keys = method_keys(config, methods)
    key = jax.random.key(5)
    for got in keys:
        key, map_key = jax.random.split(key)
        assert same(got.map, map_key)
    assert keys[1].posterior is None and keys[1].starts == ()
    for got in (keys[0], keys[2]):
        key, _ = jax.random.split(key)
        starts = []
        for _ in range(2):
            key, start = jax.random.split(key)
            starts.append(start)
        key, posterior_key = jax.random.split(key)
        assert same(got.posterior, posterior_key) and len(got.starts) == 2
        assert all(same(a, b) for a, b in zip(got.starts, starts, strict=True))


def test_the_plans_name_their_rows():
    from mtbkd_jax.datasets import load_digits_distillation
    from mtbkd_jax.experiments.methods import baseline_methods, demo_methods

    data = load_digits_distillation(0)
    demo = demo_methods(data)
    assert [m.label for m in demo] == [
        "student alone",
        "averaged-teacher KD",
        "CA-MKD",
        "single-teacher BKD (logreg)",  # the best teacher on the 150 labelled digits
        "MT-BKD (entropy weights)",
        "MT-BKD (learned trust)",
    ]
    posteriors = [
        "student alone",
        None,
        None,
        None,
        "MT-BKD (entropy weights)",
        "MT-BKD (learned trust)",
    ]
    assert [m.posterior for m in demo] == posteriors
    # CA-MKD and learned trust were added after the plans' rows were published: they key by
    # their labels
    assert [m.key_by_label for m in demo] == [False, False, True, False, False, True]
    assert [m.trust for m in demo] == [False] * 5 + [True]
    baselines = baseline_methods(data)
    assert [m.label for m in baselines] == [
        "student alone",
        "KD (logreg)",
        "KD (forest)",
        "KD (naive_bayes)",
        "averaged KD",
        "CA-MKD",
        "MT-BKD (uniform weights)",
        "MT-BKD (entropy weights)",
        "MT-BKD (learned trust)",
    ]
    assert [m.weight_rule for m in baselines][-3:-1] == ["uniform", "paper"]


def test_a_failing_method_leaves_the_others_written_and_the_run_reports_it(tmp_path, monkeypatch):
    """Nothing is lost when one method fails: the synthetic smoke run with the learned-trust
    method broken still writes the other rows (CA-MKD, MT-BKD by MAP and NUTS), records the
    failure (failures.json, table.md) and then stops with ExperimentFailed naming the method
    and its error, raised from it."""
    from dataclasses import replace

    import mtbkd_jax.experiments.baselines as baselines
    from mtbkd_jax.experiments.methods import MAIN, METHOD_PLANS, Method, _ca_mkd, _learned_trust
    from mtbkd_jax.experiments.report import ExperimentFailed
    from mtbkd_jax.experiments.synthetic import SyntheticConfig, run_synthetic

    def broken(*args, **kwargs):
        raise ValueError("candidates: every step size tried is unstable")

    def plan(data):
        bank = data.teachers_prior
        return [_ca_mkd(data), _learned_trust(data), Method(MAIN, bank, posterior=MAIN)]

    monkeypatch.setattr(baselines, "fit_trusted", broken)
    monkeypatch.setitem(METHOD_PLANS, "failing", plan)
    config = replace(SyntheticConfig.smoke(), methods="failing", teacher_rows=False)
    with pytest.raises(ExperimentFailed, match=r"1 method.*MT-BKD \(learned trust\): Value") as e:
        run_synthetic(tmp_path, config=config, say=lambda *a: None)
    assert isinstance(e.value.__cause__, ValueError)
    rows = json.loads((tmp_path / "linear_2" / "metrics.json").read_text())
    assert [(r["method"], r["inference"]) for r in rows] == [
        ("CA-MKD", "map"),
        (MAIN, "map"),
        (MAIN, "nuts"),
    ]
    failures = json.loads((tmp_path / "linear_2" / "failures.json").read_text())
    assert failures == {
        "MT-BKD (learned trust)": "ValueError: candidates: every step size tried is unstable"
    }
    assert "Failed methods" in (tmp_path / "linear_2" / "table.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text()) == rows


@pytest.mark.parametrize("cause, status", [(ValueError("bad input"), 1), (KeyError("bug"), None)])
def test_the_cli_reports_failed_methods_in_one_line_and_bugs_with_their_traceback(
    cause, status, tmp_path, monkeypatch, capsys
):
    import sys
    import types

    from mtbkd_jax.experiments import EXPERIMENTS, Experiment
    from mtbkd_jax.experiments.report import ExperimentFailed, raise_failures

    def run(out_dir, **kwargs):
        raise_failures({"MT-BKD (learned trust)": cause}, out_dir)

    monkeypatch.setitem(sys.modules, "failing_experiment", types.SimpleNamespace(run=run))
    entry = Experiment(
        "failing", "", "failing_experiment:run", "mtbkd_jax.experiments:ExperimentConfig"
    )
    monkeypatch.setitem(EXPERIMENTS, "failing", entry)
    command = ["experiment", "failing", "--no-compile-cache", "--out", str(tmp_path)]
    if status is None:  # a bug: the traceback, with the method's error as the cause
        with pytest.raises(ExperimentFailed) as raised:
            main(command)
        assert raised.value.__cause__ is cause
        return
    assert main(command) == status
    error = capsys.readouterr().err
    assert error.startswith("mtbkd: error: 1 method(s) failed (the other methods' results are in")
    assert "MT-BKD (learned trust): ValueError: bad input" in error


@pytest.mark.parametrize("bayes", ["psgld", "ncsgld"])
def test_an_experiment_samples_its_posterior_by_the_minibatch_sampler_it_names(bayes):
    """``bayes`` names any of the minibatch samplers the experiments offer: the row's
    posterior is run_sgmcmc's with that sampler and the ``sgld_`` settings (the same draws),
    and not SGLD's."""
    import jax

    from mtbkd_jax.datasets import DistillationData
    from mtbkd_jax.experiments import ExperimentConfig
    from mtbkd_jax.experiments.fit import build_model, fit_map, fit_posterior
    from mtbkd_jax.infer import run_sgmcmc

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    logits = np.stack([np.stack([-x[:, 0], x[:, 0]], -1), np.stack([x[:, 1], -x[:, 1]], -1)])
    data = DistillationData(
        name="toy",
        x_train=x[:40],
        y_train=y[:40],
        x_test=x[40:],
        y_test=y[40:],
        teachers_prior=mk.TeacherBank.from_logits(logits[:, :40] * 3, names=("a", "b")),
        teachers_test=mk.TeacherBank.from_logits(logits[:, 40:] * 3, names=("a", "b")),
    )
    config = ExperimentConfig(
        hidden=(4,),
        map_steps=50,
        bayes=bayes,
        sgld_batch_size=10,
        sgld_epochs=3,
        sgld_draws_per_epoch=2,
        sgld_step_size=1e-3,
        num_chains=1,
    )
    model = build_model(data, config, data.teachers_prior)
    mode = fit_map(jax.random.key(0), data, config, model)
    posterior = fit_posterior(jax.random.key(1), data, config, model, mode)
    start = {k: v[0, 0] for k, v in mode.draws.items()}
    common = dict(
        batch_size=10,
        num_epochs=3,
        step_size=1e-3,
        draws_per_epoch=2,
        num_chains=1,
        init_params=start,
        model_kwargs={"prior_inputs": data.prior_inputs},
    )
    direct = run_sgmcmc(jax.random.key(1), model, x[:40], y[:40], sampler=bayes, **common)
    sgld = run_sgmcmc(jax.random.key(1), model, x[:40], y[:40], sampler="sgld", **common)
    for site, draws in posterior.draws.items():
        assert draws.shape == (1, 6, *start[site].shape)
        np.testing.assert_array_equal(np.asarray(draws), np.asarray(direct.draws[site]))
    assert any(
        not np.allclose(np.asarray(posterior.draws[s]), np.asarray(sgld.draws[s]))
        for s in sgld.draws
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bayes": "hmc"}, r"bayes must be one of \('nuts', 'sgld', 'psgld', 'ncsgld'\)"),
        ({"bayes": "ncsgld", "sgld_batch_size": 63}, "sgld_batch_size must be even"),
        ({"activation": "gelu"}, r"activation must be one of \('tanh', 'relu'\)"),
    ],
)
def test_a_bayes_the_experiments_cannot_run_is_refused_up_front(options, message):
    from mtbkd_jax.experiments import ExperimentConfig

    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**options)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_student_has_the_configured_activation(activation):
    """Far from the data a tanh student's logits level off and a relu student's grow
    linearly: the second difference of the logits along a ray vanishes for relu only."""
    import jax.numpy as jnp

    from mtbkd_jax.experiments import ExperimentConfig
    from mtbkd_jax.experiments.fit import build_student

    config = ExperimentConfig(hidden=(8,), activation=activation)
    student = build_student(_TwoFeatures(), config)
    assert student.module.activation == activation
    ray = jnp.asarray([[100.0, 50.0], [200.0, 100.0], [300.0, 150.0]])
    logits = np.asarray(student.module(ray), np.float64)
    second = logits[2] - 2 * logits[1] + logits[0]
    first = logits[2] - logits[1]
    if activation == "relu":
        np.testing.assert_allclose(second, 0.0, atol=1e-3 * np.abs(logits).max())
        assert np.abs(first).max() > 1.0
    else:
        np.testing.assert_allclose(first, 0.0, atol=1e-5)


class _TwoFeatures:
    """What ``build_student`` reads of a problem."""

    num_features = 2
    num_classes = 3


def test_ncsgld_with_a_mesh_is_refused_up_front():
    import jax
    from jax.sharding import Mesh

    from mtbkd_jax.experiments import ExperimentConfig

    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("chains", "data"))
    with pytest.raises(ValueError, match="bayes='ncsgld' needs the one-process data path"):
        ExperimentConfig(bayes="ncsgld", mesh=mesh)


def test_an_experiment_samples_a_learned_scale_model_non_centred_when_asked():
    """``sgmcmc_coordinates="noncentred"``: the posterior is NC-SGLD's on ``noncentred(model)``
    from the MAP moved into its coordinates (the same draws), reported as weights; a
    fixed-scale model has nothing to non-centre (sampled as it is)."""
    import jax

    from mtbkd_jax.datasets import DistillationData
    from mtbkd_jax.experiments import ExperimentConfig
    from mtbkd_jax.experiments.fit import build_model, fit_map, fit_posterior
    from mtbkd_jax.infer import run_sgmcmc
    from mtbkd_jax.noncentred import centred_posterior, noncentred, noncentred_point
    from mtbkd_jax.scale_priors import hierarchical_normal_prior

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    logits = np.stack([np.stack([-x[:, 0], x[:, 0]], -1)])
    bank = mk.TeacherBank.from_logits(logits * 3, names=("a",))
    data = DistillationData(name="toy", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8],
                            teachers_prior=bank, teachers_test=bank.take(np.arange(8)))  # fmt: skip
    config = ExperimentConfig(
        hidden=(4,), map_steps=50, bayes="ncsgld", sgld_batch_size=10, sgld_epochs=3,
        sgld_draws_per_epoch=2, sgld_step_size=1e-3, num_chains=1,
        sgmcmc_coordinates="noncentred",
    )  # fmt: skip
    fixed = build_model(data, config, bank)
    learned = mk.MTBKDModel(fixed.student.with_prior(hierarchical_normal_prior()), bank)
    for model in (learned, fixed):
        mode = fit_map(jax.random.key(0), data, config, model)
        posterior = fit_posterior(jax.random.key(1), data, config, model, mode)
        kwargs = {"prior_inputs": data.prior_inputs}
        start = noncentred_point(model, mode.point(), x, y, **kwargs)
        direct = centred_posterior(
            run_sgmcmc(
                jax.random.key(1),
                noncentred(model),
                x,
                y,
                sampler="ncsgld",
                batch_size=10,
                num_epochs=3,
                step_size=1e-3,
                draws_per_epoch=2,
                num_chains=1,
                init_params=start,
                progress_bar=False,
                model_kwargs=kwargs,
            )
        )
        assert sorted(posterior.draws) == sorted(mode.draws)
        for site, draws in posterior.draws.items():
            np.testing.assert_array_equal(draws, direct.draws[site])
        assert posterior.model is model
        coordinates = posterior.settings.get("base_prior_coordinates")
        assert coordinates == ("non-centred" if model is learned else None)
    with pytest.raises(ValueError, match="sgmcmc_coordinates must be one of"):
        ExperimentConfig(sgmcmc_coordinates="whitened")
    with pytest.raises(ValueError, match="NUTS samples the centred model"):
        ExperimentConfig(bayes="nuts", sgmcmc_coordinates="noncentred")


def _toy_bank(rng, num_examples):
    """Two random teachers over 3 classes on ``num_examples`` inputs."""
    from mtbkd_jax import TeacherBank

    return TeacherBank.from_logits(rng.normal(size=(2, num_examples, 3)).astype(np.float32))


def _toy_problem(rng, num_train, validation=None):
    """A 2-feature, 3-class problem with 4 test inputs, and ``validation`` validation inputs
    with the teachers on them when given."""
    from mtbkd_jax.datasets.data import DistillationData

    def inputs(n):
        return rng.normal(size=(n, 2)).astype(np.float32)

    extra = {}
    if validation is not None:
        extra = {
            "x_validation": inputs(validation),
            "y_validation": rng.integers(0, 3, validation),
            "teachers_validation": _toy_bank(rng, validation),
        }
    return DistillationData(
        name="toy",
        x_train=inputs(num_train),
        y_train=rng.integers(0, 3, num_train),
        x_test=inputs(4),
        y_test=rng.integers(0, 3, 4),
        teachers_prior=_toy_bank(rng, num_train),
        teachers_test=_toy_bank(rng, 4),
        **extra,
    )


def test_trust_labels_choose_where_learned_trust_learns(monkeypatch):
    """trust_labels='validation' learns the trust from the validation inputs' teachers and
    labels; 'train' from the training inputs' (the first len(y_train) of the bank); a problem
    without teachers on its validation split is refused with the option named."""
    from dataclasses import replace

    import jax

    from mtbkd_jax.experiments import ExperimentConfig, trusted

    rng = np.random.default_rng(0)
    problem = _toy_problem(rng, 8, validation=5)
    seen = {}

    def capture(key, teachers, labels, **kwargs):
        seen["log_probs"], seen["labels"] = np.asarray(teachers.log_probs), np.asarray(labels)
        return "trust"

    monkeypatch.setattr(trusted, "fit_teacher_trust", capture)
    key = jax.random.key(0)
    config = ExperimentConfig(trust_labels="validation")
    assert trusted.learned_trust(key, problem, config, problem.teachers_prior) == "trust"
    np.testing.assert_array_equal(seen["labels"], problem.y_validation)
    np.testing.assert_array_equal(
        seen["log_probs"], np.asarray(problem.teachers_validation.log_probs)
    )
    trusted.learned_trust(key, problem, ExperimentConfig(), problem.teachers_prior)
    np.testing.assert_array_equal(seen["labels"], problem.y_train)
    np.testing.assert_array_equal(seen["log_probs"], np.asarray(problem.teachers_prior.log_probs))
    with pytest.raises(ValueError, match="trust_labels='validation' needs the teachers"):
        trusted.learned_trust(
            key, replace(problem, teachers_validation=None), config, problem.teachers_prior
        )
    with pytest.raises(ValueError, match=r"trust_labels must be one of \('train', 'validation'\)"):
        ExperimentConfig(trust_labels="test")
    with pytest.raises(ValueError, match="teachers_validation must describe the 5 validation"):
        replace(problem, teachers_validation=_toy_bank(rng, 6))


def test_trust_prior_scale_fixes_the_learned_trust_rows_base_prior():
    """trust_prior_scale=None learns a scale per weight array; a number puts Normal(0, s^2) on
    every weight (its log density is SciPy's), and the row's label says which."""
    import jax
    from scipy import stats

    from mtbkd_jax.experiments import ExperimentConfig
    from mtbkd_jax.experiments.trusted import trusted_label, trusted_model
    from mtbkd_jax.scale_priors import hierarchical_normal_prior
    from mtbkd_jax.trust import TrustValues

    rng = np.random.default_rng(1)
    problem = _toy_problem(rng, 6)
    bank = problem.teachers_prior
    trust = TrustValues.fixed(2, 10.0)
    fixed = trusted_model(problem, ExperimentConfig(trust_prior_scale=0.3), bank, trust, 0.1)
    weights = rng.normal(size=(2, 16)).astype(np.float32)
    density = fixed.student.prior("layers.0.kernel", weights.shape)
    np.testing.assert_allclose(
        float(density.log_prob(jax.numpy.asarray(weights)).sum()),
        stats.norm(0.0, 0.3).logpdf(weights).sum(),
        rtol=1e-5,
    )
    learned = trusted_model(problem, ExperimentConfig(), bank, trust, 0.1)
    assert type(learned.student.prior) is type(hierarchical_normal_prior())
    assert trusted_label(0.1, None, "none", "product", 0.3).startswith("σ0=0.3, trust learned")
    assert trusted_label(0.1, None, "none", "product").startswith("σ learned, trust learned")
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), (True, TypeError), ("a", TypeError)):
        with pytest.raises(error, match="trust_prior_scale must be"):
            ExperimentConfig(trust_prior_scale=bad)


def test_a_digits_split_leaving_fewer_than_two_test_digits_is_named():
    """1,796 of 1,797 digits in the other splits passed the size check, then failed inside the
    OOD set ("images must be a non-empty (N, D) array"); a 2**40 seed in scikit-learn."""
    from mtbkd_jax.datasets import load_digits_distillation

    with pytest.raises(ValueError, match=r"together at most 1795 \(2 test digits left\)"):
        load_digits_distillation(num_teacher_train=1000, num_labelled=500, num_transfer=296)
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*32"):
        load_digits_distillation(2**40)
