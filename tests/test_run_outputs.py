"""A run's output folder: what it records of its provenance (run.json), a run interrupted
(written, marked partial), a folder of another run refused unless --overwrite, the synthetic
coverage breakdown checked against the run's test data, and compare refusing runs of
different experiments."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from mtbkd_jax.cli import main
from mtbkd_jax.experiments import EXPERIMENTS, Experiment, compare, compare_runs
from mtbkd_jax.experiments.compare import save_predictions
from mtbkd_jax.experiments.provenance import run_provenance


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setenv("MTBKD_COMPILE_CACHE", "0")


def _provenance(name: str, *, smoke: bool = True, seed: int = 0) -> dict:
    config = EXPERIMENTS[name].config_class().for_run(smoke=smoke, seed=seed)
    return json.loads(json.dumps(run_provenance(config)))


def test_the_provenance_record_names_the_experiment_seed_smoke_and_config():
    record = _provenance("digits", seed=3)
    assert record["experiment"] == "digits" and record["seed"] == 3 and record["smoke"] is True
    assert record["config"]["seed"] == 3 and record["config"]["tune"] is True
    assert "mesh" not in record["config"] and record["version"]
    assert _provenance("demo", smoke=False)["smoke"] is False


def test_an_interrupted_run_writes_what_finished_marked_partial(
    tmp_path, monkeypatch, no_cache, capsys
):
    """Ctrl-C in the second method: exit 130, the first method's rows written with run.json
    saying complete false and the missing methods; the message says where. A clean rerun of
    the same command (same provenance) is allowed, and leaves no stale failures.json."""
    import mtbkd_jax.experiments.baselines as baselines
    from mtbkd_jax.experiments.methods import MAIN, METHOD_PLANS, Method, _ca_mkd, _learned_trust

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def plan(data):
        bank = data.teachers_prior
        return [_ca_mkd(data), _learned_trust(data), Method(MAIN, bank, posterior=MAIN)]

    monkeypatch.setattr(baselines, "fit_trusted", interrupted)
    monkeypatch.setitem(METHOD_PLANS, "baselines", plan)
    out = tmp_path / "out"
    command = ["experiment", "synthetic", "--smoke", "--out", str(out)]
    assert main(command) == 130
    err = capsys.readouterr().err
    case = out / "linear_2"
    assert err.startswith("mtbkd: interrupted; ") and str(case) in err and "partial" in err
    rows = json.loads((case / "metrics.json").read_text())
    assert ("CA-MKD", "map") in [(r["method"], r["inference"]) for r in rows]
    record = json.loads((case / "run.json").read_text())
    assert record["complete"] is False
    assert record["missing"] == ["MT-BKD (learned trust)", MAIN]
    assert record["provenance"] == _provenance("synthetic")
    # a rerun of the same run completes; an earlier failures.json does not outlive it
    (case / "failures.json").write_text("{}\n")
    monkeypatch.setitem(METHOD_PLANS, "baselines", lambda data: [_ca_mkd(data)])
    assert main(command) == 0
    assert not (case / "failures.json").exists()
    assert json.loads((case / "run.json").read_text())["complete"] is True
    assert json.loads((out / "run.json").read_text())["provenance"] == _provenance("synthetic")


def _toy_runner(monkeypatch, name: str) -> list:
    """Replace experiment ``name``'s runner by one that records its calls (no compute)."""
    calls: list = []
    module = types.SimpleNamespace(run=lambda out_dir, **kwargs: calls.append(out_dir))
    monkeypatch.setitem(sys.modules, "toy_runner", module)
    entry = EXPERIMENTS[name]
    monkeypatch.setitem(EXPERIMENTS, name, Experiment(name, "", "toy_runner:run", entry.config))
    return calls


