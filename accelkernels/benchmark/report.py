"""Rows -> results.json, results.csv, report.md and plots (drawn from the rows, never re-measured)."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from . import timing
from .runner import ROW_FIELDS, SAME_PATH_NOTE

PLOTS_HINT = 'plots skipped: matplotlib is not installed (`pip install "accelkernels[bench]"` or `pip install matplotlib`)'
HEADLINE_MODES = {"alpha": "fwd+bwd", "beta": "fwd"}
CONFIDENCE_PCT = f"{timing.CONFIDENCE:.0%}"


def definitions(meta: dict) -> list[str]:
    budget = timing.PAIR_BUDGET_S
    lines = [
        f"**Speedup** = T_reference / T_provider, the reference being torch's own op (cuBLAS/cuDNN on a GPU, ATen "
        f"on a CPU), timed **paired**: reference and provider run in alternating rounds (ABBA...), each round gives "
        f"one ratio, and the speedup is the median of those ratios with its {CONFIDENCE_PCT} interval (order "
        f"statistics: no assumption about the noise). Rounds go on until the interval's half-width is within "
        f"{timing.TIGHT_HALF_WIDTH:.0%} of the ratio or the budget is spent ({budget['cpu']:g} s per pairing on a "
        f"CPU, {budget['cuda']:g} s on a GPU, at least {timing.MIN_ROUNDS} rounds). Verdict: *faster* or *slower* "
        f"when the interval excludes 1, *no difference* when it contains 1; *(wide)* when it stayed wider than "
        f"{timing.TIGHT_HALF_WIDTH:.0%}: the machine was too noisy for a finer answer.",
        f"**α** (training) and **β** (inference): geometric means over the cases of the fwd+bwd and fwd speedups; "
        f"{CONFIDENCE_PCT} interval by a seeded bootstrap ({timing.BOOTSTRAP_REPLICATES} replicates, each resampling "
        f"every case's rounds; the cases themselves are held fixed).",
        f"**Same path**: `auto` resolved to the reference for that call on this machine "
        f"(`accelkernels.backends.resolve(op, 'auto', inputs)`), so both sides run the same kernels and the ratio "
        f"measures accelkernels' dispatch overhead, not a kernel.",
        "**Latency** = median time of one call (ms), p20-p80 in brackets, from the same paired samples as the "
        "speedup: the provider's own samples; the reference's row from its samples in the first pairing of that case "
        "and mode (timed alone, same timer, when nothing else is). CPU: a sample is >= 2 ms of back-to-back calls "
        "on the wall clock (a 4 ms scheduler preemption then spoils one round, which the median ignores). GPU: one "
        "call between CUDA events with the L2 flushed first (what triton.testing.do_bench does); forward calls of "
        f"a reference under {timing.LAUNCH_BOUND_MS} ms are captured in CUDA graphs on both sides (what "
        "do_bench_cudagraph does). The timer field of each row says which. The speedup is a median of ratios, so "
        "it can differ a little from the quotient of the two latencies shown.",
        "**TFLOP/s** = useful floating-point operations / latency (2·M·N·K; conv 2·N·K·P·Q·(C/g)·R·S; backward counts "
        "2x, fwd+bwd 3x). **GB/s** = each tensor read once and written once / latency. **Throughput** = images/s "
        "for conv2d, rows (tokens)/s for matmul and linear.",
        "**Correct first**: every provider's output (fwd) or gradients (fwd+bwd) are checked against a float64 "
        "reference before it is timed; an error over 2x torch's own error at that dtype (+1e-6) is *wrong*, never "
        "timed.",
    ]
    c = meta.get("ceilings")
    if c:
        lines.append(f"**% peak** = TFLOP/s over the ceiling ({c['source']}): "
                     f"{', '.join(f'{k} {_fmt(v)} TFLOP/s' for k, v in c['tflops'].items())}; "
                     f"memory {_fmt(c['tbps'] * 1e3)} GB/s.")
    else:
        lines.append("**% peak**: no ceilings known for this device (`--ceilings` measures them).")
    if meta.get("cpu_threads"):
        lines.append(f"**CPU threads**: torch ran with {meta['cpu_threads']} intra-op thread(s) on this "
                     f"{meta.get('cpu_cores', '?')}-core machine (every core but one by default, `--threads` sets it): "
                     "with every core busy, any other process stalls each parallel region until a scheduler quantum "
                     "ends, which is how latencies snapped to multiples of 4 ms before.")
    if meta.get("allocator_pinned"):
        lines.append("**CPU allocator**: during the run glibc's malloc keeps freed memory mapped (mallopt: no mmap, "
                     "no trimming), as the CUDA caching allocator does on a GPU; otherwise a call's large buffers "
                     "came back as fresh pages or not depending on the heap's history (5 ms one run, 25 ms the next).")
    return lines


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _bound(value: float) -> str:
    """An interval's end with enough digits that it never reads as 1 when it is not (a "slower"
    interval ending at 0.9996 must not print as [0.864-1])."""
    for digits in (3, 4, 5, 6):
        text = f"{value:.{digits}g}"
        if value == 1.0 or float(text) != 1.0:
            return text
    return text


def describe(est) -> str:
    """A ratio with its interval and verdict: '0.72 [0.69-0.76] slower', '1 [0.97-1.03] no difference'."""
    if est is None or not math.isfinite(est.ratio):
        return "-"
    if not math.isfinite(est.low):
        return f"{_fmt(est.ratio)} (no interval)"
    text = f"{_fmt(est.ratio)} [{_bound(est.low)}-{_bound(est.high)}] {est.verdict}"
    return text + ("" if est.tight else " (wide)")


def row_estimate(r: dict) -> timing.RatioEstimate | None:
    if r.get("speedup") is None:
        return None
    low, high = r.get("speedup_low"), r.get("speedup_high")
    return timing.RatioEstimate(r["speedup"], math.nan if low is None else low, math.nan if high is None else high,
                                r.get("rounds") or 1)


# --- data --------------------------------------------------------------------------------------------


def write_data(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in rows:  # the per-round ratios as one space-separated cell
            ratios = r.get("round_ratios")
            writer.writerow({**r, "round_ratios": " ".join(f"{x:.6g}" for x in ratios) if ratios else ""})


def _timed_ratio_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r["provider"] != "torch" and r.get("speedup")]


def alpha_beta(rows: list[dict]) -> dict[str, dict[str, timing.GeomeanEstimate]]:
    """Per provider: "alpha" (fwd+bwd) and "beta" (fwd) geomeans over cases with their intervals
    (timing.geomean_interval), and "alpha_same_path" / "beta_same_path": how many of those cases
    ran the reference's own path. Rows without per-round ratios (the old format) count with their
    single speedup: a point estimate, no interval."""
    rounds: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    same: dict[tuple[str, str], int] = defaultdict(int)
    for r in _timed_ratio_rows(rows):
        for which, mode in HEADLINE_MODES.items():
            if r["mode"] == mode:
                rounds[(r["provider"], which)].append(r.get("round_ratios") or [r["speedup"]])
                same[(r["provider"], which)] += bool(r.get("same_path"))
    out: dict[str, dict] = defaultdict(dict)
    for (provider, which), per_case in rounds.items():
        out[provider][which] = timing.geomean_interval(per_case)
        out[provider][which + "_same_path"] = same[(provider, which)]
    return dict(out)


# --- markdown ----------------------------------------------------------------------------------------


def _headline(rows: list[dict], meta: dict) -> list[str]:
    ab = alpha_beta(rows)
    if not ab:
        return ["No provider was timed against the reference: no α or β.", ""]
    lines = [f"| provider | α (training: fwd+bwd, geomean, {CONFIDENCE_PCT} interval) "
             f"| β (inference: fwd, geomean, {CONFIDENCE_PCT} interval) |", "|---|---|---|"]
    for provider, v in sorted(ab.items()):
        cells = []
        for which in ("alpha", "beta"):
            est = v.get(which)
            if est is None:
                cells.append("not timed")
                continue
            same = v[which + "_same_path"]
            note = "" if not same else (", same path as the reference" if same == est.cases
                                        else f", {same} on the reference's path")
            cells.append(f"{describe(est)} ({est.cases} case{'s' * (est.cases != 1)}{note})")
        lines.append(f"| {provider} | {cells[0]} | {cells[1]} |")
    lines.append("")
    auto = [r for r in _timed_ratio_rows(rows) if r["provider"] == "auto"]
    if auto and all(r.get("same_path") for r in auto):
        where = "on this CPU" if meta.get("no_gpu") else "on this machine"
        lines += [f"**`auto` runs the reference (torch) {where} for every timed call: its α and β compare torch "
                  "with itself and measure accelkernels' dispatch overhead, not a kernel.**", ""]
    elif any(r.get("same_path") for r in auto):
        n = sum(bool(r.get("same_path")) for r in auto)
        lines += [f"`auto` ran the reference's own path in {n} of {len(auto)} timed calls (marked *same path*).", ""]
    return lines


def _case_label(names: list[str], gflop: dict[str, float], with_size: bool) -> str:
    shown = [f"{n} ({_fmt(gflop[n])} GFLOP)" if with_size and n in gflop else n for n in names]
    return ", ".join(shown[:6]) + (f" and {len(shown) - 6} more" if len(shown) > 6 else "")


def _not_timed(rows: list[dict], all_rows: list[dict], skip_providers: set[str]) -> list[str]:
    """One line per (status, reason): which providers, which cases (and modes or dtypes when only
    some of them), instead of one line per provider and case."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] != "ok" and r["provider"] not in skip_providers:
            groups[(r["status"], r["reason"])].append(r)
    lines = []
    section_cases = list(dict.fromkeys(r["case"] for r in all_rows))
    section_modes = {r["mode"] for r in all_rows}
    section_dtypes = {r["dtype"] for r in all_rows}
    for (status, reason), group in groups.items():
        providers = list(dict.fromkeys(r["provider"] for r in group))
        cases = list(dict.fromkeys(r["case"] for r in group))
        gflop = {r["case"]: r.get("fwd_gflop") for r in group if r.get("fwd_gflop") is not None}
        where = "every case" if cases == section_cases else _case_label(cases, gflop, "GFLOP" in reason)
        modes, dtypes = {r["mode"] for r in group}, {r["dtype"] for r in group}
        if modes != section_modes:
            where = f"{'/'.join(sorted(modes))} of {where}"
        if dtypes != section_dtypes:
            where += f" in {'/'.join(sorted(dtypes))}"
        lines.append(f"- {status}: {reason} — {', '.join(providers)}; {where}")
    return lines


