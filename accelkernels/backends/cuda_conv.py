"""Which CUDA C++ kernel serves a convolution pass, and the calls into the extension's ops.

    forward      1x1, stride 1, no padding, groups 1 -> the GEMM kernels (cuda_bmm) on pixel views
                 groups = C (depthwise)              -> "depthwise"
                 fp16/bf16, channels per group % 8   -> "implicit_gemm" (tensor cores, sm_80+)
                 everything else                     -> "direct" (SIMT, any dtype and argument)
    input_grad   1x1 as above -> GEMM; tensor-core eligible -> "implicit_gemm"; else "direct"
    weight_grad  tensor-core eligible -> "implicit_gemm" (split-K); else "direct"

The tensor-core kernels read channels_last operands; the C++ host converts others (a layout change
that the benchmark's timings include). Results are written in the memory format the op returns.
None of these choices has been timed on a GPU yet: the order is the design's.
"""

from __future__ import annotations

import torch

from ._batched import is_depthwise, is_pointwise, pixel_rows
from .cuda_gemm import (
    TENSOR_CORE_CAPABILITY,
    device_capability,
    gemm_kernel_for,
    gemm_unsupported_reason,
)

TENSOR_CORE_DTYPES = (torch.float16, torch.bfloat16)


def tensor_cores_serve(dtype: torch.dtype, channels: int, out_channels: int, groups: int,
                       capability: tuple[int, int]) -> bool:
    """Whether the implicit-GEMM kernels take this problem (conv_implicit_gemm_unsupported_reason
    in csrc/kernels/conv_args.h, less the layout, which the host converts)."""
    return (dtype in TENSOR_CORE_DTYPES and capability >= TENSOR_CORE_CAPABILITY
            and (channels // groups) % 8 == 0 and (out_channels // groups) % 8 == 0)


def conv_kernel_for(pass_: str, dtype: torch.dtype, channels: int, out_channels: int, groups: int,
                    capability: tuple[int, int]) -> str:
    """The registry kernel of a pass ("forward", "input_grad", "weight_grad") for a non-GEMM problem."""
    if pass_ == "forward" and is_depthwise(channels, groups):
        return "depthwise"
    if tensor_cores_serve(dtype, channels, out_channels, groups, capability):
        return "implicit_gemm"
    return "direct"


def _gemm_rows(t: torch.Tensor) -> torch.Tensor | None:
    """The (B, pixels, channels) view of a 1x1 problem's input, or None when it cannot be a view."""
    views = pixel_rows(t)
    return None if views is None else views[0]


def _as_image(out3: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """A (B, pixels, channels) GEMM result as the (N, C, H, W) channels_last tensor it is."""
    return out3.view(n, h, w, out3.shape[-1]).permute(0, 3, 1, 2)


def _gemm(a3: torch.Tensor, b3: torch.Tensor, bias, activation: str) -> torch.Tensor | None:
    """The GEMM kernels on (B, M, K) @ (B, K, N), or None when the tensor-core kernel cannot read them."""
    if gemm_unsupported_reason(a3, b3) is not None:
        return None
    return torch.ops.accelkernels.cuda_bmm(a3, b3, bias, activation, gemm_kernel_for(a3, b3))


def forward(x, weight, bias, stride, padding, dilation, groups, activation, channels_last: bool):
    n, c, h, w = x.shape
    k = weight.shape[0]
    if is_pointwise(weight.shape, stride, padding, groups) and x.numel():
        a3 = _gemm_rows(x)
        if a3 is not None:
            b3 = weight[:, :, 0, 0].t().unsqueeze(0).expand(a3.shape[0], c, k)
            out = _gemm(a3, b3, bias, activation)
            if out is not None:
                return _as_image(out, n, h, w)
    kernel = conv_kernel_for("forward", x.dtype, c, k, groups, device_capability(x))
    return torch.ops.accelkernels.cuda_conv2d(x, weight, bias, list(stride), list(padding), list(dilation), groups,
                                              activation, kernel, channels_last)


def input_grad(grad_output, input_shape, weight, stride, padding, dilation, groups, channels_last: bool):
    n, c, h, w = input_shape
    k = weight.shape[0]
    if is_pointwise(weight.shape, stride, padding, groups) and grad_output.numel():
        dy3 = _gemm_rows(grad_output)
        if dy3 is not None:  # dX (pixels, C) = dY (pixels, K) · W (K, C)
            w3 = weight[:, :, 0, 0].unsqueeze(0).expand(dy3.shape[0], k, c)
            out = _gemm(dy3, w3, None, "none")
            if out is not None:
                return _as_image(out, n, h, w)
    kernel = conv_kernel_for("input_grad", grad_output.dtype, c, k, groups,
                             device_capability(grad_output))
    return torch.ops.accelkernels.cuda_conv2d_input_grad(grad_output, weight, list(input_shape), list(stride),
                                                         list(padding), list(dilation), groups, kernel,
                                                         channels_last)


def weight_grad(grad_output, x, weight_shape, stride, padding, dilation, groups, channels_last: bool):
    c, k = x.shape[1], weight_shape[0]
    kernel = conv_kernel_for("weight_grad", x.dtype, c, k, groups, device_capability(x))
    return torch.ops.accelkernels.cuda_conv2d_weight_grad(grad_output, x, list(weight_shape), list(stride),
                                                          list(padding), list(dilation), groups, kernel,
                                                          channels_last)
