"""The issue-12 standing of a rerun folder (``benchmarks/rerun_tables.py --out RUNS``): every
experiment's table and its target verdicts, as markdown.

Usage::

    .venv/bin/python benchmarks/issue12_standing.py RUNS [--out standing.md]

RUNS is ``rerun_tables.py``'s ``--out`` or its ``--keep`` folder (e.g. ``docs/runs/COMMIT``).

The targets (issue 12): MT-BKD (learned trust) by its Bayesian inference (NUTS on digits and
the synthetic cases, SGLD on Fashion-MNIST and DeepLoc, NC-SGLD as the synthetic cases'
SG-MCMC) has NLL strictly below every KD row (single-teacher KD, averaged KD, CA-MKD, by MAP),
accuracy at least the best KD row's minus one binomial standard error, ECE below averaged KD's
and AURC below every KD row's; the synthetic 95% class-interval coverage lies in 0.92-0.98; on
DeepLoc multi-location proteins get higher mean deviance (p < 1e-3); on digits every NUTS row is
no worse than its MAP in NLL and ECE. DeepLoc's figures are means over its seeds (one test set).
Experiments not (yet) in RUNS are listed as such.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

TRUST = "MT-BKD (learned trust)"
COLUMNS = ("accuracy", "nll", "ece", "aurc")
CASES = ("linear_2", "linear_5", "nonlinear_2", "nonlinear_5")
BAND = (0.92, 0.98)


def load_run(folder: Path) -> tuple[list[dict], int]:
    """A run's metric rows (``metrics.json``) and its number of test examples (from its
    ``predictions.npz``, or ``test_size.json`` where ``rerun_tables.py --keep`` kept it)."""
    rows = json.loads((folder / "metrics.json").read_text())
    if (folder / "predictions.npz").exists():
        with np.load(folder / "predictions.npz") as saved:
            return rows, int(saved["labels"].shape[0])
    return rows, int(json.loads((folder / "test_size.json").read_text())["test_size"])


def mean_rows(runs: list[list[dict]]) -> list[dict]:
    """Rows with the same (method, inference) averaged over runs (every run must hold them),
    keeping each run's accuracy and NLL as ``per_run``."""
    keyed = [{(r["method"], r["inference"]): r for r in rows} for rows in runs]
    out = []
    for key in keyed[0]:
        found = [k[key] for k in keyed if key in k]
        if len(found) < len(keyed):
            continue
        row = {"method": key[0], "inference": key[1]}
        for name in (*COLUMNS, "coverage_95"):
            values = [f.get(name) for f in found]
            if all(v is not None for v in values):
                row[name] = float(np.mean(values))
        row["per_run"] = {n: [f[n] for f in found] for n in ("accuracy", "nll")}
        out.append(row)
    return out


def is_kd(row: dict) -> bool:
    method = row["method"]
    kd = method.startswith("KD (") or method in ("averaged KD", "CA-MKD")
    return kd and row["inference"] == "map"


def _find(rows: list[dict], method: str, inference: str) -> dict | None:
    return next((r for r in rows if (r["method"], r["inference"]) == (method, inference)), None)


def verdicts(rows: list[dict], inference: str, test_size: int) -> list[tuple[str, bool, str]]:
    """(target, met, evidence) for the learned-trust row by ``inference`` against the KD rows."""
    row = _find(rows, TRUST, inference)
    kd = [r for r in rows if is_kd(r) and all(np.isfinite(r[n]) for n in COLUMNS)]
    broken = [r["method"] for r in rows if is_kd(r) and r not in kd]
    if broken:  # a KD row with a non-finite figure cannot be beaten or lost to: say so
        return [("every KD row finite", False, f"non-finite figures in {broken}")]
    if row is None or not kd:
        return [("learned trust and KD rows present", False, f"no {TRUST} ({inference}) row")]
    out = []
    nll = min(kd, key=lambda r: r["nll"])
    out.append(
        ("NLL below every KD row", row["nll"] < nll["nll"],
         f"{row['nll']:.4f} vs {nll['method']} {nll['nll']:.4f}")
    )  # fmt: skip
    best = max(kd, key=lambda r: r["accuracy"])
    se = math.sqrt(best["accuracy"] * (1 - best["accuracy"]) / test_size)
    out.append(
        ("accuracy >= best KD - 1 SE", row["accuracy"] >= best["accuracy"] - se,
         f"{row['accuracy']:.3f} vs {best['method']} {best['accuracy']:.3f} - {se:.3f}")
    )  # fmt: skip
    averaged = _find(rows, "averaged KD", "map")
    out.append(
        ("ECE below averaged KD", averaged is not None and row["ece"] < averaged["ece"],
         "no averaged KD row" if averaged is None else f"{row['ece']:.4f} vs {averaged['ece']:.4f}")
    )  # fmt: skip
    aurc = min(kd, key=lambda r: r["aurc"])
    out.append(
        ("AURC below every KD row", row["aurc"] < aurc["aurc"],
         f"{row['aurc']:.4f} vs {aurc['method']} {aurc['aurc']:.4f}")
    )  # fmt: skip
    if "coverage_95" in row:
        low, high = BAND
        out.append(
            ("95% coverage in 0.92-0.98", low <= row["coverage_95"] <= high,
             f"{row['coverage_95']:.3f}")
        )  # fmt: skip
    return out


