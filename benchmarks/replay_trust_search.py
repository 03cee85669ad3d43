"""Replay a recorded learned-trust search through this code's search, without fitting anything
(``docs/results.md``, "Learned trust searched in passes until nothing changes").

Every (calibration, pooling, beta) of the learned-trust search is fitted with fixed keys, so its
validation NLL does not depend on when the search visits it. The scores recorded in one or more
``tuning.json`` files (a run's, plus runs that fitted the settings a newer search adds) are
therefore a table from which :func:`mtbkd_jax.experiments.trusted.trust_search` can be rerun
with the grids, start, passes and extension rules of
:class:`~mtbkd_jax.experiments.ExperimentConfig`.
Prints the settings the search visits, whether they are the recorded ones in the recorded order,
and its choice; stops with the missing setting when the table lacks one (fit it, then pass that
run's ``tuning.json`` too).

Usage: ``python benchmarks/replay_trust_search.py results/deeploc-s0/tuning.json
[more/tuning.json ...]`` (seconds; the experiment's default grids).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mtbkd_jax.experiments import ExperimentConfig
from mtbkd_jax.experiments.methods import LEARNED
from mtbkd_jax.experiments.trusted import trust_search

Setting = tuple[str, str, float]


def setting(record: dict) -> Setting:
    """A record's (calibration, pooling, beta), beta to 10 significant digits (JSON rounding)."""
    beta = float(f"{float(record['prior_power']):.10g}")
    return record["calibration"], record["pooling"], beta


def recorded(path: Path) -> list[dict]:
    """The learned-trust row's search records of one ``tuning.json``."""
    return list(json.loads(path.read_text()).get(LEARNED, []))


def replay(table: dict[Setting, float], config: ExperimentConfig) -> tuple[list[Setting], dict]:
    """The settings the search visits, in order, and its choice, scored from ``table``."""

    def score(settings: dict) -> float:
        key = setting(settings)
        if key not in table:
            raise SystemExit(f"no recorded score for {key}: fit it and pass its tuning.json")
        return table[key]

    result = trust_search(score, config)
    return [setting(e) for e in result.evaluated], {**result.best, "score": result.best_score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's tuning.json")
    parser.add_argument("more", type=Path, nargs="*", help="runs that fitted more settings")
    args = parser.parse_args()
    runs = [recorded(args.run), *(recorded(p) for p in args.more)]
    table = {
        setting(r): (math.inf if r["score"] is None else float(r["score"]))
        for records in runs
        for r in records
    }
    visited, best = replay(table, ExperimentConfig())
    same = visited == [setting(r) for r in runs[0]]
    print("visited:", *visited, sep="\n  ")
    print(
        "the first run's settings, in its order"
        if same
        else "not the first run's settings in its order (a search that changed, or one that "
        "visits the settings the other runs add)"
    )
    print("chosen:", best)


if __name__ == "__main__":
    main()
