"""The CUDA C++ GEMM kernels (csrc/kernels/): the SIMT fp32 ladder and the mma.sync tensor-core kernel.

On the CPU: which operands the tensor-core kernel can read (the check that lets "auto" fall back).
On a GPU (skipped elsewhere): every kernel by name against a float64 reference — error at most 2x
cuBLAS's at the same dtype — on ragged, odd, transposed and broadcast-batch problems with the fused
epilogue, the backward through the kernels, and the refusals.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_2x_torch_error, requires_cuda
from references import activate

import accelkernels as ak
from accelkernels.backends.cuda_gemm import (
    GEMM_KERNEL,
    mma_sync_unsupported_reason,
    wgmma_unsupported_reason,
    wgmma_v2_unsupported_reason,
)

SIMT_LADDER = ("naive", "smem_tiled", "blocktile_1d", "blocktile_2d", "vectorized", "warptile")


# --- CPU: what the tensor-core kernel can read ------------------------------------------------------


def test_mma_sync_reads_both_orientations_of_aligned_operands():
    a = torch.randn(2, 40, 64, dtype=torch.float16)
    b = torch.randn(2, 64, 24, dtype=torch.float16)
    assert mma_sync_unsupported_reason(a, b) is None  # row-major A and B
    assert mma_sync_unsupported_reason(a.new_empty(2, 64, 40).mT, b) is None  # A M-contiguous (dYᵀ)
    weight = torch.randn(24, 64, dtype=torch.float16)
    assert mma_sync_unsupported_reason(a, weight.mT.unsqueeze(0).expand(2, 64, 24)) is None  # Wᵀ, broadcast


def test_mma_sync_refuses_what_its_16_byte_chunks_cannot_read():
    b = torch.randn(1, 64, 24, dtype=torch.bfloat16)
    ragged_k = torch.randn(1, 40, 33, dtype=torch.bfloat16)
    assert "A needs" in mma_sync_unsupported_reason(ragged_k, torch.randn(1, 33, 24, dtype=torch.bfloat16))
    odd_n = torch.randn(1, 64, 20, dtype=torch.bfloat16)[:, :, :15]
    assert "B needs" in mma_sync_unsupported_reason(torch.randn(1, 8, 64, dtype=torch.bfloat16), odd_n)
    shifted = torch.randn(1 * 40 * 64 + 1, dtype=torch.bfloat16)[1:].view(1, 40, 64)
    assert "16-byte" in mma_sync_unsupported_reason(shifted, b)


def test_wgmma_reads_k_contiguous_operands_only():
    a = torch.randn(2, 40, 64, dtype=torch.bfloat16)
    weight = torch.randn(24, 64, dtype=torch.bfloat16)  # a linear layer's B = Wᵀ: K-contiguous
    assert wgmma_unsupported_reason(a[:1], weight.mT.unsqueeze(0)) is None
    assert wgmma_unsupported_reason(a, torch.randn(2, 24, 64, dtype=torch.bfloat16).mT) is None
    assert "B must be K-contiguous" in wgmma_unsupported_reason(a, torch.randn(2, 64, 24, dtype=torch.bfloat16))
    assert "A must be K-contiguous" in wgmma_unsupported_reason(a.new_empty(2, 64, 40).mT, weight.mT[None])
    assert "broadcast" in wgmma_unsupported_reason(a, weight.mT.unsqueeze(0).expand(2, 64, 24))
    assert "16-byte aligned" in wgmma_unsupported_reason(torch.randn(1, 40, 33, dtype=torch.bfloat16),
                                                         torch.randn(1, 24, 33, dtype=torch.bfloat16).mT)


def test_wgmma_v2_also_needs_an_output_the_tma_store_can_write():
    """wgmma_v2 = wgmma's operand rules + output rows of a multiple of 16 bytes (its TMA-store epilogue)."""
    a = torch.randn(1, 40, 64, dtype=torch.bfloat16)
    assert wgmma_v2_unsupported_reason(a, torch.randn(1, 24, 64, dtype=torch.bfloat16).mT) is None
    assert "TMA-store epilogue" in wgmma_v2_unsupported_reason(a, torch.randn(1, 20, 64, dtype=torch.bfloat16).mT)
    assert wgmma_unsupported_reason(a, torch.randn(1, 20, 64, dtype=torch.bfloat16).mT) is None  # the previous step serves
    assert "B must be K-contiguous" in wgmma_v2_unsupported_reason(a, torch.randn(1, 64, 24, dtype=torch.bfloat16))


def test_each_dtype_has_a_kernel_in_the_registry():
    assert GEMM_KERNEL == {torch.float32: "warptile", torch.float16: "mma_sync", torch.bfloat16: "mma_sync"}
    from accelkernels import _extension

    status = _extension.status()
    if status.loaded:
        names = {k["name"] for k in status.module.kernels()}
        assert set(GEMM_KERNEL.values()) | {"wgmma", "wgmma_v2", "wgmma_cluster"} <= names
        assert set(SIMT_LADDER) <= names


