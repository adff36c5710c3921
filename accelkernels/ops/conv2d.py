"""accelkernels.conv2d: F.conv2d's semantics, an optional fused activation, a choice of backend.

Three registered ops (namespace ``accelkernels``), each with a fake kernel so torch.compile traces
them, and the backward wired through ``register_autograd`` onto the gradient ops so that kernels
for dgrad and wgrad slot in per backend:

- ``conv2d(input, weight, bias, stride, padding, dilation, groups, activation, backend)``
- ``conv2d_input_grad(grad_output, input, weight, stride, padding, dilation, groups, backend)``
- ``conv2d_weight_grad(grad_output, input, weight, stride, padding, dilation, groups, backend)``

At op level: input is 4-D, padding is symmetric ints (the public function turns "same"/"valid",
unbatched input and asymmetric "same" padding into that), activation is "none"/"relu"/"gelu"/"silu".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .. import _activation
from ..backends import BACKENDS, Problem, autotune, check_name, resolve
from ..backends import torch_backend as reference
from . import _shortcut
from ._checks import autocast, check_same, check_tensor, fail
from ._layout import conv_output_format, suggest_memory_format_symbolic
from .epilogue_backward import activation_backward_op, bias_grad_op

OP = "conv2d"


def output_size(in_size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (in_size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _output_shape(input, weight, stride, padding, dilation) -> list:
    n, _, h, w = input.shape
    k, _, r, s = weight.shape
    return [
        n,
        k,
        output_size(h, r, stride[0], padding[0], dilation[0]),
        output_size(w, s, stride[1], padding[1], dilation[1]),
    ]


# --- what each pass runs on a backend, and its problem for auto's timing -------------------------------


def _forward_on(impl, input, weight, bias, stride, padding, dilation, groups, activation):
    out = impl.conv2d(input, weight, bias, stride, padding, dilation, groups, activation)
    if impl.name == "torch":
        # torch's own result, in torch's own format: where the layouts are ambiguous (1x1 images,
        # one channel per group) ATen's per-group CPU path can differ from the usual rule.
        return out
    return out.contiguous(memory_format=conv_output_format(input, weight))


def _input_grad_on(impl, grad_output, input, weight, stride, padding, dilation, groups):
    out = impl.conv2d_input_grad(grad_output, input, weight, stride, padding, dilation, groups)
    # torch computes both gradients in the forward's format (channels_last if input or weight is),
    # not each in its own tensor's; the reference returns torch's own (see _forward_on).
    return out if impl.name == "torch" else out.contiguous(memory_format=conv_output_format(input, weight))


def _weight_grad_on(impl, grad_output, input, weight, stride, padding, dilation, groups):
    out = impl.conv2d_weight_grad(grad_output, input, weight, stride, padding, dilation, groups)
    return out if impl.name == "torch" else out.contiguous(memory_format=conv_output_format(input, weight))


def _problem(pass_, input, weight, has_bias, conv, activation, run) -> Problem:
    """The problem of one pass, keyed by the forward's input and weight (autotune.conv2d_key)."""
    return Problem(lambda: autotune.conv2d_key(pass_, input, weight, has_bias, *conv, activation), run)


def forward_problem(input, weight, bias, stride, padding, dilation, groups, activation, run=True) -> Problem:
    """What auto times for a forward: a kernel backend through the registered op with its name (the op's
    dispatch cost is part of a kernel's call), the reference as torch's own op, the cheapest way a call
    of it runs (the eager shortcut): any doubt favours cuDNN."""
    conv = (list(stride), list(padding), list(dilation), groups)

    def work(name: str):
        if name == "torch":
            return reference.conv2d(input, weight, bias, stride, padding, dilation, groups, activation)
        return conv2d_op(input, weight, bias, *conv, activation, name)

    return _problem("fwd", input, weight, bias is not None, conv, activation, work if run else None)


def _gradient(grad: str, op, on, backend: str, args: tuple, served: tuple) -> torch.Tensor:
    """One gradient pass ("input" or "weight"): its problem (the reference as torch's own kernel, a kernel
    backend through ``op`` with its name), the backend that serves it, and the result ``on`` it."""
    _, input, weight, stride, padding, dilation, groups = args
    problem = _problem("dgrad" if grad == "input" else "wgrad", input, weight, False,
                       (stride, padding, dilation, groups), "none",
                       lambda name: on(BACKENDS["torch"], *args) if name == "torch" else op(*args, name))
    impl = resolve(OP, backend, served, problem=problem, grad=grad)
    autotune.ran(f"conv2d_{grad}_grad", impl.name)
    return on(impl, *args)


# --- the ops ---------------------------------------------------------------------------------------


@torch.library.custom_op("accelkernels::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    activation: str,
    backend: str,
) -> torch.Tensor:
    problem = forward_problem(input, weight, bias, stride, padding, dilation, groups, activation)
    impl = resolve(OP, backend, (input, weight, bias), problem=problem)
    autotune.ran(OP, impl.name)
    return _forward_on(impl, input, weight, bias, stride, padding, dilation, groups, activation)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, activation, backend):
    shape = _output_shape(input, weight, stride, padding, dilation)
    fmt = conv_output_format(input, weight, suggest_memory_format_symbolic)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


