"""The Hopper GEMM ladder against cuBLAS, and its fused epilogue against cuBLAS + a separate GELU.

Issue 18's speed goals for the wgmma kernels, measured on one card in one run (paired rounds,
accelkernels.benchmark.timing; each ratio T_reference / T_kernel with its 99% interval, above 1 = ours
faster). Every case runs as a linear layer, y = x Wᵀ: W (N x K) is K-contiguous, as the wgmma kernels
read B, and cuBLAS gets the same layout through F.linear.

1. GEMM: ``torch.ops.accelkernels.cuda_bmm(x, Wᵀ, None, "none", kernel)`` for each kernel of the ladder
   (``wgmma``, ``wgmma_v2``, ``wgmma_cluster``) against ``F.linear(x, W)`` (cuBLAS): 8192³ and the LLM shapes with M >= 256
   (bench/suites/gemm_square.csv, gemm_llm.csv).
2. Fused epilogue: ``cuda_bmm(x, Wᵀ, b, "gelu", kernel)`` against ``F.gelu(F.linear(x, W, b))`` (cuBLAS with
   its bias, then a separate GELU pass) on bench/suites/linear_fused.csv and the same LLM shapes.
3. The bound, per fused case: the roofline of the GEMM and of the separate pass (read and write C) on the
   card's ceilings measured in this run (accelkernels.benchmark.ceilings.measure), their ratio ``share``,
   and the best a fused GEMM can gain, 1 + share; next to it the measured share T_gelu / T_linear.

Goals (the issue's; exit status 1 when one is missed, each row says which it is held to). They apply to
the kernel ``backend="cuda"`` runs for the shape (accelkernels.backends.cuda_gemm.gemm_kernel_for: the
newest step that serves); the other steps are timed for the ladder, with no goal:
  - bf16 8192³: >= 0.95 of cuBLAS (stretch goal 1.0);
  - LLM shapes with M >= 256: >= 0.9;
  - fused: never slower than cuBLAS + GELU (median >= 1.0) on any case, and >= 1.15 where the separate
    pass costs a fifth or more of the GEMM (measured share >= 0.2).

Usage: python bench/bench_hopper_gemm.py --out DIR [--dtype bf16|fp16] [--quick] [--budget SECONDS]
Needs a compute capability 9.0 GPU and an extension built with sm_90a code; elsewhere it writes why
into OUT/results.json and exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hopper_bench  # (beside this file)

KERNELS = ("wgmma", "wgmma_v2", "wgmma_cluster")  # the Hopper ladder, in order
GOAL_SQUARE, STRETCH_SQUARE, GOAL_LLM = 0.95, 1.0, 0.9
GOAL_FUSED, GOAL_FUSED_LARGE_PASS, LARGE_PASS_SHARE = 1.0, 1.15, 0.2


def cases(quick: bool):
    from accelkernels.benchmark import suites

    square = [c for c in suites.load_suite("gemm_square") if c.dims["m"] == 8192]
    llm = [c for c in suites.load_suite("gemm_llm") if c.dims["m"] >= 256 and (c.quick or not quick)]
    fused = [c for c in suites.load_suite("linear_fused") if c.quick or not quick]
    return square, llm, fused


def main(argv=None) -> int:
    args = hopper_bench.parse_args(__doc__, argv, "the suites' quick rows only (gpu_check.sh)")

    import torch
    import torch.nn.functional as F

    import accelkernels  # noqa: F401  (registers the ops)
    from accelkernels.backends.cuda_gemm import gemm_kernel_for
    from accelkernels.benchmark import ceilings, problems, timing

    meta = hopper_bench.start(args, "bench_hopper_gemm")
    if meta is None:
        return 2
    dtype = problems.DTYPES[args.dtype]
    card = ceilings.measure("cuda")
    meta["ceilings"] = card
    torch.manual_seed(0)
    bmm = torch.ops.accelkernels.cuda_bmm
    rows: list[dict] = []

    def measure(kind: str, case, kernel: str, reference, ours, goal: float, **extra) -> None:
        timed = timing.paired(reference, ours, device="cuda", budget_s=args.budget)
        e = timed.estimate
        row = {"kind": kind, "case": case.name, "kernel": kernel, "reference_ms": timing.summary_ms(timed.reference_ms)[0],
               "kernel_ms": timing.summary_ms(timed.provider_ms)[0], "ratio": e.ratio, "low": e.low, "high": e.high,
               "rounds": e.rounds, "goal": goal, "ok": e.ratio >= goal, **extra}
        rows.append(row)
        print(f"{kind:6} {case.name:28} {kernel:9} ratio {timing.describe(e):28} goal {goal:.2f}"
              f"{'' if row['ok'] else '  << missed'}", flush=True)

    square, llm, fused = cases(args.quick)
    for group, goal in ((square, GOAL_SQUARE), (llm, GOAL_LLM)):
        for case in group:
            d = case.dims
            x = torch.randn(d["m"], d["k"], device="cuda", dtype=dtype)
            w = torch.randn(d["n"], d["k"], device="cuda", dtype=dtype) / d["k"] ** 0.5
            chosen = gemm_kernel_for(x[None], w.t()[None])
            for kernel in KERNELS:
                measure("gemm", case, kernel, lambda x=x, w=w: F.linear(x, w),
                        lambda x=x, w=w, kernel=kernel: bmm(x[None], w.t()[None], None, "none", kernel),
                        goal if kernel == chosen else 0.0, chosen=kernel == chosen,
                        stretch=STRETCH_SQUARE if group is square else None)
    for case in fused + [c for c in llm if c.name.startswith("M=4096")]:
        d = case.dims
        x = torch.randn(d["m"], d["k"], device="cuda", dtype=dtype)
        w = torch.randn(d["n"], d["k"], device="cuda", dtype=dtype) / d["k"] ** 0.5
        b = torch.randn(d["n"], device="cuda", dtype=dtype)
        y = F.linear(x, w, b)
        gelu_ms = timing.summary_ms(timing.solo(lambda y=y: F.gelu(y), device="cuda"))[0]
        linear_ms = timing.summary_ms(timing.solo(lambda x=x, w=w, b=b: F.linear(x, w, b), device="cuda"))[0]
        bound = problems.separate_pass_bound(case, dtype, card["tflops"][args.dtype], card["tbps"])
        share = gelu_ms / linear_ms
        chosen = gemm_kernel_for(x[None], w.t()[None])
        for kernel in KERNELS:
            goal = GOAL_FUSED_LARGE_PASS if share >= LARGE_PASS_SHARE else GOAL_FUSED
            measure("fused", case, kernel, lambda x=x, w=w, b=b: F.gelu(F.linear(x, w, b)),
                    lambda x=x, w=w, b=b, kernel=kernel: bmm(x[None], w.t()[None], b, "gelu", kernel),
                    goal if kernel == chosen else 0.0, chosen=kernel == chosen, measured_share=share, gelu_ms=gelu_ms,
                    linear_ms=linear_ms, **{f"bound_{k}": v for k, v in bound.items()})

    missed = [r for r in rows if not r["ok"]]
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Hopper GEMM ladder vs cuBLAS — {meta['device']}, {args.dtype}, {meta['date']}", "",
             (f"torch {meta['torch']}; ceilings: {card['source']} ({card['tflops'][args.dtype]:.0f} TFLOP/s, "
              f"{card['tbps']:.2f} TB/s). Ratio = T_cuBLAS / T_kernel (fused: T_(cuBLAS + GELU) / T_kernel), "
              "median [99% interval]; goals apply to the kernel backend=\"cuda\" runs for the shape (marked *), the "
              "other steps are shown for the ladder."), "",
             "| kind | case | kernel | reference ms | kernel ms | ratio | goal | pass share measured / roofline | fused bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = f"{r['measured_share']:.2f} / {r['bound_share']:.2f}" if r["kind"] == "fused" else ""
        bound = f"{r['bound_fused_bound']:.2f}" if r["kind"] == "fused" else ""
        lines.append(f"| {r['kind']} | {r['case']} | {r['kernel']}{' *' if r['chosen'] else ''} | {r['reference_ms']:.4g} | {r['kernel_ms']:.4g} | "
                     f"{r['ratio']:.3g} [{r['low']:.3g}-{r['high']:.3g}] | {r['goal']:.2f} | {share} | {bound} |")
    return hopper_bench.finish(args, lines, missed)


if __name__ == "__main__":
    sys.exit(main())
