"""The registered ops (namespace ``accelkernels``) and the public functions built on them."""

from . import cuda_kernels  # noqa: F401  (defines the kernel-level op schemas)
from .conv2d import conv2d, conv2d_input_grad_op, conv2d_op, conv2d_weight_grad_op
from .linear import linear, linear_op
from .matmul import matmul, matmul_op

__all__ = [
    "conv2d",
    "conv2d_input_grad_op",
    "conv2d_op",
    "conv2d_weight_grad_op",
    "linear",
    "linear_op",
    "matmul",
    "matmul_op",
]
