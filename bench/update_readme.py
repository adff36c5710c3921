"""Regenerate the README's performance section from the newest GPU run on record.

A run on record is a folder bench/results/<date>-<card>/ written by `accelkernels bench --out`
(results.json + meta.json) on a GPU machine. The section between the markers
<!-- performance:begin --> and <!-- performance:end --> is replaced; nothing else is touched.

Usage: python bench/update_readme.py [--results bench/results] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the geomean's interval is the bench's own (accelkernels.benchmark.timing)
BEGIN, END = "<!-- performance:begin -->", "<!-- performance:end -->"


def newest_gpu_run(results_dir: Path) -> Path | None:
    runs = []
    for folder in results_dir.iterdir() if results_dir.is_dir() else []:
        meta_file = folder / "meta.json"
        if meta_file.is_file() and (folder / "results.json").is_file():
            meta = json.loads(meta_file.read_text())
            if not meta.get("no_gpu"):
                runs.append((meta.get("timestamp", ""), folder))
    return max(runs)[1] if runs else None


def _cell(est) -> str:
    if est.low != est.low:  # nan: rows of the old format carry no per-round ratios
        return f"{est.ratio:.3f} | no interval"
    return f"{est.ratio:.3f} [{est.low:.3f}-{est.high:.3f}] | {est.verdict}"


def section(run: Path | None, root: Path) -> str:
    if run is None:
        return ("No GPU run is on record yet: `bash bench/gpu_check.sh OUT_DIR` on a GPU machine produces one; commit it "
                "under `bench/results/<date>-<card>/` and rerun `python bench/update_readme.py`.")
    meta = json.loads((run / "meta.json").read_text())
    rows = json.loads((run / "results.json").read_text())
    lines = [
        f"From [{run.relative_to(root)}]({run.relative_to(root)}/report.md): **{meta['device']}** "
        f"(sm {meta['capability']}), torch {meta['torch']}, CUDA {meta['cuda']}, Triton {meta['triton']}, "
        f"commit {meta['commit']}, {meta['timestamp']}. Speedup = T_cuBLAS/cuDNN ÷ T_ours, timed in alternating "
        "rounds in the same run (geometric mean over the suite's cases of each case's median round ratio, with a "
        "99% bootstrap interval; >1 is faster than the reference, \"no difference\" when the interval contains 1). "
        "*(same path)*: `auto` ran the reference itself there (the ratio is dispatch overhead).",
        "",
        "| suite | mode | dtype | provider | speedup (geomean) [99%] | verdict | cases |",
        "|---|---|---|---|---|---|---|",
    ]
    from accelkernels.benchmark import timing

    groups: dict[tuple, list[list[float]]] = defaultdict(list)
    same: dict[tuple, int] = defaultdict(int)
    for r in rows:
        if r["status"] == "ok" and r["provider"] != "torch" and r.get("speedup"):
            key = (r["suite"], r["mode"], r["dtype"], r["provider"])
            groups[key].append(r.get("round_ratios") or [r["speedup"]])
            same[key] += bool(r.get("same_path"))
    for key, per_case in sorted(groups.items()):
        suite, mode, dtype, provider = key
        provider += " (same path)" if same[key] == len(per_case) else ""
        lines.append(f"| {suite} | {mode} | {dtype} | {provider} | {_cell(timing.geomean_interval(per_case))} "
                     f"| {len(per_case)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"{args.readme}: markers {BEGIN} / {END} not found", file=sys.stderr)
        return 1
    run = newest_gpu_run(args.results)
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{BEGIN}\n{section(run, args.readme.parent)}\n{END}{tail}")
    print(f"updated {args.readme} from {run or 'no GPU run on record'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
