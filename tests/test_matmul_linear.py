"""accelkernels.matmul / linear against torch on the reference path, and the Triton kernel (on the
GPU, or on CPU tensors through TRITON_INTERPRET=1) against a float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TRITON_DEVICE, assert_same_as_torch, assert_within_2x_torch_error
from references import ACTIVATIONS, linear as ref_linear

import accelkernels as ak

MATMUL_SHAPES = {
    "dot": ((7,), (7,)),
    "vec_mat": ((7,), (7, 5)),
    "mat_vec": ((4, 7), (7,)),
    "mat_mat": ((13, 7), (7, 5)),
    "batched_x_mat": ((3, 13, 7), (7, 5)),
    "batched": ((3, 13, 7), (3, 7, 5)),
    "broadcast_4d": ((2, 1, 4, 7), (3, 7, 6)),
    "vec_x_batched": ((7,), (2, 7, 5)),
    "batched_x_vec": ((2, 3, 4, 7), (7,)),
    "size1_batch": ((1, 4, 7), (3, 7, 2)),
    "empty_batch": ((0, 4, 7), (7, 3)),
    "k_zero": ((4, 0), (0, 3)),
    "ones": ((1, 1), (1, 1)),
}
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _make(shape, dtype, transposed=False, device="cpu"):
    if transposed and len(shape) >= 2:  # the same values read through swapped strides
        return torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=dtype, device=device).mT
    return torch.randn(shape, dtype=dtype, device=device)


@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "transposed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES.values(), ids=MATMUL_SHAPES.keys())
def test_matmul_matches_torch(shapes, dtype, transposed, dispatch_path):
    a, b = _make(shapes[0], dtype, transposed), _make(shapes[1], dtype, transposed)
    before = (a.clone(), b.clone())
    y = ak.matmul(a, b)
    assert_same_as_torch(y, torch.matmul(a, b))
    assert torch.equal(a, before[0]) and torch.equal(b, before[1]), "an input was modified"


@pytest.mark.parametrize("shapes", MATMUL_SHAPES.values(), ids=MATMUL_SHAPES.keys())
def test_matmul_gradients_match_torch(shapes, dispatch_path):
    a = torch.randn(shapes[0], dtype=torch.float64, requires_grad=True)
    b = torch.randn(shapes[1], dtype=torch.float64, requires_grad=True)
    y = ak.matmul(a, b)
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, (a, b), g)
    theirs = torch.autograd.grad(torch.matmul(a, b), (a, b), g)
    for name, o, t in zip("ab", ours, theirs):
        torch.testing.assert_close(o, t, msg=lambda m: f"grad {name}: {m}")


LINEAR_SHAPES = {"2d": (5, 7), "3d": (2, 3, 7), "1d": (7,), "empty": (0, 7)}


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", LINEAR_SHAPES.values(), ids=LINEAR_SHAPES.keys())
def test_linear_matches_torch(shape, dtype, bias, activation, dispatch_path):
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(4, 7, dtype=dtype)
    b = torch.randn(4, dtype=dtype) if bias else None
    assert_same_as_torch(ak.linear(x, w, b, activation=activation), ref_linear(x, w, b, activation))


def test_linear_vector_weight_and_scalar_bias(dispatch_path):
    x, w = torch.randn(3, 7), torch.randn(7)
    assert_same_as_torch(ak.linear(x, w), F.linear(x, w))
    w2, b1 = torch.randn(4, 7), torch.randn(1)
    assert_same_as_torch(ak.linear(x, w2, b1), F.linear(x, w2, b1))


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)], ids=["2d", "3d"])
def test_linear_gradients_match_torch(shape, activation, dispatch_path):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = ak.linear(x, w, b, activation=activation)
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, w, b), g)
    theirs = torch.autograd.grad(ref_linear(x, w, b, activation), (x, w, b), g)
    for name, o, t in zip(("input", "weight", "bias"), ours, theirs):
        torch.testing.assert_close(o, t, msg=lambda m: f"grad {name}: {m}")


# --- the Triton kernel, against float64 (error <= 2x torch's own at the same dtype) -----------------

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TRITON_SHAPES = {
    "1x1x1": ((1, 1), (1, 1)),
    "primes": ((37, 19), (19, 41)),
    "ragged_tiles": ((65, 33), (33, 67)),
    "batched_broadcast": ((2, 1, 5, 17), (3, 17, 9)),
    "batched_x_mat": ((3, 13, 70), (70, 5)),
    "vec_mat": ((23,), (23, 6)),
    "k_zero": ((4, 0), (0, 3)),
}


def _ref_and_torch(fn, *tensors):
    ref = fn(*[t.double() if t is not None else None for t in tensors])
    return ref, fn(*tensors)


@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "transposed"])
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("shapes", TRITON_SHAPES.values(), ids=TRITON_SHAPES.keys())
def test_triton_matmul_against_float64(shapes, dtype, transposed):
    a = _make(shapes[0], dtype, transposed, TRITON_DEVICE)
    b = _make(shapes[1], dtype, transposed, TRITON_DEVICE)
    ours = ak.matmul(a, b, backend="triton")
    ref, theirs = _ref_and_torch(torch.matmul, a, b)
    assert_within_2x_torch_error(ours, theirs, ref)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
def test_triton_linear_epilogue_and_gradients(dtype, activation):
    x = torch.randn(2, 19, 37, dtype=dtype, device=TRITON_DEVICE, requires_grad=True)
    w = (torch.randn(23, 37, dtype=dtype, device=TRITON_DEVICE) / 37**0.5).requires_grad_(True)
    b = torch.randn(23, dtype=dtype, device=TRITON_DEVICE, requires_grad=True)
    ours = ak.linear(x, w, b, activation=activation, backend="triton")
    g = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, (x, w, b), g)

    def run(*t):
        return ref_linear(*t, activation)

    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = run(x64, w64, b64)
    ref_grads = torch.autograd.grad(ref, (x64, w64, b64), g.double())
    theirs = run(x, w, b)
    theirs_grads = torch.autograd.grad(theirs, (x, w, b), g)
    assert_within_2x_torch_error(ours, theirs, ref.detach())
    for name, o, t, r in zip(("input", "weight", "bias"), ours_grads, theirs_grads, ref_grads):
        assert_within_2x_torch_error(o, t, r, f"grad {name}")


@pytest.mark.parametrize("kernel", ["tiled", "persistent"])
def test_triton_kernels_write_every_output_element(kernel, monkeypatch):
    """Poison: pre-fill the output buffer with NaN; none may survive. Shapes with ragged edges, several
    tile rows per group and several tiles per persistent program, so every tile-ordering path runs."""
    from accelkernels.triton_kernels import matmul as triton_matmul

    real_empty = torch.empty
    monkeypatch.setattr(triton_matmul.torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    a = torch.randn(3, 161, 33, device=TRITON_DEVICE)
    b = torch.randn(3, 33, 67, device=TRITON_DEVICE)
    bias = torch.randn(67, device=TRITON_DEVICE)
    out = triton_matmul.bmm(a, b, bias, "silu", kernel=kernel)
    assert not out.isnan().any()
    ref = torch.nn.functional.silu(a.double() @ b.double() + bias.double())
    assert_within_2x_torch_error(out, torch.nn.functional.silu(a @ b + bias), ref)


def test_triton_kernel_name_is_checked():
    from accelkernels.triton_kernels import matmul as triton_matmul

    with pytest.raises(ValueError, match="kernel must be one of"):
        triton_matmul.bmm(torch.randn(1, 2, 2), torch.randn(1, 2, 2), None, "none", kernel="fastest")


@pytest.mark.parametrize("case", ["transposed_batch_x_matrix", "transposed_3d_linear", "broadcast_b", "vector"])
def test_gemm_mapping_reads_operands_in_place(case):
    """The batched problem handed to the kernels views the caller's tensors: no hidden copies."""
    from accelkernels.backends._batched import linear_as_bmm, matmul_as_bmm

    if case == "transposed_batch_x_matrix":
        a, b = torch.randn(3, 7, 5).mT, torch.randn(7, 4)  # a: (3, 5, 7), not foldable into one matrix
        a3, b3, shape = matmul_as_bmm(a, b)
    elif case == "transposed_3d_linear":
        a, b = torch.randn(2, 7, 5).mT, torch.randn(4, 7)
        a3, b3, shape = linear_as_bmm(a, b)
        b = b.mT
    elif case == "broadcast_b":
        a, b = torch.randn(3, 5, 7), torch.randn(1, 7, 4)
        a3, b3, shape = matmul_as_bmm(a, b)
    else:
        a, b = torch.randn(7), torch.randn(7, 4)
        a3, b3, shape = matmul_as_bmm(a, b)
    assert a3.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()
    assert b3.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    torch.testing.assert_close(torch.bmm(a3, b3).reshape(shape), torch.matmul(a, b))


