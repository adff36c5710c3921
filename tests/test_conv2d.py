"""accelkernels.conv2d against torch.nn.functional.conv2d on the CPU reference path, and the CUDA
backend's refusal to serve conv2d until its kernels exist (the Triton kernels: test_triton_conv2d.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_as_torch
from references import ACTIVATIONS, conv2d as ref_conv2d

import accelkernels as ak

# (N, C, H, W, K, R, S, stride, padding, dilation, groups): odd sizes, every argument exercised.
CASES = {
    "3x3": (2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1),
    "3x3_s2_nopad": (2, 3, 9, 11, 5, 3, 3, 2, 0, 1, 1),
    "tuple_args": (1, 4, 10, 7, 6, 3, 2, (2, 1), (1, 2), (1, 2), 1),
    "dilation2": (2, 3, 13, 12, 4, 3, 3, 1, 2, 2, 1),
    "groups2": (2, 4, 8, 8, 6, 3, 3, 1, 1, 1, 2),
    "depthwise": (2, 6, 9, 9, 6, 3, 3, 1, 1, 1, 6),
    "depthwise_x2": (2, 3, 9, 9, 6, 3, 3, 2, 1, 1, 3),
    "1x1": (3, 7, 5, 6, 11, 1, 1, 1, 0, 1, 1),
    "7x7_s2_stem": (1, 3, 17, 15, 8, 7, 7, 2, 3, 1, 1),
    "same_3x3": (2, 3, 8, 9, 4, 3, 3, 1, "same", 1, 1),
    "same_even_kernel": (2, 3, 8, 9, 4, 4, 2, 1, "same", 1, 1),
    "same_dilated_even": (1, 2, 9, 9, 3, 2, 2, 1, "same", (3, 1), 1),
    "valid": (2, 3, 8, 9, 4, 3, 3, 1, "valid", 1, 1),
    "rect_kernel": (2, 3, 7, 12, 5, 3, 5, (1, 2), (0, 2), 1, 1),
    "kernel_equals_input": (2, 3, 3, 3, 4, 3, 3, 1, 0, 1, 1),
}
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
LAYOUTS = ("contiguous", "channels_last", "strided")


def make_inputs(case, dtype, layout, bias=True, requires_grad=False):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    if layout == "strided":  # every other column of a wider tensor: no layout is contiguous
        x = torch.randn(n, c, h, 2 * w, dtype=dtype)[..., ::2]
        wt = torch.randn(k, c // groups, r, 2 * s, dtype=dtype)[..., ::2] / (c // groups * r * s) ** 0.5
    else:
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(k, c // groups, r, s, dtype=dtype) / (c // groups * r * s) ** 0.5
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
            wt = wt.to(memory_format=torch.channels_last)
    b = torch.randn(k, dtype=dtype) if bias else None
    tensors = [t.requires_grad_(requires_grad) if t is not None else None for t in (x, wt, b)]
    return (*tensors, dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_matches_torch(case, dtype, layout, dispatch_path):
    x, w, b, args = make_inputs(case, dtype, layout)
    before = [t.clone() for t in (x, w, b)]
    y = ak.conv2d(x, w, b, **args)
    expected = F.conv2d(x, w, b, **args)
    assert_same_as_torch(y, expected)
    # Same memory format as torch picks (channels_last if input or weight is).
    for fmt in (torch.channels_last, torch.contiguous_format):
        assert y.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt), fmt
    for t, t0 in zip((x, w, b), before):
        assert torch.equal(t, t0), "an input was modified"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("case", ["3x3", "depthwise", "same_even_kernel"])
def test_activation_and_bias(case, activation, bias, dispatch_path):
    x, w, b, args = make_inputs(CASES[case], torch.float32, "contiguous", bias=bias)
    assert_same_as_torch(ak.conv2d(x, w, b, activation=activation, **args), ref_conv2d(x, w, b, **args, activation=activation))


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", ["3x3_s2_nopad", "tuple_args", "groups2", "depthwise_x2", "same_even_kernel"])
def test_gradients_match_torch(case, dtype, layout, activation, dispatch_path):
    x, w, b, args = make_inputs(CASES[case], dtype, layout, requires_grad=True)
    y = ak.conv2d(x, w, b, activation=activation, **args)
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), grad_out)
    expected = torch.autograd.grad(ref_conv2d(x, w, b, **args, activation=activation), (x, w, b), grad_out)
    for name, g, e in zip(("input", "weight", "bias"), grads, expected):
        torch.testing.assert_close(g, e, msg=lambda m: f"grad {name}: {m}")


def test_only_requested_gradients_are_computed(dispatch_path):
    x, w, b, args = make_inputs(CASES["3x3"], torch.float64, "contiguous")
    w.requires_grad_(True)
    y = ak.conv2d(x, w, b, **args)
    (gw,) = torch.autograd.grad(y.sum(), (w,))
    torch.testing.assert_close(gw, torch.autograd.grad(F.conv2d(x, w, b, **args).sum(), (w,))[0])


def test_unbatched_input(dispatch_path):
    x, w, b, args = make_inputs(CASES["3x3"], torch.float32, "contiguous")
    y = ak.conv2d(x[0], w, b, **args)
    assert y.dim() == 3
    assert_same_as_torch(y, F.conv2d(x[0], w, b, **args))


def test_empty_batch_gives_empty_output(dispatch_path):
    x = torch.randn(0, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    y = ak.conv2d(x, w, padding=1)
    assert y.shape == (0, 4, 8, 8)


def test_cuda_backend_serves_conv2d_on_cuda_tensors_only():
    from accelkernels.backends.cuda_backend import CudaBackend

    assert CudaBackend().op_unsupported_reason("conv2d") is None
    x, w, b, args = make_inputs(CASES["3x3"], torch.float32, "contiguous")
    with pytest.raises(ak.BackendUnavailableError, match="cuda"):
        ak.conv2d(x, w, b, **args, backend="cuda")  # CPU tensors (and, here, no GPU)
