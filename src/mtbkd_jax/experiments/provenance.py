"""What produced a run folder: the provenance record of ``run.json`` (experiment, seed, smoke
flag, the config as plain values, the package's version), the check that a run does not write
into the outputs of another run, and the files the package writes there.

A run folder whose outputs came from another run (another experiment, seed, smoke flag or
config) is refused unless the caller asks for ``overwrite``, which removes the files the
package writes (:data:`OUTPUT_FILES`, in the folder and in the synthetic experiment's case
folders) and nothing else. Outputs without a provenance record (written before it was) count
as another run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbkd_jax.experiments.report import REPORT_FILES

if TYPE_CHECKING:
    from mtbkd_jax.experiments.config import ExperimentConfig

__all__ = [
    "OUTPUT_FILES",
    "check_experiment_output",
    "check_output_dir",
    "config_differences",
    "read_provenance",
    "run_provenance",
]

RUN_RECORD = "run.json"
# every file a run writes into its folder (and into each case folder of the synthetic run):
# write_report's, and those a runner writes beside them
OUTPUT_FILES = (
    *REPORT_FILES,
    "multilocation.json",
    "teachers.json",
    "coverage_by_probability.json",
)
# config fields that do not change the results' provenance (placement, output)
_NOT_RECORDED = ("mesh", "progress_bar")


def _plain(value: Any) -> Any:
    """``value`` as JSON values (dataclasses as dicts, tuples as lists; others by ``repr``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # a NumPy scalar
        return _plain(value.item())
    return repr(value)


def _config_values(config: ExperimentConfig) -> dict[str, Any]:
    fields = dataclasses.fields(config)
    return {f.name: _plain(getattr(config, f.name)) for f in fields if f.name not in _NOT_RECORDED}


def _experiment_name(config: ExperimentConfig) -> str:
    """The registry's name of ``config``'s class, else the class's name."""
    from mtbkd_jax.experiments import EXPERIMENTS

    for name, entry in EXPERIMENTS.items():
        if entry.config_class() is type(config):
            return name
    return type(config).__name__


def _made_by_for_run(config: ExperimentConfig, smoke: bool) -> dict[str, Any] | None:
    """The values of ``type(config).for_run(smoke=smoke, seed=config.seed)``, or ``None`` for
    a class of one's own that cannot be built from its defaults (its runs record ``smoke``
    as ``None``, as a config of one's own)."""
    try:
        return _config_values(type(config).for_run(smoke=smoke, seed=config.seed))
    except (TypeError, ValueError):
        return None


def run_provenance(config: ExperimentConfig) -> dict[str, Any]:
    """The provenance record of a run of ``config``: ``experiment`` (the registry's name of its
    class), ``seed``, ``smoke`` (``True``/``False`` where ``config`` is the class's smoke or
    full run, ``None`` for a config of one's own), ``config`` (its fields as plain values, but
    ``mesh`` and ``progress_bar``) and the package's ``version``."""
    from mtbkd_jax import __version__

    values = _config_values(config)
    smoke = next((s for s in (True, False) if _made_by_for_run(config, s) == values), None)
    return {
        "experiment": _experiment_name(config),
        "seed": config.seed,
        "smoke": smoke,
        "config": values,
        "version": __version__,
    }


def read_provenance(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record of a run folder's ``run.json`` (for a synthetic run's folder
    without one, its first case folder's), or ``None`` where there is none."""
    folder = Path(run_dir)
    candidates = [folder / RUN_RECORD, *_case_records(folder)]
    for path in candidates:
        try:
            found = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(found, dict) and isinstance(found.get("provenance"), dict):
            return found["provenance"]
    return None


def config_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The fields in which two provenance records differ, but the seed and the version
    (``experiment``, ``smoke``, ``config.NAME``)."""
    names = [k for k in ("experiment", "smoke") if first.get(k) != second.get(k)]
    mine, theirs = first.get("config") or {}, second.get("config") or {}
    for key in sorted(set(mine) | set(theirs)):
        if key != "seed" and mine.get(key) != theirs.get(key):
            names.append(f"config.{key}")
    return names


def _case_records(folder: Path) -> list[Path]:
    """The ``run.json`` of a synthetic run's case folders (``KIND_C``, e.g. ``linear_2``):
    not of another run kept in a subfolder (``results/demo`` beside ``results``' own)."""
    from mtbkd_jax.datasets.synthetic import SYNTHETIC_KINDS

    case = re.compile(rf"({'|'.join(SYNTHETIC_KINDS)})_[0-9]+")
    return [
        record
        for record in sorted(folder.glob(f"*/{RUN_RECORD}"))
        if case.fullmatch(record.parent.name)
    ]


def _output_paths(folder: Path) -> list[Path]:
    """The package's outputs in ``folder`` and in its case folders (``NAME/run.json``)."""
    found = [folder / name for name in OUTPUT_FILES if (folder / name).is_file()]
    for record in _case_records(folder):
        found += [record.parent / n for n in OUTPUT_FILES if (record.parent / n).is_file()]
    return found


def _described(record: Mapping[str, Any]) -> str:
    smoke = {True: " --smoke", False: "", None: " (own config)"}.get(record.get("smoke"), "")
    return f"experiment {record.get('experiment')}, seed {record.get('seed')}{smoke}"


def check_output_dir(
    out_dir: str | os.PathLike[str],
    provenance: Mapping[str, Any],
    *,
    overwrite: bool = False,
    argument: str = "out_dir",
) -> None:
    """Refuse ``out_dir`` if it holds the outputs of another run than ``provenance``'s (its
    record differs in anything but the version, or it has none), unless ``overwrite``, which
    removes those outputs (the files of :data:`OUTPUT_FILES`; other files stay).

    Raises:
        ValueError: the folder holds another run's outputs and ``overwrite`` is false.
    """
    folder = Path(out_dir).expanduser()
    outputs = _output_paths(folder) if folder.is_dir() else []
    if not outputs:
        return
    recorded = read_provenance(folder)
    if recorded is not None:
        same = {k: v for k, v in recorded.items() if k != "version"}
        if same == {k: v for k, v in json.loads(json.dumps(provenance)).items() if k != "version"}:
            return
    if overwrite:
        for path in outputs:
            path.unlink(missing_ok=True)
        return
    if recorded is None:
        what = "outputs without a provenance record (an older run's)"
    else:
        fields = config_differences(recorded, provenance)
        if recorded.get("seed") != provenance.get("seed"):
            fields.insert(0, "seed")
        what = (
            f"the outputs of another run ({_described(recorded)}; differs in {', '.join(fields)})"
        )
    raise ValueError(
        f"{argument} {str(out_dir)!r} holds {what}; choose another folder, or pass "
        "--overwrite (overwrite=True) to remove the files the package wrote there"
    )


def check_experiment_output(
    out_dir: str | os.PathLike[str],
    name: str,
    smoke: bool,
    seed: int,
    overwrite: bool = False,
    argument: str = "out_dir",
) -> None:
    """:func:`check_output_dir` for a run of the registry's experiment ``name`` with
    ``smoke`` and ``seed`` (its config's ``for_run``)."""
    from mtbkd_jax.experiments import EXPERIMENTS

    config = EXPERIMENTS[name].config_class().for_run(smoke=smoke, seed=seed)
    check_output_dir(out_dir, run_provenance(config), overwrite=overwrite, argument=argument)
