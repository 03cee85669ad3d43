"""The report: the Markdown table of a run (``table.md``, the console, docs/benchmarks.md).

:func:`table` renders ``bench.json``'s figures, one group of rows per section;
:func:`write_docs` replaces the text between the bench markers of a Markdown file with it.
"""

from __future__ import annotations

from pathlib import Path

DOCS_BEGIN = "<!-- bench:begin -->"
DOCS_END = "<!-- bench:end -->"
_TRANSFER_NOTE = "not the goal's setting: more inputs per step"


def _fmt(value, digits=2):
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _goal(value, goal, higher=True):
    if value is None:
        return "n/a"
    met = value >= goal if higher else value <= goal
    return ("met" if met else "MISSED") + f" ({'>=' if higher else '<='} {goal})"


def _spread(values):
    return f"{min(values):.2f}..{max(values):.2f}" if values else ""


def _rate(s):
    return f"{s['median']:,.0f} ({s['min']:,.0f}..{s['max']:,.0f})"


def _overhead_rows(label: str, r: dict) -> list:
    """The teacher-prior overhead rows. The goal is checked with the prior on the labelled
    batch (the reference code's setting); with a separate transfer set the step also runs the
    student on the transfer batch, so that figure is reported beside it, not held to the goal."""
    step, grad = r["teacher_prior_overhead_step"], r["teacher_prior_overhead_gradient"]
    step_rounds = _spread(r["teacher_prior_overhead_step_per_round"])
    grad_rounds = _spread(r["teacher_prior_overhead_gradient_per_round"])
    if not r.get("teacher_prior_overhead_step_labelled_prior"):
        return [
            (f"{label}: **teacher-prior overhead** (SGLD step)", _fmt(step), step_rounds,
             _goal(step, 1.3, higher=False)),
            (f"{label}: teacher-prior overhead (minibatch gradient)", _fmt(grad), grad_rounds,
             _goal(grad, 1.3, higher=False)),
        ]  # fmt: skip
    lab_step = r["teacher_prior_overhead_step_labelled_prior"]
    lab_grad = r["teacher_prior_overhead_gradient_labelled_prior"]
    data_batch, transfer_batch = r["plates"][0][2], r["plates"][1][2]
    transfer = f"{label}: transfer set ({data_batch} + {transfer_batch} inputs per step): "
    return [
        (f"{label}: **teacher-prior overhead**, prior on the labelled batch (SGLD step)",
         _fmt(lab_step), _spread(r["teacher_prior_overhead_step_labelled_prior_per_round"]),
         _goal(lab_step, 1.3, higher=False)),
        (f"{label}: teacher-prior overhead, prior on the labelled batch (minibatch gradient)",
         _fmt(lab_grad), "", _goal(lab_grad, 1.3, higher=False)),
        (transfer + "overhead per SGLD step", _fmt(step), step_rounds, _TRANSFER_NOTE),
        (transfer + "overhead per gradient", _fmt(grad), grad_rounds, _TRANSFER_NOTE),
    ]  # fmt: skip


def _floor_rows(label: str, r: dict) -> list:
    layouts = " / ".join(
        f"{r[k]['median']:,.0f}" if k in r else "n/a"
        for k in ("floor_once_steps_per_s", "floor_tree_steps_per_s")
    )
    return [
        (f"{label}: SGLD steps/s (1 chain)", _rate(r["sgld_steps_per_s"]), "", ""),
        (f"{label}: floor steps/s (grad + noise)", _rate(r["floor_steps_per_s"]), "", ""),
        (f"{label}: floor layouts: noise once / BlackJAX tree / additive",
         layouts + f" / {r['additive_floor_steps_per_s']:,.0f}",
         f"floor = {r['floor_layout'][6:]}", ""),
        (f"{label}: raw gradient steps/s", _rate(r["raw_gradient_steps_per_s"]), "", ""),
        (f"{label}: noise draw alone /s", _rate(r["noise_only_steps_per_s"]), "", ""),
        (f"{label}: **sgld_vs_floor**", _fmt(r["sgld_vs_floor"]),
         _spread(r["sgld_vs_floor_per_round"]), _goal(r["sgld_vs_floor"], 0.9)),
    ]  # fmt: skip


