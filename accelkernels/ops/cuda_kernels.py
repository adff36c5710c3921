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


# --- conv2d: one op per pass; `kernel` names a registry entry of that pass ("direct", "depthwise",
# "implicit_gemm"), `channels_last` the memory format of the result. --------------------------------

torch.library.define(
    "accelkernels::cuda_conv2d",
    "(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups, "
    "str activation, str kernel, bool channels_last) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),
)
torch.library.define(
    "accelkernels::cuda_conv2d_input_grad",
    "(Tensor grad_output, Tensor weight, int[] input_size, int[] stride, int[] padding, int[] dilation, "
    "int groups, str kernel, bool channels_last) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),
)
torch.library.define(
    "accelkernels::cuda_conv2d_weight_grad",
    "(Tensor grad_output, Tensor input, int[] weight_size, int[] stride, int[] padding, int[] dilation, "
    "int groups, str kernel, bool channels_last) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),
)


def _empty(shape, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


@torch.library.register_fake("accelkernels::cuda_conv2d")
def _cuda_conv2d_fake(input, weight, bias, stride, padding, dilation, groups, activation, kernel, channels_last):
    from .conv2d import _output_shape  # (imported here: conv2d.py imports this module's package)

    return _empty(_output_shape(input, weight, stride, padding, dilation), input, channels_last)


@torch.library.register_fake("accelkernels::cuda_conv2d_input_grad")
def _cuda_conv2d_input_grad_fake(grad_output, weight, input_size, stride, padding, dilation, groups, kernel,
                                 channels_last):
    return _empty(tuple(input_size), grad_output, channels_last)


@torch.library.register_fake("accelkernels::cuda_conv2d_weight_grad")
def _cuda_conv2d_weight_grad_fake(grad_output, input, weight_size, stride, padding, dilation, groups, kernel,
                                  channels_last):
    return _empty(tuple(weight_size), grad_output, channels_last)
