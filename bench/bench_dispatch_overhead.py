"""What the reference path costs: accelkernels' dispatch on top of torch's own ops, on any machine.

Two measurements, written to OUT/results.json and OUT/report.md:

1. The seed article's CIFAR-10 CNN at batch 32, forward pass, torch's layers vs the same model after
   ``accelkernels.convert`` (reference backend), in interleaved runs; the ratio of medians. The goal
   (issue 2): converted within 5% of unconverted.
2. The per-call overhead of a tiny conv2d (1x1x4x4 input, 1x1x1x1 weight: the work is negligible),
   ``accelkernels.conv2d`` minus ``F.conv2d``, in microseconds.

Usage: python bench/bench_dispatch_overhead.py --out DIR [--device cpu|cuda] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from references import seed_cnn  # noqa: E402  (benchmarks take their references from the tests)

import accelkernels as ak  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_per_call(fn, iters: int, device: str) -> float:
    """Seconds per call, averaged over ``iters`` back-to-back calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def interleaved(fns: dict, repeats: int, iters: int, device: str) -> dict[str, list[float]]:
    """Alternate the candidates so drifts (clock, cache, other load) hit them alike."""
    for fn in fns.values():  # warm-up
        time_per_call(fn, max(1, iters // 2), device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(repeats):
        order = list(fns.items()) if rep % 2 == 0 else list(reversed(fns.items()))
        for name, fn in order:
            samples[name].append(time_per_call(fn, iters, device))
    return samples


def summarize(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=10)
    return {"median_ms": statistics.median(samples) * 1e3, "p20_ms": qs[1] * 1e3, "p80_ms": qs[7] * 1e3}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json and report.md")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=31, help="interleaved repetitions (medians over these)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    args = parser.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    reference = seed_cnn().to(device).eval()
    converted = ak.convert(copy.deepcopy(reference)).eval()
    x = torch.randn(32, 3, 32, 32, device=device)
    torch.testing.assert_close(converted(x), reference(x), rtol=0, atol=0)  # correct first

    rows = []
    for mode, ctx in (("inference (no_grad)", torch.no_grad), ("forward with autograd", torch.enable_grad)):
        with ctx():
            samples = interleaved({"torch": lambda: reference(x), "accelkernels": lambda: converted(x)},
                                  args.repeats, iters=5, device=device)
        t, a = summarize(samples["torch"]), summarize(samples["accelkernels"])
        # Each repetition times both models back to back, so the per-repetition ratio cancels the
        # drifts of a shared 2-core machine; its median is the headline (the p20-p80 of the ratios
        # shows how far to trust it).
        ratios = [x / y for x, y in zip(samples["accelkernels"], samples["torch"])]
        q = statistics.quantiles(ratios, n=10)
        rows.append({"case": f"seed CNN, batch 32, {mode}", "torch": t, "accelkernels": a,
                     "ratio": statistics.median(ratios), "ratio_p20": q[1], "ratio_p80": q[7]})
        print(f"{rows[-1]['case']}: torch {t['median_ms']:.3f} ms, converted {a['median_ms']:.3f} ms, "
              f"paired ratio {rows[-1]['ratio']:.3f} [{q[1]:.3f}-{q[7]:.3f}]", flush=True)

    tiny_x, tiny_w = torch.randn(1, 1, 4, 4, device=device), torch.randn(1, 1, 1, 1, device=device)
    with torch.no_grad():
        samples = interleaved({"torch": lambda: F.conv2d(tiny_x, tiny_w), "accelkernels": lambda: ak.conv2d(tiny_x, tiny_w)},
                              args.repeats, iters=200, device=device)
    t, a = summarize(samples["torch"]), summarize(samples["accelkernels"])
    overhead_us = (a["median_ms"] - t["median_ms"]) * 1e3
    print(f"tiny conv2d: torch {t['median_ms'] * 1e3:.1f} us, accelkernels {a['median_ms'] * 1e3:.1f} us, "
          f"dispatch overhead {overhead_us:.1f} us per call", flush=True)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "repeats": args.repeats,
    }
    result = {"meta": meta, "cnn": rows,
              "tiny_conv2d": {"torch": t, "accelkernels": a, "overhead_us": overhead_us}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Reference-path overhead (bench/bench_dispatch_overhead.py)",
        "",
        f"{meta['device']}, torch threads: {meta['threads']}, torch {meta['torch']}, commit {meta['commit']}, {meta['date']}; "
        f"medians of {args.repeats} interleaved runs (p20-p80 in brackets).",
        "",
        "| case | torch ms | accelkernels ms | ratio (paired, median [p20-p80]) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['torch']['median_ms']:.3f} [{r['torch']['p20_ms']:.3f}-{r['torch']['p80_ms']:.3f}] "
                     f"| {r['accelkernels']['median_ms']:.3f} [{r['accelkernels']['p20_ms']:.3f}-{r['accelkernels']['p80_ms']:.3f}] "
                     f"| {r['ratio']:.3f} [{r['ratio_p20']:.3f}-{r['ratio_p80']:.3f}] |")
    lines += ["", f"Tiny conv2d (1x1x4x4 input, 1x1 kernel): torch {t['median_ms'] * 1e3:.1f} us, accelkernels {a['median_ms'] * 1e3:.1f} us "
              f"per call: **{overhead_us:.1f} us dispatch overhead**.", ""]
    (args.out / "report.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