# --- GPU -------------------------------------------------------------------------------------------

def gpu(test):
    """A GPU test: marked "gpu" (pytest -m gpu) and skipped without a CUDA device."""
    return pytest.mark.gpu(requires_cuda(test))


def _cuda_backend_or_skip():
    if not ak.is_available("cuda"):
        pytest.skip(f"cuda backend unavailable: {ak.available_backends()['cuda']['reason']}")


def _operand(batch, rows, cols, dtype, inner_contiguous=True):
    """(batch, rows, cols), contiguous along cols (row-major) or along rows (a transposed view)."""
    if inner_contiguous:
        return torch.randn(batch, rows, cols, device="cuda", dtype=dtype)
    return torch.randn(batch, cols, rows, device="cuda", dtype=dtype).mT


def _reference(a, b, bias, activation):
    return activate(torch.bmm(a, b) + (bias if bias is not None else 0), activation)


def _check_kernel(kernel, a, b, bias, activation):
    torch.full((64 * 1024 * 1024,), float("nan"), device="cuda")  # poison the allocator's next block
    ours = torch.ops.accelkernels.cuda_bmm(a, b, bias, activation or "none", kernel)
    theirs = _reference(a, b, bias, activation)
    ref = _reference(a.double(), b.double(), bias.double() if bias is not None else None, activation)
    assert_within_2x_torch_error(ours, theirs, ref, f"{kernel}")


SIMT_SHAPES = {"1x1x1": (1, 1, 1, 1), "ragged": (1, 97, 61, 75), "batched_odd": (3, 129, 130, 67),
               "tall": (1, 1000, 33, 4097), "square_512": (1, 512, 512, 512)}


@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "transposed"])
@pytest.mark.parametrize("shape", SIMT_SHAPES.values(), ids=SIMT_SHAPES.keys())
@pytest.mark.parametrize("kernel", SIMT_LADDER)
@gpu
def test_simt_ladder_step_against_float64(kernel, shape, transposed):
    _cuda_backend_or_skip()
    batch, m, k, n = shape
    a = _operand(batch, m, k, torch.float32, not transposed)
    b = _operand(batch, k, n, torch.float32, not transposed)
    bias = torch.randn(n, device="cuda")
    _check_kernel(kernel, a, b, bias, "gelu")


