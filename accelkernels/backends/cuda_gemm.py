"""Which CUDA C++ GEMM kernel serves a (batch, M, K) @ (batch, K, N) problem, and why none can.

    float32                                    -> "warptile" (SIMT, reads any strides)
    float16/bfloat16 on compute capability 9.0 -> the newest step of the wgmma ladder that serves, when
                                                  the binary holds sm_90a code (asked of it:
                                                  wgmma_code_present; the CPU executor: its sm90a_code
                                                  setting) and both operands are K-contiguous:
                                                  "wgmma_cluster" (2-block clusters, B multicast) for
                                                  M > 128 and N a multiple of 8 (the TMA store);
                                                  "wgmma_v2" for M <= 128 (one tile row: a cluster's
                                                  second block would have no tile of its own);
                                                  "wgmma" when N is ragged
    float16/bfloat16 otherwise                 -> "mma_sync" (tensor cores, compute capability 8.0+)

The GEMM ops (cuda_backend.py) and the 1x1 convolutions run as GEMMs (cuda_conv.py) both choose
here, on the compute capability the kernels see: the tensor's GPU, or the CPU executor's emulated
device (ACCELKERNELS_CUDA_EMULATE=1). The operand checks mirror csrc/kernels/bmm_args.h, so that
"auto" falls back where the C++ check would raise. The kernels: csrc/README.md.
"""

from __future__ import annotations

import torch

from .. import _extension, emulator

# The kernel each dtype runs (csrc/kernel_registry.cpp lists them all; the bench times each as
# "cuda:<name>"). fp32: the top step of the SIMT ladder; fp16/bf16: the mma.sync tensor-core kernel,
# or on compute capability 9.0 with an sm_90a build and K-contiguous operands, the newest step of the
# wgmma ladder that can serve. None of these choices has been measured on a GPU yet: the order is the
# design's and the public record's (each step of fast.cu's ladder was faster on H100), not a timing's;
# "auto" times them against cuBLAS before using them.
GEMM_KERNEL = {torch.float32: "warptile", torch.float16: "mma_sync", torch.bfloat16: "mma_sync"}
HOPPER_KERNELS = ("wgmma_cluster", "wgmma_v2", "wgmma")  # newest first
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


def wgmma_v2_unsupported_reason(a3: torch.Tensor, b3: torch.Tensor) -> str | None:
    """Why wgmma_v2 cannot serve this problem, or None. Mirrors csrc/kernels/bmm_args.h: wgmma's operand
    rules, and an output the TMA store can write (rows of a multiple of 16 bytes: N % 8 == 0; the
    output is allocated contiguous and aligned by the op)."""
    why = wgmma_unsupported_reason(a3, b3)
    if why is None and (b3.shape[2] * a3.element_size()) % 16:
        why = "the TMA-store epilogue needs output rows of a multiple of 16 bytes (N a multiple of 8)"
    return why


def wgmma_cluster_unsupported_reason(a3: torch.Tensor, b3: torch.Tensor) -> str | None:
    """wgmma_v2's rules (the kernel reads what wgmma_v2 reads), and a choice: the cluster pairs two tile
    rows of 128, so with M <= 128 its second block would only load and multicast (wgmma_v2 serves)."""
    why = wgmma_v2_unsupported_reason(a3, b3)
    if why is None and a3.shape[1] <= 128:
        why = "one tile row (M <= 128): a 2-block cluster would leave its second block without a tile"
    return why


HOPPER_REASONS = {"wgmma_cluster": wgmma_cluster_unsupported_reason, "wgmma_v2": wgmma_v2_unsupported_reason,
                  "wgmma": wgmma_unsupported_reason}

_wgmma_code: dict[int, bool] = {}  # CUDA device index -> whether the loaded code holds the wgmma kernels


def wgmma_code_present(t: torch.Tensor) -> bool:
    """Whether the binary serving this tensor's device holds the wgmma kernels (sm_90a code), asked of
    the binary itself (csrc/kernels/bmm_args.h: wgmma_code_present), once per device; the CPU
    executor's answer is its ``sm90a_code`` setting."""
    if emulated(t):
        return bool(emulator.settings().get("sm90a_code", True))
    status = _extension.status()
    if not (status.loaded and status.build_info.get("sm90a", False)):
        return False  # the build never asked for 9.0a (or is older than the flag): nothing to ask the GPU
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    if index not in _wgmma_code:
        with torch.cuda.device(index):
            _wgmma_code[index] = bool(status.module.wgmma_code_present())
    return _wgmma_code[index]


def gemm_kernel_for(a3: torch.Tensor, b3: torch.Tensor) -> str:
    """The registry kernel that runs this (batch, M, K) @ (batch, K, N) problem."""
    if a3.dtype == torch.float32:
        return GEMM_KERNEL[a3.dtype]
    if device_capability(a3) == (9, 0) and wgmma_code_present(a3):
        for kernel in HOPPER_KERNELS:
            if HOPPER_REASONS[kernel](a3, b3) is None:
                return kernel
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
    if a3.dtype == torch.float32 or a3.shape[2] == 0:
        return None  # fp32: the SIMT kernel reads anything; K = 0: C = act(bias), no kernel runs (bmm_op.cpp)
    capability = device_capability(a3)
    if capability < TENSOR_CORE_CAPABILITY:
        return f"{a3.dtype} runs on the mma.sync kernel, which needs compute capability 8.0+ (this GPU: {capability})"
    why = mma_sync_unsupported_reason(a3, b3)
    return None if why is None else f"the mma.sync kernel cannot read these operands: {why}"
