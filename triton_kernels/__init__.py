"""Triton kernels, installed as ``accelkernels.triton_kernels``. One kernel family per module.

Modules import triton when imported; accelkernels imports them lazily, on first use of the
"triton" backend, so the package itself never needs triton.
"""

# The GEMM kernels by name (triton_kernels/matmul.py), importable without importing triton.
KERNEL_NAMES = ("tiled", "persistent")