@torch.library.custom_op("accelkernels::conv2d_input_grad", mutates_args=())
def conv2d_input_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    backend: str,
) -> torch.Tensor:
    """dL/dinput (input is passed for its shape and layout only)."""
    args = (grad_output, input, weight, stride, padding, dilation, groups)
    return _gradient("input", conv2d_input_grad_op, _input_grad_on, backend, args, (grad_output, weight))


@conv2d_input_grad_op.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, backend):
    fmt = conv_output_format(input, weight, suggest_memory_format_symbolic)
    return torch.empty(input.shape, dtype=input.dtype, device=input.device, memory_format=fmt)


@torch.library.custom_op("accelkernels::conv2d_weight_grad", mutates_args=())
def conv2d_weight_grad_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    backend: str,
) -> torch.Tensor:
    """dL/dweight (weight is passed for its shape and layout only)."""
    args = (grad_output, input, weight, stride, padding, dilation, groups)
    return _gradient("weight", conv2d_weight_grad_op, _weight_grad_on, backend, args, (grad_output, input))


@conv2d_weight_grad_op.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, backend):
    fmt = conv_output_format(input, weight, suggest_memory_format_symbolic)
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device, memory_format=fmt)


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, activation, backend = inputs
    ctx.conv = (list(stride), list(padding), list(dilation), groups)
    ctx.activation, ctx.backend = activation, backend
    ctx.has_bias = bias is not None
    # relu's gradient reads the output; gelu/silu recompute the pre-activation in backward rather
    # than keep a second activation-sized tensor alive between forward and backward.
    keep_output = output if activation == "relu" else None
    ctx.save_for_backward(input, weight, bias, keep_output)


def _backward(ctx, grad):
    input, weight, bias, output = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = need_bias and ctx.has_bias
    # The forward's backend (its decision, made when it ran: a lookup, never a timing).
    problem = forward_problem(input, weight, bias, stride, padding, dilation, groups, ctx.activation, run=False)
    forward_backend = resolve(OP, ctx.backend, (input, weight, bias), problem=problem).name
    reference_backward = forward_backend == "torch"
    if reference_backward and input.is_complex():
        # No activation here: the public function refuses complex ones under autograd, as torch does.
        grad_input, grad_weight, grad_bias = reference.conv2d_complex_grads(
            grad, input, weight, bias, stride, padding, dilation, groups, (need_input, need_weight, need_bias))
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None
    if grad.numel() == 0:
        # No output element (an empty batch, or ATen's empty-channel answer, whose output can even
        # have 0 channels): nothing depends on any input, so every gradient is zero, as torch's.
        zeros = [torch.zeros_like(t) if need else None for t, need in zip((input, weight, bias),
                                                                    (need_input, need_weight, need_bias))]
        return (*zeros, None, None, None, None, None, None)
    grad_input = grad_weight = grad_bias = None
    saved = None  # what the activation's gradient reads: relu its output, gelu/silu the pre-activation
    if ctx.activation != "none":
        if _activation.needs_preactivation(ctx.activation):
            # The pre-activation, recomputed by the forward's own backend (named: nothing is timed here).
            saved = conv2d_op(input, weight, bias, stride, padding, dilation, groups, "none", forward_backend)
        else:
            saved = output
    if reference_backward:
        # The reference keeps torch's own epilogue backward, in the gradient's layout (no NHWC copy).
        grad = _activation.backward(grad, saved, saved, ctx.activation)
        if need_bias:
            grad_bias = grad.sum((0, 2, 3))
    elif ctx.activation != "none":
        # Kernel backends: dz = act'(z)·dy and dbias = Σ dz in one pass (one op, so a backend can fuse
        # them), on (N, P, Q, K) views — channels last in logical order, so the bias gradient is a sum
        # over all but the last dim; dz comes back as (N, K, P, Q) channels_last.
        dz, grad_bias = activation_backward_op(grad.permute(0, 2, 3, 1), saved.permute(0, 2, 3, 1),
                                               ctx.activation, ctx.backend)
        grad = dz.permute(0, 3, 1, 2)
    elif need_bias:
        grad_bias = bias_grad_op(grad.permute(0, 2, 3, 1), ctx.backend)
    if need_input:
        grad_input = conv2d_input_grad_op(grad, input, weight, stride, padding, dilation, groups, ctx.backend)
    if need_weight:
        grad_weight = conv2d_weight_grad_op(grad, input, weight, stride, padding, dilation, groups, ctx.backend)
    return grad_input, grad_weight, grad_bias if need_bias else None, None, None, None, None, None, None


conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# --- the public function ---------------------------------------------------------------------------


