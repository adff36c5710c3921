"""The CUDA C++ backend: kernels in csrc/, reached through ops the compiled extension registers.

The op schemas are defined in Python (accelkernels.ops.cuda_kernels); accelkernels._C adds their
CUDA implementations with TORCH_LIBRARY_IMPL. Requesting this backend on CUDA tensors compiles the
extension on first use when it was not built ahead of time and nvcc is available. With
ACCELKERNELS_CUDA_EMULATE=1 it also serves CPU tensors: the same kernels run on the CPU executor
(accelkernels.emulator), with the same kernel choice as on a GPU of the emulated compute capability.
Which kernel serves a call: cuda_gemm.py (matmul, linear) and cuda_conv.py (conv2d).
"""

from __future__ import annotations

import torch

from .. import _extension, emulator
from . import cuda_conv
from .base import Backend
from ._batched import linear_as_bmm, matmul_as_bmm
from .cuda_gemm import GEMM_KERNEL, emulated, gemm_kernel_for, gemm_unsupported_reason

DTYPES = tuple(GEMM_KERNEL)  # the dtypes that have a kernel (cuda_gemm.py chooses which)


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
        "conv2d": None,
        "matmul": None,
        "linear": None,
    }

    def unavailable_reason(self) -> str | None:
        if emulator.enabled():
            return None  # CPU tensors run on the kernels' CPU executor (built on first use)
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
        if emulator.enabled():
            return "CUDA C++ kernels (CPU tensors: the kernels' CPU executor, ACCELKERNELS_CUDA_EMULATE=1)"
        status = _extension.status()
        if status.loaded:
            return f"CUDA C++ kernels ({status.mode})"
        return "CUDA C++ kernels (compiled on first use)"

    def inputs_unsupported_reason(self, op, tensors, **details):
        present = [t for t in tensors if t is not None]
        on_executor = emulated(present[0])
        if present[0].device.type != "cuda" and not on_executor:
            return (f"the tensors are on {present[0].device.type}; this backend runs CUDA tensors "
                    "(and CPU tensors on the kernels' CPU executor with ACCELKERNELS_CUDA_EMULATE=1)")
        dtype = present[0].dtype
        if dtype not in DTYPES:
            return f"dtype {dtype} has no kernel (float32, float16 and bfloat16 have)"
        if op in ("matmul", "linear") and not details.get("epilogue"):
            a3, b3, _ = (matmul_as_bmm if op == "matmul" else linear_as_bmm)(present[0], present[1])
            why = gemm_unsupported_reason(a3, b3)
            if why is not None:
                return why
        if on_executor:
            try:
                emulator.module()
            except emulator.EmulatorBuildError as exc:
                return str(exc)
            return None
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

    # conv2d: direct, depthwise and implicit-GEMM kernels, 1x1 on the GEMM kernels (cuda_conv.py).
    def conv2d(self, input, weight, bias, stride, padding, dilation, groups, activation):
        from ..ops._layout import conv_output_format

        channels_last = conv_output_format(input, weight) == torch.channels_last
        return cuda_conv.forward(input, weight, bias, stride, padding, dilation, groups, activation, channels_last)

    def conv2d_input_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        from ..ops._layout import suggest_memory_format

        channels_last = suggest_memory_format(input) == torch.channels_last
        return cuda_conv.input_grad(grad_output, input.shape, weight, stride, padding, dilation, groups, channels_last)

    def conv2d_weight_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        from ..ops._layout import suggest_memory_format

        channels_last = suggest_memory_format(weight) == torch.channels_last
        return cuda_conv.weight_grad(grad_output, input, weight.shape, stride, padding, dilation, groups,
                                     channels_last)

    def matmul(self, a, b):
        a3, b3, out_shape = matmul_as_bmm(a, b)
        out = torch.ops.accelkernels.cuda_bmm(a3, b3, None, "none", gemm_kernel_for(a3, b3))
        return out.reshape(out_shape)

    def linear(self, input, weight, bias, activation):
        a3, b3, out_shape = linear_as_bmm(input, weight)
        kernel = gemm_kernel_for(a3, b3)
        return torch.ops.accelkernels.cuda_bmm(a3, b3, bias, activation, kernel).reshape(out_shape)
