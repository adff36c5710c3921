"""Map torch.matmul / F.linear shape rules onto one batched GEMM: (B, M, K) @ (B, K, N) -> (B, M, N).

The GEMM kernels of both compiled backends take exactly that problem with arbitrary strides, so
transposed operands (``weight.mT``) and broadcast batches (stride 0) are read in place.
"""

from __future__ import annotations

import math

import torch


def matmul_as_bmm(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Return (a3, b3, out_shape) such that ``bmm(a3, b3).reshape(out_shape) == torch.matmul(a, b)``."""
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    batch = list(torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]))
    out_shape = batch + ([] if a.dim() == 1 else [m]) + ([] if b.dim() == 1 else [n])
    if b2.dim() == 2 and a2.dim() > 2:
        # A batched activation times one matrix: fold the batch into M (one big GEMM, no broadcast).
        # reshape is a view for contiguous activations and copies only when the strides forbid a view.
        return a2.reshape(1, math.prod(batch) * m, k), b2.unsqueeze(0), out_shape
    count = math.prod(batch)
    a3 = a2.expand(*batch, m, k).reshape(count, m, k)
    b3 = b2.expand(*batch, k, n).reshape(count, k, n)
    return a3, b3, out_shape


def linear_as_bmm(input: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """F.linear(input, weight) as one GEMM; weight (N, K) is read transposed in place."""
    k = input.shape[-1]
    rows = math.prod(input.shape[:-1])
    return input.reshape(1, rows, k), weight.mT.unsqueeze(0), [*input.shape[:-1], weight.shape[0]]