def _old_run(folder, provenance=None) -> None:
    folder.mkdir()
    (folder / "metrics.json").write_text("[]\n")
    (folder / "tuning.json").write_text("{}\n")
    (folder / "notes.txt").write_text("the user's own file\n")
    record = {"mesh": None, "processes": 1}
    if provenance is not None:
        record["provenance"] = provenance
    (folder / "run.json").write_text(json.dumps(record))


def test_an_out_of_another_run_is_refused_unless_overwrite(tmp_path, monkeypatch, no_cache, capsys):
    calls = _toy_runner(monkeypatch, "digits")
    out = tmp_path / "out"
    _old_run(out, _provenance("demo", seed=1))
    assert main(["experiment", "digits", "--smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtbkd: error: --out ") and "another run (experiment demo, seed 1" in err
    assert "experiment" in err.split("differs in ")[1] and "--overwrite" in err
    assert calls == [] and (out / "tuning.json").exists()
    # outputs without a record (an older version's) are another run's too
    (out / "run.json").write_text(json.dumps({"mesh": None}))
    assert main(["experiment", "digits", "--smoke", "--out", str(out)]) == 2
    assert "without a provenance record" in capsys.readouterr().err
    # --overwrite removes the package's files, not the user's
    assert main(["experiment", "digits", "--smoke", "--out", str(out), "--overwrite"]) == 0
    assert calls == [str(out)]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_an_out_of_the_same_run_or_of_foreign_files_only_is_reused(tmp_path, monkeypatch, no_cache):
    calls = _toy_runner(monkeypatch, "digits")
    same, foreign = tmp_path / "same", tmp_path / "foreign"
    _old_run(same, _provenance("digits", seed=2))
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    assert main(["experiment", "digits", "--smoke", "--seed", "2", "--out", str(same)]) == 0
    assert main(["experiment", "digits", "--smoke", "--out", str(foreign)]) == 0
    assert calls == [str(same), str(foreign)] and (same / "tuning.json").exists()


def _fake_synthetic_case(out, provenance) -> None:
    """A synthetic smoke run's case folder: its predictions.npz's test digest (seed 0, 440
    examples), its run.json and a stand-in posterior.nc."""
    from mtbkd_jax.experiments.synthetic import synthetic_problem

    data, _ = synthetic_problem("linear", 2, num_examples=440, seed=0)
    case = out / data.name
    case.mkdir(parents=True)
    probs = {("a", "map"): np.full((len(data.y_test), 2), 0.5)}
    save_predictions(case / "predictions.npz", probs, data.y_test, data.x_test)
    assert compare.saved_digest(case) == compare.test_set_digest(data.x_test, data.y_test)
    (case / "run.json").write_text(json.dumps({"provenance": provenance}))
    (case / "posterior.nc").write_text("not read before the data is checked")


@pytest.mark.parametrize(
    "seed, num_examples, fix",
    [(0, 2200, "--smoke (num_examples=440)"), (5, 440, "--seed 0 (seed=0)")],
)
def test_coverage_breakdown_refuses_test_data_the_run_did_not_use(
    tmp_path, seed, num_examples, fix
):
    from mtbkd_jax.experiments.synthetic import coverage_breakdown

    _fake_synthetic_case(tmp_path, _provenance("synthetic"))
    with pytest.raises(ValueError, match="is not the data the run was tested on") as raised:
        coverage_breakdown(tmp_path, seed=seed, num_examples=num_examples)
    assert f"pass {fix}" in str(raised.value)


def _run(folder, provenance, labels) -> None:
    rng = np.random.default_rng(0)
    probs = {(name, "map"): rng.dirichlet(np.ones(3), len(labels)) for name in ("KD", "MT")}
    folder.mkdir()
    save_predictions(folder / "predictions.npz", probs, labels, np.zeros((len(labels), 2)))
    if provenance is not None:
        (folder / "run.json").write_text(json.dumps({"provenance": provenance}))


def test_compare_refuses_runs_of_different_experiments_or_configs(tmp_path):
    labels = np.arange(60) % 3
    _run(tmp_path / "demo0", _provenance("demo", seed=0), labels)
    _run(tmp_path / "demo1", _provenance("demo", seed=1), labels)
    _run(tmp_path / "digits", _provenance("digits", seed=0), labels)
    _run(tmp_path / "full", _provenance("demo", smoke=False, seed=0), labels)
    _run(tmp_path / "old", None, labels)
    row, options = ("MT", "map"), {"metrics": ["nll"], "num_resamples": 100}
    assert compare_runs([tmp_path / "demo0", tmp_path / "demo1"], row, **options)
    with pytest.raises(ValueError, match=r"'.*digits' is not a run .* differ in experiment"):
        compare_runs([tmp_path / "demo0", tmp_path / "digits"], row, **options)
    with pytest.raises(ValueError, match=r"differ in smoke, .*config\.map_steps"):
        compare_runs([tmp_path / "demo0", tmp_path / "full"], row, **options)
    with pytest.warns(UserWarning, match="record no provenance"):
        assert compare_runs([tmp_path / "demo0", tmp_path / "old"], row, **options)


def test_the_compare_command_refuses_mixed_runs_and_warns_about_unrecorded_ones(tmp_path, capsys):
    labels = np.arange(60) % 3
    _run(tmp_path / "demo0", _provenance("demo", seed=0), labels)
    _run(tmp_path / "digits", _provenance("digits", seed=0), labels)
    _run(tmp_path / "old", None, labels)
    row = ["--row", "MT (map)", "--resamples", "100"]
    assert main(["compare", str(tmp_path / "demo0"), str(tmp_path / "digits"), *row]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtbkd: error: run_dirs: ") and "differ in experiment" in err
    assert main(["compare", str(tmp_path / "demo0"), str(tmp_path / "old"), *row]) == 0
    assert capsys.readouterr().err.startswith("mtbkd: warning: run_dirs: ")


def test_an_interrupted_rerun_keeps_the_complete_outputs_it_would_cut_down(tmp_path):
    """A rerun of a finished run (the same provenance: accepted) interrupted early replaced
    its complete metrics.json, posterior and figures by the few rows finished so far (none:
    ``[]``); they are kept, and the note says nothing was written. A first run interrupted
    before any row finished writes nothing either."""
    from mtbkd_jax.experiments.report import write_partial, write_report

    def interrupt(folder, rows):
        stop = KeyboardInterrupt()
        artifacts = {"run": {"provenance": _provenance("demo")}}
        write_partial(lambda r, a: write_report(folder, None, r, a), rows, artifacts, ["x"], stop)
        return " ".join(getattr(stop, "__notes__", []))

    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text('[{"method": "a"}, {"method": "b"}]\n')
    (done / "run.json").write_text(json.dumps({"complete": True}))
    for rows in ([], [{"method": "a"}]):
        assert "are kept" in interrupt(done, rows)
        assert len(json.loads((done / "metrics.json").read_text())) == 2
        assert json.loads((done / "run.json").read_text()) == {"complete": True}
    fresh = tmp_path / "fresh"
    assert "nothing was written" in interrupt(fresh, []) and not fresh.exists()


def test_another_run_in_a_subfolder_is_neither_read_nor_removed(tmp_path, monkeypatch, no_cache):
    """``results/demo`` (make demo's) made ``--out results`` look like the demo's outputs, and
    --overwrite there deleted the demo's files: only a synthetic run's case folders
    (``linear_2``) belong to the folder's run."""
    calls = _toy_runner(monkeypatch, "digits")
    out = tmp_path / "results"
    out.mkdir()
    _old_run(out / "demo", _provenance("demo"))
    assert main(["experiment", "digits", "--smoke", "--out", str(out)]) == 0
    _old_run(out / "linear_2", _provenance("synthetic"))
    assert main(["experiment", "digits", "--smoke", "--out", str(out)]) == 2
    assert main(["experiment", "digits", "--smoke", "--out", str(out), "--overwrite"]) == 0
    assert calls == [str(out), str(out)]
    assert (out / "demo" / "metrics.json").exists() and (out / "demo" / "tuning.json").exists()
    assert not (out / "linear_2" / "metrics.json").exists()


def test_a_config_class_of_ones_own_without_defaults_records_no_smoke_flag():
    """run_provenance built ``type(config).for_run(...)`` to tell smoke from full runs, so a
    user's config class with a field of no default failed before any fit."""
    import dataclasses

    from mtbkd_jax.demo import DemoConfig

    @dataclasses.dataclass(frozen=True)
    class Mine(DemoConfig):
        note: str = dataclasses.field(default=None, kw_only=True)  # type: ignore[assignment]

        @classmethod
        def for_run(cls, *, smoke=False, seed=0):
            return cls(seed=seed)  # no note: refused, as a class without defaults would be

        def __post_init__(self):
            super().__post_init__()
            if self.note is None:
                raise TypeError("note is required")

    record = run_provenance(Mine(seed=4, note="mine"))
    assert record["smoke"] is None and record["seed"] == 4 and record["config"]["note"] == "mine"


def test_json_outputs_are_strict_json_with_null_for_non_finite_figures(tmp_path):
    """metrics.json held ``Infinity`` (a teacher's NLL where it gives a label probability 0)
    and ``NaN`` (an error AUROC without errors): Python reads them, JSON.parse and jq refuse
    the whole file."""
    from mtbkd_jax.experiments._json_files import write_json

    rows = [{"nll": float("inf"), "auroc": float("nan"), "pairs": (1.0, float("-inf")),
             "nested": {"x": [0.5, float("nan")]}, "n": 3, "name": "KD"}]  # fmt: skip
    write_json(tmp_path / "m.json", rows)
    text = (tmp_path / "m.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict {name}"))
    assert strict == [{"nll": None, "auroc": None, "pairs": [1.0, None],
                       "nested": {"x": [0.5, None]}, "n": 3, "name": "KD"}]  # fmt: skip


def test_an_interrupted_synthetic_run_records_its_finished_and_missing_cases(tmp_path, monkeypatch):
    """Ctrl-C in the second case left no top-level record: the first case's rows were in its
    folder only, and nothing said which cases were never run. The combined outputs now hold
    the finished cases' rows, run.json says complete false and lists the missing cases; a
    rerun interrupted before any case finished keeps the complete outputs it would cut down."""
    import mtbkd_jax.experiments.synthetic as synthetic

    config = synthetic.SyntheticConfig.smoke(0)
    config = type(config)(**{**config.__dict__, "cases": (("linear", 2), ("nonlinear", 3))})
    calls = []

    def run_case(out, kind, num_classes, config, say):
        calls.append(kind)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [{"method": "KD", "inference": "map", "dataset": f"{kind}_2"}], "| table |", {}

    monkeypatch.setattr(synthetic, "_run_case", run_case)
    with pytest.raises(KeyboardInterrupt) as stop:
        synthetic.run_synthetic(tmp_path, config=config)
    assert "1 row(s) of the finished cases were written" in " ".join(stop.value.__notes__)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["complete"] is False and record["missing_cases"] == ["nonlinear_3"]
    assert record["provenance"] == synthetic.run_provenance(config)
    assert [r["dataset"] for r in json.loads((tmp_path / "metrics.json").read_text())] == [
        "linear_2"
    ]
    synthetic._write_combined(tmp_path, [{"a": 1}] * 2, ["t"], config)  # as a complete run
    calls[:] = ["linear"]  # so the rerun's first case is interrupted: no case finishes
    with pytest.raises(KeyboardInterrupt) as stop:
        synthetic.run_synthetic(tmp_path, config=config)
    assert "complete outputs from before are kept" in " ".join(stop.value.__notes__)
    assert json.loads((tmp_path / "run.json").read_text())["complete"] is True
    assert len(json.loads((tmp_path / "metrics.json").read_text())) == 2
