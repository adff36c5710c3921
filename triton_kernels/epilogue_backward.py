"""Backward of the fused epilogue: grad w.r.t. the pre-activation, and the bias gradient, in one pass.

    dz = act'(z) * dy            (relu reads its output y instead of z)
    dbias = sum over rows of dz

dy, y/z: (ROWS, N) with any strides; dz is written contiguous. One read of dy and of the saved
tensor, one write of dz, instead of an activation-backward kernel plus a separate reduction that
reads dz again. Programs own BLOCK_N columns and a slice of the rows; each writes its fp32 column
partial sums, which are added up afterwards in a fixed order, so dbias is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreting

# Untuned defaults (no GPU measurement yet): 64 columns x 32 rows per step, and at most 64 row
# slices so the partial-sum buffer stays small.
BLOCK_N, BLOCK_R, MAX_SPLITS = 64, 32, 64


@triton.jit
def bias_activation_backward_kernel(
    grad_ptr, saved_ptr, dz_ptr, partial_ptr,
    ROWS, N, ROWS_PER_SPLIT,
    stride_gr, stride_gn, stride_sr, stride_sn,
    ACTIVATION: tl.constexpr, WRITE_DZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    row_start = split.to(tl.int64) * ROWS_PER_SPLIT
    for r0 in range(0, ROWS_PER_SPLIT, BLOCK_R):
        offs_r = row_start + r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        mask = ((offs_r < ROWS) & (r0 + tl.arange(0, BLOCK_R) < ROWS_PER_SPLIT))[:, None] & mask_n[None, :]
        g = tl.load(grad_ptr + offs_r[:, None] * stride_gr + offs_n[None, :] * stride_gn, mask=mask, other=0.0)
        g = g.to(tl.float32)
        if ACTIVATION != "none":
            s = tl.load(saved_ptr + offs_r[:, None] * stride_sr + offs_n[None, :] * stride_sn, mask=mask, other=0.0)
            s = s.to(tl.float32)
            if ACTIVATION == "relu":  # s is the output: relu'(z) = [y > 0]
                dz = tl.where(s > 0.0, g, 0.0)
            elif ACTIVATION == "gelu":  # exact erf form: Φ(z) + z·φ(z)
                cdf = 0.5 * (1.0 + tl.math.erf(s * 0.7071067811865476))
                pdf = tl.exp(-0.5 * s * s) * 0.3989422804014327
                dz = g * (cdf + s * pdf)
            else:  # silu: σ(z)·(1 + z·(1 − σ(z)))
                sig = tl.sigmoid(s)
                dz = g * sig * (1.0 + s * (1.0 - sig))
        else:
            dz = g
        if WRITE_DZ:
            tl.store(dz_ptr + offs_r[:, None] * N + offs_n[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)
        acc += tl.sum(tl.where(mask, dz, 0.0), axis=0)
    tl.store(partial_ptr + split.to(tl.int64) * N + offs_n, acc, mask=mask_n)


def bias_activation_backward(grad: torch.Tensor, saved: torch.Tensor | None, activation: str,
                             write_dz: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """grad, saved: (ROWS, N). Returns (dz or None, dbias (N,)), both in grad's dtype."""
    rows, n = grad.shape
    saved = grad if saved is None else saved
    # Triton 3.8's interpreter truncates fp32 -> bf16 stores (see matmul.bmm); there, bf16 dz is
    # written as fp32 and rounded by torch. Compiled kernels store bf16 directly.
    store_dtype = torch.float32 if interpreting() and grad.dtype == torch.bfloat16 else grad.dtype
    dz = torch.empty((rows, n), dtype=store_dtype, device=grad.device) if write_dz else None
    splits = max(1, min(MAX_SPLITS, triton.cdiv(rows, 8 * BLOCK_R)))
    if interpreting():
        splits = min(splits, 2)  # a couple of row slices still exercises the split path, cheaply
    rows_per_split = triton.cdiv(rows, splits) if rows else 0
    partial = torch.empty((splits, n), dtype=torch.float32, device=grad.device)
    if n:
        grid = (triton.cdiv(n, BLOCK_N), splits)
        bias_activation_backward_kernel[grid](
            grad, saved, dz if dz is not None else partial, partial,
            rows, n, rows_per_split,
            *grad.stride(), *saved.stride(),
            ACTIVATION=activation, WRITE_DZ=write_dz, BLOCK_R=BLOCK_R, BLOCK_N=BLOCK_N,
        )
    # The (splits x N) fp32 partials are summed in a fixed order: deterministic, and tiny next to dz.
    return (dz.to(grad.dtype) if dz is not None else None), partial.sum(0).to(grad.dtype)
