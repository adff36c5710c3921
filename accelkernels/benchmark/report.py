"""Rows -> results.json, results.csv, report.md and plots (drawn from the rows, never re-measured)."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from .runner import ROW_FIELDS

DEFINITIONS = [
    "FLOPS achieved (TFLOP/s) = useful floating-point operations / latency (2·M·N·K; conv 2·N·K·P·Q·(C/g)·R·S; backward counts 2x, fwd+bwd 3x).",
    "Throughput = work items per second: images/s for conv2d, rows (tokens)/s for matmul and linear.",
    "Latency = median time of one call (ms), p20-p80 in brackets.",
    "Speedup = T_reference / T_provider, the reference being torch (cuBLAS/cuDNN on GPU) in the same run.",
    "α (training) = T_reference / T_ours for forward+backward; β (inference) = T_reference / T_ours for forward.",
]


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def write_data(rows: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def alpha_beta(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Geometric means over cases of α (fwd+bwd speedup) and β (fwd speedup), per provider."""
    logs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r["speedup"] and r["provider"] != "torch" and r["mode"] in ("fwd", "fwd+bwd"):
            logs[(r["provider"], "beta" if r["mode"] == "fwd" else "alpha")].append(math.log(r["speedup"]))
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (provider, which), values in logs.items():
        out[provider][which] = math.exp(sum(values) / len(values))
        out[provider][which + "_cases"] = len(values)
    return dict(out)


def write_markdown(rows: list[dict], out: Path, meta: dict, plots: list[str]) -> None:
    env = rows[0] if rows else {}
    lines = [
        "# accelkernels bench",
        "",
        f"**{env.get('device', '?')}** (compute capability {env.get('capability') or '-'}), torch {env.get('torch')}, "
        f"CUDA {env.get('cuda') or '-'}, Triton {env.get('triton')}, commit {env.get('commit')}, {env.get('timestamp')}.",
        f"Settings: {meta.get('settings_text', '')}",
        "",
    ]
    if meta.get("no_gpu"):
        lines += ["> **No CUDA GPU was found**: this run times the CPU reference path (and any backend that runs on the "
                  "CPU); the kernels' GPU numbers need a GPU machine.", ""]
    lines += [f"- {d}" for d in DEFINITIONS] + [""]
    ab = alpha_beta(rows)
    if ab:
        lines += ["| provider | α (training, geomean) | β (inference, geomean) |", "|---|---|---|"]
        for provider, v in sorted(ab.items()):
            lines.append(f"| {provider} | {_fmt(v.get('alpha'))} ({v.get('alpha_cases', 0)} cases) "
                         f"| {_fmt(v.get('beta'))} ({v.get('beta_cases', 0)} cases) |")
        lines.append("")
    if meta.get("ceilings"):
        c = meta["ceilings"]
        lines += [f"Ceilings ({c['source']}): {', '.join(f'{k} {v:.0f} TFLOP/s' for k, v in c['tflops'].items())}, "
                  f"memory {c['tbps']:.2f} TB/s.", ""]
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_suite[r["suite"]].append(r)
    for suite, suite_rows in by_suite.items():
        lines += [f"## {suite}", "",
                  "| case | dtype | layout | mode | provider | latency ms [p20-p80] | TFLOP/s | GB/s | % peak | throughput | speedup |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        not_run = []
        for r in suite_rows:
            if r["status"] != "ok":
                not_run.append(r)
                continue
            lines.append(
                f"| {r['case']} | {r['dtype']} | {r['layout']} | {r['mode']} | {r['provider']} "
                f"| {_fmt(r['median_ms'])} [{_fmt(r['p20_ms'])}-{_fmt(r['p80_ms'])}] | {_fmt(r['tflops'])} "
                f"| {_fmt(r['gbps'])} | {_fmt(r['pct_peak'])} | {_fmt(r['throughput'])} {r['throughput_unit']} "
                f"| {_fmt(r['speedup'])} |")
        if not_run:
            lines += ["", "Not timed:", ""]
            reasons: dict[tuple, list[str]] = defaultdict(list)
            for r in not_run:
                reasons[(r["provider"], r["status"], r["reason"])].append(f"{r['case']} {r['dtype']} {r['mode']}")
            for (provider, status, reason), where in reasons.items():
                shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
                lines.append(f"- {provider}, {status}: {reason} ({shown})")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))


def write_plots(rows: list[dict], out: Path, ceilings: dict | None) -> list[str]:
    """TFLOP/s against size per provider (GEMMs), speedup per layer (convs), and a roofline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    written = []

    gemm = [r for r in ok if r["op"] in ("matmul", "linear") and r["mode"] == "fwd"]
    if gemm:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in gemm:
            size = math.prod(int(x) for x in r["shape"].split("x")) ** (1 / 3)
            series[f"{r['provider']} {r['dtype']}"].append((size, r["tflops"]))
        for label, points in sorted(series.items()):
            points.sort()
            ax.plot(*zip(*points), marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="size (cube root of M·N·K)", ylabel="TFLOP/s", title="GEMM forward")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "gemm_tflops.png", dpi=110)
        plt.close(fig)
        written.append("gemm_tflops.png")

    conv = [r for r in ok if r["op"] == "conv2d" and r["provider"] != "torch" and r["speedup"]]
    if conv:
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.25 * len(conv))))
        labels = [f"{r['case']} {r['dtype']} {r['layout']} {r['mode']} [{r['provider']}]" for r in conv]
        ax.barh(range(len(conv)), [r["speedup"] for r in conv])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set(yticks=range(len(conv)), xlabel="speedup over the reference (T_ref / T)", title="conv2d per layer")
        ax.set_yticklabels(labels, fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "conv_speedup.png", dpi=110)
        plt.close(fig)
        written.append("conv_speedup.png")

    if ok:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for provider in sorted({r["provider"] for r in ok}):
            pts = [(r["tflops"] * 1e3 / r["gbps"], r["tflops"]) for r in ok if r["provider"] == provider and r["gbps"]]
            if pts:
                ax.scatter(*zip(*pts), s=14, label=provider)
        if ceilings:
            xs = [2**i for i in range(-2, 14)]
            for name, peak in ceilings["tflops"].items():
                ax.plot(xs, [min(peak, ceilings["tbps"] * x) for x in xs], lw=0.8, label=f"ceiling {name}")
        ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)", ylabel="TFLOP/s",
               title="roofline" + (f" ({ceilings['source']})" if ceilings else " (no ceilings known)"))
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "roofline.png", dpi=110)
        plt.close(fig)
        written.append("roofline.png")
    return written
