"""Backward of the fused epilogue as registered ops, so each backend can serve it with its own kernel:

- ``activation_backward(grad, saved, activation, backend) -> (grad_preact, grad_bias)``: grad and
  saved are (..., N) — (rows, N) from linear, (batch, P, Q, K) from conv2d (its (N, K, P, Q)
  gradient permuted, a view) — saved is the output for relu and the pre-activation for gelu/silu;
  grad_preact comes back contiguous in that (..., N) order.
- ``bias_grad(grad, backend) -> grad_bias``: the sum over all but the last dim, for layers with a
  bias and no activation.

Both are served by the backend that serves ``linear`` for these tensors (elementwise work plus a
column reduction: the GEMM backends' epilogue kernels); ``epilogue=True`` tells the backend's input
check that these are not GEMM operands.
"""

from __future__ import annotations

import torch

from ..backends import resolve


@torch.library.custom_op("accelkernels::activation_backward", mutates_args=())
def activation_backward_op(
    grad: torch.Tensor, saved: torch.Tensor, activation: str, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    impl = resolve("linear", backend, (grad, saved), epilogue=True)
    dz, dbias = impl.activation_backward(grad, saved, activation)
    return dz.contiguous(), dbias


@activation_backward_op.register_fake
def _(grad, saved, activation, backend):
    return grad.new_empty(grad.shape), grad.new_empty(grad.shape[-1:])


@torch.library.custom_op("accelkernels::bias_grad", mutates_args=())
def bias_grad_op(grad: torch.Tensor, backend: str) -> torch.Tensor:
    return resolve("linear", backend, (grad,), epilogue=True).bias_grad(grad)


@bias_grad_op.register_fake
def _(grad, backend):
    return grad.new_empty(grad.shape[-1:])
