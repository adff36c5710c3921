"""The CUDA C++ backend: kernels in csrc/, reached through ops the compiled extension registers.

The op schemas are defined in Python (accelkernels.ops.cuda_kernels); accelkernels._C adds their
CUDA implementations with TORCH_LIBRARY_IMPL. Requesting this backend on CUDA tensors compiles the
extension on first use when it was not built ahead of time and nvcc is available.
"""

from __future__ import annotations

import torch

from .. import _extension
from .base import Backend
from ._batched import linear_as_bmm, matmul_as_bmm

# The one kernel so far: the shared-memory tiled fp32 GEMM (csrc/kernels/bmm_smem_tiled.cu).
DEFAULT_GEMM_KERNEL = "smem_tiled"
DTYPES = (torch.float32,)


def arch_runs_on(arch_list: str, capability: tuple[int, int]) -> bool:
    """Whether a binary built for ``arch_list`` (TORCH_CUDA_ARCH_LIST style, ',' or ';' separated)
    has code for a device of this compute capability: SASS runs on the same major version at an
    equal or higher minor ("a" variants only on their exact arch), PTX (+PTX) on anything newer."""
    major, minor = capability
    tokens = [t.strip() for t in arch_list.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    for token in tokens:
        ptx = token.endswith("+PTX")
        version = token.removesuffix("+PTX")
        specific = version.endswith("a")
        try:
            t_major, t_minor = (int(x) for x in version.rstrip("a").split("."))
        except ValueError:
            return True  # "native", "all" or something unparsable: do not second-guess the build
        if ptx and (t_major, t_minor) <= (major, minor):
            return True
        if t_major == major and (t_minor == minor if specific else t_minor <= minor):
            return True
    return not tokens


class CudaBackend(Backend):
    name = "cuda"
    op_reasons = {
        "conv2d": "no CUDA C++ conv2d kernel yet (the CUDA conv2d issue adds it)",
        "matmul": None,
        "linear": None,
    }

    def unavailable_reason(self) -> str | None:
        if torch.version.cuda is None:
            return f"torch {torch.__version__} is a CPU-only build"
        if not torch.cuda.is_available():
            return "no CUDA GPU visible"
        status = _extension.status()
        if status.loaded:
            return None
        possible = _extension.describe_jit_possibility()
        if possible.startswith("yes"):
            return None  # compiles on first use
        return f"the CUDA extension is {status.mode}: {status.reason}; compiling on first use: {possible}"

    def describe(self) -> str:
        status = _extension.status()
        if status.loaded:
            return f"CUDA C++ kernels ({status.mode})"
        return "CUDA C++ kernels (compiled on first use)"

    def inputs_unsupported_reason(self, op, tensors, **details):
        present = [t for t in tensors if t is not None]
        if present[0].device.type != "cuda":
            return f"the tensors are on {present[0].device.type}; this backend runs CUDA tensors only"
        if present[0].dtype not in DTYPES:
            return f"dtype {present[0].dtype} has no kernel yet (float32 has; fp16/bf16 come with the tensor-core GEMM)"
        status = _extension.status(build=True)
        if not status.loaded:
            return f"the CUDA extension is {status.mode}: {status.reason}"
        capability = torch.cuda.get_device_capability(present[0].device)
        arch_list = status.build_info.get("arch_list", "")
        if not arch_runs_on(arch_list, capability):
            return (
                f"the extension was built for {arch_list}, which has no code for this GPU "
                f"(compute capability {capability[0]}.{capability[1]}); rebuild with "
                f"TORCH_CUDA_ARCH_LIST={capability[0]}.{capability[1]} pip install --no-build-isolation -e ."
            )
        return None

    def matmul(self, a, b):
        a3, b3, out_shape = matmul_as_bmm(a, b)
        out = torch.ops.accelkernels.cuda_bmm(a3, b3, None, "none", DEFAULT_GEMM_KERNEL)
        return out.reshape(out_shape)

    def linear(self, input, weight, bias, activation):
        a3, b3, out_shape = linear_as_bmm(input, weight)
        return torch.ops.accelkernels.cuda_bmm(a3, b3, bias, activation, DEFAULT_GEMM_KERNEL).reshape(out_shape)
