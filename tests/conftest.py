"""Shared test setup: the Triton interpreter on GPU-less machines, and the numerics oracle."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter on CPU tensors. The variable must be set
# before any Triton kernel is compiled, so it is set here, before the tests import anything.
HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # Autotuning every shape the tests use would take minutes; one fixed config proves correctness
    # (tests/test_gpu.py runs the autotuned path once on purpose).
    os.environ.setdefault("ACCELKERNELS_TRITON_AUTOTUNE", "0")

# backend="auto" times the backends on the first call of each new problem (accelkernels/backends/
# autotune.py). With the Triton interpreter on, that would run every new test shape in the interpreter
# (seconds each, thousands of shapes); the suite runs auto's untimed path instead, and
# tests/test_autotune.py turns the timing on where it is what is tested. Decisions and tables never
# reach the user's cache folder.
os.environ.setdefault("ACCELKERNELS_AUTOTUNE", "0")
os.environ["ACCELKERNELS_CACHE_DIR"] = tempfile.mkdtemp(prefix="accelkernels-test-cache-")
atexit.register(shutil.rmtree, os.environ["ACCELKERNELS_CACHE_DIR"], ignore_errors=True)

# The device Triton kernels run on in this session: the GPU, or CPU tensors under the interpreter.
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed_and_precision():
    """Fresh but reproducible random data per test; exact fp32 matmuls/convs for the references."""
    torch.manual_seed(0)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def max_error(x: torch.Tensor, ref64: torch.Tensor) -> float:
    return (x.double() - ref64).abs().max().item() if x.numel() else 0.0


def ulp(ref64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of ``dtype``'s numbers at each reference value (one unit in the last place)."""
    info = torch.finfo(dtype)
    return info.eps * torch.exp2(torch.floor(torch.log2(ref64.abs().clamp_min(info.tiny))))


def assert_within_2x_torch_error(ours: torch.Tensor, theirs: torch.Tensor, ref64: torch.Tensor, what: str = "output"):
    """The project's oracle: our error against a float64 reference is at most twice torch's own
    error at the same dtype (plus 1e-6 for the cases where torch happens to be exact).

    An element within one ulp of the exact value also passes: no kernel that rounds its result can
    promise better (a faithfully rounded result is within one ulp), and on small fp16/bf16 outputs
    torch's maximum error can be a lucky fraction of an ulp (measured: a 2-channel bf16 bias gradient
    where torch's rounding happened to land on the nearer neighbour and ours, from a sum that was more
    accurate before rounding, on the other, 1 seed in 30)."""
    assert ours.shape == theirs.shape == ref64.shape, (what, ours.shape, theirs.shape, ref64.shape)
    assert ours.dtype == theirs.dtype, (what, ours.dtype, theirs.dtype)
    assert torch.isfinite(ours).all(), f"{what}: non-finite values"
    if not ours.numel():
        return
    torch_err = max_error(theirs, ref64)
    err = (ours.double() - ref64).abs()
    bad = (err > 2 * torch_err + 1e-6) & (err > ulp(ref64, ours.dtype))
    if bad.any():
        worst = err[bad].max().item()
        raise AssertionError(f"{what}: error {worst:.3g} > 2 x torch's {torch_err:.3g} and > 1 ulp "
                             f"at {int(bad.sum())} of {ours.numel()} elements")


def assert_same_as_torch(ours: torch.Tensor, theirs: torch.Tensor, what: str = "output"):
    """The reference backend runs torch's own kernels: results must agree bit for bit."""
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=lambda m: f"{what}: {m}")


@pytest.fixture(params=["shortcut", "op"])
def dispatch_path(request, monkeypatch):
    """Run a reference-path test both ways: the eager shortcut to torch's op, and through the
    registered accelkernels ops (what torch.compile and the kernel backends use)."""
    from accelkernels.ops import _shortcut

    monkeypatch.setattr(_shortcut, "ENABLED", request.param == "shortcut")
    return request.param