def _shuffle_rows(label: str, r: dict) -> list:
    if not r.get("shuffle_steps_per_s"):
        return []
    return [
        (f"{label}: epoch shuffles of the plates (host), per step (µs)",
         f"{1e6 / r['shuffle_steps_per_s']['median']:.1f}",
         "timed alone; overlapped in the sampler", ""),
        (f"{label}: sgld_vs_floor with the shuffles added to the floor",
         _fmt(r["sgld_vs_floor_plus_shuffle"]),
         _spread(r["sgld_vs_floor_plus_shuffle_per_round"]), ""),
    ]  # fmt: skip


def _chains_rows(label: str, r: dict) -> list:
    rows = []
    c = r.get("chains")
    if c:
        rows += [
            (f"{label}: {c['num_chains']} chains: steps/s per chain",
             _rate(c["steps_per_s_per_chain"]), "", ""),
            (f"{label}: {c['num_chains']} chains: draws/s (1 chain)",
             f"{c['draws_per_s']:,.0f} ({c['draws_per_s_one_chain']:,.0f})",
             f"x{c['speedup_vs_one_chain']:.2f}", ""),
        ]  # fmt: skip
    d = r.get("chains_on_devices")
    if d:
        rows.append(
            (f"{label}: {d['num_chains']} chains on {d['devices']} CPU devices: "
             "draws/s (1 chain)",
             f"{d['draws_per_s']:,.0f} ({d['draws_per_s_one_chain']:,.0f})",
             f"x{d['speedup_vs_one_chain']:.2f}", "")
        )  # fmt: skip
    return rows


def _sgld_rows(label: str, r: dict) -> list:
    rows = [*_floor_rows(label, r), *_shuffle_rows(label, r)]
    rows.append(
        (f"{label}: sgld_vs_raw_gradient", _fmt(r["sgld_vs_raw_gradient"]),
         _spread(r["sgld_vs_raw_gradient_per_round"]), "")
    )  # fmt: skip
    rows += _overhead_rows(label, r)
    if r.get("teacher_prior_overhead_gradient_equal_batches"):
        rows.append(
            (f"{label}: transfer set, the transfer batch cut to {r['plates'][0][2]}: "
             "overhead per gradient",
             _fmt(r["teacher_prior_overhead_gradient_equal_batches"]), "", _TRANSFER_NOTE)
        )  # fmt: skip
    return rows + _chains_rows(label, r)


def _nuts_rows(nuts: dict | None) -> list:
    if not nuts:
        return []
    return [
        ("digits NUTS: gradient evals/s", _rate(nuts["nuts_grad_evals_per_s"]), "", ""),
        ("digits: bare full-batch gradients/s", _rate(nuts["bare_gradients_per_s"]), "", ""),
        ("digits: **NUTS vs bare gradient**", _fmt(nuts["nuts_vs_bare_gradient"]),
         _spread(nuts["nuts_vs_bare_gradient_per_pair"]),
         _goal(nuts["nuts_vs_bare_gradient"], 0.85)),
    ]  # fmt: skip


def _adapter_rows(a: dict | None) -> list:
    if not a:
        return []
    if a.get("skipped"):
        return [("ref. head: NumPyro adapter (SGMCMC in MCMC)", "skipped", "", a.get("note", ""))]
    return [
        ("ref. head: NumPyro adapter MCMC(SGMCMC) SGLD steps/s (per step)",
         _rate(a["adapter_steps_per_s"]), "", ""),
        ("ref. head: NumPyro adapter, whole compiled run ((W + S) / seconds)",
         _rate(a["adapter_whole_run_steps_per_s"]), "", ""),
        ("ref. head: run_sgmcmc SGLD steps/s (its defaults: 1 epoch per chunk, 6 draws)",
         _rate(a["driver_steps_per_s"]), "", ""),
        ("ref. head: **adapter / run_sgmcmc** (steps/s)", _fmt(a["adapter_vs_driver"]),
         _spread(a["adapter_vs_driver_per_round"]), ""),
    ]  # fmt: skip


