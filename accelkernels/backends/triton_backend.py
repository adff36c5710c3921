"""The Triton backend (triton_kernels/, installed as accelkernels.triton_kernels).

On CUDA tensors it compiles and runs the kernels on the GPU. On CPU tensors it runs them through
Triton's interpreter when TRITON_INTERPRET=1 — slow, and meant for tests: that is how CI proves
the kernels correct without a GPU. The variable must be set before Triton compiles a kernel.
"""

from __future__ import annotations

import importlib.util

import torch

from ..triton_kernels import interpreting
from .base import Backend
from ._batched import linear_as_bmm, matmul_as_bmm

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class TritonBackend(Backend):
    name = "triton"
    op_reasons = {
        "conv2d": None,
        "matmul": None,
        "linear": None,
    }

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (it comes with torch's CUDA builds on Linux: pip install triton)"
        if not interpreting() and not torch.cuda.is_available():
            return "no CUDA GPU visible (set TRITON_INTERPRET=1 to run the kernels on CPU tensors, slowly)"
        return None

    def describe(self) -> str:
        if interpreting():
            return "Triton kernels (TRITON_INTERPRET=1: CPU tensors run in the interpreter)"
        return "Triton kernels compiled for the GPU"

    def inputs_unsupported_reason(self, op, tensors, **details):
        present = [t for t in tensors if t is not None]
        device = present[0].device
        if device.type == "cpu" and not interpreting():
            return "the tensors are on the CPU; Triton runs them only with TRITON_INTERPRET=1 (for tests)"
        if device.type not in ("cpu", "cuda"):
            return f"tensors on {device.type} are not supported"
        if present[0].dtype not in DTYPES:
            return f"dtype {present[0].dtype} is not supported (float16, bfloat16 and float32 are)"
        return None

    # conv2d: implicit GEMM, a depthwise kernel, 1x1 on the GEMM kernel (triton_kernels/conv2d.py).
    # Outputs are allocated in the format the op returns, so the op's .contiguous() is free.
    def conv2d(self, input, weight, bias, stride, padding, dilation, groups, activation):
        from ..ops._layout import conv_output_format
        from ..triton_kernels import conv2d as triton_conv2d

        return triton_conv2d.conv2d_forward(input, weight, bias, stride, padding, dilation, groups, activation,
                                            conv_output_format(input, weight))

    def conv2d_input_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        from ..ops._layout import suggest_memory_format
        from ..triton_kernels import conv2d as triton_conv2d

        return triton_conv2d.conv2d_input_grad(grad_output, input.shape, weight, stride, padding, dilation, groups,
                                               suggest_memory_format(input))

    def conv2d_weight_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        from ..ops._layout import suggest_memory_format
        from ..triton_kernels import conv2d as triton_conv2d

        return triton_conv2d.conv2d_weight_grad(grad_output, input, weight.shape, stride, padding, dilation, groups,
                                                suggest_memory_format(weight))

    def matmul(self, a, b):
        from ..triton_kernels import matmul as triton_matmul

        a3, b3, out_shape = matmul_as_bmm(a, b)
        return triton_matmul.bmm(a3, b3, None, "none").reshape(out_shape)

    def linear(self, input, weight, bias, activation):
        from ..triton_kernels import matmul as triton_matmul

        a3, b3, out_shape = linear_as_bmm(input, weight)
        return triton_matmul.bmm(a3, b3, bias, activation).reshape(out_shape)

    def activation_backward(self, grad, saved, activation):
        from ..triton_kernels import epilogue_backward

        return epilogue_backward.bias_activation_backward(grad, saved, activation, write_dz=True)

    def bias_grad(self, grad):
        from ..triton_kernels import epilogue_backward

        return epilogue_backward.bias_activation_backward(grad, None, "none", write_dz=False)[1]
