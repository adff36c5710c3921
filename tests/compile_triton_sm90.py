"""Compile every autotuner-selectable config of the Triton GEMM kernels for sm_90; print JSON.

Run by tests/test_triton_compile.py in a fresh process (no TRITON_INTERPRET), two compiles at a time.
"""

import json
import sys
from concurrent.futures import ProcessPoolExecutor

DTYPE_SIZES = {"fp16": 2, "bf16": 2, "fp32": 4}


def jobs():
    from accelkernels.triton_kernels import matmul as mm

    for kernel in ("tiled", "persistent", "tma"):
        for dtype in ("bf16", "fp16", "fp32") if kernel == "tiled" else ("bf16",):
            configs = mm.TMA_CONFIGS if kernel == "tma" else mm.CONFIGS
            for cfg in mm.configs_for(DTYPE_SIZES[dtype], configs):
                yield kernel, dtype, configs.index(cfg)


def compile_one(job):
    from accelkernels.triton_kernels import compile_check
    from accelkernels.triton_kernels import matmul as mm

    kernel, dtype, index = job
    cfg = (mm.TMA_CONFIGS if kernel == "tma" else mm.CONFIGS)[index]
    constexprs = dict(cfg.kwargs, HAS_BIAS=True, ACTIVATION="gelu", UPCAST_OPERANDS=False,
                      INPUT_PRECISION="ieee")
    fn, types = mm.matmul_tiled_kernel, None
    if kernel == "persistent":
        fn, constexprs["NUM_PROGRAMS"] = mm.matmul_persistent_kernel, 132
    if kernel == "tma":  # a linear layer's case: B is the weight read K-contiguous
        fn, constexprs["NUM_PROGRAMS"], constexprs["B_K_CONTIGUOUS"] = mm.matmul_tma_kernel, 132, True
        bm, bn, bk = (cfg.kwargs[x] for x in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
        types = {"a_desc": f"tensordesc<{dtype}[1, {bm}, {bk}]>", "b_desc": f"tensordesc<{dtype}[1, {bn}, {bk}]>",
                 "c_desc": f"tensordesc<{dtype}[1, {bm}, {bn}]>"}
    try:
        ptx = compile_check.compile_config(fn, constexprs, dtype, cfg.num_warps, cfg.num_stages, types=types)
    except Exception as exc:
        return {"job": job, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"job": job, "ok": True, "wgmma": "wgmma" in ptx, "mma_sync": "mma.sync" in ptx,
            "tma": "cp.async.bulk.tensor" in ptx}


if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=int(sys.argv[1]) if len(sys.argv) > 1 else 2) as pool:
        print(json.dumps(list(pool.map(compile_one, list(jobs())))))
