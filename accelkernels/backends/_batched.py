"""Map torch.matmul / F.linear (and 1x1 convolutions) onto one batched GEMM: (B, M, K) @ (B, K, N) -> (B, M, N).

The GEMM kernels of both compiled backends take exactly that problem with arbitrary strides, so
transposed operands (``weight.mT``) and broadcast batches (stride 0) are read in place. The only
copies left: broadcasting across two or more batch dims at once (a (2, 1, M, K) @ (3, K, N)
batch cannot be one strided dimension), which materialises the broadcast.
"""

from __future__ import annotations

import math

import torch


def _one_matrix_times_batch(a: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a (..., M, K) @ b2 (K, N): fold the batch into M when that is a view (one big GEMM), else keep
    a batched problem with b broadcast through a zero batch stride. Never copies a."""
    m, k = a.shape[-2:]
    rows = math.prod(a.shape[:-1])
    try:
        return a.view(1, rows, k), b2.unsqueeze(0)
    except RuntimeError:  # strides forbid folding (e.g. a transposed batch)
        count = math.prod(a.shape[:-2])
        a3 = a.reshape(count, m, k)  # merges batch dims only: a view unless they cannot merge
        return a3, b2.unsqueeze(0).expand(count, *b2.shape)


def matmul_as_bmm(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Return (a3, b3, out_shape) such that ``bmm(a3, b3).reshape(out_shape) == torch.matmul(a, b)``."""
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    batch = list(torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]))
    out_shape = batch + ([] if a.dim() == 1 else [m]) + ([] if b.dim() == 1 else [n])
    if b2.dim() == 2:
        a3, b3 = _one_matrix_times_batch(a2, b2)
        return a3, b3, out_shape
    count = math.prod(batch)
    a3 = a2.expand(*batch, m, k).reshape(count, m, k)
    b3 = b2.expand(*batch, k, n).reshape(count, k, n)
    return a3, b3, out_shape


def linear_as_bmm(input: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """F.linear(input, weight) as one GEMM; weight (N, K) is read transposed in place."""
    x = input.unsqueeze(0) if input.dim() == 1 else input
    a3, b3 = _one_matrix_times_batch(x, weight.mT)
    return a3, b3, [*input.shape[:-1], weight.shape[0]]


# --- convolutions that are GEMMs ---------------------------------------------------------------


def is_depthwise(channels: int, groups: int) -> bool:
    return groups == channels and groups > 1


def is_pointwise(weight_shape, stride, padding, groups) -> bool:
    """A 1x1 convolution with stride 1, no padding and one group: a GEMM over the pixels."""
    return tuple(weight_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and groups == 1


def pixel_rows(*tensors: torch.Tensor):
    """(N, C, H, W) tensors -> (B, pixels, C) views for a GEMM (B = 1, or N when the batch cannot be
    folded into the rows), or None when some tensor's pixels are not one strided run."""
    n, _, h, w = tensors[0].shape
    for batch, rows in ((1, n * h * w), (n, h * w)):
        try:
            return [t.permute(0, 2, 3, 1).view(batch, rows, t.shape[1]) for t in tensors]
        except RuntimeError:
            continue
    return None
