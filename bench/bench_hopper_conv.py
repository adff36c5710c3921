"""The Hopper convolutions (conv2d_wgmma.cu: im2col TMA + wgmma) against cuDNN, forward, fused and backward.

Issue 19's speed goals, measured on one card in one run (paired rounds, accelkernels.benchmark.timing; each
ratio T_cuDNN / T_ours with its 99% interval, above 1 = ours faster). cuDNN runs channels_last with
``torch.backends.cudnn.benchmark = True`` (its best algorithm per shape, picked before timing); ours reads the
same channels_last tensors, so no layout change is timed on either side (but in the NCHW rows of 1).

1. Forward: ``cuda_conv2d(x, w, None, ..., "none", "wgmma")`` against ``F.conv2d(x, w)`` on the ResNet-50 3x3
   layers at batch 128 (bench/suites/resnet50.csv, the b128 rows).
   The same layers with NCHW tensors are shown too (no goal): ours then converts x to channels_last and y back,
   and those copies are in its time; cuDNN runs NCHW.
2. Fused: ``cuda_conv2d(x, w, b, ..., "relu", "wgmma")`` against cuDNN's convolution followed by a separate
   bias add and ReLU (``F.relu(F.conv2d(x, w) + b)``), bench/suites/conv_fused.csv.
3. Backward: our input gradient and weight gradient (both ``wgmma``: the stride-phase transposed GEMM, and the
   MN-major split-K GEMM with its reduction) against ``aten.convolution_backward`` for both, on the layers of 1;
   each gradient alone is shown too (no goal).

Goals (the issue's; exit status 1 when one is missed):
  - forward, ResNet-50 3x3 layers at batch 128: geometric mean of the ratios >= 0.9 (stretch goal 1.0);
  - fused conv + bias + ReLU: >= 1.15 on every case;
  - backward (both gradients): >= 0.8 on every layer.

Usage: python bench/bench_hopper_conv.py --out DIR [--dtype bf16|fp16] [--budget SECONDS]
Needs a compute capability 9.0 GPU and an extension built with sm_90a code; elsewhere it writes why into
OUT/results.json and exits with status 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hopper_bench  # (beside this file)

GOAL_FORWARD_GEOMEAN, STRETCH_FORWARD, GOAL_FUSED, GOAL_BACKWARD = 0.9, 1.0, 1.15, 0.8


def layers():
    """The ResNet-50 3x3 layers at batch 128, and the fused cases."""
    from accelkernels.benchmark import suites

    resnet = [c for c in suites.load_suite("resnet50") if c.dims["kernel_h"] == 3 and c.dims["batch"] == 128]
    return resnet, suites.load_suite("conv_fused")


def main(argv=None) -> int:
    args = hopper_bench.parse_args(__doc__, argv, "accepted for gpu_check.sh (the suites are small)")

    import torch
    import torch.nn.functional as F

    import accelkernels  # noqa: F401  (registers the ops)
    from accelkernels.benchmark import problems, timing

    meta = hopper_bench.start(args, "bench_hopper_conv")
    if meta is None:
        return 2
    torch.backends.cudnn.benchmark = True
    meta["cudnn"] = torch.backends.cudnn.version()
    dtype = problems.DTYPES[args.dtype]
    torch.manual_seed(0)
    ops = torch.ops.accelkernels
    rows: list[dict] = []

    def measure(kind: str, case, reference, ours, goal: float | None) -> dict:
        timed = timing.paired(reference, ours, device="cuda", budget_s=args.budget)
        e = timed.estimate
        row = {"kind": kind, "case": case.name, "reference_ms": timing.summary_ms(timed.reference_ms)[0],
               "kernel_ms": timing.summary_ms(timed.provider_ms)[0], "ratio": e.ratio, "low": e.low, "high": e.high,
               "rounds": e.rounds, "goal": goal, "ok": goal is None or e.ratio >= goal}
        rows.append(row)
        print(f"{kind:9} {case.name:28} ratio {timing.describe(e):28}"
              f"{'' if goal is None else f' goal {goal:.2f}'}{'' if row['ok'] else '  << missed'}", flush=True)
        return row

    def operands(case, bias: bool):
        d = case.dims
        x = torch.randn(d["batch"], d["in_ch"], d["height"], d["width"], device="cuda", dtype=dtype)
        w = torch.randn(d["out_ch"], d["in_ch"] // d["groups"], d["kernel_h"], d["kernel_w"], device="cuda",
                        dtype=dtype) / (d["in_ch"] * d["kernel_h"] * d["kernel_w"]) ** 0.5
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
        b = torch.randn(d["out_ch"], device="cuda", dtype=dtype) if bias else None
        return x, w, b, [d["stride"]] * 2, [d["padding"]] * 2, [1, 1], d["groups"]

    resnet, fused = layers()
    forward_rows = []
    for case in resnet:
        x, w, _, st, pad, dil, g = operands(case, bias=False)
        forward_rows.append(measure("forward", case, lambda x=x, w=w, st=st, pad=pad, g=g: F.conv2d(x, w, None, st, pad, 1, g),
                                    lambda x=x, w=w, st=st, pad=pad, dil=dil, g=g: ops.cuda_conv2d(
                                        x, w, None, st, pad, dil, g, "none", "wgmma", True), None))
        # NCHW in and out: ours converts x to channels_last and y back (both copies timed), cuDNN runs NCHW
        xn, wn = x.contiguous(), w.contiguous()
        measure("nchw", case, lambda x=xn, w=wn, st=st, pad=pad, g=g: F.conv2d(x, w, None, st, pad, 1, g),
                lambda x=xn, w=wn, st=st, pad=pad, dil=dil, g=g: ops.cuda_conv2d(
                    x, w, None, st, pad, dil, g, "none", "wgmma", False), None)
    for case in fused:
        x, w, b, st, pad, dil, g = operands(case, bias=True)
        bias4 = b.view(1, -1, 1, 1)
        measure("fused", case, lambda x=x, w=w, b=bias4, st=st, pad=pad, g=g: F.relu(F.conv2d(x, w, None, st, pad, 1, g) + b),
                lambda x=x, w=w, b=b, st=st, pad=pad, dil=dil, g=g, act=case.activation or "relu": ops.cuda_conv2d(
                    x, w, b, st, pad, dil, g, act, "wgmma", True), GOAL_FUSED)
    for case in resnet:
        x, w, _, st, pad, dil, g = operands(case, bias=False)
        dy = F.conv2d(x, w, None, st, pad, 1, g).contiguous(memory_format=torch.channels_last)

        def reference(x=x, w=w, dy=dy, st=st, pad=pad, g=g, mask=(True, True, False)):
            return torch.ops.aten.convolution_backward(dy, x, w, None, st, pad, [1, 1], False, [0, 0], g, list(mask))

        def ours(x=x, w=w, dy=dy, st=st, pad=pad, dil=dil, g=g):
            return (ops.cuda_conv2d_input_grad(dy, w, list(x.shape), st, pad, dil, g, "wgmma", True),
                    ops.cuda_conv2d_weight_grad(dy, x, list(w.shape), st, pad, dil, g, "wgmma", True))

        measure("backward", case, reference, ours, GOAL_BACKWARD)
        measure("dx", case, lambda r=reference: r(mask=(True, False, False)),
                lambda x=x, w=w, dy=dy, st=st, pad=pad, dil=dil, g=g: ops.cuda_conv2d_input_grad(
                    dy, w, list(x.shape), st, pad, dil, g, "wgmma", True), None)
        measure("dw", case, lambda r=reference: r(mask=(False, True, False)),
                lambda x=x, w=w, dy=dy, st=st, pad=pad, dil=dil, g=g: ops.cuda_conv2d_weight_grad(
                    dy, x, list(w.shape), st, pad, dil, g, "wgmma", True), None)

    geomean = math.exp(sum(math.log(r["ratio"]) for r in forward_rows) / len(forward_rows))
    forward_ok = geomean >= GOAL_FORWARD_GEOMEAN
    missed = [r for r in rows if not r["ok"]] + ([] if forward_ok else [{"forward geomean": geomean}])
    summary = {"forward_geomean": geomean, "goal": GOAL_FORWARD_GEOMEAN, "stretch": STRETCH_FORWARD, "ok": forward_ok}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "forward": summary}, indent=1))
    lines = [f"# Hopper convolutions vs cuDNN — {meta['device']}, {args.dtype}, {meta['date']}", "",
             (f"torch {meta['torch']}, cuDNN {meta['cudnn']} (channels_last, benchmark=True). Ratio = T_cuDNN / "
              "T_ours (fused: T_(cuDNN + bias + ReLU) / T_ours; backward: both gradients), median [99% interval]."), "",
             (f"Forward geomean over the ResNet-50 3x3 layers at batch 128: {geomean:.3g} (goal {GOAL_FORWARD_GEOMEAN}, "
              f"stretch {STRETCH_FORWARD})."), "",
             "| kind | case | cuDNN ms | ours ms | ratio | goal |", "|---|---|---|---|---|---|"]
    for r in rows:
        goal = "" if r["goal"] is None else f"{r['goal']:.2f}"
        lines.append(f"| {r['kind']} | {r['case']} | {r['reference_ms']:.4g} | {r['kernel_ms']:.4g} | "
                     f"{r['ratio']:.3g} [{r['low']:.3g}-{r['high']:.3g}] | {goal} |")
    return hopper_bench.finish(args, lines, missed)


if __name__ == "__main__":
    sys.exit(main())
