"""Without a GPU: every Triton GEMM and conv2d configuration the autotuner can pick compiles for
sm_90, and the fp16/bf16 kernels use wgmma (Hopper's tensor-core instruction) — except the skinny
GEMM configs (BLOCK_M < 64, for a handful of tokens), which Triton lowers to mma.sync: measured, not
assumed — the TMA kernel's loads and stores are TMA (cp.async.bulk.tensor), and the implicit-GEMM
conv kernels' gathers become asynchronous copies (cp.async) on NHWC tensors, i.e. are pipelined."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def test_every_autotune_config_compiles_for_sm90_and_uses_wgmma():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_triton_sm90.py")
    result = subprocess.run([sys.executable, str(script), "2"], capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    failed = [o for o in outcomes if not o["ok"]]
    assert not failed, failed
    kernels = {tuple(o["job"][:2]) for o in outcomes}
    assert kernels == {("gemm", "tiled"), ("gemm", "persistent"), ("gemm", "tma"), ("conv", "fwd"), ("conv", "dgrad"),
                       ("conv", "wgrad"), ("conv", "depthwise_fwd"), ("conv", "depthwise_dgrad"),
                       ("conv", "depthwise_wgrad")}
    from accelkernels.triton_kernels.matmul import CONFIGS

    for o in outcomes:
        family, kernel, dtype, index = o["job"]
        if family == "conv":
            if kernel in ("fwd", "dgrad", "wgrad"):
                assert o["cp_async"], f"conv {kernel} config {index} ({dtype}): loads not pipelined: {o}"
                if dtype != "fp32":  # every conv config has BLOCK_M >= 64
                    assert o["wgmma"], f"conv {kernel} config {index} ({dtype}) does not use wgmma: {o}"
            continue
        if kernel == "tma":
            assert o["tma"] and o["wgmma"], f"tma config {index} ({dtype}): {o}"
            continue
        if dtype not in ("fp16", "bf16"):
            continue
        if CONFIGS[index].kwargs["BLOCK_M"] >= 64:
            assert o["wgmma"], f"{kernel} config {index} ({dtype}) does not use wgmma"
        else:  # wgmma works on 64-row warpgroup tiles; skinny tiles use mma.sync tensor cores
            assert o["mma_sync"] and not o["wgmma"], f"{kernel} config {index} ({dtype}): {o}"