def _torch_rows(t: dict) -> list:
    if not t:
        return []
    if t.get("skipped"):
        return [("PyTorch comparison", "skipped", "", t.get("note", ""))]
    return [
        (f"ref. head: PyTorch {t['torch_version']} SGLD steps/s ({t['threads']} threads)",
         _rate(t["torch_sgld_steps_per_s"]), "", ""),
        ("ref. head: PyTorch gradient-only steps/s", _rate(t["torch_gradient_steps_per_s"]),
         "", ""),
        ("ref. head: **ours / PyTorch** (SGLD steps/s)", _fmt(t["ours_vs_torch_sgld"]),
         _spread(t["ours_vs_torch_sgld_per_round"]), _goal(t["ours_vs_torch_sgld"], 1.5)),
        ("ref. head: ours / PyTorch (gradient only)",
         _fmt(t["ours_raw_vs_torch_raw_gradient"]), "", ""),
        ("ref. head: ours 4 chains (all steps/s) / PyTorch 1 chain",
         _fmt(t["ours_4_chains_draws_vs_torch_1_chain"]), "", ""),
    ]  # fmt: skip


def _memory_rows(memory: dict) -> list:
    rows = []
    for m in memory.values():
        if not isinstance(m, dict):
            continue
        label = f"ref. head N = {m['n']:,} ({m.get('input', 'numpy')} input)"
        rows += [
            (f"{label}: SGLD steps/s", _rate(m["steps_per_s"]), "", ""),
            (f"{label}: data / process peak RSS / RSS while sampling (MB)",
             f"{m['data_mb']:,.0f} / {m['peak_rss_mb']:,.0f} / {m['rss_peak_steady_mb']:,.0f}",
             "", ""),
            (f"{label}: sampler's peak RSS - RSS with data loaded (MB)",
             f"{m['sampler_peak_minus_data_in_memory_mb']:,.0f}",
             f"steady: {m['steady_minus_data_in_memory_mb']:,.0f}; "
             f"process peak: {m['peak_minus_data_in_memory_mb']:,.0f}", ""),
        ]  # fmt: skip
    if "excess_growth_per_data_growth" in memory:
        growth = memory["excess_growth_per_data_growth"]
        rows.append(
            ("ref. head: **memory beyond the data**, growth 10^4 -> 10^6 per MB of data",
             _fmt(growth), "device input, sampler's peak", _goal(growth, 0.1, higher=False))
        )  # fmt: skip
    return rows


def _markdown(rows: list) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = []
    for j, row in enumerate(rows):
        cells = " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append("| " + cells + " |")
        if j == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def table(results: dict) -> str:
    rows = [("figure", "value", "spread (min..max)", "goal")]
    for name in ("digits", "reference"):
        label = "digits" if name == "digits" else "ref. head"
        rows += _sgld_rows(label, results["sgld"][name])
    rows += _nuts_rows(results.get("nuts"))
    rows += _adapter_rows(results.get("adapter"))
    rows += _torch_rows(results.get("torch", {}))
    rows += _memory_rows(results.get("memory", {}))
    return _markdown(rows)


def write_docs(path: Path, command: str, results: dict, markdown: str) -> None:
    """Replace the text between the bench markers in ``path`` with this run's table."""
    text = path.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} section")
    m = results["machine"]
    bg = results.get("background_cores_busy")
    bg = "n/a" if bg is None else f"{bg:.2f}"
    git = m.get("git", {})
    source = f"git {git.get('commit', '?')[:7]}" + (
        " + uncommitted changes in src" if git.get("uncommitted_src_files") else ""
    )
    block = (
        f"{DOCS_BEGIN}\nCommand: `{command}` ({m['date']}; {m['cpu_model']}, "
        f"{m['cpu_count']} cores; jax {m['versions']['jax']}, numpyro "
        f"{m['versions']['numpyro']}, blackjax {m['versions']['blackjax']}; {source}; wall time "
        f"{results['wall_seconds']:.0f} s; other processes kept {bg} cores busy on average "
        f"meanwhile).\n\n{markdown}\n{DOCS_END}"
    )
    head, rest = text.split(DOCS_BEGIN, 1)
    tail = rest.split(DOCS_END, 1)[1]
    path.write_text(head + block + tail)
