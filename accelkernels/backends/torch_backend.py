"""The reference backend: torch's own ops (cuDNN/cuBLAS on GPU, ATen on CPU). Serves every valid call."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _activation
from .base import Backend


class TorchBackend(Backend):
    name = "torch"
    op_reasons = {"conv2d": None, "matmul": None, "linear": None}

    def describe(self) -> str:
        return "the reference: cuDNN/cuBLAS on GPU, ATen on CPU"

    def conv2d(self, input, weight, bias, stride, padding, dilation, groups, activation):
        out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        return _activation.apply_(out, activation)

    def _conv_backward(self, grad_output, input, weight, stride, padding, dilation, groups, mask):
        return torch.ops.aten.convolution_backward(
            grad_output, input, weight, None, stride, padding, dilation, False, [0, 0], groups, mask
        )

    def conv2d_input_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        return self._conv_backward(grad_output, input, weight, stride, padding, dilation, groups, [True, False, False])[0]

    def conv2d_weight_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        return self._conv_backward(grad_output, input, weight, stride, padding, dilation, groups, [False, True, False])[1]

    def matmul(self, a, b):
        return torch.matmul(a, b)

    def linear(self, input, weight, bias, activation):
        return _activation.apply_(F.linear(input, weight, bias), activation)