def _pair(fn: str, name: str, value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    fail(fn, f"{name} must be an int or a pair of ints, got {value!r}")


def _check_conv2d(input, weight, bias, stride, dilation, groups):
    """Validate the arguments; returns (input, weight, bias) after torch.autocast's cast (before the
    dtype check, as F.conv2d: under autocast an fp32 weight meets a bf16 activation)."""
    check_tensor(OP, "input", input)
    check_tensor(OP, "weight", weight)
    check_tensor(OP, "bias", bias, optional=True)
    if input.dim() not in (3, 4):
        fail(OP, f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {list(input.shape)}")
    if weight.dim() != 4:
        fail(OP, f"weight must be 4-D (out_channels, in_channels/groups, kH, kW), got shape {list(weight.shape)}")
    input, weight, bias = autocast(input, weight, bias)
    check_same(OP, "input", input, "weight", weight)
    check_same(OP, "input", input, "bias", bias)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        fail(OP, f"groups must be a positive int, got {groups!r}")
    if min(stride) <= 0:
        fail(OP, f"stride must be positive, got {stride}")
    if min(dilation) <= 0:
        fail(OP, f"dilation must be positive, got {dilation}")
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    if out_channels % groups != 0:
        fail(OP, f"weight has {out_channels} output channels, which groups={groups} does not divide")
    channels = input.shape[-3]
    if channels != in_per_group * groups:
        fail(
            OP,
            f"input has {channels} channels but weight expects {in_per_group * groups} "
            f"(weight.shape[1]={in_per_group} x groups={groups}); input shape {list(input.shape)}, "
            f"weight shape {list(weight.shape)}",
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        fail(OP, f"bias must be 1-D with {out_channels} elements (weight.shape[0]), got shape {list(bias.shape)}")
    return input, weight, bias


def _resolve_padding(padding, weight, stride, dilation) -> tuple[tuple[int, int], tuple[int, int]]:
    """-> (symmetric padding, extra right/bottom padding), following torch's "same" convention."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            fail(OP, f"padding must be an int, a pair of ints, 'same' or 'valid'; got {padding!r}")
        if stride != (1, 1):
            fail(OP, f"padding='same' is not supported for strided convolutions (stride={stride})")
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        # torch pads the odd extra on the right/bottom (even kernels with odd dilation).
        return (totals[0] // 2, totals[1] // 2), (totals[0] % 2, totals[1] % 2)
    pad = _pair(OP, "padding", padding)
    if min(pad) < 0:
        fail(OP, f"padding must be non-negative, got {pad}")
    return pad, (0, 0)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    activation: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """2-D convolution with ``torch.nn.functional.conv2d``'s semantics, then an optional activation.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W); any memory format.
        weight: (K, C / groups, R, S).
        bias: (K,) or None.
        stride, dilation: int or (sH, sW), positive.
        padding: int, (pH, pW), ``"same"`` (stride 1 only) or ``"valid"``.
        groups: divides C and K; groups == C is depthwise.
        activation: None, "relu", "gelu" (exact erf) or "silu", applied after the bias; fused
            into the kernel's epilogue where the backend can.
        backend: "auto" (the current default, see ``use_backend``), "torch", "triton" or "cuda".

    Returns:
        (N, K, P, Q) — or (K, P, Q) for unbatched input — channels_last if input or weight is
        (as torch). Under ``torch.autocast`` it runs in the autocast dtype, as F.conv2d does.

    Dtypes: every dtype torch's own op computes on that device (integer and complex too, on the
    reference backend); where torch has none, a NotImplementedError naming the arguments. The kernel
    backends take float16/bfloat16/float32 and refuse others (BackendUnavailableError), which
    ``"auto"`` sends to the reference.
    """
    activation = _activation.normalize(activation)
    check_name(backend)
    stride = _pair(OP, "stride", stride)
    dilation = _pair(OP, "dilation", dilation)
    input, weight, bias = _check_conv2d(input, weight, bias, stride, dilation, groups)
    pad, extra = _resolve_padding(padding, weight, stride, dilation)

    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    if extra != (0, 0):
        fmt = suggest_memory_format_symbolic(x)  # traced under torch.compile: the symbolic-safe version
        x = F.pad(x, (0, extra[1], 0, extra[0])).contiguous(memory_format=fmt)
    _, _, h, w = x.shape
    _, _, r, s = weight.shape
    padded_hw = (h + 2 * pad[0], w + 2 * pad[1])
    reach = (dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1)
    if reach[0] > padded_hw[0] or reach[1] > padded_hw[1]:
        fail(
            OP,
            f"the kernel {tuple(weight.shape[2:])} with dilation {dilation} spans {reach}, more than the "
            f"padded input {padded_hw} (input {tuple(x.shape[2:])} + padding {pad})",
        )
    _activation.check_autograd(OP, activation, (x, weight, bias))
    problem = forward_problem(x, weight, bias, stride, pad, dilation, groups, activation)
    if _shortcut.reference_directly(OP, backend, (x, weight, bias), problem) and not reference.weight_grad_needs_route(
            x, weight, stride, pad, dilation):
        out = reference.conv2d(x, weight, bias, stride, pad, dilation, groups, activation)
    else:
        out = conv2d_op(x, weight, bias, list(stride), list(pad), list(dilation), groups, activation, backend)
    return out.squeeze(0) if unbatched else out