def nuts_no_worse_than_map(
    rows: list[dict], own_maps: dict[str, dict] | None = None
) -> list[tuple[str, bool, str]]:
    """Digits: every method's NUTS row against its MAP row, in NLL and ECE; where the NUTS
    row chose its own σ0 (``own_maps.json`` of a run with ``posterior_tuning``), also against
    the MAP of its own model (the chain start, at the NUTS row's σ0)."""
    out = []
    for row in rows:
        twin = _find(rows, row["method"], "map")
        if row["inference"] != "nuts" or twin is None:
            continue
        own = (own_maps or {}).get(row["method"])
        for name in ("nll", "ece"):
            out.append(
                (f"{row['method']}: NUTS {name.upper()} <= MAP row's", row[name] <= twin[name],
                 f"{row[name]:.4f} vs {twin[name]:.4f}")
            )  # fmt: skip
            if own is not None:
                out.append(
                    (f"{row['method']}: NUTS {name.upper()} <= its own model's MAP "
                     f"({own['settings']})", row[name] <= own[name],
                     f"{row[name]:.4f} vs {own[name]:.4f}")
                )  # fmt: skip
    return out


def table(rows: list[dict]) -> str:
    coverage = any("coverage_95" in r for r in rows)
    multi = any("per_run" in r for r in rows)
    head = ["method", "inference"]
    if multi:
        head += ["accuracy per seed", "accuracy", "NLL per seed", "NLL", "ECE", "AURC"]
    else:
        head += ["accuracy", "NLL", "ECE", "AURC"]
    head += ["95% coverage"] if coverage else []
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for r in rows:
        if "nll" not in r:
            continue
        cells = [r["method"], r["inference"]]
        if multi:
            cells += [
                " / ".join(f"{v:.3f}" for v in r["per_run"]["accuracy"]),
                f"{r['accuracy']:.3f}",
            ]
            cells += [" / ".join(f"{v:.3f}" for v in r["per_run"]["nll"]), f"{r['nll']:.3f}"]
        else:
            cells += [f"{r['accuracy']:.3f}", f"{r['nll']:.4f}"]
        cells += [f"{r['ece']:.3f}", f"{r['aurc']:.4f}"]
        if coverage:
            cells.append(f"{r['coverage_95']:.3f}" if "coverage_95" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_list(found: list[tuple[str, bool, str]]) -> str:
    return "\n".join(
        f"- {'met' if ok else '**missed**'}: {name} ({evidence})" for name, ok, evidence in found
    )


def deviance_p(folder: Path) -> dict[str, float]:
    """DeepLoc's Mann-Whitney p per Bayesian method (``multilocation.json``: exact floats)."""
    path = folder / "multilocation.json"
    if not path.exists():
        return {}
    return {row["method"]: float(row["mannwhitney_p"]) for row in json.loads(path.read_text())}


def single(name: str, folder: Path, inference: str, digits: bool = False) -> str:
    if not (folder / "metrics.json").exists():
        return f"## {name}\n\nNot run yet ({folder}).\n"
    rows, size = load_run(folder)
    found = verdicts(rows, inference, size)
    if digits:
        own = folder / "own_maps.json"
        found += nuts_no_worse_than_map(rows, json.loads(own.read_text()) if own.exists() else None)
    return f"## {name}\n\n{size} test examples.\n\n{table(rows)}\n\n{verdict_list(found)}\n"


def seeds(name: str, folders: list[Path]) -> str:
    done = [f for f in folders if (f / "metrics.json").exists()]
    if len(done) < len(folders):
        return f"## {name}\n\nNot all seeds run yet: {[str(f) for f in done]} of {len(folders)}.\n"
    loaded = [load_run(f) for f in folders]
    rows, size = mean_rows([r for r, _ in loaded]), loaded[0][1]
    found = verdicts(rows, "sgld", size)
    p = [deviance_p(f).get(TRUST, float("nan")) for f in folders]
    found.append(
        ("multi-location deviance higher, p < 1e-3 per seed", all(v < 1e-3 for v in p),
         "p = " + ", ".join(f"{v:.2g}" for v in p))
    )  # fmt: skip
    head = f"## {name}\n\n{size} test proteins, means over {len(folders)} seeds."
    return f"{head}\n\n{table(rows)}\n\n{verdict_list(found)}\n"


def synthetic(runs: Path) -> str:
    parts = ["## Synthetic\n"]
    for case in CASES:
        folder = runs / "synthetic" / case / case
        if not (folder / "metrics.json").exists():
            parts.append(f"### {case}\n\nNot run yet.\n")
            continue
        rows, size = load_run(folder)
        found = verdicts(rows, "nuts", size)
        nc = runs / "synthetic-ncsgld" / case / case
        if (nc / "metrics.json").exists():
            nc_rows = [
                r for r in load_run(nc)[0] if r["method"] == TRUST and r["inference"] != "map"
            ]
            rows = rows + nc_rows
            for r in nc_rows:
                found += [
                    (f"{r['inference']}: {t}", ok, e)
                    for t, ok, e in verdicts(rows, r["inference"], size)
                ]
                nuts = _find(rows, TRUST, "nuts")
                gap = r["coverage_95"] - nuts["coverage_95"]
                found.append(
                    (
                        f"{r['inference']}: coverage within 0.05 of NUTS's",
                        abs(gap) <= 0.05,
                        f"{gap:+.3f}",
                    )
                )
        parts.append(
            f"### {case}\n\n{size} test points.\n\n{table(rows)}\n\n{verdict_list(found)}\n"
        )
    return "\n".join(parts)


def standing(runs: Path) -> str:
    deeploc = [runs / "deeploc" / f"seed{s}" for s in range(3)]
    held_out = [runs / "deeploc-held-out" / f"seed{s}" for s in range(3)]
    return "\n".join(
        [
            single("Digits", runs / "digits", "nuts", digits=True),
            single("Fashion-MNIST", runs / "fmnist", "sgld"),
            seeds("DeepLoc (reference split)", deeploc),
            seeds("DeepLoc (validation from the test file)", held_out),
            synthetic(runs),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the folder rerun_tables.py wrote")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    text = standing(args.runs)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
