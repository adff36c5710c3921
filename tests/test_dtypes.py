"""Every dtype torch accepts, on the reference: torch is the oracle.

For every dtype x conv2d / matmul / linear x backend "torch" / "auto" x eager shortcut / registered
ops: where torch answers, we give its answer (values bit for bit, dtype, memory format); where torch
raises, we raise (a clear error of ours, or torch's own). The activations mirror F.relu / F.gelu /
F.silu on that dtype, autograd works where torch's does (complex), and the kernel backends refuse
what they cannot serve with the reason and the fix, while "auto" falls back to the reference.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import TRITON_DEVICE

import accelkernels as ak

DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint16, torch.uint32, torch.uint64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.complex32, torch.complex64, torch.complex128,
    torch.float8_e4m3fn, torch.float8_e5m2,
]
CL = torch.channels_last


@pytest.fixture(autouse=True)
def _no_complex_half_warning():
    with warnings.catch_warnings():
        # torch's own note whenever a complex32 tensor is made; not ours to test
        warnings.filterwarnings("ignore", "ComplexHalf support is experimental", UserWarning)
        yield


def values(shape, dtype, seed=0):
    """Small integers, exact in every dtype (so integer and float8 results are comparable too)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0 if dtype in (torch.bool, torch.uint8, torch.uint16, torch.uint32, torch.uint64) else -2,
                      3, shape, generator=gen)
    if dtype.is_complex:
        return torch.complex(t.double(), torch.randint(-2, 3, shape, generator=gen).double()).to(dtype)
    return t.to(dtype)


