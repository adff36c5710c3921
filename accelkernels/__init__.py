"""accelkernels: hand-written CUDA C++ and Triton kernels for conv2d and matmul, as PyTorch ops.

Public API: conv2d, matmul, linear (torch's semantics plus ``activation=`` and ``backend=``),
accelkernels.nn.Conv2d / Linear, convert(model), available_backends(), use_backend(name).
Importing this module never touches the GPU and never compiles anything.
"""

from . import nn
from ._errors import BackendUnavailableError
from .backends import available_backends, is_available, use_backend
from .convert import convert
from .ops import conv2d, linear, matmul
from .ops._checks import InvalidArgumentError

# The one place the version is written: pyproject.toml reads it statically (`dynamic = ["version"]`), so
# the wheel's metadata, `accelkernels --version` and this attribute agree (tests/test_cli_and_extension.py).
__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "InvalidArgumentError",
    "available_backends",
    "conv2d",
    "convert",
    "is_available",
    "linear",
    "matmul",
    "nn",
    "use_backend",
]
