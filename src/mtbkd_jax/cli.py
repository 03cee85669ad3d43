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

from mtbkd_jax._cli_cache import (
    COMPILE_CACHE_ENV_VAR,
    cache_folder,
    cache_wanted,
    compile_cache,
    compile_cache_dir,
)
from mtbkd_jax._cli_compare import add_compare_parser, run_compare
from mtbkd_jax._cli_platform import (
    PLATFORMS,
    ArgumentRefused,
    platform_config,
    platform_device,
    platform_wanted,
)
from mtbkd_jax._cli_processes import connected, mesh_for, mesh_shape, processes_wanted
from mtbkd_jax._paths import prepare_output_dir, require_input_dir
from mtbkd_jax.experiments.report import INPUT_ERRORS, ExperimentFailed

if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["COMPILE_CACHE_ENV_VAR", "compile_cache", "compile_cache_dir", "main"]

# errors of a run that come from its input or environment, not from a bug: one line, exit 1
_ACTIONABLE = (*INPUT_ERRORS, ExperimentFailed)
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
    smoke.add_argument(
        "--smoke",
        action="store_true",
        help="the tiny run (one to two minutes; for tests: its figures mean nothing)",
    )

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
        help="folder for metrics.json, posterior.nc, PNG, run.json (what produced them); "
        "without it the table is printed and nothing is written",
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
    created, status = _missing_folders(getattr(args, "out", None)), None
    try:
        try:
            wanted = cache_wanted(args.no_compile_cache)
            processes = processes_wanted(args)
            _check_paths(args)
        except (OSError, ValueError, TypeError) as error:
            print(_error(error), file=sys.stderr)
            status = 2
            return status
        status = _run_command(args, processes, cache_folder(wanted))
        return status
    finally:
        if status != 0:  # refused or failed: a folder it made and left empty is removed
            _remove_if_empty(created)


def _run_command(args: argparse.Namespace, processes: dict | None, cache: Path | None) -> int:
    """Run the demo or an experiment once its arguments are checked; the exit status."""
    try:
        platform = platform_wanted(args, processes)
        with _one_line_warnings(), platform_config(platform), connected(args, processes):
            with compile_cache(cache), platform_device(platform):
                _run(args, processes)
    except KeyboardInterrupt as stop:  # its notes: what finished and was written where
        notes = "".join(f"; {note}" for note in getattr(stop, "__notes__", []))
        print(f"mtbkd: interrupted{notes}", file=sys.stderr)
        return 130
    except ArgumentRefused as error:  # --platform or --mesh, once JAX knows its devices
        print(_error(error), file=sys.stderr)
        return 2
    except _ACTIONABLE as error:
        # a method that failed of a bug (its cause not actionable) shows its traceback too
        bug = isinstance(error, ExperimentFailed) and not isinstance(error.__cause__, _ACTIONABLE)
        if args.traceback or bug:
            raise
        print(_error(error), file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show warnings as ``mtbkd: warning: Category: message`` lines on stderr (Python's format
    names the file and line of the first frame outside the package: ``<frozen runpy>`` or the
    ``mtbkd`` script under the command); the experiments put the method's row in front."""
    import warnings

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        print(f"mtbkd: warning: {category.__name__}: {_one_line(message)}", file=sys.stderr)

    before = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = before


def _missing_folders(path: str | None) -> list[Path]:
    """The folders of ``path`` the command will create, deepest first (none if it exists)."""
    if not path:
        return []
    missing = []
    folder = Path(path).absolute()
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first, made by the command) while they are empty."""
    for folder in folders:
        if not folder.is_dir() or any(folder.iterdir()):
            return
        with contextlib.suppress(OSError):
            folder.rmdir()


if __name__ == "__main__":
    sys.exit(main())
