"""The ``mtbkd`` command: the demo, the experiments of the registry, and ``compare`` (rows of
finished runs on their test set, with paired bootstrap intervals: :mod:`mtbkd_jax._cli_compare`).

Bad arguments and paths are refused before any compute with one line on stderr
(``mtbkd: error: ...``, exit status 2); errors of the run itself that a user can act on (bad
input, missing data, a folder that cannot be written, a diverging fit) are reported the same
way with exit status 1. JAX's persistent compilation cache is on by default, in
``$XDG_CACHE_HOME/mtbkd_jax/jax-compilation-cache`` (``~/.cache/...``), so that a second run
compiles almost nothing; ``--no-compile-cache`` or ``MTBKD_COMPILE_CACHE=0`` turn it off.

``--out``'s ``run.json`` records what produced it (experiment, seed, ``--smoke``, config,
version); another run's ``--out`` is refused (exit 2) unless ``--overwrite`` (which removes
mtbkd's files there). Ctrl-C (exit 130) first writes the finished rows, marked partial.

Devices and processes: ``--platform`` chooses JAX's platform (``cpu``, ``gpu``, ``tpu``,
``auto``); the demo, digits and synthetic run on the CPU unless it says otherwise
(:mod:`mtbkd_jax._cli_platform` says why).

``--mesh CxD`` runs every student fit of the command on a :class:`jax.sharding.Mesh` of ``C`` x
``D`` devices, axes ``("chains", "data")`` (:class:`mtbkd_jax.experiments.ExperimentConfig`'s
``mesh``: MAP and NUTS with the data sharded over ``data``, SGLD with ``shard_data=True``).
``--coordinator HOST:PORT --num-processes N --process-id I`` (all three) or ``--distributed``
(JAX's detection under Slurm, Open MPI or Kubernetes) connect the command's processes with
``jax.distributed`` (:mod:`mtbkd_jax.infer.multiprocess`) before anything runs; start the same
command in every process. The mesh then spans every process's devices (default ``1`` x all of
them), each process evaluating the potential on the data shards of its own devices, and every
process ends with the same rows. Only process 0 writes into ``--out`` and prints the log: the
others write into a temporary folder that is removed at the end, and their standard output is
silenced. What is not split: loading the data and fitting the teachers' trust (a small model of
the labels) run in every process alike; teachers that the experiment trains itself
(Fashion-MNIST's networks) are trained by process 0 alone and sent to the others.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mtbkd_jax._cli_compare import add_compare_parser, run_compare
from mtbkd_jax._cli_platform import PLATFORMS, platform_config, platform_device, platform_wanted
from mtbkd_jax._cli_processes import connected, mesh_for, mesh_shape, processes_wanted
from mtbkd_jax._paths import prepare_output_dir, require_input_dir
from mtbkd_jax.experiments.report import INPUT_ERRORS, ExperimentFailed

if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["COMPILE_CACHE_ENV_VAR", "compile_cache", "compile_cache_dir", "main"]

COMPILE_CACHE_ENV_VAR = "MTBKD_COMPILE_CACHE"
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")
# errors of a run that come from its input or environment, not from a bug: one line, exit 1
_ACTIONABLE = (*INPUT_ERRORS, ExperimentFailed)
# the JAX options the cache sets for the duration of a command (restored afterwards)
_CACHE_OPTIONS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)
_SEED_LIMIT = 2**32


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``mtbkd: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mtbkd: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _one_line(text: object) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _plain(text: str) -> str:
    """Docstring text as a terminal shows it: ``code`` and :mod:`name` without their markup."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")


def _version() -> str:
    """The installed distribution's version (the package's ``__version__`` if not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtbkd_jax")
    except PackageNotFoundError:
        from mtbkd_jax import __version__

        return __version__


def _seed(text: str) -> int:
    """argparse type of ``--seed``: an integer in 0 .. 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < _SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be an integer in 0..{_SEED_LIMIT - 1}, got {text!r}"
        )
    return value


