"""Which CUDA C++ kernel serves a convolution pass, and the calls into the extension's ops.

    forward      1x1, stride 1, no padding, groups 1 -> the GEMM kernels (cuda_bmm) on pixel views
                 groups = C (depthwise)              -> "depthwise"
                 fp16/bf16 on compute capability 9.0 with sm_90a code, channels per group % 8, strides
                 1..8, padding the im2col map can hold -> "wgmma" (im2col TMA + wgmma)
                 fp16/bf16, channels per group % 8   -> "implicit_gemm" (tensor cores, sm_80+)
                 everything else                     -> "direct" (SIMT, any dtype and argument)
    input_grad   1x1 as above -> GEMM; then as the forward: "wgmma" where it serves (every stride
                 phase's im2col view encodable), "implicit_gemm", "direct"
    weight_grad  "wgmma" where the forward's im2col view serves (MN-major tiles, split-K), then
                 tensor-core eligible -> "implicit_gemm" (split-K); else "direct"

The tensor-core kernels read channels_last operands; the C++ host converts others (a layout change
that the benchmark's timings include). Results are written in the memory format the op returns.
None of these choices has been timed on a GPU yet: the order is the design's.
"""

from __future__ import annotations

import itertools
import math

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


def _taps_on_grid(offset: int, dil: int, stride: int, size: int) -> tuple[int, int, int]:
    """The taps r < size with (offset - r·dil) a multiple of stride: first, step, count (conv_gather.cuh)."""
    step = stride // math.gcd(dil, stride)
    first = next((r for r in range(min(step, size)) if (offset - r * dil) % stride == 0), None)
    return (0, step, 0) if first is None else (first, step, (size - 1 - first) // step + 1)


def _im2col_axes(pass_: str, size: int, out: int, r: int, stride: int, pad: int, dil: int):
    """Per launch, one spatial axis of its im2col view: (rows, source size, origin, step, taps, largest offset).
    Mirrors conv_wgmma_views.h: the forward and weight_grad read x; input_grad one view per stride phase, over dy
    at step 1."""
    if pass_ != "input_grad":
        return [(out, size, -pad, stride, r, dil * (r - 1))]
    axes = []
    for phase in range(stride):
        rows = (size - phase + stride - 1) // stride if phase < size else 0
        r0, tap_step, taps = _taps_on_grid(phase + pad, dil, stride, r)
        delta = tap_step * dil // stride
        origin = (phase + pad - r0 * dil) // stride - (taps - 1) * delta if taps else 0
        axes.append((rows, out, origin, 1, taps, (taps - 1) * delta if taps else 0))
    return axes


def wgmma_conv_unsupported_reason(dtype: torch.dtype, input_shape, weight_shape, stride, padding, dilation, groups,
                                  pass_: str = "forward") -> str | None:
    """Why the wgmma/im2col-TMA kernel of a pass ("forward", "input_grad", "weight_grad") cannot serve this problem,
    or None.
    Mirrors csrc/kernels/conv_wgmma_views.h (conv_wgmma_unsupported_reason), less the layouts, which the host
    makes dense channels_last."""
    n, c, h, w = input_shape
    k, _, r, s = weight_shape
    if dtype not in TENSOR_CORE_DTYPES:
        return f"{dtype} is not float16/bfloat16"
    if (c // groups) % 8 or (k // groups) % 8:
        return "channels per group (input and output) must be multiples of 8"
    p = (h + 2 * padding[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + 2 * padding[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    if n * p * q >= 2**31 or n * h * w >= 2**31:
        return "more than 2^31 pixels (32-bit TMA coordinates)"
    rows = _im2col_axes(pass_, h, p, r, stride[0], padding[0], dilation[0])
    cols = _im2col_axes(pass_, w, q, s, stride[1], padding[1], dilation[1])
    for view in itertools.product(rows, cols):
        if any(axis[0] == 0 or axis[4] == 0 for axis in view):
            continue  # nothing launched, or nothing loaded
        if not all(1 <= axis[3] <= 8 for axis in view):
            return "strides must be 1..8 (the im2col map's traversal strides)"
        corners = [corner for rows_, src, origin, step, _, _ in view
                   for corner in (origin, origin + (rows_ - 1) * step + 1 - src)]
        if not all(-128 <= corner <= 127 for corner in corners):
            return "padding or output geometry outside the im2col map's corner range (-128..127)"
        if any(axis[5] >= 255 for axis in view):
            return "filter taps beyond the 8-bit im2col offsets"
    return None


def hopper_conv_serves(t: torch.Tensor, input_shape, weight_shape, stride, padding, dilation, groups,
                       pass_: str) -> bool:
    """Whether the wgmma kernel of a pass serves this problem here: compute capability 9.0 with sm_90a code,
    and a problem it can describe."""
    return (device_capability(t) == (9, 0) and wgmma_code_present(t)
            and wgmma_conv_unsupported_reason(t.dtype, input_shape, weight_shape, stride, padding, dilation, groups,
                                              pass_) is None)


def pass_kernel_for(pass_: str, t: torch.Tensor, input_shape, weight_shape, stride, padding, dilation,
                    groups) -> str:
    """The kernel of a pass of a non-GEMM problem (``t``: the tensor the pass reads, for its dtype and device):
    on compute capability 9.0 with sm_90a code, the wgmma kernel where it serves (the newer step of the
    tensor-core ladder), else conv_kernel_for's choice."""
    kernel = conv_kernel_for(pass_, t.dtype, input_shape[1], weight_shape[0], groups, device_capability(t))
    if kernel == "implicit_gemm" and hopper_conv_serves(t, input_shape, weight_shape, stride, padding, dilation,
                                                        groups, pass_):
        return "wgmma"
    return kernel


def forward_kernel_for(x: torch.Tensor, weight_shape, stride, padding, dilation, groups) -> str:
    return pass_kernel_for("forward", x, x.shape, weight_shape, stride, padding, dilation, groups)


def input_grad_kernel_for(grad_output: torch.Tensor, input_shape, weight_shape, stride, padding, dilation,
                          groups) -> str:
    return pass_kernel_for("input_grad", grad_output, input_shape, weight_shape, stride, padding, dilation, groups)


def weight_grad_kernel_for(x: torch.Tensor, weight_shape, stride, padding, dilation, groups) -> str:
    return pass_kernel_for("weight_grad", x, x.shape, weight_shape, stride, padding, dilation, groups)


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
    kernel = input_grad_kernel_for(grad_output, input_shape, weight.shape, stride, padding, dilation, groups)
    return torch.ops.accelkernels.cuda_conv2d_input_grad(grad_output, weight, list(input_shape), list(stride),
                                                         list(padding), list(dilation), groups, kernel,
                                                         channels_last)


def weight_grad(grad_output, x, weight_shape, stride, padding, dilation, groups, channels_last: bool):
    kernel = weight_grad_kernel_for(x, weight_shape, stride, padding, dilation, groups)
    return torch.ops.accelkernels.cuda_conv2d_weight_grad(grad_output, x, list(weight_shape), list(stride),
                                                          list(padding), list(dilation), groups, kernel,
                                                          channels_last)
