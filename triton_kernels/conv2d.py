"""The Triton conv2d: which kernel serves a convolution, their configurations, and the launches.

    forward   1x1, stride 1, no padding, groups 1 -> the GEMM kernel (matmul.bmm) on views
              groups = C (depthwise)              -> conv2d_depthwise.depthwise_fwd_kernel
              everything else                     -> conv2d_implicit_gemm.conv2d_fwd_kernel
    dgrad     1x1 as above                        -> the GEMM kernel
              depthwise / else                    -> depthwise_dgrad_kernel / conv2d_dgrad_kernel
    wgrad     depthwise / else                    -> depthwise_wgrad_kernel / conv2d_wgrad_kernel
              (1x1 stays on the wgrad kernel: its split reduction keeps the GPU busy where the
              GEMM kernel, whose reduction is not split, would run a handful of tiles)

Arguments are validated by accelkernels.ops before they reach this module: 4-D tensors, symmetric
integer padding, sizes that give a non-empty output window. Outputs are written in the memory
format the caller asks for (the op's rule: channels_last if input or weight is).

Configurations: @triton.autotune keyed on the problem; the candidate list is the GEMM's shapes
adapted to convolutions (BLOCK_K down to 16 for few channels per group), not yet tuned on a card by
this project. Under TRITON_INTERPRET=1, and with ACCELKERNELS_TRITON_AUTOTUNE=0, one fixed
configuration runs (as for the GEMM).
"""

from __future__ import annotations

import math

import torch
import triton

from ..backends._batched import is_depthwise, is_pointwise as _is_pointwise, pixel_rows as _pixel_rows
from . import interpreting
from .conv2d_depthwise import depthwise_dgrad_kernel, depthwise_fwd_kernel, depthwise_wgrad_kernel
from .conv2d_implicit_gemm import conv2d_dgrad_kernel, conv2d_fwd_kernel, conv2d_wgrad_kernel
from .matmul import SMEM_LIMIT, autotuning, bmm
from .matmul import _config  # (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps) -> triton.Config, as for the GEMM


CONFIGS = [
    _config(128, 128, 64, 3, 8),  # wide layers (C, K >= 128)
    _config(128, 256, 64, 3, 8),
    _config(128, 128, 32, 4, 4),
    _config(128, 64, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(128, 64, 32, 4, 4),
    _config(64, 64, 64, 4, 4),
    _config(64, 64, 32, 4, 4),
    _config(128, 32, 32, 4, 4),  # few output channels per group
    _config(64, 32, 32, 4, 4),
    _config(64, 64, 16, 4, 4),  # few input channels (the RGB stem: C = 3)
    _config(128, 64, 16, 4, 4),
]
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}
FIXED_CONFIG = CONFIGS[7]  # ACCELKERNELS_TRITON_AUTOTUNE=0: fits every dtype and channel count
# Depthwise tiles: 64 pixels x 32 channels (elementwise, no tensor cores); untuned.
DEPTHWISE_BLOCK_M, DEPTHWISE_BLOCK_C, DEPTHWISE_WARPS = 64, 32, 4
# wgrad splits its N·P·Q reduction so that about this many programs run (a few waves on 132 SMs);
# each split keeps at least MIN_PIXELS_PER_SPLIT pixels so the partial sums stay few. Untuned.
WGRAD_TARGET_PROGRAMS, MIN_PIXELS_PER_SPLIT = 528, 512


def _fits(config, element_size: int, reduce_channels: int, out_channels: int) -> bool:
    kw = config.kwargs
    smem = config.num_stages * (kw["BLOCK_M"] * kw["BLOCK_K"] + kw["BLOCK_K"] * kw["BLOCK_N"]) * element_size
    # A BLOCK_K (BLOCK_N) far wider than the channels it covers would load mostly masked zeros.
    return (smem <= SMEM_LIMIT and kw["BLOCK_K"] <= max(16, triton.next_power_of_2(reduce_channels))
            and kw["BLOCK_N"] <= max(32, triton.next_power_of_2(out_channels)))


def _prune(reduce_arg: str, cols_arg: str, pointer: str):
    def prune(configs, named_args, **kwargs):
        size = named_args[pointer].element_size()
        kept = [c for c in configs if _fits(c, size, named_args[reduce_arg], named_args[cols_arg])]
        return kept or [FIXED_CONFIG]
    return prune


_KEY = ["N", "H", "W", "P", "Q", "CG", "KG", "R", "S", "stride_h", "stride_w", "dil_h", "dil_w"]
conv2d_fwd = triton.autotune(configs=CONFIGS, key=_KEY + ["sxc"],
                             prune_configs_by={"early_config_prune": _prune("CG", "KG", "x_ptr")})(conv2d_fwd_kernel)
conv2d_dgrad = triton.autotune(configs=CONFIGS, key=_KEY + ["sdyk"],
                               prune_configs_by={"early_config_prune": _prune("KG", "CG", "dy_ptr")})(conv2d_dgrad_kernel)