def _unavailable_everywhere(rows: list[dict]) -> dict[str, list[str]]:
    """reason -> providers that were not timed anywhere in the run, all for that one reason (no GPU,
    extension not built): said once at the top instead of in every section."""
    reasons: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        reasons[r["provider"]].add(r["reason"] if r["status"] != "ok" else None)
    out: dict[str, list[str]] = defaultdict(list)
    for provider, why in reasons.items():
        if len(why) == 1 and None not in why:
            out[next(iter(why))].append(provider)
    return dict(out)


def _speedup_cell(r: dict) -> str:
    if r["provider"] == "torch":
        return "reference"
    return describe(row_estimate(r))


def _provider_cell(r: dict) -> str:
    return f"{r['provider']} (same path)" if r.get("same_path") else r["provider"]


def _consistency(rows: list[dict]) -> list[str]:
    """Latencies a user would not believe: a forward slower than the same call's forward+backward
    (which includes it). With paired timing and the pinned allocator this should not happen; when
    it does, the machine was disturbed while that case ran."""
    by_key: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["status"] == "ok":
            by_key[(r["suite"], r["case"], r["dtype"], r["layout"], r["provider"])][r["mode"]] = r
    lines = []
    for (suite, case, dtype, layout, provider), modes in by_key.items():
        fwd, both = modes.get("fwd"), modes.get("fwd+bwd")
        if fwd and both and fwd["median_ms"] > both["median_ms"]:
            lines.append(f"- {suite} / {case} {dtype} {layout} {provider}: fwd {_fmt(fwd['median_ms'])} ms > fwd+bwd "
                         f"{_fmt(both['median_ms'])} ms: the machine was disturbed while this ran; rerun it.")
    over = [r for r in rows if r["status"] == "ok" and (r.get("pct_peak") or 0) > 100]
    if over:
        shown = ", ".join(f"{r['case']} {r['mode']} {r['provider']} ({_fmt(r['pct_peak'])}%)" for r in over[:5])
        lines.append(f"- {len(over)} row(s) above 100% of the ceiling ({shown}{' ...' if len(over) > 5 else ''}): "
                     "the ceiling is not this machine's peak (measured while it was busy, or the wrong datasheet); "
                     "their % peak means nothing.")
    return lines


