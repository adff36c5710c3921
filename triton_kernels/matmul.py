"""Batched GEMM with a fused bias + activation epilogue: the Triton backend's matmul and linear.

    C[b] = act(A[b] @ B[b] + bias),  A (batch, M, K), B (batch, K, N), any strides

Three kernels, two of which share the pointer-based tile code:
- ``tiled``: one program per output tile, tiles visited in grouped order (GROUP_M rows of tiles
  at a time, so the A and B panels a group needs stay in L2), the batch folded into program id 0.
- ``persistent``: one program per SM looping over the tiles in the same order, which removes the
  tail of a launch whose tile count is not a multiple of the SM count.
- ``tma``: persistent, with A, B and C moved by TMA through tensor descriptors (Hopper); it needs
  16-byte-aligned rows and no broadcast batch (``tma_unsupported_reason``).
All accumulate in fp32, handle the ragged M/N/K edges, read transposed operands in place and
compute offsets in int64 (the pointer kernels also read broadcast, stride-0, batches). fp32 inputs
use TF32 only when torch allows it. Which kernel wins where is for a GPU run to say (`accelkernels
bench` times each as triton:<name>); the backend uses ``tiled`` until then.

Configurations come from @triton.autotune keyed on the problem (M bucketed to a power of two so a
varying token count does not retune every call). The list is Triton tutorial 03's Hopper/Ampere set
plus skinny-M configs; none has been tuned on a card by this project yet. Under TRITON_INTERPRET=1
one fixed configuration runs instead (the autotuner would time every config in the interpreter).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # a Triton without host-side tensor descriptors: no TMA kernel, the others work
    TensorDescriptor = None

from .. import _env
from . import interpreting
from .epilogue import apply_activation

SMEM_LIMIT = 232448  # bytes of shared memory per block on sm_90 (227 KB); sm_80 allows 163 KB


def _config(bm, bn, bk, stages, warps, group=8):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
                         num_stages=stages, num_warps=warps)


CONFIGS = [
    _config(128, 256, 64, 3, 8),  # large square GEMMs (tutorial 03)
    _config(256, 128, 64, 3, 8),
    _config(128, 128, 64, 4, 4),
    _config(128, 128, 32, 4, 4),
    _config(128, 64, 32, 4, 4),
    _config(64, 128, 32, 4, 4),
    _config(64, 256, 32, 4, 4),
    _config(64, 64, 64, 4, 4),  # small problems
    _config(32, 128, 64, 4, 4),  # skinny M (few tokens)
    _config(16, 128, 128, 4, 4),  # decode-like M <= 16
]
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}
# With ACCELKERNELS_TRITON_AUTOTUNE=0 (the GPU test suite sets it: autotuning every test shape would
# take minutes) this one config runs; it fits shared memory at every dtype.
FIXED_CONFIG = CONFIGS[3]


def autotuning() -> bool:
    return _env.flag("ACCELKERNELS_TRITON_AUTOTUNE")  # validated: "of" is an error, not "on"


def smem_bytes(config: triton.Config, element_size: int) -> int:
    kw = config.kwargs
    return config.num_stages * (kw["BLOCK_M"] * kw["BLOCK_K"] + kw["BLOCK_K"] * kw["BLOCK_N"]) * element_size


def configs_for(element_size: int, configs=None) -> list[triton.Config]:
    """The configs whose operand ring fits in shared memory at this element size (fp32 doubles it)."""
    configs = CONFIGS if configs is None else configs
    return [c for c in configs if smem_bytes(c, element_size) <= SMEM_LIMIT] or configs[-1:]


def prune(configs, named_args, **kwargs):
    return configs_for(named_args["a_ptr"].element_size(), configs)


def prune_tma(configs, named_args, **kwargs):
    return configs_for(named_args["a_desc"].base.element_size(), configs)


@triton.jit
def _tile_coordinates(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """tile -> (batch, pid_m, pid_n), walking GROUP_M tile-rows at a time for L2 reuse."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    batch = tile // (tiles_m * tiles_n)
    t = tile % (tiles_m * tiles_n)
    per_group = GROUP_M * tiles_n
    first_m = (t // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (t % per_group) % group_rows
    pid_n = (t % per_group) // group_rows
    return batch, pid_m, pid_n


@triton.jit
def _compute_tile(a_ptr, b_ptr, bias_ptr, c_ptr, batch, pid_m, pid_n, M, N, K,
                  stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn, stride_cb, stride_cm, stride_cn,
                  HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                  UPCAST_OPERANDS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # -- pointers to the first K panel of this tile (int64: batch * stride can pass 2^31) -------------
    batch = batch.to(tl.int64)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + batch * stride_ab + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + batch * stride_bb + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    mask_m = offs_m < M
    mask_n = offs_n < N

    # -- K loop: masked loads at the ragged end, fp32 accumulation -----------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST_OPERANDS:  # only under TRITON_INTERPRET=1 with bf16 (see bmm())
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    # -- epilogue: bias, activation, one store -------------------------------------------------------
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)
    c_ptrs = c_ptr + batch * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def matmul_tiled_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K, M_BUCKET,
                        stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn,
                        stride_cb, stride_cm, stride_cn,
                        HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                        UPCAST_OPERANDS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    batch, pid_m, pid_n = _tile_coordinates(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    _compute_tile(a_ptr, b_ptr, bias_ptr, c_ptr, batch, pid_m, pid_n, M, N, K,
                  stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn, stride_cb, stride_cm, stride_cn,
                  HAS_BIAS, ACTIVATION, INPUT_PRECISION, UPCAST_OPERANDS, BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def matmul_persistent_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K, M_BUCKET, BATCH,
                             stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn,
                             stride_cb, stride_cm, stride_cn,
                             HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                             UPCAST_OPERANDS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_PROGRAMS: tl.constexpr):
    total = BATCH * tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in range(tl.program_id(0), total, NUM_PROGRAMS):
        batch, pid_m, pid_n = _tile_coordinates(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        _compute_tile(a_ptr, b_ptr, bias_ptr, c_ptr, batch, pid_m, pid_n, M, N, K,
                      stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn, stride_cb, stride_cm, stride_cn,
                      HAS_BIAS, ACTIVATION, INPUT_PRECISION, UPCAST_OPERANDS, BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def matmul_tma_kernel(a_desc, b_desc, bias_ptr, c_desc, M, N, K, M_BUCKET, BATCH,
                      HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                      UPCAST_OPERANDS: tl.constexpr, B_K_CONTIGUOUS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_PROGRAMS: tl.constexpr):
    """Persistent, with A, B and C moved by TMA through 3-D (batch, rows, cols) tensor descriptors.
    TMA zero-fills out-of-bounds loads and clips stores, so ragged edges need no masks. B is either
    (batch, K, N) N-contiguous or, for a linear layer's weight read in place, (batch, N, K)."""
    total = BATCH * tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in range(tl.program_id(0), total, NUM_PROGRAMS):
        batch, pid_m, pid_n = _tile_coordinates(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = a_desc.load([batch, off_m, k0]).reshape(BLOCK_M, BLOCK_K)
            if B_K_CONTIGUOUS:
                b = b_desc.load([batch, off_n, k0]).reshape(BLOCK_N, BLOCK_K).T
            else:
                b = b_desc.load([batch, k0, off_n]).reshape(BLOCK_K, BLOCK_N)
            if UPCAST_OPERANDS:  # only under TRITON_INTERPRET=1 with bf16 (see bmm())
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        if HAS_BIAS:
            offs_n = off_n + tl.arange(0, BLOCK_N)
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        acc = apply_activation(acc, ACTIVATION)
        c_desc.store([batch, off_m, off_n], acc.to(c_desc.dtype).reshape(1, BLOCK_M, BLOCK_N))


def _tma_block_shapes(nargs):
    """Autotune pre-hook: the descriptors' block shapes follow the config being tried."""
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["a_desc"].block_shape = [1, bm, bk]
    nargs["b_desc"].block_shape = [1, bn, bk] if nargs["B_K_CONTIGUOUS"] else [1, bk, bn]
    nargs["c_desc"].block_shape = [1, bm, bn]


def _with_hook(config: triton.Config) -> triton.Config:
    return triton.Config(dict(config.kwargs), num_stages=config.num_stages, num_warps=config.num_warps,
                         pre_hook=_tma_block_shapes)


_AUTOTUNE = dict(configs=CONFIGS, key=["M_BUCKET", "N", "K"], prune_configs_by={"early_config_prune": prune})
matmul_tiled = triton.autotune(**_AUTOTUNE)(matmul_tiled_kernel)
matmul_persistent = triton.autotune(**_AUTOTUNE)(matmul_persistent_kernel)
# TMA moves whole 16-byte-aligned boxes: configs with BLOCK_M < 64 gain nothing over mma.sync here.
TMA_CONFIGS = [_with_hook(c) for c in CONFIGS if c.kwargs["BLOCK_M"] >= 64]
matmul_tma = triton.autotune(configs=TMA_CONFIGS, key=["M_BUCKET", "N", "K"],
                             prune_configs_by={"early_config_prune": prune_tma})(matmul_tma_kernel)
KERNELS = ("tiled", "persistent", "tma")  # = accelkernels.triton_kernels.KERNEL_NAMES


def _tile_count(batch: int, m: int, n: int, config: dict) -> int:
    return batch * triton.cdiv(m, config["BLOCK_M"]) * triton.cdiv(n, config["BLOCK_N"])


def _input_precision(dtype: torch.dtype) -> str:
    """fp32 uses TF32 only when torch allows it for matmuls (allow_tf32 / float32_matmul_precision)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"  # fp16/bf16 run on tensor cores whatever this says; fp32 stays exact


def tma_unsupported_reason(a: torch.Tensor, b: torch.Tensor) -> str | None:
    """Why TMA descriptors cannot describe these operands (TMA needs a contiguous last dim, 16-byte
    aligned bases and strides, and no broadcast batch), or None."""
    if TensorDescriptor is None:
        return f"Triton {triton.__version__} has no host-side tensor descriptors"
    if a.stride(2) != 1:
        return "A must be K-contiguous"
    if b.stride(2) != 1 and b.stride(1) != 1:
        return "B must be N- or K-contiguous"
    size = a.element_size()
    for name, t in (("A", a), ("B", b)):
        if t.data_ptr() % 16:
            return f"{name} is not 16-byte aligned"
        if t.shape[0] > 1 and t.stride(0) == 0:
            return f"{name} is broadcast over the batch"
        inner = [st for st in t.stride() if st != 1]
        if any((st * size) % 16 for st in inner):
            return f"{name}'s strides {tuple(t.stride())} are not multiples of 16 bytes"
    return None


def _tma_launch(a, b, bias_arg, out, m, n, k, batch, flags, config: dict, programs: int, tuned: bool):
    b_k_contiguous = b.stride(2) != 1
    b_view = b.transpose(1, 2) if b_k_contiguous else b  # (batch, N, K) with K contiguous
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]

    def desc(t, block):
        return TensorDescriptor(t, list(t.shape), list(t.stride()), block)

    a_desc = desc(a, [1, bm, bk])
    b_desc = desc(b_view, [1, bn, bk] if b_k_contiguous else [1, bk, bn])
    c_desc = desc(out, [1, bm, bn])
    args = (a_desc, b_desc, bias_arg, c_desc, m, n, k, triton.next_power_of_2(m), batch)
    if tuned:
        matmul_tma[(programs,)](*args, **flags, B_K_CONTIGUOUS=b_k_contiguous, NUM_PROGRAMS=programs)
    else:
        extra = {} if interpreting() else {"num_warps": FIXED_CONFIG.num_warps, "num_stages": FIXED_CONFIG.num_stages}
        matmul_tma_kernel[(programs,)](*args, **flags, B_K_CONTIGUOUS=b_k_contiguous, **config,
                                       NUM_PROGRAMS=programs, **extra)


def bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, activation: str,
        kernel: str = "tiled", out: torch.Tensor | None = None, input_precision: str | None = None) -> torch.Tensor:
    """(B, M, K) @ (B, K, N) [+ bias (N,)] -> activation -> (B, M, N) in a's dtype.

    The result is a new contiguous tensor, or ``out`` (any strides, e.g. a view of a convolution's
    output) when given. ``input_precision`` overrides the fp32 rule ("tf32"/"ieee"; conv2d passes
    cuDNN's flag, as torch's convolutions follow it rather than the matmul one)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    batch, m, k = a.shape
    n = b.shape[2]
    # Triton 3.8's interpreter mishandles bf16 twice: tl.dot on bf16 operands is wrong, and the
    # fp32 -> bf16 cast truncates instead of rounding to nearest (measured: 30 of 64 values off by an
    # ulp, with or without fp_downcast_rounding="rtne"). Under TRITON_INTERPRET=1 the kernel therefore
    # upcasts bf16 tiles and writes fp32, which torch rounds correctly. Compiled kernels never do this.
    upcast = interpreting() and a.dtype == torch.bfloat16
    if out is not None:
        if kernel == "tma":
            raise ValueError("the tma kernel writes a new contiguous output; out= is for the pointer kernels")
        if upcast:  # compute in fp32, then let torch round into the caller's bf16 buffer
            return out.copy_(bmm(a, b, bias, activation, kernel, None, input_precision))
        result = out
    else:
        result = torch.empty((batch, m, n), dtype=torch.float32 if upcast else a.dtype, device=a.device)
    out = result
    if out.numel() == 0:
        return out.to(a.dtype)
    if kernel == "tma":
        why = tma_unsupported_reason(a, b)
        if why is not None:
            raise ValueError(f"the tma kernel cannot read these operands: {why}")
    args = [a, b, bias if bias is not None else out, out, m, n, k, triton.next_power_of_2(m)]
    strides = [*a.stride(), *b.stride(), *out.stride()]
    precision = _input_precision(a.dtype)
    if input_precision is not None and a.dtype == torch.float32:
        precision = input_precision
    flags = dict(HAS_BIAS=bias is not None, ACTIVATION=activation, INPUT_PRECISION=precision, UPCAST_OPERANDS=upcast)
    if kernel == "tma":
        if interpreting():
            tiles = _tile_count(batch, m, n, INTERPRETER_CONFIG)
            _tma_launch(a, b, args[2], out, m, n, k, batch, flags, INTERPRETER_CONFIG, min(3, tiles), tuned=False)
        else:
            programs = torch.cuda.get_device_properties(a.device).multi_processor_count
            _tma_launch(a, b, args[2], out, m, n, k, batch, flags, FIXED_CONFIG.kwargs, programs, tuned=autotuning())
    elif interpreting():
        tiles = _tile_count(batch, m, n, INTERPRETER_CONFIG)
        if kernel == "tiled":
            matmul_tiled_kernel[(tiles,)](*args, *strides, **flags, **INTERPRETER_CONFIG)
        else:  # few programs, so each one loops over several tiles
            programs = min(3, tiles)
            matmul_persistent_kernel[(programs,)](*args, batch, *strides, **flags, **INTERPRETER_CONFIG,
                                                  NUM_PROGRAMS=programs)
    elif kernel == "tiled":
        def grid(meta):
            return (_tile_count(batch, m, n, meta),)

        if autotuning():
            matmul_tiled[grid](*args, *strides, **flags)
        else:
            fixed = FIXED_CONFIG
            matmul_tiled_kernel[grid(fixed.kwargs)](*args, *strides, **flags, **fixed.kwargs,
                                                    num_warps=fixed.num_warps, num_stages=fixed.num_stages)
    else:
        programs = torch.cuda.get_device_properties(a.device).multi_processor_count
        if autotuning():
            matmul_persistent[(programs,)](*args, batch, *strides, **flags, NUM_PROGRAMS=programs)
        else:
            fixed = FIXED_CONFIG
            matmul_persistent_kernel[(programs,)](*args, batch, *strides, **flags, **fixed.kwargs,
                                                  NUM_PROGRAMS=programs, num_warps=fixed.num_warps,
                                                  num_stages=fixed.num_stages)
    return out.to(a.dtype)
