"""The card's ceilings, measured (``accelkernels bench --ceilings``) or, failing that, the datasheet.

The roofline and "% of peak" use these. Datasheet figures are from ../shared/PERFORMANCE.md (H100
SXM / H200): dense bf16/fp16 989 TFLOP/s, TF32 495, FP32 SIMT 67; HBM 3.35 TB/s (H100), 4.8 (H200).
"""

from __future__ import annotations

import torch

DATASHEET = {
    "H100": {"tflops": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0, "tf32": 495.0}, "tbps": 3.35},
    "H200": {"tflops": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0, "tf32": 495.0}, "tbps": 4.8},
}


def datasheet(device_name: str) -> dict | None:
    for key, value in DATASHEET.items():
        if key in device_name:
            return {"source": f"datasheet ({key})", **value}
    return None


def _best_cpu_ms(fn) -> float:
    """The fastest per-call time over ~0.3 s of 2 ms samples: a ceiling is what the machine can
    reach, and other processes on a shared host only ever slow a sample down."""
    from .timing import CPU_BUDGET_S, solo

    return min(solo(fn, device="cpu", budget_s=2 * CPU_BUDGET_S, min_samples=5))


def measure(device: str) -> dict:
    """Copy bandwidth (a large device-to-device copy) and a large matmul's rate, on this machine.
    GPU: do_bench medians (8192^3 bf16 and fp32, 1 GiB copy). CPU: the fastest sample (64 MiB copy,
    1024^3 fp32 mm)."""
    from .timing import time_call

    if device == "cuda":
        n_bytes, mm_size, dtypes = 1 << 30, 8192, {"bf16": torch.bfloat16, "fp32": torch.float32}

        def time_ms(fn):
            return time_call(fn, device, graphable=False)[0][0]
    else:
        n_bytes, mm_size, dtypes = 1 << 26, 1024, {"fp32": torch.float32}
        time_ms = _best_cpu_ms
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = time_ms(lambda: dst.copy_(src))
    tflops = {}
    for name, dtype in dtypes.items():
        a = torch.randn(mm_size, mm_size, device=device, dtype=dtype)
        b = torch.randn(mm_size, mm_size, device=device, dtype=dtype)
        mm_ms = time_ms(lambda a=a, b=b: torch.mm(a, b))
        tflops[name] = 2 * mm_size**3 / (mm_ms * 1e-3) / 1e12
    if "bf16" in tflops:
        tflops["fp16"] = tflops["bf16"]  # same tensor-core rate on Hopper; not measured separately
    how = "do_bench median" if device == "cuda" else "fastest sample"
    return {
        "source": f"measured on this machine: {n_bytes >> 20} MiB copy, {mm_size}^3 torch.mm, {how}",
        "tbps": 2 * n_bytes / (copy_ms * 1e-3) / 1e12,  # read + write
        "tflops": tflops,
    }
