"""Depthwise convolution (groups = C, K = C·multiplier): forward, dgrad and wgrad as direct kernels.

As an implicit GEMM a depthwise layer would be a batch of GEMMs with a reduction of only R·S and
one or a few columns — tensor-core tiles of 16+ would be almost all padding. So these kernels do
the arithmetic elementwise in fp32: a program owns a [BLOCK_M pixels, BLOCK_C channels] tile and
walks the R·S filter taps, loading a shifted input tile per tap. On NHWC (channels_last) tensors
the tile's channel axis is contiguous, so the loads are coalesced; NCHW is read through strides.

Output channel k reads input channel k // MULT (torch's grouping for groups = C).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import apply_activation


@triton.jit
def depthwise_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    N, H, W, P, Q, K, R, S, MULT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sxn, sxc, sxh, sxw, swk, swr, sws, syn, syk, syp, syq,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < tl.cast(N, tl.int64) * P * Q  # int64: the pixel count can pass 2^31
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    k = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_k = k < K
    x_tile = x_ptr + (n * sxn + (p * stride_h - pad_h) * sxh + (q * stride_w - pad_w) * sxw)[:, None] \
        + ((k // MULT) * sxc)[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for r in range(0, R):
        ih = p * stride_h - pad_h + r * dil_h
        ok_h = mask_m & (ih >= 0) & (ih < H)
        for s in range(0, S):
            iw = q * stride_w - pad_w + s * dil_w
            ok = ok_h & (iw >= 0) & (iw < W)
            x = tl.load(x_tile + r * dil_h * sxh + s * dil_w * sxw, mask=ok[:, None] & mask_k[None, :], other=0.0)
            f = tl.load(w_ptr + k * swk + r * swr + s * sws, mask=mask_k, other=0.0)
            acc += x.to(tl.float32) * f.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k, mask=mask_k, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)
    y_ptrs = y_ptr + (n * syn + p * syp + q * syq)[:, None] + (k * syk)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])


@triton.jit
def depthwise_dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    N, H, W, P, Q, C, R, S, MULT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sdyn, sdyk, sdyp, sdyq, swk, swr, sws, sdxn, sdxc, sdxh, sdxw,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n, c, h, w] = Σ over j < MULT and taps (r, s) with h + pad - r·dil = p·stride of
    dy[n, c·MULT + j, p, q] · w[c·MULT + j, 0, r, s]."""
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < tl.cast(N, tl.int64) * H * W
    n = offs_m // (H * W)
    h = (offs_m // W) % H
    w = offs_m % W
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for r in range(0, R):
        num_h = h + pad_h - r * dil_h
        p = num_h // stride_h
        ok_h = mask_m & (num_h >= 0) & (num_h % stride_h == 0) & (p < P)
        for s in range(0, S):
            num_w = w + pad_w - s * dil_w
            q = num_w // stride_w
            ok = ok_h & (num_w >= 0) & (num_w % stride_w == 0) & (q < Q)
            dy_row = dy_ptr + n * sdyn + p * sdyp + q * sdyq
            for j in range(0, MULT):
                k = c * MULT + j
                g = tl.load(dy_row[:, None] + (k * sdyk)[None, :], mask=ok[:, None] & mask_c[None, :], other=0.0)
                f = tl.load(w_ptr + k * swk + r * swr + s * sws, mask=mask_c, other=0.0)
                acc += g.to(tl.float32) * f.to(tl.float32)[None, :]
    dx_ptrs = dx_ptr + (n * sdxn + h * sdxh + w * sdxw)[:, None] + (c * sdxc)[None, :]
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def depthwise_wgrad_kernel(
    dy_ptr, x_ptr, partial_ptr,
    N, H, W, P, Q, K, R, S, MULT, PIXELS_PER_SPLIT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sdyn, sdyk, sdyp, sdyq, sxn, sxc, sxh, sxw,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """partial[split, k, r, s] = Σ over this split's output pixels of dy[n, k, p, q] · x[n, k // MULT, ih, iw]."""
    k = tl.program_id(0).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_k = k < K
    tap = tl.program_id(1)
    r = tap // S
    s = tap % S
    split = tl.program_id(2)
    total = tl.cast(N, tl.int64) * P * Q
    start = split.to(tl.int64) * PIXELS_PER_SPLIT
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for t0 in range(0, PIXELS_PER_SPLIT, BLOCK_M):
        pix = start + t0 + tl.arange(0, BLOCK_M)
        mask_pix = (pix < total) & (t0 + tl.arange(0, BLOCK_M) < PIXELS_PER_SPLIT)
        n = pix // (P * Q)
        p = (pix // Q) % P
        q = pix % Q
        ih = p * stride_h - pad_h + r * dil_h
        iw = q * stride_w - pad_w + s * dil_w
        inside = mask_pix & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        g = tl.load(dy_ptr + (n * sdyn + p * sdyp + q * sdyq)[:, None] + (k * sdyk)[None, :],
                    mask=mask_pix[:, None] & mask_k[None, :], other=0.0)
        x = tl.load(x_ptr + (n * sxn + ih * sxh + iw * sxw)[:, None] + ((k // MULT) * sxc)[None, :],
                    mask=inside[:, None] & mask_k[None, :], other=0.0)
        acc += g.to(tl.float32) * x.to(tl.float32)
    # partial is (splits, K, R, S) contiguous fp32.
    tl.store(partial_ptr + split.to(tl.int64) * K * R * S + k * R * S + r * S + s, tl.sum(acc, axis=0), mask=mask_k)
