"""Compile every autotuner-selectable config of the Triton GEMM and conv2d kernels for sm_90; print JSON.

Run by tests/test_triton_compile.py in a fresh process (no TRITON_INTERPRET), two compiles at a time.
A job is (family, kernel, dtype, config index): family "gemm" (triton_kernels/matmul.py) or "conv"
(triton_kernels/conv2d*.py; the index is -1 for the depthwise kernels, which have one config).
"""

import json
import sys
from concurrent.futures import ProcessPoolExecutor

DTYPE_SIZES = {"fp16": 2, "bf16": 2, "fp32": 4}
# The conv kernels are compiled for the fast path's layout, NHWC (channels_last) tensors, as a launch
# on the GPU would specialize them: unit channel strides, the other strides and the channel counts
# multiples of 16 (ResNet-50's are). That is the code whose loads should become cp.async.
CONV_UNIT_STRIDES = {"fwd": ("sxc", "swc", "syk"), "dgrad": ("sdyk", "swc", "sdxc"), "wgrad": ("sdyk", "sxc")}


def jobs():
    from accelkernels.triton_kernels import conv2d as cv
    from accelkernels.triton_kernels import matmul as mm

    for kernel in ("tiled", "persistent", "tma"):
        for dtype in ("bf16", "fp16", "fp32") if kernel == "tiled" else ("bf16",):
            configs = mm.TMA_CONFIGS if kernel == "tma" else mm.CONFIGS
            for cfg in mm.configs_for(DTYPE_SIZES[dtype], configs):
                yield "gemm", kernel, dtype, configs.index(cfg)
    for kernel in ("fwd", "dgrad", "wgrad"):
        for dtype in ("bf16", "fp16", "fp32") if kernel == "fwd" else ("bf16", "fp32"):
            for index, cfg in enumerate(cv.CONFIGS):
                # fp32 dgrad/wgrad: the fixed config stands for the rest (the forward covers fp32 fully)
                if dtype == "fp32" and kernel != "fwd" and cfg is not cv.FIXED_CONFIG:
                    continue
                if cv._fits(cfg, DTYPE_SIZES[dtype], 1 << 20, 1 << 20):
                    yield "conv", kernel, dtype, index
    for kernel in ("depthwise_fwd", "depthwise_dgrad", "depthwise_wgrad"):
        yield "conv", kernel, "bf16", -1


def _gemm(kernel, dtype, index):
    from accelkernels.triton_kernels import compile_check
    from accelkernels.triton_kernels import matmul as mm

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
    return compile_check.compile_config(fn, constexprs, dtype, cfg.num_warps, cfg.num_stages, types=types)


def _conv(kernel, dtype, index):
    from accelkernels.triton_kernels import compile_check
    from accelkernels.triton_kernels import conv2d as cv

    if kernel.startswith("depthwise"):
        fn = {"depthwise_fwd": cv.depthwise_fwd_kernel, "depthwise_dgrad": cv.depthwise_dgrad_kernel,
              "depthwise_wgrad": cv.depthwise_wgrad_kernel}[kernel]
        constexprs = dict(BLOCK_M=cv.DEPTHWISE_BLOCK_M, BLOCK_C=cv.DEPTHWISE_BLOCK_C)
        if kernel == "depthwise_fwd":
            constexprs.update(HAS_BIAS=True, ACTIVATION="silu")
        return compile_check.compile_config(fn, constexprs, dtype, cv.DEPTHWISE_WARPS, 1)
    cfg = cv.CONFIGS[index]
    fn = {"fwd": cv.conv2d_fwd_kernel, "dgrad": cv.conv2d_dgrad_kernel, "wgrad": cv.conv2d_wgrad_kernel}[kernel]
    constexprs = dict(cfg.kwargs, INPUT_PRECISION="ieee", UPCAST_OPERANDS=False)
    if kernel == "fwd":
        constexprs.update(HAS_BIAS=True, ACTIVATION="gelu")
    constexprs.update({name: 1 for name in CONV_UNIT_STRIDES[kernel]})
    divisible = tuple(name for name in fn.arg_names if name not in constexprs and (
        name.endswith("_ptr") or name in ("CG", "KG") or (name.startswith("s") and name[1:2] in "xwdy")))
    return compile_check.compile_config(fn, constexprs, dtype, cfg.num_warps, cfg.num_stages, divisible=divisible)


def compile_one(job):
    family, kernel, dtype, index = job
    try:
        ptx = (_gemm if family == "gemm" else _conv)(kernel, dtype, index)
    except Exception as exc:
        return {"job": job, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"job": job, "ok": True, "wgmma": "wgmma" in ptx, "mma_sync": "mma.sync" in ptx,
            "tma": "cp.async.bulk.tensor" in ptx, "cp_async": "cp.async.cg" in ptx or "cp.async.ca" in ptx}


if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=int(sys.argv[1]) if len(sys.argv) > 1 else 2) as pool:
        print(json.dumps(list(pool.map(compile_one, list(jobs())))))
