"""Memory-format decisions, matching torch's ``Tensor.suggest_memory_format()``.

``torch._prims_common.suggest_memory_format`` is the symbolic-shape-safe version (used by the fake
kernels under torch.compile) but costs ~15 us per call in eager mode (measured on this project's
2-core CI machine, torch 2.14.1), so real tensors take this port of ATen's
``is_channels_last_strides_2d_s4`` instead. tests/test_dispatcher.py checks that the two agree.
"""

from __future__ import annotations

import torch

try:  # present in torch 2.14.1; where a torch lacks it, the port below stands in
    from torch._prims_common import suggest_memory_format as suggest_memory_format_symbolic
except ImportError:  # pragma: no cover - depends on the torch version
    suggest_memory_format_symbolic = None


def _strides_like_channels_last(sizes, strides) -> bool:
    # ATen: walk dims in NHWC order (C, W, H, N); strides must grow, a size-1 N is ambiguous.
    if strides[1] == 0:
        return False
    minimum = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < minimum:
            return False
        if d == 0 and minimum == strides[1]:
            return False
        minimum = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True


def suggest_memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for 4-D tensors with NHWC-like strides, else contiguous_format (real tensors)."""
    if t.dim() == 4 and t.layout == torch.strided and _strides_like_channels_last(t.shape, t.stride()):
        return torch.channels_last
    return torch.contiguous_format


def conv_output_format(input: torch.Tensor, weight: torch.Tensor, suggest=suggest_memory_format) -> torch.memory_format:
    """torch's rule (ATen's cuDNN and mkldnn paths alike): channels_last if input or weight is.

    Also for the gradients: torch computes grad_input and grad_weight in this format too. (Without
    elements a tensor has no format: ATen's strides for those are whatever its code left.)"""
    if suggest(input) == torch.channels_last or suggest(weight) == torch.channels_last:
        return torch.channels_last
    return torch.contiguous_format


if suggest_memory_format_symbolic is None:  # pragma: no cover
    suggest_memory_format_symbolic = suggest_memory_format

__all__ = ["conv_output_format", "suggest_memory_format", "suggest_memory_format_symbolic"]
