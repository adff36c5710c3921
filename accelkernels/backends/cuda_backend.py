"""The CUDA C++ backend: kernels in csrc/, reached through ops the compiled extension registers.

The op schemas are defined in Python (accelkernels.ops.cuda_kernels); accelkernels._C adds their
CUDA implementations with TORCH_LIBRARY_IMPL. Requesting this backend on CUDA tensors compiles the
extension on first use when it was not built ahead of time and nvcc is available. With
ACCELKERNELS_CUDA_EMULATE=1 it also serves CPU tensors: the same kernels run on the CPU executor
(accelkernels.emulator), with the same kernel choice as on a GPU of the emulated compute capability.
"""

from __future__ import annotations

import torch

from .. import _extension, emulator
from .base import Backend
from ._batched import linear_as_bmm, matmul_as_bmm

# The kernel each dtype runs (csrc/kernel_registry.cpp lists them all; the bench times each as
# "cuda:<name>"). fp32: the top step of the SIMT ladder; fp16/bf16: the mma.sync tensor-core kernel,
# or on compute capability 9.0 with an sm_90a build and K-contiguous operands, the wgmma/TMA kernel.
# None of these choices has been measured on a GPU yet: the order is the design's, not a timing's.
GEMM_KERNEL = {torch.float32: "warptile", torch.float16: "mma_sync", torch.bfloat16: "mma_sync"}
HOPPER_KERNEL = "wgmma"
DTYPES = tuple(GEMM_KERNEL)
TENSOR_CORE_CAPABILITY = (8, 0)  # mma.sync with bf16 and ldmatrix/cp.async: Ampere and newer


def emulated(t: torch.Tensor) -> bool:
    """Whether this tensor is served by the CPU executor of the kernels (ACCELKERNELS_CUDA_EMULATE=1)."""
    return t.device.type == "cpu" and emulator.enabled()


def device_capability(t: torch.Tensor) -> tuple[int, int]:
    """The compute capability the kernels see for this tensor: its GPU's, or the emulated device's."""
    return emulator.capability() if emulated(t) else torch.cuda.get_device_capability(t.device)


def wgmma_unsupported_reason(a3: torch.Tensor, b3: torch.Tensor) -> str | None:
    """Why the wgmma/TMA kernel cannot read these (batch, M, K) @ (batch, K, N) operands, or None.
    Mirrors csrc/kernels/bmm_args.h: TMA needs K-contiguous operands (B as N x K) with 16-byte-multiple
    row and batch strides and no broadcast batch."""
    size = a3.element_size()

    def stride_ok(s: int) -> bool:
        return s > 0 and (s * size) % 16 == 0

    if a3.data_ptr() % 16 or b3.data_ptr() % 16:
        return "operands must start on 16-byte boundaries"
    if a3.stride(2) != 1 or not stride_ok(a3.stride(1)):
        return "A must be K-contiguous with rows 16-byte aligned"
    if b3.stride(1) != 1 or not stride_ok(b3.stride(2)):
        return "B must be K-contiguous (an N x K matrix) with rows 16-byte aligned"
    if a3.shape[0] > 1 and not (stride_ok(a3.stride(0)) and stride_ok(b3.stride(0))):
        return "batches must be 16-byte-aligned and not broadcast (stride 0)"
    return None


def gemm_kernel_for(a3: torch.Tensor, b3: torch.Tensor) -> str:
    """The registry kernel that runs this (batch, M, K) @ (batch, K, N) problem."""
    if a3.dtype == torch.float32:
        return GEMM_KERNEL[a3.dtype]
    hopper = device_capability(a3) == (9, 0)
    has_sm90a = emulated(a3) or "9.0a" in _extension.status().build_info.get("arch_list", "").split(",")
    if hopper and has_sm90a:
        if wgmma_unsupported_reason(a3, b3) is None:
            return HOPPER_KERNEL
    return GEMM_KERNEL[a3.dtype]


def _operand_readable(t: torch.Tensor, inner_dim: int) -> bool:
    """One operand (batch, rows, cols) of the mma.sync kernel, contiguous along ``inner_dim`` (1 or 2)."""
    outer_dim = 3 - inner_dim
    return (t.stride(inner_dim) == 1 and t.shape[inner_dim] % 8 == 0 and t.stride(outer_dim) % 8 == 0
            and t.stride(0) % 8 == 0)


def mma_sync_unsupported_reason(a3: torch.Tensor, b3: torch.Tensor) -> str | None:
    """Why the mma.sync kernel cannot read these (batch, M, K) @ (batch, K, N) operands, or None.
    Mirrors csrc/kernels/bmm_args.h (the C++ check raises; this one lets "auto" fall back instead)."""
    if a3.data_ptr() % 16 or b3.data_ptr() % 16:
        return "operands must start on 16-byte boundaries"
    if not (_operand_readable(a3, 2) or _operand_readable(a3, 1)):
        return "A needs a contiguous K or M dimension whose size and other strides are multiples of 8"
    if not (_operand_readable(b3, 1) or _operand_readable(b3, 2)):
        return "B needs a contiguous K or N dimension whose size and other strides are multiples of 8"
    return None


def gemm_unsupported_reason(a3: torch.Tensor, b3: torch.Tensor) -> str | None:
    """Why the GEMM kernel of this dtype cannot run these (batch, M, K) @ (batch, K, N) operands on
    their GPU, or None (fp32 runs on the SIMT kernel, which reads anything)."""
    if a3.dtype == torch.float32:
        return None
    capability = device_capability(a3)
    if capability < TENSOR_CORE_CAPABILITY:
        return f"{a3.dtype} runs on the mma.sync kernel, which needs compute capability 8.0+ (this GPU: {capability})"
    why = mma_sync_unsupported_reason(a3, b3)
    return None if why is None else f"the mma.sync kernel cannot read these operands: {why}"


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
        from . import cuda_conv

        channels_last = conv_output_format(input, weight) == torch.channels_last
        return cuda_conv.forward(input, weight, bias, stride, padding, dilation, groups, activation, channels_last)

    def conv2d_input_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        from ..ops._layout import suggest_memory_format
        from . import cuda_conv

        channels_last = suggest_memory_format(input) == torch.channels_last
        return cuda_conv.input_grad(grad_output, input.shape, weight, stride, padding, dilation, groups, channels_last)

    def conv2d_weight_grad(self, grad_output, input, weight, stride, padding, dilation, groups):
        from ..ops._layout import suggest_memory_format
        from . import cuda_conv

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