# Every size a multiple of 8 (the contiguous dims must be) but ragged against the 128x128x64 tiles;
# odd M is read only where M is not a contiguous dimension (A K-contiguous).
MMA_SHAPES = {"odd_m": (1, 37, 64, 40), "ragged_all": (2, 200, 136, 264), "deep_k": (1, 136, 1032, 72),
              "square_512": (1, 512, 512, 512)}


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"], ids=str)
@pytest.mark.parametrize("layouts", ["a_k-b_k", "a_k-b_n", "a_m-b_k", "a_m-b_n"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", MMA_SHAPES.values(), ids=MMA_SHAPES.keys())
@gpu
def test_mma_sync_against_float64(shape, dtype, layouts, activation):
    _cuda_backend_or_skip()
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("mma.sync bf16 needs sm_80+")
    batch, m, k, n = shape
    a_k, b_k = layouts.split("-")
    if a_k == "a_m" and m % 8:
        pytest.skip("an M-contiguous A needs M % 8 == 0 (mma_sync_unsupported_reason)")
    a = _operand(batch, m, k, dtype, inner_contiguous=a_k == "a_k")  # K- or M-contiguous
    b = _operand(batch, k, n, dtype, inner_contiguous=b_k == "b_n")  # N- or K-contiguous
    bias = torch.randn(n, device="cuda", dtype=dtype)
    _check_kernel("mma_sync", a, b, bias, activation)


WGMMA_SHAPES = {"ragged_all": (1, 200, 136, 264), "odd_m_k": (1, 37, 72, 40), "batched": (3, 256, 512, 384),
                "deep_k": (1, 136, 2056, 128),
                # (batch, M, K, N): more tiles than SMs (256 of 128x256), 9 K steps (not a multiple of the
                # 4 stages): the persistent walk, the ring across tiles and staging reuse on the card
                "many_tiles": (2, 2048, 576, 2048),
                "exact": (1, 512, 512, 512)}  # nothing to clip


@pytest.mark.parametrize("activation", [None, "gelu"], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", WGMMA_SHAPES.values(), ids=WGMMA_SHAPES.keys())
@gpu
def test_wgmma_against_float64(shape, dtype, activation):
    _cuda_backend_or_skip()
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the wgmma/TMA kernel runs on compute capability 9.0 only")
    batch, m, k, n = shape
    a = _operand(batch, m, k, dtype)  # K-contiguous
    b = _operand(batch, k, n, dtype, inner_contiguous=False)  # K-contiguous: B read as N x K
    bias = torch.randn(n, device="cuda", dtype=dtype)
    _check_kernel("wgmma", a, b, bias, activation)
    if n % 8 == 0:
        _check_kernel("wgmma_v2", a, b, bias, activation)
        _check_kernel("wgmma_cluster", a, b, bias, activation)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@gpu
def test_cuda_linear_gradients_run_on_our_kernels(dtype):
    _cuda_backend_or_skip()
    x = torch.randn(3, 41, 64, device="cuda", dtype=dtype, requires_grad=True)  # 123 rows: ragged M
    w = (torch.randn(72, 64, device="cuda", dtype=dtype) / 8).requires_grad_(True)
    b = torch.randn(72, device="cuda", dtype=dtype, requires_grad=True)
    ours = ak.linear(x, w, b, activation="relu", backend="cuda")
    g = torch.randn_like(ours)
    with torch.profiler.profile() as prof:
        ours_grads = torch.autograd.grad(ours, (x, w, b), g)
    names = {e.name for e in prof.events()}
    assert "accelkernels::cuda_bmm" in names and not names & {"aten::mm", "aten::bmm", "aten::addmm"}
    leaves64 = [t.detach().double().requires_grad_(True) for t in (x, w, b)]
    ref_grads = torch.autograd.grad(F.relu(F.linear(*leaves64)), leaves64, g.double())
    theirs = F.relu(F.linear(x, w, b))
    theirs_grads = torch.autograd.grad(theirs, (x, w, b), g)
    assert_within_2x_torch_error(ours, theirs, F.relu(F.linear(*leaves64)).detach())
    for name, o, t, r in zip(("input", "weight", "bias"), ours_grads, theirs_grads, ref_grads):
        assert_within_2x_torch_error(o, t, r, f"grad {name}")


@gpu
def test_unreadable_half_operands_raise_when_explicit_and_fall_back_under_auto():
    _cuda_backend_or_skip()
    a = torch.randn(40, 33, device="cuda", dtype=torch.float16)  # K = 33: not whole 16-byte chunks
    b = torch.randn(33, 24, device="cuda", dtype=torch.float16)
    with pytest.raises(ak.BackendUnavailableError, match="mma.sync"):
        ak.matmul(a, b, backend="cuda")
    torch.testing.assert_close(ak.matmul(a, b), a @ b)  # auto: the reference serves it
    with pytest.raises(ValueError, match="cannot read these operands"):
        torch.ops.accelkernels.cuda_bmm(a[None], b[None], None, "none", "mma_sync")
    with pytest.raises(TypeError, match="takes float32"):
        torch.ops.accelkernels.cuda_bmm(a[None], b[None], None, "none", "warptile")


def test_ptxas_report_is_kept_for_every_kernel_without_spills():
    """csrc/kernels/PTXAS.md (python bench/ptxas_report.py) covers every kernel file, spill-free."""
    from pathlib import Path

    kernels = Path(__file__).resolve().parent.parent / "csrc" / "kernels"
    report = (kernels / "PTXAS.md").read_text()
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith(("| bmm_", "| conv2d_"))]
    assert {r[0].strip() for r in rows} == {p.name for p in kernels.glob("*.cu")}
    assert all(r[5].strip() == "0" and r[6].strip() == "0" for r in rows), "spills in the ptxas report"
    for step in (*SIMT_LADDER, "mma_sync", "wgmma", "wgmma_v2", "wgmma_cluster"):
        assert f"bmm_{step}" in report, step
    for family in ("conv2d_direct_kernel", "conv2d_depthwise_kernel", "conv2d_implicit_gemm_kernel",
                   "conv2d_implicit_gemm_weight_grad_kernel"):
        assert family in report, family
    # wgmma_v2 starts with 168 registers per thread (65536 / 384 in steps of 8): the pool its setmaxnreg
    # split redistributes, and what the CPU executor assumes (csrc/emulator/runtime.cpp, regs_at_entry)
    v2 = [r for r in rows if r[0].strip() in ("bmm_wgmma_v2.cu", "bmm_wgmma_cluster.cu") and r[2].strip() == "sm_90a"]
    assert len(v2) == 4 and all(r[3].strip() == "168" for r in v2), v2


@pytest.mark.parametrize(("dtype", "capability", "arch_list", "b_layout", "expected"), [
    (torch.float32, (9, 0), "8.0,9.0a", "k", "warptile"),
    (torch.bfloat16, (9, 0), "8.0,9.0a", "k", "wgmma_v2"),  # a linear layer's Wᵀ on Hopper (N = 24: TMA-storable)
    (torch.float16, (9, 0), "8.0,9.0a", "n", "mma_sync"),  # row-major B: TMA-wgmma reads N x K only
    (torch.bfloat16, (9, 0), "8.0", "k", "mma_sync"),  # no sm_90a code in the build
    (torch.bfloat16, (8, 0), "8.0,9.0a", "k", "mma_sync"),  # Ampere
])
def test_cuda_backend_picks_the_kernel_for_dtype_card_and_layout(dtype, capability, arch_list, b_layout, expected,
                                                                 monkeypatch):
    """The dispatch alone, on CPU tensors standing in for CUDA ones (no GPU needed)."""
    from types import SimpleNamespace

    from accelkernels import _extension
    from accelkernels.backends import cuda_gemm

    import contextlib

    from accelkernels import _build_config

    monkeypatch.setattr(cuda_gemm.torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(cuda_gemm.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda_gemm.torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(cuda_gemm, "_wgmma_code", {})
    asked = []
    binary = SimpleNamespace(wgmma_code_present=lambda: asked.append(1) or True)  # what the loaded code says
    monkeypatch.setattr(_extension, "status", lambda build=False: SimpleNamespace(
        loaded=True, module=binary, build_info={"arch_list": arch_list, "sm90a": _build_config.has_sm90a(arch_list)}))
    a = torch.randn(1, 40, 64, dtype=dtype)
    b = torch.randn(1, 24, 64, dtype=dtype).mT if b_layout == "k" else torch.randn(1, 64, 24, dtype=dtype)
    assert cuda_gemm.gemm_kernel_for(a, b) == expected
    assert cuda_gemm.gemm_kernel_for(a, b) == expected
    assert len(asked) <= 1  # the binary is asked once per device, and only by a build that asked for 9.0a
    if asked:
        binary.wgmma_code_present = lambda: False  # a cached answer: a later change is not seen
        assert cuda_gemm.gemm_kernel_for(a, b) == expected


def test_the_kernel_choice_asks_the_binary_not_the_arch_list(monkeypatch):
    """An arch list naming 9.0a whose loaded code has no wgmma bodies (say, a stale first-use build)."""
    import contextlib
    from types import SimpleNamespace

    from accelkernels import _extension
    from accelkernels.backends import cuda_gemm

    monkeypatch.setattr(cuda_gemm.torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(cuda_gemm.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda_gemm.torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(cuda_gemm, "_wgmma_code", {})
    monkeypatch.setattr(_extension, "status", lambda build=False: SimpleNamespace(
        loaded=True, module=SimpleNamespace(wgmma_code_present=lambda: False),
        build_info={"arch_list": "8.0,9.0a", "sm90a": True}))
    a, b = torch.randn(1, 40, 64, dtype=torch.bfloat16), torch.randn(1, 24, 64, dtype=torch.bfloat16).mT
    assert cuda_gemm.gemm_kernel_for(a, b) == "mma_sync"


def test_only_sm90a_code_holds_the_wgmma_bodies(tmp_path):
    """csrc/wgmma_code.cu compiled for sm_80, sm_90 and sm_90a: its device variable is 1 in the sm_90a
    cubin only (what wgmma_code_present reads on a GPU), so a plain 9.0 build says it has no wgmma code."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    nvcc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    try:
        import triton

        cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    except ImportError:
        cuobjdump = Path(shutil.which("cuobjdump") or "/nonexistent")
    if not nvcc.exists() or not cuobjdump.exists():
        pytest.skip("needs nvcc and cuobjdump (it ships with Triton)")
    csrc = Path(__file__).resolve().parent.parent / "csrc"
    obj = tmp_path / "wgmma_code.o"
    subprocess.run([str(nvcc), "-c", f"-I{csrc}", "-gencode", "arch=compute_80,code=sm_80", "-gencode",
                    "arch=compute_90,code=sm_90", "-gencode", "arch=compute_90a,code=sm_90a",
                    str(csrc / "wgmma_code.cu"), "-o", str(obj)], check=True, capture_output=True, timeout=300)
    elf = subprocess.run([str(cuobjdump), "-elf", str(obj)], check=True, capture_output=True, text=True).stdout
    per_arch = {}
    for part in elf.split("Fatbin elf code:")[1:]:
        arch = part.split("arch = ", 1)[1].split()[0]
        dump = re.search(r"^\.nv\.global\.init\n(0x[0-9a-f]+)", part, re.M)  # the section's data, if any
        per_arch[arch] = dump.group(1) if dump else "zero-initialised (no init data)"
    assert per_arch == {"sm_80": "zero-initialised (no init data)", "sm_90": "zero-initialised (no init data)",
                        "sm_90a": "0x00000001"}, per_arch