def test_kernel_names_agree():
    from accelkernels.triton_kernels import KERNEL_NAMES
    from accelkernels.triton_kernels import matmul as triton_matmul

    assert KERNEL_NAMES == triton_matmul.KERNELS


@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "silu"])
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("rows,n", [(1, 1), (300, 70), (0, 5)])
def test_triton_epilogue_backward_against_float64(rows, n, dtype, activation):
    """dz = act'(z)·dy and dbias = Σ dz from one kernel; the grad is read through strides (a transposed view)."""
    from accelkernels import _activation
    from accelkernels.triton_kernels import epilogue_backward

    grad = torch.randn(n, rows, dtype=dtype, device=TRITON_DEVICE).mT
    z = torch.randn(rows, n, dtype=dtype, device=TRITON_DEVICE)
    saved = torch.relu(z) if activation == "relu" else z

    def reference(g, s):
        out, pre = (s, None) if activation == "relu" else (None, s)
        dz = _activation.backward(g, out, pre, activation)
        return dz, dz.sum(0)

    dz, dbias = epilogue_backward.bias_activation_backward(grad, saved, activation, write_dz=True)
    ref_dz, ref_db = reference(grad.double(), saved.double())
    torch_dz, torch_db = reference(grad, saved)
    assert_within_2x_torch_error(dz, torch_dz, ref_dz, "dz")
    assert_within_2x_torch_error(dbias, torch_db, ref_db, "dbias")