def _add_process_flags(common: argparse.ArgumentParser) -> None:
    """The flags of devices and processes (``--mesh``, ``jax.distributed``'s)."""
    processes = common.add_argument_group(
        "devices and processes",
        "run the same command in every process; the student fits run on a mesh over every "
        "process's devices (--mesh); process 0 writes --out",
    )
    processes.add_argument(
        "--mesh",
        type=mesh_shape,
        metavar="CxD",
        help="run the student fits on C x D devices, axes (chains, data), e.g. 1x4 (default: "
        "no mesh; with several processes 1 x all their devices)",
    )
    processes.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address, reachable by all"
    )
    processes.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    processes.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    processes.add_argument(
        "--distributed",
        action="store_true",
        help="connect the processes as JAX detects them (Slurm, Open MPI, Kubernetes)",
    )


def _parser() -> argparse.ArgumentParser:
    from mtbkd_jax.experiments import DATA_EXPERIMENTS, EXPERIMENTS

    smoke = _Parser(add_help=False)
    smoke.add_argument("--smoke", action="store_true", help="the tiny run (seconds; for tests)")

    common = _Parser(add_help=False)
    common.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    common.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (by default in "
        f"$XDG_CACHE_HOME/mtbkd_jax/jax-compilation-cache; {COMPILE_CACHE_ENV_VAR}=0 also "
        "turns it off)",
    )
    common.add_argument(
        "--platform",
        choices=PLATFORMS,
        default=None,
        help="the JAX platform to run on (default: the CPU for the demo, digits and synthetic, "
        "whose students are too small to gain from an accelerator; JAX's choice for the "
        "others, with --mesh or several processes, or where JAX_PLATFORMS is set; auto: "
        "JAX's choice)",
    )
    common.add_argument(
        "--traceback", action="store_true", help="show the full Python traceback of an error"
    )
    common.add_argument(
        "--overwrite",
        action="store_true",
        help="reuse an --out that holds another run's outputs (another experiment, seed, "
        "--smoke or config), removing the files mtbkd wrote there first (default: refused)",
    )
    _add_process_flags(common)
    parser = _Parser(prog="mtbkd", description=_plain(__doc__.split("\n\n")[0]))
    parser.add_argument("--version", action="version", version=f"mtbkd_jax {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        parents=[common, smoke],
        help="distil three teachers into an MLP on digits (= experiment demo)",
    )
    demo.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json, posterior.nc, PNG, run.json (what produced them)",
    )
    # the former spelling of --smoke, still accepted
    demo.add_argument("--quick", dest="smoke", action="store_true", help=argparse.SUPPRESS)
    demo.add_argument("--no-progress", action="store_true", help="no progress output")
    experiment = commands.add_parser(
        "experiment",
        parents=[common, smoke],
        help="run one of the registered experiments",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="experiments:\n"
        + "\n".join(f"  {name:<14} {entry.summary}" for name, entry in EXPERIMENTS.items()),
    )
    experiment.add_argument("name", choices=list(EXPERIMENTS), help="the experiment")
    experiment.add_argument(
        "--out",
        required=True,
        help="folder for metrics.json, figures and run.json (what produced them)",
    )
    experiment.add_argument(
        "--data", default=None, help=f"data folder ({', '.join(DATA_EXPERIMENTS)})"
    )
    add_compare_parser(commands)
    return parser


