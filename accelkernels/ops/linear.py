"""accelkernels.linear: F.linear's semantics, an optional fused activation, a choice of backend.

One registered op, ``accelkernels::linear(input, weight, bias, activation, backend)``; its backward
calls ``accelkernels::matmul`` for dX = dZ·W and dW = dZᵀ·X, so the backend's GEMM serves both.
"""

from __future__ import annotations

import math

import torch

from .. import _activation
from ..backends import Problem, autotune, check_name, resolve
from ..backends import torch_backend as reference
from . import _shortcut
from ._checks import autocast, check_same, check_tensor, fail
from .epilogue_backward import activation_backward_op, bias_grad_op
from .matmul import matmul_op

OP = "linear"


def _column_bias(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether bias is None or one value per output feature, the form the kernels' epilogue adds.
    torch also takes a 1-D weight, and biases that broadcast otherwise ((), (1,), (rows, N), ...)."""
    return bias is None or (weight.dim() == 2 and bias.dim() == 1 and bias.shape[0] == weight.shape[0])


def _linear_on(impl, input, weight, bias, activation) -> torch.Tensor:
    if impl.name == "torch" or _column_bias(weight, bias):
        # The reference gets the arguments as given: F.linear's own result, bit for bit.
        return impl.linear(input, weight, bias, activation).contiguous()
    # A kernel with a bias its epilogue cannot add: the GEMM on the kernel, then torch's add and
    # activation (F.linear: matmul, then the broadcast bias).
    out = impl.linear(input, weight if weight.dim() == 2 else weight.unsqueeze(0), None, "none")
    out = out.squeeze(-1) if weight.dim() == 1 else out
    return _activation.apply_(out + bias, activation).contiguous()


def linear_problem(input, weight, bias, activation, run=True) -> Problem:
    """What auto times for this call (autotune.linear_key): a kernel backend through the registered op,
    the reference as F.linear itself (see conv2d.forward_problem)."""

    def work(name: str):
        if name == "torch":
            return reference.linear(input, weight, bias, activation)
        return linear_op(input, weight, bias, activation, name)

    return Problem(lambda: autotune.linear_key(input, weight, bias, activation), work if run else None)


@torch.library.custom_op("accelkernels::linear", mutates_args=())
def linear_op(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str, backend: str
) -> torch.Tensor:
    impl = resolve(OP, backend, (input, weight, bias), problem=linear_problem(input, weight, bias, activation))
    autotune.ran(OP, impl.name)
    return _linear_on(impl, input, weight, bias, activation)


@linear_op.register_fake
def _(input, weight, bias, activation, backend):
    return input.new_empty((*input.shape[:-1], *weight.shape[:-1]))


def _setup_context(ctx, inputs, output):
    input, weight, bias, activation, backend = inputs
    ctx.activation, ctx.backend, ctx.has_bias = activation, backend, bias is not None
    ctx.column_bias = _column_bias(weight, bias)
    keep_output = output if activation == "relu" else None  # see conv2d: gelu/silu recompute
    ctx.save_for_backward(input, weight, bias, keep_output)


def _backward(ctx, grad):
    input, weight, bias, output = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = need_bias and ctx.has_bias
    weight_2d = weight if weight.dim() == 2 else weight.unsqueeze(0)  # a 1-D weight: one output feature
    out_features, in_features = weight_2d.shape
    rows = math.prod(input.shape[:-1])
    grad_2d = grad.reshape(rows, out_features)
    grad_bias = None
    if ctx.activation != "none":
        # dz = act'(z)·dy and dbias = Σ dz in one pass (one op, so a backend can fuse them).
        if _activation.needs_preactivation(ctx.activation):
            # The pre-activation, recomputed by the forward's own backend (a lookup of its decision, then
            # named: nothing is timed here).
            forward = resolve(OP, ctx.backend, (input, weight, bias),
                              problem=linear_problem(input, weight, bias, ctx.activation, run=False))
            saved = linear_op(input, weight, bias, "none", forward.name)
        else:
            saved = output
        grad_2d, grad_bias = activation_backward_op(grad_2d, saved.reshape(rows, out_features), ctx.activation,
                                                    ctx.backend)
    elif need_bias and ctx.column_bias:
        grad_bias = bias_grad_op(grad_2d, ctx.backend)
    if need_bias and not ctx.column_bias:
        # A broadcast bias: its gradient sums dz over the dims it was broadcast along.
        grad_bias = grad_2d.reshape(grad.shape).sum_to_size(bias.shape)
    grad_input = grad_weight = None
    # conj(): torch's gradients for complex tensors (dX = dZ·conj(W), dW = dZᵀ·conj(X)); free for real ones.
    if need_input:
        grad_input = matmul_op(grad_2d, weight_2d.conj(), ctx.backend).reshape(input.shape)
    if need_weight:
        grad_weight = matmul_op(grad_2d.mT, input.reshape(rows, in_features).conj(), ctx.backend).reshape(weight.shape)
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
        bias: (out_features,) or None; as in torch, any shape that broadcasts into the output
            without enlarging it ((), (1,), (1, out_features), ...).
        activation: None, "relu", "gelu" (exact erf) or "silu", applied after the bias.
        backend: "auto" (the current default, see ``use_backend``), "torch", "triton" or "cuda".

    Returns:
        (..., out_features), contiguous; (...) when weight is 1-D.

    Dtypes: every dtype torch's own op computes on that device (integer and complex too, on the
    reference backend); where torch has none, a NotImplementedError naming the arguments. The kernel
    backends take float16/bfloat16/float32 and refuse others (BackendUnavailableError), which
    ``"auto"`` sends to the reference.
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
    if input.shape[-1] != weight.shape[-1]:
        fail(OP, f"input has {input.shape[-1]} features (last dim) but weight expects {weight.shape[-1]} "
                 f"(weight.shape[-1]); input shape {list(input.shape)}, weight shape {list(weight.shape)}")
    if not _column_bias(weight, bias):  # the common (N,) bias needs no broadcasting check
        # torch adds the bias by broadcasting into the output, which it never enlarges.
        out_shape = torch.Size((*input.shape[:-1], *weight.shape[:-1]))
        try:
            fits = torch.broadcast_shapes(bias.shape, out_shape) == out_shape
        except RuntimeError:
            fits = False
        if not fits:
            expected = f"1-D with {weight.shape[0]} elements (weight.shape[0])" if weight.dim() == 2 else \
                f"broadcastable to the output's shape {list(out_shape)}"
            fail(OP, f"bias must be {expected}, got shape {list(bias.shape)}")
    _activation.check_autograd(OP, activation, (input, weight, bias))
    problem = linear_problem(input, weight, bias, activation)
    if _shortcut.reference_directly(OP, backend, (input, weight, bias), problem):
        return reference.linear(input, weight, bias, activation)
    return linear_op(input, weight, bias, activation, backend)
