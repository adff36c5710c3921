"""Convolution as an implicit GEMM: forward, grad-input (dgrad) and grad-weight (wgrad) kernels.

Notation: input x (N, C, H, W), weight w (K, C/g, R, S), output y (N, K, P, Q), g groups; CG = C/g
and KG = K/g channels per group. Every tensor is read through its four strides, so NCHW and NHWC
(channels_last) are both read in place; NHWC is the fast path because the GEMM's reduction
dimension then runs along contiguous channels.

- forward: GEMM rows = output pixels (n, p, q), columns = output channels, reduction = (r, s, c).
  The im2col gather happens in the loads: each (r, s, c-block) step of the one flattened K loop
  (flat so Triton can software-pipeline it) reads a [BLOCK_M pixels, BLOCK_K channels] tile of x at
  the shifted positions, zero where the position falls in the padding. Nothing is materialised.
- dgrad: the transposed problem. Rows = input pixels (n, h, w), columns = input channels, reduction
  = (r, s, k). A pixel h receives from p only when h + pad - r·dil = p·stride, so with stride > 1
  the pixels are split into stride_h·stride_w phases (h mod stride_h, w mod stride_w), one per
  program on axis 1: within a phase, a filter tap (r, s) is either valid for every row or for none,
  and the kernel loops over the valid taps only instead of multiplying zeros.
- wgrad: per filter tap (r, s) a GEMM dW[:, :, r, s] = dYᵀ · X_shifted, rows = output channels,
  columns = input channels, reduction = the N·P·Q output pixels — long, so it is split across
  programs (axis 1) that write fp32 partial sums, added in a fixed order afterwards (deterministic).

All accumulate in fp32 and compute offsets in int64. The epilogue (bias, activation) is fused into
the forward's single store.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import apply_activation


@triton.jit
def _grouped_tile(pid, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    """pid -> (pid_m, pid_n), walking GROUP_M tile-rows at a time so the weight panel stays in L2."""
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % rows, (pid % per_group) // rows


@triton.jit
def conv2d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    N, H, W, P, Q, CG, KG, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sxn, sxc, sxh, sxw, swk, swc, swr, sws, syn, syk, syp, syq,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    M = tl.cast(N, tl.int64) * P * Q  # int64: the pixel count can pass 2^31
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(KG, BLOCK_N)
    group = tl.program_id(0) // tiles  # groups folded into axis 0 (axes 1 and 2 stop at 65535)
    pid_m, pid_n = _grouped_tile(tl.program_id(0) % tiles, tl.cdiv(M, BLOCK_M), tl.cdiv(KG, BLOCK_N), GROUP_M)

    # Rows: output pixels (n, p, q) and where their receptive field starts in x.
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    x_rows = x_ptr + n * sxn + group.to(tl.int64) * CG * sxc + h0 * sxh + w0 * sxw

    # Columns: this group's output channels.
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < KG
    k = group.to(tl.int64) * KG + offs_n
    w_cols = w_ptr + k * swk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    c_blocks = tl.cdiv(CG, BLOCK_K)
    offs_c = tl.arange(0, BLOCK_K)
    for t in range(0, R * S * c_blocks):
        r = t // (S * c_blocks)
        s = (t // c_blocks) % S
        c = (t % c_blocks) * BLOCK_K + offs_c
        mask_c = c < CG
        ih = h0 + r * dil_h
        iw = w0 + s * dil_w
        inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        shift = r * dil_h * sxh + s * dil_w * sxw
        a = tl.load(x_rows[:, None] + shift + c[None, :] * sxc, mask=inside[:, None] & mask_c[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + c[:, None] * swc + r * swr + s * sws,
                    mask=mask_c[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:  # only under TRITON_INTERPRET=1 with bf16 (see matmul.bmm)
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + k, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)
    y_ptrs = y_ptr + (n * syn + p * syp + q * syq)[:, None] + k[None, :] * syk
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def conv2d_dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    N, H, W, P, Q, CG, KG, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sdyn, sdyk, sdyp, sdyq, swk, swc, swr, sws, sdxn, sdxc, sdxh, sdxw, STEP_H, STEP_W,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    phase = tl.program_id(1)
    ph = phase // stride_w  # this program's rows: h = ph + i·stride_h, w = pw + j·stride_w
    pw = phase % stride_w
    HP = tl.cdiv(H - ph, stride_h)  # pixels of the phase (0 when the phase is empty)
    WP = tl.cdiv(W - pw, stride_w)
    # The grid is sized for the largest phase (phase 0); smaller phases leave trailing tiles idle.
    M = tl.cast(N, tl.int64) * tl.cdiv(H, stride_h) * tl.cdiv(W, stride_w)
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(CG, BLOCK_N)
    group = tl.program_id(0) // tiles
    pid_m, pid_n = _grouped_tile(tl.program_id(0) % tiles, tl.cdiv(M, BLOCK_M), tl.cdiv(CG, BLOCK_N), GROUP_M)

    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < tl.cast(N, tl.int64) * HP * WP
    n = offs_m // tl.maximum(HP * WP, 1)
    h = ph + ((offs_m // tl.maximum(WP, 1)) % tl.maximum(HP, 1)) * stride_h
    w = pw + (offs_m % tl.maximum(WP, 1)) * stride_w
    dy_rows = dy_ptr + n * sdyn + group.to(tl.int64) * KG * sdyk

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < CG
    c = offs_n.to(tl.int64)
    w_cols = w_ptr + c * swc + group.to(tl.int64) * KG * swk

    # The taps (r, s) that reach this phase: r·dil ≡ ph + pad (mod stride), i.e. r = r0 + i·STEP_H with
    # r0 the smallest solution and STEP_H = stride / gcd(dil, stride) (from the host). Looping over those
    # alone — no branch in the loop — keeps the K loop one flat, software-pipelined loop.
    r0 = R
    for rr in range(0, stride_h):
        r0 = tl.minimum(r0, tl.where((ph + pad_h - rr * dil_h) % stride_h == 0, rr, R))
    s0 = S
    for ss in range(0, stride_w):
        s0 = tl.minimum(s0, tl.where((pw + pad_w - ss * dil_w) % stride_w == 0, ss, S))
    taps_h = tl.cdiv(R - r0, STEP_H)  # 0 when no tap reaches the phase (r0 = R)
    taps_w = tl.cdiv(S - s0, STEP_W)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_blocks = tl.cdiv(KG, BLOCK_K)
    offs_k = tl.arange(0, BLOCK_K)
    for t in range(0, taps_h * taps_w * k_blocks):
        r = r0 + (t // (taps_w * k_blocks)) * STEP_H
        s = s0 + ((t // k_blocks) % taps_w) * STEP_W
        kk = (t % k_blocks) * BLOCK_K + offs_k
        mask_k = kk < KG
        num_h = h + pad_h - r * dil_h  # = p·stride_h for the p this tap reads (exact in this phase)
        num_w = w + pad_w - s * dil_w
        p = num_h // stride_h
        q = num_w // stride_w
        inside = mask_m & (num_h >= 0) & (p < P) & (num_w >= 0) & (q < Q)
        a = tl.load(dy_rows[:, None] + (p * sdyp + q * sdyq)[:, None] + kk[None, :] * sdyk,
                    mask=inside[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + kk[:, None] * swk + r * swr + s * sws,
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    dx_ptrs = dx_ptr + (n * sdxn + h * sdxh + w * sdxw)[:, None] + (group.to(tl.int64) * CG + c)[None, :] * sdxc
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def conv2d_wgrad_kernel(
    dy_ptr, x_ptr, partial_ptr,
    N, H, W, P, Q, CG, KG, R, S, PIXELS_PER_SPLIT,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sdyn, sdyk, sdyp, sdyq, sxn, sxc, sxh, sxw,
    INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """partial[split, g·KG + k, c, r, s] = Σ over this split's output pixels of dy · x_shifted."""
    tiles = tl.cdiv(KG, BLOCK_M) * tl.cdiv(CG, BLOCK_N)
    tap = tl.program_id(0) // tiles  # group · R · S + r · S + s, folded into axis 0 with the tiles
    split = tl.program_id(1)
    group = tap // (R * S)
    r = (tap // S) % R
    s = tap % S
    pid_m, pid_n = _grouped_tile(tl.program_id(0) % tiles, tl.cdiv(KG, BLOCK_M), tl.cdiv(CG, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels of the group
    mask_m = offs_m < KG
    k = group.to(tl.int64) * KG + offs_m
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels of the group
    mask_n = offs_n < CG
    c = group.to(tl.int64) * CG + offs_n

    total = tl.cast(N, tl.int64) * P * Q
    start = split.to(tl.int64) * PIXELS_PER_SPLIT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    for t0 in range(0, PIXELS_PER_SPLIT, BLOCK_K):
        pix = start + t0 + offs_k  # output pixels (n, p, q) of this step
        mask_pix = (pix < total) & (t0 + offs_k < PIXELS_PER_SPLIT)
        n = pix // (P * Q)
        p = (pix // Q) % P
        q = pix % Q
        ih = p * stride_h - pad_h + r * dil_h
        iw = q * stride_w - pad_w + s * dil_w
        inside = mask_pix & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(dy_ptr + k[:, None] * sdyk + (n * sdyn + p * sdyp + q * sdyq)[None, :],
                    mask=mask_m[:, None] & mask_pix[None, :], other=0.0)
        b = tl.load(x_ptr + (n * sxn + ih * sxh + iw * sxw)[:, None] + c[None, :] * sxc,
                    mask=inside[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    # partial is (splits, K, CG, R, S) contiguous fp32.
    K = KG * (tl.num_programs(0) // (tiles * R * S))
    out = (partial_ptr + split.to(tl.int64) * K * CG * R * S + (k * CG * R * S)[:, None]
           + (offs_n.to(tl.int64) * R * S)[None, :] + r * S + s)
    tl.store(out, acc, mask=mask_m[:, None] & mask_n[None, :])
