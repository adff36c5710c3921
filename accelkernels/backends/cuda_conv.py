"""Which CUDA C++ kernel serves a convolution pass, and the calls into the extension's ops.

    forward      1x1, stride 1, no padding, groups 1 -> the GEMM kernels (cuda_bmm) on pixel views
                 groups = C (depthwise)              -> "depthwise"
                 fp16/bf16 on compute capability 9.0 with sm_90a code, groups 1, C and K % 8, strides
                 1..8, padding the im2col map can hold -> "wgmma" (im2col TMA + wgmma)
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
    wgmma_code_present,
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


def wgmma_conv_unsupported_reason(x: torch.Tensor, weight_shape, stride, padding, dilation, groups) -> str | None:
    """Why the wgmma/im2col-TMA forward kernel cannot serve this problem, or None. Mirrors
    csrc/kernels/conv_args.h (conv_wgmma_unsupported_reason), less the layouts, which the host makes
    dense channels_last."""
    _, c, h, w = x.shape
    k, _, r, s = weight_shape
    if x.dtype not in TENSOR_CORE_DTYPES:
        return f"{x.dtype} is not float16/bfloat16"
    if groups != 1:
        return "groups must be 1"
    if c % 8 or k % 8:
        return "input and output channels must be multiples of 8"
    if not all(1 <= st <= 8 for st in stride):
        return "strides must be 1..8 (the im2col map's traversal strides)"
    p = (h + 2 * padding[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + 2 * padding[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    upper = ((p - 1) * stride[0] + 1 - h - padding[0], (q - 1) * stride[1] + 1 - w - padding[1])
    if not all(-128 <= corner <= 127 for corner in (-padding[0], -padding[1], *upper)):
        return "padding or output geometry outside the im2col map's corner range (-128..127)"
    if dilation[0] * (r - 1) >= 255 or dilation[1] * (s - 1) >= 255:
        return "filter taps beyond the 8-bit im2col offsets"
    if x.shape[0] * p * q >= 2**31:
        return "more than 2^31 output pixels (32-bit TMA coordinates)"
    return None


def forward_kernel_for(x: torch.Tensor, weight_shape, stride, padding, dilation, groups) -> str:
    """The forward kernel of a non-GEMM problem: on compute capability 9.0 with sm_90a code, the wgmma
    kernel where it serves (the newer step of the tensor-core ladder), else conv_kernel_for's choice."""
    kernel = conv_kernel_for("forward", x.dtype, x.shape[1], weight_shape[0], groups, device_capability(x))
    if (kernel == "implicit_gemm" and device_capability(x) == (9, 0) and wgmma_code_present(x)
            and wgmma_conv_unsupported_reason(x, weight_shape, stride, padding, dilation, groups) is None):
        return "wgmma"
    return kernel


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
    kernel = forward_kernel_for(x, weight.shape, stride, padding, dilation, groups)
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
