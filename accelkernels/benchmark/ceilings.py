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


def measure(device: str) -> dict:
    """Copy bandwidth (a large device-to-device copy) and a large matmul's rate, on this machine."""
    from .timing import time_call

    if device == "cuda":
        n_bytes, mm_size, dtypes = 1 << 30, 8192, {"bf16": torch.bfloat16, "fp32": torch.float32}
    else:
        n_bytes, mm_size, dtypes = 1 << 26, 1024, {"fp32": torch.float32}
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = time_call(lambda: dst.copy_(src), device, graphable=False)[0][0]
    tflops = {}
    for name, dtype in dtypes.items():
        a = torch.randn(mm_size, mm_size, device=device, dtype=dtype)
        b = torch.randn(mm_size, mm_size, device=device, dtype=dtype)
        mm_ms = time_call(lambda a=a, b=b: torch.mm(a, b), device, graphable=False)[0][0]
        tflops[name] = 2 * mm_size**3 / (mm_ms * 1e-3) / 1e12
    if "bf16" in tflops:
        tflops["fp16"] = tflops["bf16"]  # same tensor-core rate on Hopper; not measured separately
    return {
        "source": f"measured: {n_bytes >> 20} MiB copy, {mm_size}^3 torch.mm",
        "tbps": 2 * n_bytes / (copy_ms * 1e-3) / 1e12,  # read + write
        "tflops": tflops,
    }
