"""How repeatable `accelkernels bench` is: the spread of its figures over several runs.

For each group of result folders (each one written by `accelkernels bench --out DIR`), prints and
optionally writes the spread of every headline figure (α and β per provider) and of every row's
ratio to the reference: min, max and max/min over the runs (1.00 = identical in every run), and,
for results that have them, how many verdicts ("faster", "slower", "no difference") changed from
run to run. Reads both result formats: the paired one (speedup with an interval) and the older one
(a single ``speedup`` per row, from two separately timed medians).

Usage:
  python bench/bench_repeatability.py RUN_DIR [RUN_DIR ...]
  python bench/bench_repeatability.py --group before /tmp/before/run* --group after /tmp/after/run*
  python bench/bench_repeatability.py --run 5 --out /tmp/after [--bench-arg=--suite --bench-arg=seed_cnn]
Add --write FILE.md for a markdown copy (and FILE.json beside it).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_run(folder: Path) -> list[dict]:
    path = folder / "results.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: no results.json (not an `accelkernels bench --out` folder)")
    return json.loads(path.read_text())


def row_key(r: dict) -> str:
    return f"{r['suite']} / {r['case']} / {r['dtype']} {r['layout']} {r['mode']} / {r['provider']}"


def figures(rows: list[dict]) -> tuple[dict[str, float], dict[str, float], dict[str, str | None]]:
    """(headline name -> value, row key -> ratio, figure name -> verdict or None) of one run."""
    from accelkernels.benchmark import report

    headline, verdicts = {}, {}
    for provider, v in report.alpha_beta(rows).items():
        for which, symbol in (("alpha", "α"), ("beta", "β")):
            if which in v:
                name = f"{symbol} {provider}"
                headline[name] = v[which].ratio
                verdicts[name] = v[which].verdict if math.isfinite(v[which].low) else None
    ratios = {}
    for r in rows:
        if r.get("status") == "ok" and r["provider"] != "torch" and r.get("speedup"):
            ratios[row_key(r)] = r["speedup"]
            verdicts[row_key(r)] = r.get("verdict")
    return headline, ratios, verdicts


def spread(values: list[float]) -> dict:
    return {"runs": len(values), "min": min(values), "max": max(values), "max_over_min": max(values) / min(values),
            "values": values}


def analyse(folders: list[Path]) -> dict:
    runs = [figures(load_run(f)) for f in folders]
    out: dict = {"folders": [str(f) for f in folders], "headline": {}, "rows": {}, "verdict_changes": {}}
    for part, index in (("headline", 0), ("rows", 1)):
        names = dict.fromkeys(n for run in runs for n in run[index])
        for name in names:
            values = [run[index][name] for run in runs if name in run[index]]
            out[part][name] = spread(values)
            verdicts = [run[2].get(name) for run in runs if name in run[index]]
            if all(v is not None for v in verdicts):
                out["verdict_changes"][name] = sorted(set(verdicts))
    return out


def _f(x: float) -> str:
    return f"{x:.3g}"


def markdown(groups: dict[str, dict]) -> str:
    names = list(groups)
    lines = ["# Repeatability of `accelkernels bench`", ""]
    for name, g in groups.items():
        lines.append(f"- **{name}**: {len(g['folders'])} runs ({', '.join(g['folders'])})")
    lines += ["", "## Headline figures (geomean over cases)", ""]
    head = "| figure | " + " | ".join(f"{n}: values | {n}: min-max | {n}: max/min" for n in names) + " |"
    lines += [head, "|---|" + "---|---|---|" * len(names)]
    figures_ = list(dict.fromkeys(k for g in groups.values() for k in g["headline"]))
    for fig in figures_:
        cells = []
        for g in groups.values():
            s = g["headline"].get(fig)
            cells.append("- | - | -" if s is None else
                         f"{' '.join(_f(v) for v in s['values'])} | {_f(s['min'])}-{_f(s['max'])} | {s['max_over_min']:.2f}")
        lines.append(f"| {fig} | " + " | ".join(cells) + " |")
    lines += ["", "## Each row's ratio to the reference", ""]
    summary = "| | " + " | ".join(names) + " |"
    lines += [summary, "|---|" + "---|" * len(names)]
    for label, fn in (("rows compared", lambda s: str(len(s))),
                      ("median of max/min", lambda s: f"{_median([x['max_over_min'] for x in s.values()]):.2f}"),
                      ("worst max/min", lambda s: f"{max(x['max_over_min'] for x in s.values()):.2f}"),
                      ("rows with max/min > 1.10", lambda s: str(sum(x['max_over_min'] > 1.10 for x in s.values())))):
        lines.append(f"| {label} | " + " | ".join(fn(g["rows"]) if g["rows"] else "-" for g in groups.values()) + " |")
    verdict_line = []
    for g in groups.values():
        changes = {k: v for k, v in g["verdict_changes"].items() if k in g["rows"]}
        verdict_line.append(f"{sum(len(v) > 1 for v in changes.values())} of {len(changes)}" if changes else "no verdicts")
    lines.append("| rows whose verdict changed between runs | " + " | ".join(verdict_line) + " |")
    lines += ["", "| row | " + " | ".join(f"{n}: values | {n}: max/min" for n in names) + " |",
              "|---|" + "---|---|" * len(names)]
    keys = list(dict.fromkeys(k for g in groups.values() for k in g["rows"]))
    worst = {k: max(g["rows"][k]["max_over_min"] for g in groups.values() if k in g["rows"]) for k in keys}
    for key in sorted(keys, key=lambda k: -worst[k]):
        cells = []
        for g in groups.values():
            s = g["rows"].get(key)
            cells.append("- | -" if s is None else f"{' '.join(_f(v) for v in s['values'])} | {s['max_over_min']:.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def run_bench(n: int, out: Path, extra: list[str]) -> list[Path]:
    folders = []
    for k in range(1, n + 1):
        folder = out / f"run{k}"
        cmd = [sys.executable, "-m", "accelkernels", "bench", "--no-progress", "--out", str(folder), *extra]
        started = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        (out / f"log{k}.txt").write_text(result.stdout + result.stderr)
        print(f"run {k}/{n}: exit {result.returncode}, {time.perf_counter() - started:.0f} s -> {folder}", file=sys.stderr)
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, help="result folders of one group")
    parser.add_argument("--group", nargs="+", action="append", metavar=("NAME", "DIR"), default=[],
                        help="a named group of result folders (repeat for a before/after comparison)")
    parser.add_argument("--run", type=int, metavar="N", help="run `accelkernels bench` N times first, into --out")
    parser.add_argument("--out", type=Path, help="where --run writes run1..runN")
    parser.add_argument("--bench-arg", action="append", default=[], help="an argument passed on to the bench (repeat)")
    parser.add_argument("--write", type=Path, help="also write the tables to this markdown file (and .json beside it)")
    args = parser.parse_args(argv)
    groups: dict[str, list[Path]] = {}
    for name, *dirs in args.group:
        if not dirs:
            parser.error(f"--group {name}: no folders")
        groups[name] = [Path(d) for d in dirs]
    if args.run:
        if not args.out:
            parser.error("--run needs --out")
        groups[str(args.out)] = run_bench(args.run, args.out, args.bench_arg)
    if args.folders:
        groups["runs"] = args.folders
    if not groups:
        parser.error("give result folders, --group NAME DIR..., or --run N --out DIR")
    analysed = {name: analyse(folders) for name, folders in groups.items()}
    text = markdown(analysed)
    print(text)
    if args.write:
        args.write.write_text(text)
        args.write.with_suffix(".json").write_text(json.dumps(analysed, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
