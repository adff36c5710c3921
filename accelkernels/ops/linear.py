"""accelkernels.linear: F.linear's semantics, an optional fused activation, a choice of backend.

One registered op, ``accelkernels::linear(input, weight, bias, activation, backend)``; its backward
calls ``accelkernels::matmul`` for dX = dZ·W and dW = dZᵀ·X, so the backend's GEMM serves both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _activation
from ..backends import check_name, resolve
from . import _shortcut
from ._checks import autocast, check_same, check_tensor, fail
from .epilogue_backward import activation_backward_op, bias_grad_op
from .matmul import matmul_op

OP = "linear"


@torch.library.custom_op("accelkernels::linear", mutates_args=())
def linear_op(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str, backend: str
) -> torch.Tensor:
    impl = resolve(OP, backend, (input, weight, bias))
    return impl.linear(input, weight, bias, activation).contiguous()


@linear_op.register_fake
def _(input, weight, bias, activation, backend):
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


def _setup_context(ctx, inputs, output):
    input, weight, bias, activation, backend = inputs
    ctx.activation, ctx.backend, ctx.has_bias = activation, backend, bias is not None
    keep_output = output if activation == "relu" else None  # see conv2d: gelu/silu recompute
    ctx.save_for_backward(input, weight, bias, keep_output)


def _backward(ctx, grad):
    input, weight, bias, output = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = need_bias and ctx.has_bias
    out_features, in_features = weight.shape
    rows = math.prod(input.shape[:-1])
    grad_2d = grad.reshape(rows, out_features)
    grad_bias = None
    if ctx.activation != "none":
        # dz = act'(z)·dy and dbias = Σ dz in one pass (one op, so a backend can fuse them).
        if _activation.needs_preactivation(ctx.activation):
            saved = linear_op(input, weight, bias, "none", ctx.backend)
        else:
            saved = output
        grad_2d, grad_bias = activation_backward_op(grad_2d, saved.reshape(rows, out_features), ctx.activation,
                                                    ctx.backend)
    elif need_bias:
        grad_bias = bias_grad_op(grad_2d, ctx.backend)
    grad_input = grad_weight = None
    if need_input:
        grad_input = matmul_op(grad_2d, weight, ctx.backend).reshape(input.shape)
    if need_weight:
        grad_weight = matmul_op(grad_2d.mT, input.reshape(rows, in_features), ctx.backend)
    return grad_input, grad_weight, grad_bias if need_bias else None, None, None


linear_op.register_autograd(_backward, setup_context=_setup_context)


def linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``y = activation(input @ weight.T + bias)`` with ``torch.nn.functional.linear``'s semantics.

    Args:
        input: (..., in_features), at least 1-D.
        weight: (out_features, in_features), or (in_features,) for a scalar output per row.
        bias: (out_features,) or None (a 1-element bias broadcasts, as in torch).
        activation: None, "relu", "gelu" (exact erf) or "silu", applied after the bias.
        backend: "auto" (the current default, see ``use_backend``), "torch", "triton" or "cuda".

    Returns:
        (..., out_features), contiguous; (...) when weight is 1-D.
    """
    activation = _activation.normalize(activation)
    check_name(backend)
    check_tensor(OP, "input", input)
    check_tensor(OP, "weight", weight)
    check_tensor(OP, "bias", bias, optional=True)
    if input.dim() == 0:
        fail(OP, "input must be at least 1-D (..., in_features), got a 0-D tensor")
    if weight.dim() not in (1, 2):
        fail(OP, f"weight must be 2-D (out_features, in_features) or 1-D, got shape {list(weight.shape)}")
    input, weight, bias = autocast(input, weight, bias)
    check_same(OP, "input", input, "weight", weight)
    check_same(OP, "input", input, "bias", bias)
    vector_weight = weight.dim() == 1
    if vector_weight:
        if bias is not None:
            fail(OP, "a 1-D weight takes no bias (as in torch)")
        weight = weight.unsqueeze(0)
    if input.shape[-1] != weight.shape[1]:
        fail(OP, f"input has {input.shape[-1]} features (last dim) but weight expects {weight.shape[1]} "
                 f"(weight.shape[1]); input shape {list(input.shape)}, weight shape {list(weight.shape)}")
    if bias is not None:
        if bias.dim() > 1 or bias.numel() not in (1, weight.shape[0]):
            fail(OP, f"bias must be 1-D with {weight.shape[0]} elements (weight.shape[0]), got shape {list(bias.shape)}")
        if bias.numel() != weight.shape[0] or bias.dim() == 0:
            bias = bias.reshape(1).expand(weight.shape[0]).contiguous()
    if _shortcut.reference_directly(OP, backend, (input, weight, bias)):
        out = _activation.apply(F.linear(input, weight, bias), activation)
    else:
        out = linear_op(input, weight, bias, activation, backend)
    return out.squeeze(-1) if vector_weight else out