conv2d_wgrad = triton.autotune(configs=CONFIGS, key=_KEY + ["sxc", "PIXELS_PER_SPLIT"],
                               prune_configs_by={"early_config_prune": _prune("KG", "CG", "x_ptr")})(conv2d_wgrad_kernel)


# --- which kernel --------------------------------------------------------------------------------


def forward_kernel(input_shape, weight_shape, stride, padding, groups, input=None, output=None) -> str:
    """The kernel the forward uses: "gemm", "depthwise" or "implicit_gemm"."""
    if _is_pointwise(weight_shape, stride, padding, groups) and (input is None or _pixel_rows(input, output)):
        return "gemm"
    if is_depthwise(input_shape[1], groups):
        return "depthwise"
    return "implicit_gemm"


# --- launches ------------------------------------------------------------------------------------


def _input_precision(dtype: torch.dtype) -> str:
    """fp32 convolutions use TF32 when torch's own convolutions would (torch.backends.cudnn.allow_tf32)."""
    return "tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else "ieee"


def _result_buffer(shape, like: torch.Tensor, memory_format) -> tuple[torch.Tensor, bool]:
    """The output buffer and whether it is fp32 standing in for bf16 (see matmul.bmm: Triton 3.8's
    interpreter mishandles bf16 dots and rounding, so there the kernels compute and store fp32)."""
    upcast = interpreting() and like.dtype == torch.bfloat16
    dtype = torch.float32 if upcast else like.dtype
    return torch.empty(shape, dtype=dtype, device=like.device, memory_format=memory_format), upcast


def _launch_gemm_family(kernel, tuned, grid_of, args, constexprs):
    """Run an implicit-GEMM kernel: the autotuned version, or one fixed configuration."""
    if interpreting():
        kernel[grid_of(INTERPRETER_CONFIG)](*args, **constexprs, **INTERPRETER_CONFIG)
    elif autotuning():
        tuned[lambda meta: grid_of(meta)](*args, **constexprs)
    else:
        fixed = FIXED_CONFIG
        kernel[grid_of(fixed.kwargs)](*args, **constexprs, **fixed.kwargs, num_warps=fixed.num_warps,
                                      num_stages=fixed.num_stages)