def compile_cache_dir() -> Path:
    """The folder of the CLI's JAX compilation cache: ``$XDG_CACHE_HOME/mtbkd_jax/
    jax-compilation-cache``, or ``~/.cache/mtbkd_jax/jax-compilation-cache`` when
    ``$XDG_CACHE_HOME`` is unset or not an absolute path (as the XDG specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "mtbkd_jax" / "jax-compilation-cache"


def _cache_wanted(no_compile_cache: bool) -> bool:
    """Whether the command should use the compilation cache (flag, then environment)."""
    if no_compile_cache:
        return False
    value = os.environ.get(COMPILE_CACHE_ENV_VAR, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValueError(
        f"${COMPILE_CACHE_ENV_VAR} must be 0 (off) or 1 (on), "
        f"got {os.environ[COMPILE_CACHE_ENV_VAR]!r}"
    )


def _cache_folder(wanted: bool) -> Path | None:
    """The cache folder to use, or ``None``; a folder that cannot be created is a warning."""
    if not wanted:
        return None
    try:
        return prepare_output_dir(compile_cache_dir(), "the compilation cache folder")
    except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: no home directory
        print(
            f"mtbkd: warning: running without the compilation cache: {_one_line(error)}",
            file=sys.stderr,
        )
        return None


@contextlib.contextmanager
def compile_cache(folder: Path | None) -> Iterator[None]:
    """Use JAX's persistent compilation cache in ``folder`` (``None``: no cache) for the
    duration of the ``with`` block, then restore JAX's previous settings.

    Every program is cached, however small or quick to compile (the demo compiles hundreds of
    small ones). Enter it before the first compilation that should be cached.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    before = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    if folder is None:
        settings: dict[str, object] = {"jax_enable_compilation_cache": False}
    else:
        settings = {
            "jax_enable_compilation_cache": True,
            "jax_compilation_cache_dir": str(folder),
            "jax_persistent_cache_min_compile_time_secs": 0.0,
            "jax_persistent_cache_min_entry_size_bytes": -1,
        }
    # JAX opens its cache once per process: reset it so that this folder is the one used
    compilation_cache.reset_cache()
    for name, value in settings.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse bad ``--data`` and ``--out`` before any compute (``--out`` is created)."""
    from mtbkd_jax.experiments import DATA_EXPERIMENTS

    data = getattr(args, "data", None)
    if data is not None:
        if args.name not in DATA_EXPERIMENTS:
            raise ValueError(
                f"--data is taken only by the experiments {', '.join(DATA_EXPERIMENTS)}, "
                f"got --data {data!r} for {args.name!r}"
            )
        require_input_dir(data, "--data")
    if args.out is not None and not args.process_id:  # process 0 (or one) writes --out
        prepare_output_dir(args.out, "--out")
        from mtbkd_jax.experiments.provenance import check_experiment_output

        name = "demo" if args.command == "demo" else args.name
        check_experiment_output(args.out, name, args.smoke, args.seed, args.overwrite, "--out")


def _run(args: argparse.Namespace, processes: dict | None) -> None:
    mesh = mesh_for(args.mesh, processes)
    if args.command == "demo":
        from dataclasses import replace

        from mtbkd_jax.demo import DemoConfig, run_demo

        config = replace(DemoConfig.for_run(smoke=args.smoke, seed=args.seed), mesh=mesh)
        run_demo(
            args.out,
            smoke=args.smoke,
            seed=args.seed,
            config=config,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    else:
        from mtbkd_jax.experiments import run_experiment

        run_experiment(
            args.name,
            args.out,
            smoke=args.smoke,
            seed=args.seed,
            data_path=args.data,
            mesh=mesh,
            overwrite=args.overwrite,
        )


def _error(error: BaseException) -> str:
    return f"mtbkd: error: {_one_line(str(error)) or type(error).__name__}"


def _exit_status(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    return stop.code if isinstance(stop.code, int) else 1


def _compare(args: argparse.Namespace) -> int:
    """``mtbkd compare``: exit 2 for bad arguments or runs (one line on stderr)."""
    try:
        run_compare(args)
    except KeyboardInterrupt:
        print("mtbkd: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as error:
        print(_error(error), file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mtbkd`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for bad arguments or paths (refused before any
        compute), 1 for an error of the run a user can act on (one line on stderr, or the
        traceback with ``--traceback``), 130 when interrupted. ``--help`` and ``--version``
        return 0. Other exceptions (bugs) propagate with their traceback.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:
        return _exit_status(stop)
    if args.command == "compare":
        return _compare(args)
    try:
        wanted = _cache_wanted(args.no_compile_cache)
        processes = processes_wanted(args)
        _check_paths(args)
    except (OSError, ValueError, TypeError) as error:
        print(_error(error), file=sys.stderr)
        return 2
    cache = _cache_folder(wanted)
    try:
        platform = platform_wanted(args, processes)
        with platform_config(platform), connected(args, processes):
            with compile_cache(cache), platform_device(platform):
                _run(args, processes)
    except KeyboardInterrupt as stop:  # its notes: what finished and was written where
        notes = "".join(f"; {note}" for note in getattr(stop, "__notes__", []))
        print(f"mtbkd: interrupted{notes}", file=sys.stderr)
        return 130
    except _ACTIONABLE as error:
        # a method that failed of a bug (its cause not actionable) shows its traceback too
        bug = isinstance(error, ExperimentFailed) and not isinstance(error.__cause__, _ACTIONABLE)
        if args.traceback or bug:
            raise
        print(_error(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