def test_triton_linear_backward_runs_no_aten_epilogue_or_gemm():
    """backend="triton": the backward's GEMMs, activation gradient and bias sum are our kernels."""
    x = torch.randn(5, 19, device=TRITON_DEVICE, requires_grad=True)
    w = torch.randn(7, 19, device=TRITON_DEVICE, requires_grad=True)
    b = torch.randn(7, device=TRITON_DEVICE, requires_grad=True)
    y = ak.linear(x, w, b, activation="gelu", backend="triton")
    with torch.profiler.profile() as prof:
        y.backward(torch.randn_like(y))
    names = {e.name for e in prof.events()}
    assert "accelkernels::activation_backward" in names
    assert not names & {"aten::gelu_backward", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"}, names


@pytest.mark.parametrize("b_layout", ["n_contiguous", "k_contiguous"])
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
def test_triton_tma_kernel_against_float64(dtype, b_layout, monkeypatch):
    """The TMA kernel: ragged M/N edges come from TMA's zero fill and store clipping, not masks."""
    from accelkernels.triton_kernels import matmul as triton_matmul

    real_empty = torch.empty
    monkeypatch.setattr(triton_matmul.torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    a = torch.randn(2, 70, 48, dtype=dtype, device=TRITON_DEVICE)
    if b_layout == "n_contiguous":
        b = torch.randn(2, 48, 40, dtype=dtype, device=TRITON_DEVICE)
    else:  # a linear layer's weight, read in place
        b = torch.randn(2, 40, 48, dtype=dtype, device=TRITON_DEVICE).transpose(1, 2)
    bias = torch.randn(40, dtype=dtype, device=TRITON_DEVICE)
    out = triton_matmul.bmm(a, b, bias, "gelu", kernel="tma")
    ref = torch.nn.functional.gelu(a.double() @ b.double() + bias.double())
    assert_within_2x_torch_error(out, torch.nn.functional.gelu(a @ b + bias), ref)


def test_triton_tma_kernel_refuses_what_tma_cannot_describe():
    from accelkernels.triton_kernels import matmul as triton_matmul

    a, b = torch.randn(1, 5, 7), torch.randn(1, 7, 8)
    assert "16 bytes" in triton_matmul.tma_unsupported_reason(a, b)
    assert "broadcast" in triton_matmul.tma_unsupported_reason(torch.randn(2, 8, 8), torch.randn(1, 8, 8).expand(2, 8, 8))
    assert triton_matmul.tma_unsupported_reason(torch.randn(1, 8, 8), torch.randn(1, 8, 8)) is None
    with pytest.raises(ValueError, match="tma kernel cannot read"):
        triton_matmul.bmm(a, b, None, "none", kernel="tma")
