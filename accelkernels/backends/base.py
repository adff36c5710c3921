"""What every backend provides. Ops call these after validation, so inputs are well-formed here."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _activation

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Backend:
    name: str = ""
    # op -> None when this backend implements it, else the reason it does not (shown by `info`).
    op_reasons: dict[str, str | None] = {}

    # -- can it serve? ------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run on this machine at all, or None. Must not compile anything."""
        return None

    def describe(self) -> str:
        return ""

    def op_unsupported_reason(self, op: str) -> str | None:
        return self.op_reasons.get(op, f"no {op} kernel in the {self.name} backend")

    def inputs_unsupported_reason(self, op: str, tensors: Sequence[torch.Tensor | None], **details) -> str | None:
        """Why these particular inputs (device, dtype, layout, shape) cannot be served, or None."""
        return None

    def why_not(self, op: str, tensors: Sequence[torch.Tensor | None], **details) -> str | None:
        why = self.unavailable_reason() or self.op_unsupported_reason(op)
        if why is not None:
            return why
        why = self.inputs_unsupported_reason(op, tensors, **details)
        if why is not None and self.name != "torch":
            # The fix for inputs a kernel cannot take (a dtype, a device, a layout): the reference
            # takes every input torch's own op takes, and "auto" falls back to it by itself.
            why += "; backend='auto' (or 'torch') computes such calls with torch's own op"
        return why

    # -- the kernels (shapes as in accelkernels.ops; activation is "none"/"relu"/"gelu"/"silu") ----
    def conv2d(self, input, weight, bias, stride, padding, dilation, groups, activation) -> torch.Tensor:
        raise NotImplementedError

    def conv2d_input_grad(self, grad_output, input, weight, stride, padding, dilation, groups) -> torch.Tensor:
        raise NotImplementedError

    def conv2d_weight_grad(self, grad_output, input, weight, stride, padding, dilation, groups) -> torch.Tensor:
        raise NotImplementedError

    def matmul(self, a, b) -> torch.Tensor:
        raise NotImplementedError

    def linear(self, input, weight, bias, activation) -> torch.Tensor:
        raise NotImplementedError

    # -- the epilogue's backward, on (..., N) tensors (channels last: a convolution's gradient arrives
    #    as (batch, P, Q, K)). Backends without a kernel of their own for it use torch's ops (the
    #    reference's formulas), so their linear and conv2d backward still work.
    def activation_backward(self, grad, saved, activation) -> tuple[torch.Tensor, torch.Tensor]:
        out, preact = (saved, None) if activation == "relu" else (None, saved)
        dz = _activation.backward(grad, out, preact, activation)
        return dz, self.bias_grad(dz)

    def bias_grad(self, grad) -> torch.Tensor:
        return grad.sum(tuple(range(grad.dim() - 1)))
