"""Backward of the fused epilogue: grad w.r.t. the pre-activation, and the bias gradient, in one pass.

    dz = act'(z) * dy            (relu reads its output y instead of z)
    dbias = sum over rows of dz

dy, y/z: (..., N) with any strides — (rows, N) for a linear layer, (batch, P, Q, K) for a
convolution's gradient seen channels-last — read as (B, R, N) views; dz is written contiguous. One
read of dy and of the saved tensor, one write of dz, instead of an activation-backward kernel plus a
separate reduction that reads dz again. Programs own BLOCK_N columns and a slice of the rows; each
writes its column partial sums, which are added up afterwards in a fixed order, so dbias is
deterministic.

The column sums accumulate in fp64: a bias gradient sums thousands of rows, and fp32 accumulation
(a running sum, or Kahan-compensated chunk sums) measured 2 ulps off on a 112-row fp32 case where
torch's own sum was within 0.5 — enough to fail the 2x-torch-error oracle. fp64 adds make dbias
correctly rounded; the kernel is bound by reading dy and z, and Hopper runs fp64 adds at half the
fp32 rate (on cards with slow fp64 this choice is worth re-measuring).
"""

from __future__ import annotations

import math

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
    ROWS, N, ROWS_PER_SPLIT, INNER_ROWS,
    stride_gb, stride_gr, stride_gn, stride_sb, stride_sr, stride_sn,
    ACTIVATION: tl.constexpr, WRITE_DZ: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float64)
    row_start = split.to(tl.int64) * ROWS_PER_SPLIT
    for r0 in range(0, ROWS_PER_SPLIT, BLOCK_R):
        offs_r = row_start + r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        mask = ((offs_r < ROWS) & (r0 + tl.arange(0, BLOCK_R) < ROWS_PER_SPLIT))[:, None] & mask_n[None, :]
        outer = offs_r // INNER_ROWS  # row -> (b, r) of the (B, R, N) view
        inner = offs_r % INNER_ROWS
        g_rows = outer * stride_gb + inner * stride_gr
        g = tl.load(grad_ptr + g_rows[:, None] + offs_n[None, :] * stride_gn, mask=mask, other=0.0)
        g = g.to(tl.float32)
        if ACTIVATION != "none":
            s_rows = outer * stride_sb + inner * stride_sr
            s = tl.load(saved_ptr + s_rows[:, None] + offs_n[None, :] * stride_sn, mask=mask, other=0.0)
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
        acc += tl.where(mask, dz, 0.0).to(tl.float64)
    tl.store(partial_ptr + split.to(tl.int64) * N + offs_n, tl.sum(acc, axis=0), mask=mask_n)


def _as_3d(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Same-shape (..., N) tensors -> (B, R, N) views with the same B, the leading dims folded into R
    where every tensor's strides allow (into B where not); copies only when no common split exists."""
    lead = list(tensors[0].shape[:-1])
    n = tensors[0].shape[-1]
    for split in range(len(lead) + 1):  # fold lead[:split] into B and lead[split:] into R
        b, r = math.prod(lead[:split]), math.prod(lead[split:])
        try:
            return [t.view(b, r, n) for t in tensors]
        except RuntimeError:
            continue
    return [t.reshape(1, math.prod(lead), n) for t in tensors]


def bias_activation_backward(grad: torch.Tensor, saved: torch.Tensor | None, activation: str,
                             write_dz: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """grad, saved: (..., N), same shape. Returns (dz (..., N) contiguous, or None; dbias (N,)), in grad's dtype."""
    shape = grad.shape
    n = shape[-1]
    grad3, saved3 = _as_3d(grad, grad if saved is None else saved)
    rows = grad3.shape[0] * grad3.shape[1]
    # Triton 3.8's interpreter truncates fp32 -> bf16 stores (see matmul.bmm); there, bf16 dz is
    # written as fp32 and rounded by torch. Compiled kernels store bf16 directly.
    store_dtype = torch.float32 if interpreting() and grad.dtype == torch.bfloat16 else grad.dtype
    dz = torch.empty((rows, n), dtype=store_dtype, device=grad.device) if write_dz else None
    splits = max(1, min(MAX_SPLITS, triton.cdiv(rows, 8 * BLOCK_R)))
    if interpreting():
        splits = min(splits, 2)  # a couple of row slices still exercises the split path, cheaply
    rows_per_split = triton.cdiv(rows, splits) if rows else 0
    partial = torch.empty((splits, n), dtype=torch.float64, device=grad.device)
    if n:
        grid = (triton.cdiv(n, BLOCK_N), splits)
        bias_activation_backward_kernel[grid](
            grad3, saved3, dz if dz is not None else partial, partial,
            rows, n, rows_per_split, max(1, grad3.shape[1]),
            *grad3.stride(), *saved3.stride(),
            ACTIVATION=activation, WRITE_DZ=write_dz, BLOCK_R=BLOCK_R, BLOCK_N=BLOCK_N,
        )
    # The splits' fp64 partial sums, added in a fixed order (deterministic), rounded once.
    dz = dz.to(grad.dtype).view(shape) if dz is not None else None
    return dz, partial.sum(0).to(grad.dtype)