def outcome(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - torch's error is the oracle's answer
        return None, exc


def assert_same_outcome(ours_fn, theirs_fn):
    theirs, theirs_exc = outcome(theirs_fn)
    ours, ours_exc = outcome(ours_fn)
    if theirs_exc is not None:
        assert ours_exc is not None, f"torch raises {theirs_exc!r} but we answer"
        assert isinstance(ours_exc, RuntimeError), repr(ours_exc)  # NotImplementedError is one too
        return "raises"
    assert ours_exc is None, f"torch answers but we raise {ours_exc!r}"
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if ours.dim() == 4:
        assert ours.is_contiguous(memory_format=CL) == theirs.is_contiguous(memory_format=CL)
    assert same_bits(ours, theirs)
    return "answers"


def same_bits(a, b) -> bool:
    """Bit for bit, as bytes: float8 and complex32 have no comparison kernels of their own."""
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


OPS = {
    "matmul": (lambda d: (values((2, 3, 4), d), values((4, 5), d, 1)), {},
               lambda a, b, **kw: ak.matmul(a, b, **kw), torch.matmul),
    "matvec": (lambda d: (values((3, 4), d), values((4,), d, 1)), {},
               lambda a, b, **kw: ak.matmul(a, b, **kw), torch.matmul),
    "linear": (lambda d: (values((2, 3, 4), d), values((5, 4), d, 1), values((5,), d, 2)), {},
               lambda x, w, b, **kw: ak.linear(x, w, b, **kw), F.linear),
    "conv2d": (lambda d: (values((2, 4, 6, 5), d), values((6, 2, 3, 3), d, 1), values((6,), d, 2)),
               {"padding": 1, "groups": 2}, lambda x, w, b, **kw: ak.conv2d(x, w, b, **kw), F.conv2d),
    "conv2d_nhwc": (lambda d: (values((2, 4, 6, 5), d).to(memory_format=CL), values((6, 4, 3, 3), d, 1), None),
                    {"stride": 2}, lambda x, w, b, **kw: ak.conv2d(x, w, b, **kw), F.conv2d),
}

# What torch 2.14.1 answers on the CPU (the test asserts this too, so a torch that changes shows up
# here): the reference follows it either way.
TORCH_COMPUTES = {
    "matmul": {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
               torch.float32, torch.float64, torch.complex64, torch.complex128, torch.float8_e4m3fn,
               torch.float8_e5m2},
}


@pytest.mark.parametrize("dispatch", ["shortcut", "op"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_like_torch(dtype, op, backend, dispatch, monkeypatch):
    from accelkernels.ops import _shortcut

    monkeypatch.setattr(_shortcut, "ENABLED", dispatch == "shortcut")
    make, kwargs, ours, theirs = OPS[op]
    args = make(dtype)
    before = [a.clone() if a is not None else None for a in args]
    result = assert_same_outcome(lambda: ours(*args, **kwargs, backend=backend), lambda: theirs(*args, **kwargs))
    for a, b in zip(args, before):
        assert a is None or (same_bits(a, b) and a.stride() == b.stride()), "an input was modified"
    if op == "matmul":
        assert (result == "answers") == (dtype in TORCH_COMPUTES["matmul"]), (dtype, result)


def test_int64_matmul_is_served_exactly():
    """The case issue 16 names: refused before ("must be a floating-point tensor"), computed now."""
    a = torch.arange(12, dtype=torch.int64).reshape(3, 4) * 2**40  # beyond float64's exact integers
    b = torch.arange(8, dtype=torch.int64).reshape(4, 2)
    out = ak.matmul(a, b)
    assert out.dtype == torch.int64 and torch.equal(out, torch.matmul(a, b))


# --- activations on each dtype: mirror F.relu / F.gelu / F.silu ---------------------------------

TORCH_ACTIVATION = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


@pytest.mark.parametrize("dispatch", ["shortcut", "op"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.int8, torch.float32,
                                   torch.bfloat16, torch.complex64, torch.complex128], ids=str)
def test_activation_on_each_dtype_mirrors_torch(dtype, activation, dispatch, monkeypatch):
    from accelkernels.ops import _shortcut

    monkeypatch.setattr(_shortcut, "ENABLED", dispatch == "shortcut")
    act = TORCH_ACTIVATION[activation]
    x, w, b = values((3, 4), dtype), values((5, 4), dtype, 1), values((5,), dtype, 2)
    result = assert_same_outcome(lambda: ak.linear(x, w, b, activation=activation), lambda: act(F.linear(x, w, b)))
    cx, cw = values((1, 2, 5, 5), dtype), values((3, 2, 3, 3), dtype, 1)
    assert_same_outcome(lambda: ak.conv2d(cx, cw, activation=activation), lambda: act(F.conv2d(cx, cw)))
    torch_ok = outcome(lambda: act(values((2,), dtype)))[1] is None
    assert (result == "answers") == torch_ok


def test_activation_torch_cannot_compute_names_the_argument():
    x = values((3, 4), torch.int64)
    with pytest.raises(NotImplementedError, match=r"activation='gelu'.*torch\.int64.*GeluKernelImpl"):
        ak.linear(x, x, activation="gelu")
    with pytest.raises(NotImplementedError):  # torch raises the same type
        F.gelu(F.linear(x, x))


# --- autograd -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["shortcut", "op"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_complex_gradients_are_torchs(dtype, dispatch, monkeypatch):
    """Complex tensors can require grad: our gradients are torch's (conjugate Wirtinger convention)."""
    from accelkernels.ops import _shortcut

    monkeypatch.setattr(_shortcut, "ENABLED", dispatch == "shortcut")
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(shape, dtype=dtype, generator=gen).requires_grad_()

    cases = [
        (lambda a, b: ak.matmul(a, b), torch.matmul, (leaf(2, 3, 4), leaf(4, 5))),
        (lambda a, b: ak.matmul(a, b), torch.matmul, (leaf(4), leaf(2, 4, 3))),
        (lambda x, w, b: ak.linear(x, w, b), F.linear, (leaf(2, 3, 4), leaf(5, 4), leaf(5))),
        (lambda x, w, b: ak.conv2d(x, w, b, padding=1, groups=2), lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2),
         (leaf(2, 4, 5, 5), leaf(6, 2, 3, 3), leaf(6))),
    ]
    for ours_fn, torch_fn, args in cases:
        ours, theirs = ours_fn(*args), torch_fn(*args)
        assert torch.equal(ours, theirs)
        g = torch.randn(theirs.shape, dtype=dtype, generator=gen)
        for a, b in zip(torch.autograd.grad(ours, args, g), torch.autograd.grad(theirs, args, g)):
            # bit for bit on the shortcut (torch's own autograd); within rounding through the ops
            tol = 0 if dispatch == "shortcut" else (1e-5 if dtype == torch.complex64 else 1e-12)
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dispatch", ["shortcut", "op"])
def test_complex_silu_under_autograd_raises_like_torch(dispatch, monkeypatch):
    """torch computes silu of complex tensors, but not its gradient: it raises when autograd would
    record it, so the registered ops (whose forward runs without autograd) must raise up front."""
    from accelkernels.ops import _shortcut

    monkeypatch.setattr(_shortcut, "ENABLED", dispatch == "shortcut")
    x = torch.randn(3, 4, dtype=torch.complex64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="silu"):
        F.silu(F.linear(x, w))
    with pytest.raises(RuntimeError, match="activation='silu'.*complex64"):
        ak.linear(x, w, activation="silu")
    with torch.no_grad():  # without autograd torch computes it, and so do we
        assert torch.equal(ak.linear(x, w, activation="silu"), F.silu(F.linear(x, w)))


def test_integer_tensors_cannot_require_grad_so_no_backward_is_needed():
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ones(2, dtype=torch.int64).requires_grad_()
    a = values((3, 4), torch.int64)
    assert not ak.matmul(a, a.mT).requires_grad


# --- the kernel backends refuse, "auto" falls back -------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.float64, torch.bool], ids=str)
def test_triton_refuses_dtypes_it_has_no_kernel_for_with_reason_and_fix(dtype):
    if not ak.is_available("triton"):
        pytest.skip("triton unavailable here")
    a, b = values((3, 4), dtype).to(TRITON_DEVICE), values((4, 5), dtype, 1).to(TRITON_DEVICE)
    with pytest.raises(ak.BackendUnavailableError) as err:
        ak.matmul(a, b, backend="triton")
    message = str(err.value)
    assert "backend='triton' cannot serve" in message and str(dtype) in message  # the reason
    assert "backend='auto'" in message  # the fix
    if dtype != torch.bool:  # auto falls back to the reference, which computes it
        assert torch.equal(ak.matmul(a, b, backend="auto"), torch.matmul(a, b))


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.float64], ids=str)
def test_cuda_refuses_with_a_reason_and_auto_falls_back(dtype):
    a, b = values((3, 4), dtype), values((4, 5), dtype, 1)
    with pytest.raises(ak.BackendUnavailableError, match="backend='cuda' cannot serve") as err:
        ak.matmul(a, b, backend="cuda")
    # Without a GPU the reason is the missing GPU; with one, the dtype (CudaBackend.DTYPES).
    assert "GPU" in str(err.value) or str(dtype) in str(err.value)
    assert torch.equal(ak.matmul(a, b), torch.matmul(a, b))