def write_markdown(rows: list[dict], out: Path, meta: dict, plots: list[str] | None) -> None:
    env = rows[0] if rows else {}
    lines = [
        "# accelkernels bench",
        "",
        f"**{env.get('device', meta.get('device', '?'))}** (compute capability {env.get('capability') or '-'}), "
        f"torch {env.get('torch')}, CUDA {env.get('cuda') or '-'}, Triton {env.get('triton')}, commit "
        f"{env.get('commit')}, {env.get('timestamp')}.",
        f"Settings: {meta.get('settings_text', '')}",
        "",
    ]
    if meta.get("no_gpu"):
        lines += ["> **No CUDA GPU was found**: this run times the CPU reference path (and any backend that runs on the "
                  "CPU); the kernels' GPU numbers need a GPU machine.", ""]
    lines += ["## Headline", ""] + _headline(rows, meta)
    lines += ["## Definitions", ""] + [f"- {d}" for d in definitions(meta)] + [""]
    everywhere = _unavailable_everywhere(rows)
    skip = {p for providers in everywhere.values() for p in providers}
    if everywhere:
        lines += ["## Not run on this machine", ""]
        lines += [f"- {', '.join(providers)}: {reason}" for reason, providers in everywhere.items()] + [""]
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_suite[r["suite"]].append(r)
    nothing_timed = []
    for suite, suite_rows in by_suite.items():
        timed = [r for r in suite_rows if r["status"] == "ok"]
        not_run = _not_timed(suite_rows, suite_rows, skip)
        if not timed:
            nothing_timed += [line.replace("- ", f"- {suite}, ", 1) for line in not_run]
            continue
        lines += [f"## {suite}", "",
                  "| case | dtype | layout | mode | provider | latency ms [p20-p80] | TFLOP/s | GB/s | % peak | throughput "
                  f"| speedup [{CONFIDENCE_PCT}] | rounds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in timed:
            lines.append(
                f"| {r['case']} | {r['dtype']} | {r['layout']} | {r['mode']} | {_provider_cell(r)} "
                f"| {_fmt(r['median_ms'])} [{_fmt(r['p20_ms'])}-{_fmt(r['p80_ms'])}] | {_fmt(r['tflops'])} "
                f"| {_fmt(r['gbps'])} | {_fmt(r['pct_peak'])} | {_fmt(r['throughput'])} {r['throughput_unit']} "
                f"| {_speedup_cell(r)} | {_fmt(r.get('rounds'))} |")
        if any(r.get("same_path") for r in timed):
            lines += ["", "*same path*: `auto` ran the reference itself here; its ratio measures dispatch overhead."]
        if not_run:
            lines += ["", "Not timed:", ""] + not_run
        lines.append("")
    if nothing_timed:
        lines += ["## Suites with nothing timed", ""] + nothing_timed + [""]
    warnings = _consistency(rows)
    if warnings:
        lines += ["## Consistency warnings", ""] + warnings + [""]
    if plots is None:
        lines += ["## Plots", "", PLOTS_HINT[0].upper() + PLOTS_HINT[1:] + ".", ""]
    elif plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))


