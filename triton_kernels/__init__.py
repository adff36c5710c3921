"""Triton kernels, installed as ``accelkernels.triton_kernels``. One kernel family per module.

Modules import triton when imported; accelkernels imports them lazily, on first use of the
"triton" backend, so the package itself never needs triton.
"""

# The GEMM kernels by name (triton_kernels/matmul.py), importable without importing triton.
KERNEL_NAMES = ("tiled", "persistent", "tma")


def interpreting() -> bool:
    """TRITON_INTERPRET=1: kernels run in Triton's interpreter on CPU tensors (how CI tests them).
    Read with the spellings Triton itself accepts (1/true/yes/on), so we never disagree with it."""
    from .. import _env

    return _env.flag("TRITON_INTERPRET")
