"""The reference backend: torch's own ops (cuDNN/cuBLAS on GPU, ATen on CPU). Serves every valid call.

It computes every dtype torch's op computes (integer and complex too) and raises where torch raises:
a dtype torch has no kernel for becomes a NotComputedByTorchError naming the argument. The eager
shortcut (accelkernels/ops/_shortcut.py) calls the same ``conv2d``/``matmul``/``linear`` functions
below, so both paths give torch's answer, bit for bit.

Three geometries are routed around defects of torch 2.14.1's CPU convolution itself: see
``padding_only_dims`` (a crash), ``dead_tap_dims`` (garbage in bfloat16 weight gradients) and
``single_strided_column`` (wrong bfloat16 numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _activation
from .base import Backend


def _refused(fn: str, what: str, t: torch.Tensor, exc: BaseException) -> BaseException:
    from ..ops._checks import not_computed_by_torch  # lazily: accelkernels.ops imports this package

    return not_computed_by_torch(fn, what, t, exc)


def activate(fn: str, z: torch.Tensor, activation: str) -> torch.Tensor:
    """The epilogue on a fresh pre-activation (in place unless autograd needs z), torch's errors named."""
    try:
        return _activation.apply(z, activation)
    except NotImplementedError as exc:  # e.g. F.gelu of int64: torch has no kernel for it
        raise _refused(fn, f"activation={activation!r}", z, exc) from exc


# --- the CPU convolution crash ------------------------------------------------------------------
#
# torch 2.14.1's CPU convolution (its oneDNN path, which ATen picks for float32/bfloat16/float16)
# dies with SIGSEGV when, along H or W, every output position reads only zero padding, and that
# dim is dilated. Measured on this project's CPU machine (tests/test_fuzz.py re-checks it in a
# subprocess): 85 of 722 random such geometries crashed (float16 in any layout, bfloat16 mostly
# channels_last, float32 channels_last with a bias; float64 and integers never: they do not take
# the oneDNN path), and none of 6,242 other geometries did. Along such a dim every output is
# exactly bias + 0, so padding that dim explicitly (zeros torch then really reads) computes the
# same numbers through a geometry that does not crash. We route every CPU call of a oneDNN dtype
# with an all-padding dim (dilated or not): cheap, and the same answer where torch survives.


# The dtypes ATen's CPU convolution sends to oneDNN (complex ones as three real convolutions). The
# others (float64, integers) take ATen's own loops, which neither crash nor need the route.
ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.complex64, torch.complex32)


