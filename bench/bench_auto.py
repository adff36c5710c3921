"""Is backend="auto" never slower than torch? The seed article's CNN and the ResNet-50 layers, on any machine.

``auto`` times the backends on the first call of each new problem and keeps cuBLAS/cuDNN unless a kernel
beats it by 3% (accelkernels/backends/autotune.py). This script checks the promise end to end, with a fresh
tuning table (OUT/cache: the first use is measured from scratch and the user's table is untouched):

1. First use: the wall time of the first call of each case (where the timing happens) and of the second.
2. The seed CNN (tests/references.py), torch's layers against ``accelkernels.convert`` under ``auto``:
   a training step (forward+backward) and inference, paired rounds (accelkernels.benchmark.timing).
3. Every quick ResNet-50 convolution of bench/suites/resnet50.csv, ``F.conv2d`` against
   ``accelkernels.conv2d(backend="auto")``, forward and forward+backward, paired.

Each ratio is T_torch / T_auto (above 1: auto faster) with its 99% interval. The check: every median ratio
is at least 0.98 (exit status 1 otherwise), and the decisions auto made are listed with their measured
ratios, so a row that is faster can be traced to the kernel that won. On a CPU every layer resolves to the
reference and the ratios measure the dispatch overhead only; the CPU skips layers over --cpu-max-gflop.

Usage: python bench/bench_auto.py --out DIR [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--batch N]
           [--budget SECONDS] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

NO_SLOWER = 0.98  # the bar: within 2% of torch in the same run


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def wall_ms(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def pair(name: str, reference, provider, device: str, budget: float) -> dict:
    from accelkernels.benchmark import timing

    timed = timing.paired(reference, provider, device=device, budget_s=budget)
    e = timed.estimate
    row = {"case": name, "torch_ms": timing.summary_ms(timed.reference_ms)[0],
           "auto_ms": timing.summary_ms(timed.provider_ms)[0], "ratio": e.ratio, "low": e.low, "high": e.high,
           "rounds": e.rounds, "verdict": e.verdict, "ok": e.ratio >= NO_SLOWER}
    print(f"{name}: torch {row['torch_ms']:.4g} ms, auto {row['auto_ms']:.4g} ms, ratio {timing.describe(e)}"
          f"{'' if row['ok'] else '  << slower than 0.98'}", flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json, report.md and the table")
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=128, help="seed CNN batch size")
    parser.add_argument("--budget", type=float, default=None, help="seconds per paired measurement")
    parser.add_argument("--cpu-max-gflop", type=float, default=1.0, help="skip ResNet-50 layers above this on a CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["ACCELKERNELS_AUTOTUNE"] = "1"
    os.environ["ACCELKERNELS_CACHE_DIR"] = str(args.out / "cache")

    import torch
    import torch.nn.functional as F

    import accelkernels as ak
    from accelkernels.backends import autotune
    from accelkernels.benchmark import problems, suites
    from references import seed_cnn

    autotune.forget()  # decisions of this run only (a caller's process may have made some)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_auto: no CUDA GPU visible; run with --device cpu to measure the CPU path", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = problems.DTYPES[args.dtype]
    torch.manual_seed(0)
    rows, first_use = [], []

    # --- the seed CNN, torch's layers against convert() under auto --------------------------------------------
    reference = seed_cnn().to(device)
    converted = ak.convert(copy.deepcopy(reference))
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    low = dtype if dtype != torch.float32 else None

    def step(model):
        def run():
            with torch.autocast(device, dtype=low, enabled=low is not None):
                loss = F.cross_entropy(model(x), labels)
            loss.backward()
        return run

    def infer(model):
        def run():
            with torch.no_grad(), torch.autocast(device, dtype=low, enabled=low is not None):
                model(x)
        return run

    first_use.append({"case": "seed CNN training step", "first_ms": wall_ms(step(converted), device),
                      "second_ms": wall_ms(step(converted), device)})
    first_use.append({"case": "seed CNN inference", "first_ms": wall_ms(infer(converted), device),
                      "second_ms": wall_ms(infer(converted), device)})
    rows.append(pair(f"seed CNN b{args.batch} {args.dtype} training step", step(reference), step(converted), device,
                     args.budget))
    rows.append(pair(f"seed CNN b{args.batch} {args.dtype} inference", infer(reference), infer(converted), device,
                     args.budget))

    # --- the ResNet-50 layers ---------------------------------------------------------------------------------
    for case in suites.select(["resnet50"], ["conv2d"], quick=True):
        if device == "cpu" and problems.forward_flops(case) > args.cpu_max_gflop * 1e9:
            continue
        d = case.dims
        conv = (d["stride"], d["padding"], 1, d["groups"])
        for mode in ("fwd", "fwd+bwd"):
            xs, w, b = problems.make_inputs(case, dtype, device, "nhwc", requires_grad=mode != "fwd").tensors

            def call(fn, xs=xs, w=w, b=b, mode=mode):
                if mode == "fwd":
                    return lambda: fn(xs, w, b)
                grad = torch.randn_like(fn(xs, w, b).detach())
                return lambda: torch.autograd.grad(fn(xs, w, b), (xs, w, b), grad)

            ours = call(lambda x_, w_, b_: ak.conv2d(x_, w_, b_, *conv))
            first_use.append({"case": f"{case.name} {mode}", "first_ms": wall_ms(ours, device),
                              "second_ms": wall_ms(ours, device)})
            rows.append(pair(f"{case.name} {args.dtype} nhwc {mode}", call(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *conv)),
                             ours, device, args.budget))

    decisions = [{"device": slot, "key": key, **d.entry()} for (slot, key), d in sorted(autotune.decisions().items())]
    card = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": card,
            "torch": torch.__version__, "cuda": torch.version.cuda, "accelkernels": ak.__version__,
            "dtype": args.dtype, "threads": torch.get_num_threads(), "bar": NO_SLOWER}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "first_use": first_use,
                                                       "decisions": decisions}, indent=1) + "\n")
    slower = [r for r in rows if not r["ok"]]
    lines = [f"# backend='auto' against torch: {card}", "",
             f"{meta['date']}, torch {meta['torch']} (CUDA {meta['cuda']}), accelkernels {meta['accelkernels']}, "
             f"{args.dtype}, {meta['threads']} threads. Ratio = T_torch / T_auto, median of paired rounds with its 99% "
             f"interval; the bar is {NO_SLOWER}.", "",
             f"**{len(rows) - len(slower)} of {len(rows)} cases at or above {NO_SLOWER}**"
             + (f"; below: {', '.join(r['case'] for r in slower)}" if slower else ""), "",
             "| case | torch ms | auto ms | ratio [99%] | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['torch_ms']:.4g} | {r['auto_ms']:.4g} | {r['ratio']:.3f} [{r['low']:.3f}-{r['high']:.3f}]"
              f" | {r['verdict']} |" for r in rows]
    lines += ["", "## First use (wall time of the first and the second call; the first times the backends)", "",
              "| case | first ms | second ms |", "|---|---|---|"]
    lines += [f"| {f['case']} | {f['first_ms']:.4g} | {f['second_ms']:.4g} |" for f in first_use]
    lines += ["", f"## Decisions ({len(decisions)})", ""]
    lines += [f"- `{d['key']}` on {d['device']}: {autotune.Decision.from_entry(d).describe()}" for d in decisions] \
        or ["- none: no kernel backend could serve these calls here, so nothing was timed"]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
    return 1 if slower else 0


if __name__ == "__main__":
    raise SystemExit(main())
