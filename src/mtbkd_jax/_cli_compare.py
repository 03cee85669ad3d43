"""``mtbkd compare``: rows of finished runs compared on their test set, from the shell.

A row is named as the tables print it, ``"METHOD (INFERENCE)"`` (e.g. ``"averaged KD (map)"``,
``"MT-BKD (learned trust) (sgld)"``: the last parenthesised word is the inference). Without
``--row`` the command lists the rows of the runs' ``predictions.npz``. The work is
:func:`mtbkd_jax.experiments.compare_runs`'s; this module only reads the arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_compare_parser", "parse_row", "run_compare"]

# the comparison options' defaults: the parser leaves them None, so that "given" is derived
_DEFAULTS: dict[str, Any] = {
    "metrics": "nll,accuracy,ece,aurc",
    "level": 0.95,
    "resamples": 2000,
    "seed": 0,
}
_DEFAULT_METRICS = _DEFAULTS["metrics"]


def parse_row(text: str) -> tuple[str, str]:
    """``"METHOD (INFERENCE)"`` as ``(method, inference)``.

    Raises:
        ValueError: the text does not end with a parenthesised inference after a method.
    """
    method, bracket, rest = text.strip().rpartition(" (")
    inference = rest[:-1]
    if not bracket or not method.strip() or not rest.endswith(")") or not inference.strip():
        raise ValueError(
            f"a row must be written 'METHOD (INFERENCE)' as the tables print it, e.g. "
            f"'averaged KD (map)', got {text!r}"
        )
    if "(" in inference or ")" in inference:
        raise ValueError(f"a row's inference must be one word in brackets, got {text!r}")
    return method.strip(), inference.strip()


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _writable(path: str) -> None:
    """Refuse a ``--json`` that cannot be written, before any compute."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--json: {path!r} is a folder, expected a file name")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"--json: the folder of {path!r} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"--json: {path!r} cannot be written")
    if target.exists() and not _written_by_compare(target):
        raise ValueError(
            f"--json: {path!r} exists and is not a comparison mtbkd compare wrote (a run's "
            "predictions.npz or metrics.json, say); it is not overwritten: name a new file"
        )


def _written_by_compare(path: Path) -> bool:
    """Whether ``path`` holds what ``--json`` writes: a JSON list of comparisons."""
    try:
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(found, list) and all(
        isinstance(item, dict) and {"row", "against"} <= set(item) for item in found
    )


def _metrics(text: str) -> list[str]:
    from mtbkd_jax.comparison import METRICS

    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in METRICS]
    if unknown or len(set(names)) != len(names):  # an empty, unknown or repeated name
        raise ValueError(
            f"--metrics must be a comma-separated list of distinct names among "
            f"{', '.join(METRICS)}, got {text!r}"
        )
    return names


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    """The ``compare`` subcommand's arguments, on the ``mtbkd`` command's subparsers."""
    compare = commands.add_parser(
        "compare",
        help="compare rows of finished runs on their test set (paired bootstrap)",
        description="A row against others on the runs' shared test set: each metric's "
        "difference (the mean over the runs), its paired bootstrap interval over the test "
        "examples, p-value and verdict. Runs must share one test set (seeds of DeepLoc or "
        "Fashion-MNIST; digits and synthetic one seed at a time) and be runs of one experiment "
        "and config (their run.json; runs without its record are compared with a warning). "
        "Without --row, list the rows.",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders (--out of a run)")
    compare.add_argument("--row", help="the row to compare, e.g. 'MT-BKD (learned trust) (sgld)'")
    compare.add_argument(
        "--against",
        action="append",
        metavar="ROW",
        help="a row to compare with (repeat it; default: every other row)",
    )
    compare.add_argument(
        "--metrics",
        help=f"comma-separated metrics (default {_DEFAULT_METRICS}; also brier, "
        "classwise_ece, adaptive_ece, debiased_l2_ce, accuracy_at_90)",
    )
    compare.add_argument("--level", type=float, help="interval level (0.95)")
    compare.add_argument("--resamples", type=int, help="bootstrap resamples (2000)")
    compare.add_argument("--seed", type=_seed, help="seed of the resamples (0)")
    compare.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _list_rows(runs: list[str]) -> None:
    """The rows of the runs: one list where they agree, else each run's."""
    from mtbkd_jax.experiments import load_predictions

    loaded = [load_predictions(run) for run in runs]  # every folder read before any output
    listed = [(list(probs), len(labels)) for probs, labels in loaded]
    same = all(entry == listed[0] for entry in listed)
    for k, (run, (rows, count)) in enumerate(zip(runs, listed, strict=True)):
        if same and k:
            break
        others = f" (the same in the {len(runs) - 1} other runs)" if same and len(runs) > 1 else ""
        print(f"{_count(len(rows), 'row')}, {_count(count, 'test example')}, in {run}{others}:")
        for method, inference in rows:
            print(f"  {method} ({inference})")


def run_compare(args: argparse.Namespace) -> None:
    """Print the comparison table of ``args`` (or the rows, without ``--row``), and write
    ``--json``.

    Raises:
        ValueError, OSError: bad rows, metrics or options, runs on other test sets, a missing
            ``predictions.npz``, or a ``--json`` that cannot be written.
    """
    from mtbkd_jax.experiments import compare_runs, comparison_table

    if args.row is None:
        options = ("against", *_DEFAULTS, "json")
        named = [f"--{name}" for name in options if getattr(args, name) is not None]
        if named:
            raise ValueError(
                f"{', '.join(named)}: only with --row (without it the rows are listed)"
            )
        _list_rows(args.runs)
        return
    resolved = [os.path.realpath(run) for run in args.runs]
    repeated = sorted({run for run, real in zip(args.runs, resolved, strict=True)
                       if resolved.count(real) > 1})  # fmt: skip
    if repeated:
        raise ValueError(f"RUN: each run folder once, got {repeated} more than once")
    row = parse_row(args.row)
    against = None if not args.against else [parse_row(text) for text in args.against]
    given = {name: getattr(args, name) for name in _DEFAULTS}
    chosen = {name: _DEFAULTS[name] if value is None else value for name, value in given.items()}
    metrics = _metrics(chosen["metrics"])
    if not 0 < chosen["level"] < 1:
        raise ValueError(f"--level must lie strictly between 0 and 1, got {chosen['level']}")
    if chosen["resamples"] < 100:
        raise ValueError(f"--resamples must be at least 100, got {chosen['resamples']}")
    if args.json is not None:
        _writable(args.json)
    with warnings.catch_warnings(record=True) as warned:  # shown as one line each
        warnings.simplefilter("always", UserWarning)
        found = compare_runs(
            args.runs,
            row,
            against,
            metrics,
            level=chosen["level"],
            num_resamples=chosen["resamples"],
            seed=chosen["seed"],
        )
    for warning in warned:
        print(f"mtbkd: warning: {warning.message}", file=sys.stderr)
    if not found:
        raise ValueError(f"--row {args.row!r}: the runs hold no other row to compare it with")
    print(comparison_table(found))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(found, indent=1) + "\n")
        print(f"written to {args.json}", file=sys.stderr)
