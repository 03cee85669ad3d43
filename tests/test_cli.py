"""The ``mtbkd`` command: its version, one-line errors (no tracebacks) for bad arguments and
paths, checked before any compute, and its JAX compilation cache."""

import os
import subprocess
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtbkd_jax
import mtbkd_jax.demo
import mtbkd_jax.experiments
import mtbkd_jax.experiments.digits
from mtbkd_jax import _paths
from mtbkd_jax.cli import COMPILE_CACHE_ENV_VAR, compile_cache_dir, main
from mtbkd_jax.demo import run_demo
from mtbkd_jax.experiments import EXPERIMENTS, ExperimentConfig, run_experiment


def _one_error_line(err: str) -> str:
    """The single stderr line of a refused command (and no traceback)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mtbkd: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _forbid(monkeypatch, module, name):
    """Make ``module.name`` fail the test if it is called (no compute may start)."""

    def called(*args, **kwargs):
        raise AssertionError(f"{name} was called; the check should have come first")

    monkeypatch.setattr(module, name, called)


TOY_CONFIG = "mtbkd_jax.experiments:ExperimentConfig"  # the toy runner's config class


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setenv(COMPILE_CACHE_ENV_VAR, "0")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mtbkd_jax {mtbkd_jax.__version__}\n"


def test_experiment_names_come_from_the_registry(capsys, monkeypatch, tmp_path, no_cache):
    assert main(["experiment", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out and entry.summary in out for name, entry in EXPERIMENTS.items())
    assert "demo" in EXPERIMENTS  # the demo is one of them
    # a new entry is a new choice, with no change to the command
    seen = []
    runner = types.SimpleNamespace(run=lambda out_dir, **kwargs: seen.append((out_dir, kwargs)))
    monkeypatch.setitem(sys.modules, "toy_experiment", runner)
    entry = mtbkd_jax.experiments.Experiment("toy", "a toy", "toy_experiment:run", TOY_CONFIG)
    monkeypatch.setitem(EXPERIMENTS, "toy", entry)
    assert main(["experiment", "toy", "--smoke", "--seed", "3", "--out", str(tmp_path)]) == 0
    config = ExperimentConfig.smoke(3)  # the registry's config class, smoke run, no mesh
    assert seen == [(str(tmp_path), {"smoke": True, "seed": 3, "say": print, "config": config})]


def test_every_registered_runner_takes_the_same_arguments():
    import importlib
    import inspect

    for name, entry in EXPERIMENTS.items():
        module, function = entry.runner.split(":")
        parameters = inspect.signature(
            getattr(importlib.import_module(module), function)
        ).parameters
        expected = {"smoke", "seed", "say", "config"}
        expected |= {"data_path"} if entry.takes_data else set()
        assert expected <= set(parameters), name
        assert issubclass(entry.config_class(), ExperimentConfig), name


def test_several_processes_connect_first_and_only_process_0_writes_out(
    monkeypatch, tmp_path, no_cache
):
    from mtbkd_jax.infer import multiprocess

    connected, seen = [], []
    monkeypatch.setattr(multiprocess, "initialize", lambda **kw: connected.append(kw))
    runner = types.SimpleNamespace(
        run=lambda out_dir, **kwargs: seen.append((out_dir, os.path.isdir(out_dir)))
    )
    monkeypatch.setitem(sys.modules, "toy_experiment", runner)
    entry = mtbkd_jax.experiments.Experiment("toy", "a toy", "toy_experiment:run", TOY_CONFIG)
    monkeypatch.setitem(EXPERIMENTS, "toy", entry)
    out = tmp_path / "out"
    flags = ["--coordinator", "127.0.0.1:1234", "--num-processes", "2"]
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert main(["experiment", "toy", "--out", str(out), *flags, "--process-id", "1"]) == 0
    assert connected == [
        {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1}
    ]
    ((elsewhere, existed),) = seen
    assert existed and elsewhere != str(out) and not os.path.exists(elsewhere)
    assert not out.exists()  # process 1 wrote nothing into --out
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert main(["experiment", "toy", "--out", str(out), "--distributed"]) == 0
    assert connected[-1] == {} and seen[-1] == (str(out), True)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--coordinator", "h:1"], "go together"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "0..1"),
        (
            ["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
            "--num-processes must be at least 1, got 0",
        ),
        (["--distributed", "--process-id", "0"], "cannot be combined"),
    ],
)
def test_incomplete_process_flags_are_refused_before_any_compute(
    capsys, monkeypatch, flags, expected
):
    from mtbkd_jax.infer import multiprocess

    _forbid(monkeypatch, multiprocess, "initialize")
    _forbid(monkeypatch, mtbkd_jax.demo, "run_demo")
    assert main(["demo", *flags]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_quick_is_still_accepted_for_smoke(monkeypatch, no_cache):
    seen = []
    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", lambda out, **kw: seen.append(kw["smoke"]))
    assert main(["demo", "--quick"]) == 0 and main(["demo"]) == 0
    assert seen == [True, False]


def test_unknown_experiment_is_a_one_line_usage_error(capsys, monkeypatch):
    _forbid(monkeypatch, mtbkd_jax.experiments, "run_experiment")
    assert main(["experiment", "no-such-experiment", "--out", "unused"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "invalid choice" in line and "no-such-experiment" in line and "digits" in line


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--seed", "two"], "--seed"),
        (["demo", "--no-such-flag"], "--no-such-flag"),
        (["experiment", "digits"], "--out"),
        ([], "COMMAND"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(capsys, argv, expected):
    assert main(argv) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_demo_out_that_is_a_file_is_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    _forbid(monkeypatch, mtbkd_jax.demo, "load_digits_distillation")
    _forbid(monkeypatch, mtbkd_jax.demo, "run_demo")
    target = tmp_path / "results.json"
    target.write_text("{}")
    assert main(["demo", "--smoke", "--out", str(target)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out" in line and str(target) in line
    assert target.read_text() == "{}"


def test_experiment_out_below_a_file_is_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    _forbid(monkeypatch, mtbkd_jax.experiments, "run_experiment")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["experiment", "digits", "--smoke", "--out", str(blocker / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out" in line and str(blocker) in line


def test_out_folder_is_created_with_its_parents(tmp_path, monkeypatch, no_cache):
    seen = []
    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", lambda out, *a, **k: seen.append(out))
    out = tmp_path / "a" / "b" / "c"
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    assert out.is_dir() and seen == [str(out)]


@pytest.mark.parametrize("name", ["deeploc", "fashion-mnist"])
def test_missing_data_folder_is_a_one_line_error(tmp_path, capsys, monkeypatch, name):
    _forbid(monkeypatch, mtbkd_jax.experiments, "run_experiment")
    missing, out = tmp_path / "no-data-here", tmp_path / "out"
    assert main(["experiment", name, "--data", str(missing), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--data" in line and str(missing) in line
    assert not out.exists(), "--out was created although --data was refused"


def test_data_for_an_experiment_without_data_is_refused(tmp_path, capsys):
    assert main(["experiment", "synthetic", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--data" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("name", ["deeploc", "fashion-mnist"])
def test_data_folder_without_the_files_is_a_one_line_error(tmp_path, capsys, no_cache, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    status = main(["experiment", name, "--smoke", "--data", str(empty), "--out", str(tmp_path)])
    assert status == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "not found" in line and str(empty) in line


def test_errors_of_the_run_are_one_line_with_status_1(capsys, monkeypatch, no_cache):
    def bad_input(*args, **kwargs):
        raise ValueError("labels must lie in 0..9,\n  got values in 0..12")

    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", bad_input)
    assert main(["demo", "--smoke"]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        "mtbkd: error: labels must lie in 0..9, got values in 0..12"
    )
    with pytest.raises(ValueError, match="labels must lie"):
        main(["demo", "--smoke", "--traceback"])


def test_unexpected_errors_keep_their_traceback(monkeypatch, no_cache):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["demo", "--smoke"])


def test_bad_compile_cache_variable_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setenv(COMPILE_CACHE_ENV_VAR, "sometimes")
    assert main(["demo", "--smoke"]) == 2
    assert COMPILE_CACHE_ENV_VAR in _one_error_line(capsys.readouterr().err)


def test_command_line_process_exits_with_the_status_and_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "mtbkd_jax.cli", "demo", "--smoke", "--out", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, COMPILE_CACHE_ENV_VAR: "0"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "--out" in _one_error_line(result.stderr)


# ---------------------------------------------------------------------- compilation cache
def _compile_something_new(*args, **kwargs):
    """A stand-in for a run: compiles a program no other test has compiled."""
    scale = float(np.random.default_rng().uniform(1.0, 2.0))
    jax.jit(lambda v: jnp.sin(v) * scale)(jnp.arange(3.0)).block_until_ready()


def test_compile_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "mtbkd_jax" / "jax-compilation-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as XDG says
    assert compile_cache_dir().parent.parent.name == ".cache"


def test_compile_cache_is_written_and_jax_settings_restored(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(COMPILE_CACHE_ENV_VAR, raising=False)
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", _compile_something_new)
    assert main(["demo", "--smoke"]) == 0
    folder = tmp_path / "mtbkd_jax" / "jax-compilation-cache"
    assert any(path.name.endswith("-cache") for path in folder.iterdir())
    assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.parametrize(
    "flag, environment", [(["--no-compile-cache"], None), ([], "0"), ([], "off")]
)
def test_compile_cache_can_be_turned_off(monkeypatch, tmp_path, flag, environment):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if environment is None:
        monkeypatch.delenv(COMPILE_CACHE_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(COMPILE_CACHE_ENV_VAR, environment)
    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", _compile_something_new)
    assert main(["demo", "--smoke", *flag]) == 0
    assert list(tmp_path.iterdir()) == []


def test_unusable_cache_folder_is_a_warning_not_an_error(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.delenv(COMPILE_CACHE_ENV_VAR, raising=False)
    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", _compile_something_new)
    assert main(["demo", "--smoke"]) == 0
    assert capsys.readouterr().err.startswith("mtbkd: warning: running without the compilation")


# ---------------------------------------------------------------------- the Python API
def test_run_demo_refuses_an_out_dir_that_is_a_file(tmp_path, monkeypatch):
    _forbid(monkeypatch, mtbkd_jax.demo, "load_digits_distillation")
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match="out_dir"):
        run_demo(target, progress=False)


def test_run_experiment_checks_its_paths_first(tmp_path, monkeypatch):
    _forbid(monkeypatch, mtbkd_jax.experiments.digits, "digits_problem")
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match="out_dir"):
        run_experiment("digits", target)
    with pytest.raises(FileNotFoundError, match="data_path"):
        run_experiment("deeploc", tmp_path / "out", data_path=tmp_path / "missing")
    with pytest.raises(ValueError, match="data_path"):
        run_experiment("digits", tmp_path / "out", data_path=tmp_path)
    assert not (tmp_path / "out").exists()


def test_prepare_output_dir_checks(tmp_path, monkeypatch):
    assert _paths.prepare_output_dir(tmp_path / "new", "out") == tmp_path / "new"
    assert (tmp_path / "new").is_dir()
    with pytest.raises(TypeError, match="out must be a folder path"):
        _paths.prepare_output_dir(3, "out")
    with pytest.raises(ValueError, match="out must be a folder path, got an empty string"):
        _paths.prepare_output_dir("", "out")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_paths.tempfile, "TemporaryFile", read_only)
    with pytest.raises(PermissionError, match=r"out must be a writable folder.*Permission denied"):
        _paths.prepare_output_dir(tmp_path, "out")


def test_require_input_dir_checks(tmp_path):
    assert _paths.require_input_dir(tmp_path, "--data") == tmp_path
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="--data must be a folder"):
        _paths.require_input_dir(tmp_path / "file", "--data")
    with pytest.raises(FileNotFoundError, match="--data must be an existing folder"):
        _paths.require_input_dir(tmp_path / "missing", "--data")


@pytest.mark.parametrize(
    ("argv", "environment", "expected"),
    [
        (["demo"], None, "cpu"),  # the demo's student is too small to gain from a GPU
        (["demo"], "cuda", None),  # JAX_PLATFORMS in the environment is obeyed
        (["demo"], "", None),  # even when empty (JAX's own choice)
        (["demo", "--platform", "auto"], None, None),
        (["demo", "--platform", "gpu"], None, "gpu"),
        (["demo", "--mesh", "1x2"], None, None),  # several devices: JAX's choice
        (["demo", "--mesh", "1x2", "--platform", "cpu"], None, "cpu"),
        (["experiment", "demo", "--out", "x"], None, "cpu"),
        (["experiment", "digits", "--out", "x"], None, "cpu"),  # as small a student
        (["experiment", "synthetic", "--out", "x"], None, "cpu"),
        (["experiment", "fashion-mnist", "--out", "x"], None, None),  # JAX's choice
        (["experiment", "deeploc", "--out", "x"], None, None),
        (["experiment", "deeploc", "--out", "x", "--platform", "cpu"], "cuda", "cpu"),
    ],
)
def test_platform_defaults_to_the_experiments_own(monkeypatch, argv, environment, expected):
    from mtbkd_jax._cli_platform import platform_wanted
    from mtbkd_jax.cli import _parser

    if environment is None:
        monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    else:
        monkeypatch.setenv("JAX_PLATFORMS", environment)
    assert platform_wanted(_parser().parse_args(argv)) == expected


def test_several_processes_keep_jaxs_platform(monkeypatch):
    from mtbkd_jax._cli_platform import platform_wanted
    from mtbkd_jax.cli import _parser

    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    args = _parser().parse_args(["demo"])
    assert platform_wanted(args, {"num_processes": 2}) is None


@pytest.fixture
def platforms_unset():
    """``jax_platforms`` unset for the test (the suite's conftest sets it to "cpu"), so that a
    command that sets it, or fails to restore it, is seen."""
    before = jax.config.jax_platforms
    jax.config.update("jax_platforms", None)
    yield
    jax.config.update("jax_platforms", before)


def test_platform_is_set_for_the_command_and_restored(monkeypatch, no_cache, platforms_unset):
    seen = []

    def run(*args, **kwargs):
        seen.append((jax.config.jax_platforms, jnp.zeros(2).devices()))

    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", run)
    assert main(["demo", "--smoke", "--platform", "cpu"]) == 0
    assert seen == [("cpu", {jax.devices("cpu")[0]})]
    assert jax.config.jax_platforms is None
    assert main(["demo", "--smoke", "--platform", "auto"]) == 0
    assert seen[-1][0] is None  # JAX's choice: nothing set


def test_a_platform_this_machine_lacks_is_a_one_line_error(
    capsys, monkeypatch, no_cache, platforms_unset
):
    _forbid(monkeypatch, mtbkd_jax.demo, "run_demo")
    assert main(["demo", "--smoke", "--platform", "tpu"]) == 2  # refused before any compute
    line = _one_error_line(capsys.readouterr().err)
    assert "--platform 'tpu'" in line and "no device of this platform" in line
    assert jax.config.jax_platforms is None
    assert main(["demo", "--platform", "quantum"]) == 2  # not a platform: a usage error
    assert "--platform" in _one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(
    os.environ.get("MTBKD_TEST_DEVICE", "cpu") != "cpu", reason="needs a machine without a GPU"
)
def test_a_gpu_platform_on_a_machine_without_one_is_a_one_line_error():
    # in a fresh process JAX starts no backend for "cuda" here and fails with an
    # AssertionError, not a RuntimeError: still one line that names --platform
    environment = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    result = subprocess.run(
        [sys.executable, "-m", "mtbkd_jax.cli", "demo", "--smoke", "--platform", "cuda"],
        capture_output=True,
        text=True,
        env={**environment, COMPILE_CACHE_ENV_VAR: "0"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "--platform 'cuda'" in _one_error_line(result.stderr)


def test_help_is_plain_text_without_docstring_markup(capsys):
    """``mtbkd --help`` printed the docstring's reStructuredText (````mtbkd````, :mod:`...`)."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "The mtbkd command" in out and "``" not in out and ":mod:" not in out


def test_warnings_of_a_run_are_one_line_naming_the_method(capsys, monkeypatch, tmp_path, no_cache):
    """An experiment's ConvergenceWarning was shown as '<frozen runpy>:88: ConvergenceWarning:
    ...' (the first frame outside the package under ``python -m``), without its method."""
    from mtbkd_jax.experiments._method_warnings import named_by_method
    from mtbkd_jax.infer import ConvergenceWarning

    def run_demo(out, *args, **kwargs):
        with named_by_method("MT-BKD (map)"):
            warnings.warn(
                "the loss ended above\nwhere it started", ConvergenceWarning, stacklevel=1
            )

    monkeypatch.setattr(mtbkd_jax.demo, "run_demo", run_demo)
    before = warnings.showwarning
    assert main(["demo", "--smoke", "--out", str(tmp_path / "out")]) == 0
    assert warnings.showwarning is before  # restored
    assert capsys.readouterr().err.splitlines() == [
        "mtbkd: warning: ConvergenceWarning: [MT-BKD (map)] the loss ended above where it started"
    ]


def test_a_methods_warnings_keep_their_category_and_the_filters():
    from mtbkd_jax.experiments._method_warnings import named_by_method
    from mtbkd_jax.infer import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match=r"^\[KD \(a\)\] slow$"):
        with named_by_method("KD (a)"):
            warnings.warn("slow", ConvergenceWarning, stacklevel=1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("ignore", ConvergenceWarning)
        with named_by_method("KD (a)"):
            warnings.warn("slow", ConvergenceWarning, stacklevel=1)
    assert seen == []
    with warnings.catch_warnings(record=True) as seen:  # a loop's warning: once, as Python's
        warnings.simplefilter("default")  # default filter shows it (was once per pass)
        with named_by_method("KD (a)"):
            for _ in range(5):
                warnings.warn("slow", ConvergenceWarning, stacklevel=1)
            warnings.warn("slower", ConvergenceWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["[KD (a)] slow", "[KD (a)] slower"]
    with warnings.catch_warnings():  # an "error" filter raises where the warning is issued
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning, match="^slow$"), named_by_method("KD (a)"):
            warnings.warn("slow", ConvergenceWarning, stacklevel=1)