def _reads_only_padding(size: int, kernel: int, stride: int, padding: int, dilation: int) -> bool:
    """Along one dim: every output position's taps fall in the zero padding (none reads the input)."""
    # Fast exit for the common case: output 0's first tap at or right of the left padding edge.
    first = -(-padding // dilation)  # ceil(padding / dilation)
    if first < kernel and first * dilation - padding < size:
        return False
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    for tap in range(kernel):
        # outputs o whose tap lands in [0, size): padding <= o*stride + tap*dilation < padding + size
        lo = max(0, -(-(padding - tap * dilation) // stride))
        hi = min(outputs - 1, -(-(padding + size - tap * dilation) // stride) - 1)
        if lo <= hi:
            return False
    return outputs > 0


def padding_only_dims(input, weight, stride, padding, dilation) -> tuple[bool, bool]:
    """(H, W): whether every output along that dim reads only padding, for CPU inputs (else False).

    Inputs without elements never crash (ATen answers an empty batch or channel dim itself and
    refuses other empty inputs), so they stay with torch, to get its answer or its error."""
    if input.dtype not in ONEDNN_DTYPES or input.device.type != "cpu" or input.numel() == 0 or (
            padding[0] == 0 and padding[1] == 0):
        return (False, False)  # without padding, output 0 reads input row/column 0
    return (_reads_only_padding(input.shape[2], weight.shape[2], stride[0], padding[0], dilation[0]),
            _reads_only_padding(input.shape[3], weight.shape[3], stride[1], padding[1], dilation[1]))


# --- the CPU bfloat16 weight gradient's uninitialised entries ------------------------------------
#
# torch 2.14.1's CPU bfloat16 convolution backward (oneDNN) gets the weight-gradient entries of a
# "dead" tap wrong (a kernel row or column that, at every output, lands in the zero padding, so its
# exact gradient is 0): uninitialised garbage such as 1.5e10, 1.9e21 or NaN, different from run to
# run, or values off by ~0.1-3. Measured on this project's CPU machine: 14 of 1,043 random bfloat16
# geometries with a dead tap, 5 of 1,152 of them once single strided columns (below) are left out,
# all with a column stride above 1 (float16 and float32: none; without a dead tap: none), and 0 once
# the dead dims' padding is written out, so that the tap reads real zeros. The registered ops' backward pads those dims
# explicitly for every bfloat16 CPU weight gradient with a dead tap; the eager shortcut (torch's own
# autograd) hands such calls to the registered ops (``weight_grad_needs_route``). The forward stays
# torch's own call: its numbers are right, and padding would change their rounding.


def _has_dead_tap(size: int, kernel: int, stride: int, padding: int, dilation: int) -> bool:
    """Along one dim: some kernel tap reads only padding, at every output position."""
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    for tap in range(kernel):
        lo = max(0, -(-(padding - tap * dilation) // stride))
        hi = min(outputs - 1, -(-(padding + size - tap * dilation) // stride) - 1)
        if lo > hi:
            return True
    return False


def dead_tap_dims(input, weight, stride, padding, dilation) -> tuple[bool, bool]:
    """(H, W): whether a tap along that dim reads only padding, for CPU bfloat16 inputs (else False)."""
    if input.dtype != torch.bfloat16 or input.device.type != "cpu" or input.numel() == 0 or (
            padding[0] == 0 and padding[1] == 0):
        return (False, False)  # without padding every tap reads the input somewhere
    return (_has_dead_tap(input.shape[2], weight.shape[2], stride[0], padding[0], dilation[0]),
            _has_dead_tap(input.shape[3], weight.shape[3], stride[1], padding[1], dilation[1]))


def weight_grad_needs_route(input, weight, stride, padding, dilation) -> bool:
    """Whether autograd will ask torch for a bfloat16 CPU weight gradient with a dead tap."""
    if weight.dtype != torch.bfloat16 or not (torch.is_grad_enabled() and weight.requires_grad):
        return False
    return any(dead_tap_dims(input, weight, stride, padding, dilation))


# --- the CPU bfloat16 single-column convolution's wrong numbers -----------------------------------
#
# torch 2.14.1's CPU bfloat16 convolution (oneDNN) computes wrong numbers, forward and weight
# gradient, when the output is one column wide and the column stride is above 1. Measured on this
# project's CPU machine: 193 of 482 random such geometries had outputs off by up to 18 (float16,
# float32: 0 of ~1,000; bfloat16 with a one-row output and a row stride above 1: 0 of 537; other
# bfloat16 geometries: 0 of 5,800). With one output column the stride never moves the kernel, so
# the route computes with column stride 1 and keeps the first column (same taps, same sums).


def single_strided_column(input, weight, stride, padding, dilation) -> bool:
    """A CPU bfloat16 convolution whose output is one column wide with a column stride above 1."""
    if stride[1] == 1 or input.dtype != torch.bfloat16 or input.device.type != "cpu" or input.numel() == 0:
        return False
    return (input.shape[3] + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] == 0


def _plan(input, weight, stride, padding, dilation, weight_grad: bool):
    """How to call torch so it neither crashes nor computes garbage, or None for the direct call:
    (explicit padding (ph, pw), padding left to torch, stride)."""
    dims = padding_only_dims(input, weight, stride, padding, dilation)
    if weight_grad:
        dead = dead_tap_dims(input, weight, stride, padding, dilation)
        dims = (dims[0] or dead[0], dims[1] or dead[1])
    column = single_strided_column(input, weight, stride, padding, dilation)
    if not (dims[0] or dims[1] or column):
        return None
    explicit = ((padding[0] if dims[0] else 0), (padding[1] if dims[1] else 0))
    rest = [padding[0] - explicit[0], padding[1] - explicit[1]]
    return explicit, rest, [stride[0], 1] if column else list(stride)


def _padded(input, explicit):
    ph, pw = explicit
    return F.pad(input, (pw, pw, ph, ph)) if ph or pw else input


def conv2d(input, weight, bias, stride, padding, dilation, groups, activation="none"):
    """F.conv2d (4-D input, symmetric int padding) then the activation, with torch's memory format."""
    try:
        plan = _plan(input, weight, stride, padding, dilation, weight_grad=False)
        if plan is None:
            out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        else:
            from ..ops._layout import conv_output_format

            explicit, rest, new_stride = plan
            out = F.conv2d(_padded(input, explicit), weight, bias, new_stride, rest, dilation, groups)
            if new_stride[1] != stride[1]:
                out = out[..., :1]  # the one column the strided call has
            out = out.contiguous(memory_format=conv_output_format(input, weight))  # what torch returns
    except NotImplementedError as exc:  # e.g. bool tensors: torch has no convolution for them
        raise _refused("conv2d", "input and weight", input, exc) from exc
    return activate("conv2d", out, activation)


def conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, mask):
    """aten.convolution_backward -> (grad_input, grad_weight) (no bias), routed like ``conv2d``."""
    plan = _plan(input, weight, stride, padding, dilation, weight_grad=mask[1])
    if plan is None:
        explicit, rest, new_stride, padded = (0, 0), padding, stride, input
    else:
        explicit, rest, new_stride = plan
        padded = _padded(input, explicit)
        if new_stride[1] != stride[1]:
            # The stride-1 call's other columns get a zero gradient: they are not in the output.
            width = padded.shape[3] + 2 * rest[1] - dilation[1] * (weight.shape[3] - 1)
            grad_output = F.pad(grad_output, (0, width - 1))
    try:
        grad_padded, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_output, padded, weight, None, new_stride, rest, dilation, False, [0, 0], groups, mask
        )
    except NotImplementedError as exc:  # complex: see conv2d_complex_grads
        raise _refused("conv2d", "the gradient of input and weight", input, exc) from exc
    grad_input = grad_padded
    if mask[0] and padded is not input:
        from ..ops._layout import conv_output_format

        (ph, pw), (h, w) = explicit, input.shape[2:]
        # a slice of the padded call's gradient: made dense, in the format torch's would have
        grad_input = grad_padded[:, :, ph:ph + h, pw:pw + w].contiguous(memory_format=conv_output_format(input, weight))
    return grad_input, grad_weight


def conv2d_complex_grads(grad_output, input, weight, bias, stride, padding, dilation, groups, needs):
    """(grad_input, grad_weight, grad_bias) of a complex conv2d (None where ``needs`` is False).

    ATen has no complex convolution_backward: torch differentiates complex F.conv2d through the real
    convolutions it is built from. Running that same autograd gives torch's own gradients bit for
    bit. Call it where autograd records (a backward formula), not inside an op's implementation.
    """
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(need) if t is not None else None for t, need in zip((input, weight, bias), needs)]
        out = conv2d(*leaves, stride, padding, dilation, groups)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_output))
    return tuple(next(grads) if t is not None and t.requires_grad else None for t in leaves)


def matmul(a, b):
    try:
        return torch.matmul(a, b)
    except NotImplementedError as exc:  # e.g. bool, or a float8 matrix-vector product
        raise _refused("matmul", "a and b", a, exc) from exc


def linear(input, weight, bias, activation="none"):
    try:
        out = F.linear(input, weight, bias)
    except NotImplementedError as exc:
        raise _refused("linear", "input and weight", input, exc) from exc
    return activate("linear", out, activation)


class TorchBackend(Backend):
    name = "torch"
    op_reasons = {"conv2d": None, "matmul": None, "linear": None}

    def describe(self) -> str:
        return "the reference: cuDNN/cuBLAS on GPU, ATen on CPU"

    def conv2d(self, input, weight, bias, stride, padding, dilation, groups, activation):
        return conv2d(input, weight, bias, stride, padding, dilation, groups, activation)

    def conv2d_input_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        return conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, [True, False, False])[0]

    def conv2d_weight_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        return conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, [False, True, False])[1]

    def matmul(self, a, b):
        return matmul(a, b)

    def linear(self, input, weight, bias, activation):
        return linear(input, weight, bias, activation)
