"""A plain tiled batched GEMM with a fused bias + activation epilogue: the Triton backend's first kernel.

C[b] = act(A[b] @ B[b] + bias), A (B, M, K) and B (B, K, N) with arbitrary strides (transposed and
broadcast operands are read in place), fp32 accumulation, masked ragged edges, int64 offsets.
One fixed tile configuration and no autotuning: this kernel proves the path end to end; the tuned,
grouped-order and persistent kernels come with the Triton GEMM issue.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .epilogue import apply_activation

# Untuned starting point (Triton tutorial 03's smallest fp16 config); not measured on a GPU yet.
BLOCK_M, BLOCK_N, BLOCK_K, NUM_WARPS = 64, 64, 32, 4
MAX_GRID_Z = 65535  # CUDA's limit on gridDim.y/z: larger batches are launched in chunks


@triton.jit
def bmm_basic_kernel(
    a_ptr, b_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_ab, stride_am, stride_ak,
    stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # -- map program ids to the output tile and the batch --------------------------------------------
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    a_ptrs = a_ptr + batch * stride_ab + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + batch * stride_bb + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    mask_m = offs_m < M
    mask_n = offs_n < N

    # -- K loop: masked loads at the ragged end, fp32 accumulation -----------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:
            # Only under TRITON_INTERPRET=1 with bf16: the interpreter's bf16 tl.dot is wrong (see bmm()).
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    # -- epilogue: bias, activation, one store --------------------------------------------------------
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)
    c_ptrs = c_ptr + batch * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def _input_precision(dtype: torch.dtype) -> str:
    """fp32 uses TF32 only when torch allows it for matmuls (allow_tf32 / float32_matmul_precision)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"  # fp16/bf16 run on tensor cores whatever this says; fp32 stays exact


def bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, activation: str) -> torch.Tensor:
    """(B, M, K) @ (B, K, N) [+ bias (N,)] -> activation -> new contiguous (B, M, N) in a's dtype."""
    batch, m, k = a.shape
    n = b.shape[2]
    # Triton 3.8's interpreter mishandles bf16 twice: tl.dot on bf16 operands is wrong, and the
    # fp32 -> bf16 cast truncates instead of rounding to nearest (measured: 30 of 64 values off by an
    # ulp, with or without fp_downcast_rounding="rtne"). Under TRITON_INTERPRET=1 the kernel therefore
    # upcasts bf16 tiles and writes fp32, which torch rounds correctly. Compiled kernels never do this.
    upcast = os.environ.get("TRITON_INTERPRET") == "1" and a.dtype == torch.bfloat16
    out = torch.empty((batch, m, n), dtype=torch.float32 if upcast else a.dtype, device=a.device)
    if out.numel() == 0:
        return out.to(a.dtype)
    for start in range(0, batch, MAX_GRID_Z):
        count = min(MAX_GRID_Z, batch - start)
        a_part, b_part, c_part = a[start : start + count], b[start : start + count], out[start : start + count]
        grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N), count)
        bmm_basic_kernel[grid](
            a_part, b_part, bias if bias is not None else out, c_part,
            m, n, k,
            *a_part.stride(), *b_part.stride(), *c_part.stride(),
            HAS_BIAS=bias is not None,
            ACTIVATION=activation,
            INPUT_PRECISION=_input_precision(a.dtype),
            UPCAST_OPERANDS=upcast,
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
            num_warps=NUM_WARPS,
        )
    return out.to(a.dtype)
