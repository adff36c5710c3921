"""The epilogue activations: names, the reference forward, and their gradients.

Every backend applies the activation after the bias. "gelu" is the exact erf form (F.gelu's default).
Inside the ops the name is a plain string ("none" for no activation) because op schemas have no
optional strings that torch.compile treats as constants as cheaply.
"""

from __future__ import annotations

import torch

ACTIVATIONS = ("relu", "gelu", "silu")


def normalize(activation: str | None) -> str:
    """Public argument (None or a name) -> the op-level name; ValueError for anything else."""
    if activation is None:
        return "none"
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of None, 'relu', 'gelu', 'silu'; got {activation!r}")
    return activation


def public_name(activation: str) -> str | None:
    return None if activation == "none" else activation


def apply_(z: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply in place to a freshly computed pre-activation (the reference epilogue)."""
    if activation == "relu":
        return z.relu_()
    if activation == "gelu":
        return torch.ops.aten.gelu_(z)
    if activation == "silu":
        return torch.nn.functional.silu(z, inplace=True)
    return z


def apply(z: torch.Tensor, activation: str) -> torch.Tensor:
    """Out of place where autograd may need z, in place otherwise (the eager reference shortcut)."""
    if torch.is_grad_enabled() and z.requires_grad:
        if activation == "relu":
            return torch.relu(z)
        if activation == "gelu":
            return torch.nn.functional.gelu(z)
        if activation == "silu":
            return torch.nn.functional.silu(z)
        return z
    return apply_(z, activation)


def check_autograd(fn: str, activation: str, tensors) -> None:
    """Raise where torch's activation would: torch computes silu of complex tensors but has no
    derivative for it, so F.silu raises when autograd records it. The registered ops run their
    forward without autograd, so the public functions ask here first. (relu and gelu have no
    complex kernel at all: their forward raises either way.)"""
    if activation != "silu" or not tensors[0].is_complex() or not torch.is_grad_enabled():
        return
    if any(t is not None and t.requires_grad for t in tensors):
        from .ops._checks import fail  # lazily: accelkernels.ops imports this module

        fail(fn, f"activation='silu' has no gradient for {tensors[0].dtype} tensors in torch (F.silu raises "
                 "under autograd for complex outputs); compute without requires_grad, or without the activation")


def needs_preactivation(activation: str) -> bool:
    """relu's gradient can be read off its output; gelu's and silu's need the pre-activation."""
    return activation in ("gelu", "silu")


def backward(grad_out: torch.Tensor, out: torch.Tensor, preact: torch.Tensor | None, activation: str) -> torch.Tensor:
    """d(loss)/d(pre-activation), using torch's own gradient formulas so results match eager torch."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad_out, out, 0)
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(grad_out, preact)
    if activation == "silu":
        return torch.ops.aten.silu_backward(grad_out, preact)
    return grad_out