# --- plots -------------------------------------------------------------------------------------------

VERDICT_COLOURS = {"faster": "#1a9850", "slower": "#d73027", "no difference": "#7f7f7f"}


def _si(value: float, unit: str) -> str:
    """1.5e9 -> '1.5 G' + unit: tick labels a reader takes in at a glance."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(value) >= factor:
            return f"{value / factor:g} {prefix}{unit}"
    return f"{value:g} {unit}"


def _plain_log_axis(axis, low: float, high: float, unit: str | None = None, width_in: float = 5.0) -> None:
    """Log axis ticks as plain numbers (0.01, 0.02, 0.05, 0.1, ...; or with SI prefixes when ``unit``
    is given), not 10^k: at 1-2-5 steps over up to two decades, 1-3 over up to four, decades beyond,
    and every second or third decade when even those would crowd an axis ``width_in`` inches long."""
    from matplotlib import ticker

    decades = math.log10(max(high, low * 1.0001) / low)
    subs = (1.0, 2.0, 5.0) if decades <= 2.2 else (1.0, 3.0) if decades <= 4.2 else (1.0,)
    per_inch = (len(subs) * decades) / width_in
    labels_fit = (1.1 if unit else 1.6)  # "100 MFLOP" is wider than "0.01"
    if len(subs) == 1 and per_inch > labels_fit:
        axis.set_major_locator(ticker.LogLocator(base=10, numticks=max(2, int(width_in * labels_fit))))
    else:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _si(v, unit) if unit else f"{v:g}"))
    axis.set_minor_locator(ticker.NullLocator())


def _label_providers(rows: list[dict]) -> dict[str, str]:
    """Provider -> legend label, with "(same path)" for auto when every row of it was."""
    out = {}
    for provider in {r["provider"] for r in rows}:
        mine = [r for r in rows if r["provider"] == provider]
        out[provider] = provider + (" (same path as torch)" if mine and all(r.get("same_path") for r in mine) else "")
    return out


def _provider_colours(plt, providers) -> dict:
    """torch black, auto grey, the cuda and triton backends green and purple, and each family of
    single kernels in shades of one colour, from the first ladder step (light) to the last (dark)."""
    fixed = {"torch": "black", "auto": "0.55", "cuda": "tab:green", "triton": "tab:purple"}
    out = {p: fixed[p] for p in providers if p in fixed}
    for family, cmap in (("cuda:", plt.cm.Blues), ("triton:", plt.cm.Oranges)):
        members = [p for p in providers if p.startswith(family)]
        for i, p in enumerate(members):
            out[p] = cmap(0.4 + 0.55 * i / max(1, len(members) - 1))
    for i, p in enumerate(p for p in providers if p not in out):
        out[p] = plt.cm.tab10(i % 10)
    return out


def _ordered_providers(rows: list[dict]) -> list[str]:
    """torch, the backends, then the single kernels in the order the run listed them (ladder order)."""
    seen = list(dict.fromkeys(r["provider"] for r in rows))
    return sorted(seen, key=lambda p: (p != "torch", ":" in p, seen.index(p)))


def _gemm_plot(plt, rows: list[dict], path: Path) -> None:
    dtypes = sorted({r["dtype"] for r in rows})
    providers = _ordered_providers(rows)
    # The backends in one row of panels, the single kernels (the CUDA ladder, the Triton variants)
    # in another, each with torch as the reference line: fifteen providers in one panel are a tangle.
    groups = [("backends", [p for p in providers if ":" not in p])]
    if any(":" in p for p in providers):
        groups.append(("single kernels", ["torch"] * ("torch" in providers) + [p for p in providers if ":" in p]))
    suites = sorted({r["suite"] for r in rows})
    colours = _provider_colours(plt, providers)
    markers = {s: "osD^vP*Xh<>"[i % 11] for i, s in enumerate(suites)}
    labels = _label_providers(rows)
    xs = [r["fwd_gflop"] * 1e9 for r in rows]
    ys = [r["tflops"] for r in rows]
    xlim, ylim = (min(xs) / 1.6, max(xs) * 1.6), (min(ys) / 1.6, max(ys) * 1.6)
    fig, axes = plt.subplots(len(groups), len(dtypes), figsize=(6 * len(dtypes) + 3, 4.2 * len(groups) + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    for g, (group, members) in enumerate(groups):
        for d, dtype in enumerate(dtypes):
            ax = axes[g][d]
            for provider in members:
                for suite in suites:
                    pts = sorted((r["fwd_gflop"] * 1e9, r["tflops"]) for r in rows
                                 if r["dtype"] == dtype and r["provider"] == provider and r["suite"] == suite)
                    if pts:
                        hollow = provider == "auto"
                        ax.plot(*zip(*pts), marker=markers[suite], color=colours[provider], ms=5.5,
                                lw=1.8 if provider == "torch" else 1.1, ls="--" if hollow else "-",
                                mfc="none" if hollow else colours[provider])
            ax.set(xscale="log", yscale="log", xlim=xlim, ylim=ylim, title=f"{dtype}: {group}")
            ax.grid(True, which="major", lw=0.4, alpha=0.5)
            _plain_log_axis(ax.xaxis, *xlim, unit="FLOP", width_in=6)
            _plain_log_axis(ax.yaxis, *ylim)
        axes[g][0].set_ylabel("TFLOP/s (forward)")
    for ax in axes[-1]:
        ax.set_xlabel("work per call (2·M·N·K)")
    handles = [plt.Line2D([], [], color=colours[p], lw=2, ls="--" if p == "auto" else "-", label=labels[p])
               for p in providers]
    handles += [plt.Line2D([], [], color="k", marker=markers[s], ls="none", mfc="none", label=f"suite {s}")
                for s in suites]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("GEMM forward: achieved TFLOP/s per case (a line joins one provider's cases of one suite)")
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _legend_below(fig, handles, ncol: int) -> None:
    """A figure legend under the panels, which constrained layout makes room for (matplotlib 3.7's
    "outside" placement; older versions put it at the bottom edge and bbox_inches="tight" keeps it)."""
    try:
        fig.legend(handles=handles, fontsize=7.5, loc="outside lower center", ncol=ncol, frameon=False)
    except ValueError:
        fig.legend(handles=handles, fontsize=7.5, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0))


def _conv_plot(plt, rows: list[dict], path: Path) -> None:
    """A forest plot: one panel per mode, one line per layer (and dtype and layout when the run has
    several), each provider's ratio with its interval as a bar, the 1.0 line between "slower" and
    "faster". Filled: the interval excludes 1; hollow: "no difference"; a diamond: the same path as
    the reference (its ratio is dispatch overhead). With one provider the values are written out."""
    from matplotlib import ticker

    modes = [m for m in ("fwd", "bwd", "fwd+bwd") if any(r["mode"] == m for r in rows)]
    many_dtypes = len({r["dtype"] for r in rows}) > 1
    many_layouts = len({r["layout"] for r in rows}) > 1
    lines_ = list(dict.fromkeys((r["suite"], r["case"], r["dtype"], r["layout"]) for r in rows))
    providers = _ordered_providers(rows)
    colours = _provider_colours(plt, providers)
    single = len(providers) == 1
    per_line = 0.3 if single else 0.16 * len(providers) + 0.12
    fig, axes = plt.subplots(1, len(modes), figsize=(4.8 * len(modes) + (5.2 if single else 3.4),
                                                      1.8 + per_line * len(lines_)), squeeze=False, sharey=True,
                             layout="constrained")  # places the title and the legend for any number of layers
    estimates = [row_estimate(r) for r in rows]
    lows = [e.low if math.isfinite(e.low) else e.ratio for e in estimates]
    highs = [e.high if math.isfinite(e.high) else e.ratio for e in estimates]
    span = max(max(highs), 1.0 / min(lows), 1.1) * 1.15  # symmetric about 1 on the log scale
    steps = ((0.8, 0.9, 1, 1.1, 1.25) if span <= 1.3 else (0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2) if span <= 2.2
             else (0.1, 0.2, 0.5, 1, 2, 5, 10) if span <= 11 else (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100))
    y_of = {key: len(lines_) - 1 - i for i, key in enumerate(lines_)}  # the first layer at the top
    for ax, mode in zip(axes[0], modes):
        ax.axvspan(1 / span, 1, color="#d73027", alpha=0.04)
        ax.axvspan(1, span, color="#1a9850", alpha=0.04)
        ax.axvline(1.0, color="k", lw=0.9)
        for r, est, low, high in zip(rows, estimates, lows, highs):
            if r["mode"] != mode:
                continue
            j = providers.index(r["provider"])
            y = y_of[(r["suite"], r["case"], r["dtype"], r["layout"])] + (0 if single else
                                                                           0.7 * ((len(providers) - 1) / 2 - j) / len(providers))
            colour = VERDICT_COLOURS[est.verdict] if single else colours[r["provider"]]
            significant = est.verdict != "no difference"
            ax.errorbar([est.ratio], [y], xerr=[[est.ratio - low], [high - est.ratio]], color=colour, capsize=2.5, lw=1.3,
                        fmt="D" if r.get("same_path") else "o", ms=5.5, mfc=colour if significant else "white")
            if single:
                ax.annotate(describe(est), (span, y), xytext=(4, 0), textcoords="offset points", va="center",
                            fontsize=6.8, color=colour, annotation_clip=False)
        ax.set(xscale="log", xlim=(1 / span, span), title=mode)
        ax.xaxis.set_major_locator(ticker.FixedLocator([v for v in steps if 1 / span <= v <= span]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.grid(True, axis="x", lw=0.4, alpha=0.5)
        ax.set_xlabel("T_reference / T_provider (> 1: faster)")
    labels = [" · ".join([case] + ([dtype] if many_dtypes else []) + ([layout] if many_layouts else []))
              for _, case, dtype, layout in lines_]
    axes[0][0].set(yticks=[y_of[k] for k in lines_], ylim=(-0.6, len(lines_) - 0.4))
    axes[0][0].set_yticklabels(labels, fontsize=8)
    if single:
        handles = [plt.Line2D([], [], color=c, marker="o", ls="none", label=v) for v, c in VERDICT_COLOURS.items()]
    else:
        handles = [plt.Line2D([], [], color=colours[p], marker="o", ls="none", label=p) for p in providers]
        handles += [plt.Line2D([], [], color="k", marker="o", ls="none", label="interval excludes 1"),
                    plt.Line2D([], [], color="k", marker="o", mfc="white", ls="none", label="no difference")]
    if any(r.get("same_path") for r in rows):
        handles.append(plt.Line2D([], [], color="k", marker="D", mfc="white", ls="none",
                                  label="diamond: same path as the reference (measures dispatch overhead)"))
    _legend_below(fig, handles, ncol=min(5, len(handles)))
    fig.suptitle(f"conv2d per layer: ratio to the reference, bars: {CONFIDENCE_PCT} interval"
                 + (f" [{providers[0]}]" if single else ""))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _roofline_plot(plt, rows: list[dict], ceilings: dict | None, path: Path) -> bool:
    """Forward calls only (a fwd+bwd lies at the same intensity), one panel per dtype with that
    dtype's ceilings; `auto` left out where it ran the reference's own path (it would sit on torch's
    points). Each case has a number, explained in the key beside the plot."""
    dropped_auto = any(r["provider"] == "auto" and r.get("same_path") for r in rows)
    rows = [r for r in rows if r["mode"] == "fwd" and not (r["provider"] == "auto" and r.get("same_path"))]
    if not rows:
        return False
    cases = list(dict.fromkeys((r["suite"], r["case"]) for r in rows))
    number = {c: i + 1 for i, c in enumerate(cases)}
    providers = _ordered_providers(rows)
    colours = _provider_colours(plt, providers)
    dtypes = sorted({r["dtype"] for r in rows})
    height = max(5.6, 0.12 * len(cases) + 1.6)  # room for the key: one line per case
    fig, axes = plt.subplots(1, len(dtypes) + 1, figsize=(5.8 * len(dtypes) + 4.2, height), squeeze=False,
                             gridspec_kw={"width_ratios": [5.8] * len(dtypes) + [4.2]})
    axes, key = axes[0][:-1], axes[0][-1]
    for ax, dtype in zip(axes, dtypes):
        mine = [r for r in rows if r["dtype"] == dtype]
        points: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        for r in mine:
            x = r["tflops"] * 1e3 / r["gbps"]  # FLOP per byte: the same for every provider of a case
            points[(r["suite"], r["case"])].append((x, r["tflops"]))
            ax.scatter([x], [r["tflops"]], s=28, color=colours[r["provider"]], zorder=3,
                       marker="o" if r["op"] == "conv2d" else "s", edgecolors="white", linewidths=0.4)
        for i, (case, pts) in enumerate(points.items()):  # labels alternately above and below a case's points
            x = pts[0][0]
            y = max(p[1] for p in pts) if i % 2 == 0 else min(p[1] for p in pts)
            ax.annotate(str(number[case]), (x, y), xytext=(0, 6 if i % 2 == 0 else -12), textcoords="offset points",
                        fontsize=7, ha="center", fontweight="bold", color="0.25")
        xs = [p[0] for pts in points.values() for p in pts]
        ys = [p[1] for pts in points.values() for p in pts]
        lo, hi, ylo, yhi = min(xs) / 2, max(xs) * 2, min(ys) / 3, max(ys) * 3
        wanted = [k for k in (dtype, "tf32" if dtype == "fp32" else None) if ceilings and k in ceilings["tflops"]]
        for j, name in enumerate(wanted):
            peak = ceilings["tflops"][name]
            grid = [lo * (hi / lo) ** (t / 200) for t in range(201)]
            ax.plot(grid, [min(peak, ceilings["tbps"] * x) for x in grid], color="0.35", lw=1, ls=("-", "--")[j],
                    label=f"{name} ceiling: {_fmt(peak)} TFLOP/s, {_si(ceilings['tbps'] * 1e12, 'B/s')}")
            yhi = max(yhi, peak * 2)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(ylo, yhi), ylabel="TFLOP/s (forward)",
               xlabel="arithmetic intensity (FLOP/byte, each tensor moved once)")
        ax.set_title(dtype + ("" if wanted else ": no ceiling known for this dtype"), fontsize=10)
        _plain_log_axis(ax.xaxis, lo, hi)
        _plain_log_axis(ax.yaxis, ylo, yhi)
        ax.grid(True, lw=0.4, alpha=0.5)
        if wanted:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("roofline: " + (f"ceilings {ceilings['source']}" if ceilings
                                 else "no ceilings known for this device (`--ceilings` measures them)"), fontsize=10)
    key.axis("off")
    handles = [plt.Line2D([], [], color=colours[p], marker="o", ls="none", label=p) for p in providers]
    handles += [plt.Line2D([], [], color="0.4", marker="o", mfc="white", ls="none", label="shape: conv2d"),
                plt.Line2D([], [], color="0.4", marker="s", mfc="white", ls="none", label="shape: matmul / linear")]
    if dropped_auto:
        handles.append(plt.Line2D([], [], ls="none", label="(auto: same path as torch, not drawn)"))
    fig.legend(handles=handles, loc="lower center", fontsize=7.5, frameon=False, ncol=min(8, len(handles)),
               bbox_to_anchor=(0.5, 0))
    key.set_title("cases (the number by each point)", fontsize=9, loc="left")
    text = "\n".join(f"{number[c]:>2}  {c[1]}  ({c[0]})" for c in cases)
    key.text(0, 1, text, va="top", ha="left", fontsize=7, family="monospace", transform=key.transAxes)
    rows_of_legend = math.ceil(len(handles) / min(8, len(handles)))
    fig.tight_layout(rect=(0, 0.045 * rows_of_legend * 5.6 / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(rows: list[dict], out: Path, ceilings: dict | None) -> list[str] | None:
    """TFLOP/s against work per provider and suite (GEMMs), speedup per layer with intervals (convs),
    and a roofline. None when matplotlib is not installed (PLOTS_HINT says how to get it)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)

    ok = [r for r in rows if r["status"] == "ok" and r.get("tflops")]
    written = []
    gemm = [r for r in ok if r["op"] in ("matmul", "linear") and r["mode"] == "fwd"]
    if gemm:
        _gemm_plot(plt, gemm, out / "gemm_tflops.png")
        written.append("gemm_tflops.png")
    conv = [r for r in ok if r["op"] == "conv2d" and r["provider"] != "torch" and r.get("speedup")]
    if conv:
        _conv_plot(plt, conv, out / "conv_speedup.png")
        written.append("conv_speedup.png")
    if ok and _roofline_plot(plt, [r for r in ok if r.get("gbps")], ceilings, out / "roofline.png"):
        written.append("roofline.png")
    return written
