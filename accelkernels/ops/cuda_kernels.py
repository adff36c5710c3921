"""Schemas of the kernel-level ops that csrc/ implements for CUDA (TORCH_LIBRARY_IMPL in C++).

Defining them here, with their fake kernels, means they exist (and torch.compile can trace them)
whether or not the compiled extension is present; the extension only adds the CUDA implementations.
"""

from __future__ import annotations

import torch

torch.library.define(
    "accelkernels::cuda_bmm",
    "(Tensor a, Tensor b, Tensor? bias, str activation, str kernel) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),
)


@torch.library.register_fake("accelkernels::cuda_bmm")
def _cuda_bmm_fake(a, b, bias, activation, kernel):
    """(B, M, K) @ (B, K, N) [+ bias (N)] -> activation -> contiguous (B, M, N) in a's dtype."""
    torch._check(a.dim() == 3 and b.dim() == 3, lambda: "cuda_bmm: a and b must be 3-D")
    torch._check(a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1], lambda: "cuda_bmm: shape mismatch")
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))