def _geometry(stride, padding, dilation):
    return (*stride, *padding, *dilation)


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups, activation, memory_format) -> torch.Tensor:
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    p = (h + 2 * padding[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + 2 * padding[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    y, upcast = _result_buffer((n, k, p, q), x, memory_format)
    if y.numel() == 0:
        return y.to(x.dtype)
    kernel = forward_kernel(x.shape, weight.shape, stride, padding, groups, x, y)
    if kernel == "gemm":
        a3, y3 = _pixel_rows(x, y)
        b3 = weight[:, :, 0, 0].t().unsqueeze(0).expand(a3.shape[0], c, k)
        bmm(a3, b3, bias, activation, out=y3, input_precision=_input_precision(x.dtype))
        return y.to(x.dtype)
    bias_arg = bias if bias is not None else y
    geometry = _geometry(stride, padding, dilation)
    if kernel == "depthwise":
        grid = (triton.cdiv(n * p * q, DEPTHWISE_BLOCK_M), triton.cdiv(k, DEPTHWISE_BLOCK_C))
        depthwise_fwd_kernel[grid](
            x, weight, bias_arg, y, n, h, w, p, q, k, r, s, k // c, *geometry,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3), weight.stride(0), weight.stride(2), weight.stride(3),
            *y.stride(), HAS_BIAS=bias is not None, ACTIVATION=activation,
            BLOCK_M=DEPTHWISE_BLOCK_M, BLOCK_C=DEPTHWISE_BLOCK_C, **_warps(DEPTHWISE_WARPS))
        return y.to(x.dtype)
    kg = k // groups

    def grid(meta):
        return (triton.cdiv(n * p * q, meta["BLOCK_M"]) * triton.cdiv(kg, meta["BLOCK_N"]) * groups,)

    args = (x, weight, bias_arg, y, n, h, w, p, q, cg, kg, r, s, *geometry, *x.stride(), *weight.stride(), *y.stride())
    constexprs = dict(HAS_BIAS=bias is not None, ACTIVATION=activation, INPUT_PRECISION=_input_precision(x.dtype),
                      UPCAST_OPERANDS=upcast)
    _launch_gemm_family(conv2d_fwd_kernel, conv2d_fwd, grid, args, constexprs)
    return y.to(x.dtype)


def _warps(num_warps: int) -> dict:
    return {} if interpreting() else {"num_warps": num_warps}


def conv2d_input_grad(grad_output, input_shape, weight, stride, padding, dilation, groups, memory_format) -> torch.Tensor:
    n, c, h, w = input_shape
    k, cg, r, s = weight.shape
    _, _, p, q = grad_output.shape
    dx, upcast = _result_buffer((n, c, h, w), grad_output, memory_format)
    if dx.numel() == 0:
        return dx.to(grad_output.dtype)
    if grad_output.numel() == 0:  # nothing flows back (an empty output window cannot happen here)
        return dx.zero_().to(grad_output.dtype)
    precision = _input_precision(grad_output.dtype)
    if _is_pointwise(weight.shape, stride, padding, groups):
        views = _pixel_rows(grad_output, dx)
        if views is not None:  # dX (pixels, C) = dY (pixels, K) · W (K, C)
            dy3, dx3 = views
            w3 = weight[:, :, 0, 0].unsqueeze(0).expand(dy3.shape[0], k, c)
            bmm(dy3, w3, None, "none", out=dx3, input_precision=precision)
            return dx.to(grad_output.dtype)
    geometry = _geometry(stride, padding, dilation)
    if is_depthwise(c, groups):
        grid = (triton.cdiv(n * h * w, DEPTHWISE_BLOCK_M), triton.cdiv(c, DEPTHWISE_BLOCK_C))
        depthwise_dgrad_kernel[grid](
            grad_output, weight, dx, n, h, w, p, q, c, r, s, k // c, *geometry,
            *grad_output.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *dx.stride(),
            BLOCK_M=DEPTHWISE_BLOCK_M, BLOCK_C=DEPTHWISE_BLOCK_C, **_warps(DEPTHWISE_WARPS))
        return dx.to(grad_output.dtype)
    kg = k // groups
    phase_pixels = n * triton.cdiv(h, stride[0]) * triton.cdiv(w, stride[1])  # the largest phase

    def grid(meta):
        return (triton.cdiv(phase_pixels, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"]) * groups,
                stride[0] * stride[1])

    # Taps reaching one phase are every stride/gcd(dilation, stride)-th (see conv2d_dgrad_kernel).
    steps = [st // math.gcd(d, st) for st, d in zip(stride, dilation)]
    args = (grad_output, weight, dx, n, h, w, p, q, cg, kg, r, s, *geometry,
            *grad_output.stride(), *weight.stride(), *dx.stride(), *steps)
    _launch_gemm_family(conv2d_dgrad_kernel, conv2d_dgrad, grid, args,
                        dict(INPUT_PRECISION=precision, UPCAST_OPERANDS=upcast))
    return dx.to(grad_output.dtype)


def _splits(pixels: int, programs_per_split: int) -> int:
    if interpreting():  # two splits still exercise the partial-sum path, cheaply
        return max(1, min(2, triton.cdiv(pixels, 64)))
    wanted = triton.cdiv(WGRAD_TARGET_PROGRAMS, max(1, programs_per_split))
    return max(1, min(wanted, pixels // MIN_PIXELS_PER_SPLIT))


def conv2d_weight_grad(grad_output, x, weight_shape, stride, padding, dilation, groups, memory_format) -> torch.Tensor:
    n, c, h, w = x.shape
    k, cg, r, s = weight_shape
    _, _, p, q = grad_output.shape
    pixels = n * p * q
    dtype = grad_output.dtype
    if pixels == 0 or k * cg * r * s == 0:
        return torch.zeros(weight_shape, dtype=dtype, device=x.device).contiguous(memory_format=memory_format)
    geometry = _geometry(stride, padding, dilation)
    if is_depthwise(c, groups):
        channel_blocks = triton.cdiv(k, DEPTHWISE_BLOCK_C)
        splits = _splits(pixels, channel_blocks * r * s)
        per_split = triton.cdiv(pixels, splits)
        partial = torch.empty((splits, k, 1, r, s), dtype=torch.float32, device=x.device)
        depthwise_wgrad_kernel[(channel_blocks, r * s, splits)](
            grad_output, x, partial, n, h, w, p, q, k, r, s, k // c, per_split, *geometry,
            *grad_output.stride(), *x.stride(),
            BLOCK_M=DEPTHWISE_BLOCK_M, BLOCK_C=DEPTHWISE_BLOCK_C, **_warps(DEPTHWISE_WARPS))
    else:
        kg = k // groups
        # Splits are sized for 64x64 tiles whatever the config, so the partial buffer does not depend on it.
        splits = _splits(pixels, triton.cdiv(kg, 64) * triton.cdiv(cg, 64) * groups * r * s)
        per_split = triton.cdiv(pixels, splits)
        partial = torch.empty((splits, k, cg, r, s), dtype=torch.float32, device=x.device)

        def grid(meta):
            return (triton.cdiv(kg, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"]) * groups * r * s, splits)

        args = (grad_output, x, partial, n, h, w, p, q, cg, kg, r, s, per_split, *geometry,
                *grad_output.stride(), *x.stride())
        _launch_gemm_family(conv2d_wgrad_kernel, conv2d_wgrad, grid, args,
                            dict(INPUT_PRECISION=_input_precision(dtype), UPCAST_OPERANDS=interpreting()
                                 and dtype == torch.bfloat16))
    # The splits' fp32 partial sums, added in fp64 in a fixed order (deterministic), rounded once.
    return partial.sum(0, dtype=torch.float64).to(dtype).contiguous(memory_format=memory_format)
