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


# --- regressions found by tests/test_fuzz.py -----------------------------------------------------------


@pytest.mark.parametrize("w_cl", [False, True], ids=["w_nchw", "w_nhwc"])
@pytest.mark.parametrize("x_cl", [False, True], ids=["x_nchw", "x_nhwc"])
def test_gradients_come_in_torchs_memory_format(x_cl, w_cl, dispatch_path):
    """torch computes both gradients in the forward's format (channels_last if input OR weight is);
    the registered ops gave each gradient its own tensor's format."""
    x, w, b, args = make_inputs(CASES["3x3"], torch.float32, "contiguous", requires_grad=False)
    x = (x.to(memory_format=torch.channels_last) if x_cl else x).requires_grad_()
    w = (w.to(memory_format=torch.channels_last) if w_cl else w).requires_grad_()
    y = ak.conv2d(x, w, b, **args)
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, w), g)
    theirs = torch.autograd.grad(F.conv2d(x, w, b, **args), (x, w), g)
    for name, a, e in zip(("input", "weight"), ours, theirs):
        for fmt in (torch.channels_last, torch.contiguous_format):
            assert a.is_contiguous(memory_format=fmt) == e.is_contiguous(memory_format=fmt), (name, fmt)


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 0, 5, 5)], ids=["no_batch", "no_channels"])
def test_empty_input_gradients_are_zeros_like_torchs(shape, dispatch_path):
    """The registered ops' backward failed on an empty output (a bias gradient of the wrong shape)."""
    c = shape[1]
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(4, c, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = ak.conv2d(x, w, b, padding=1)
    expected = F.conv2d(x, w, b, padding=1)
    assert y.shape == expected.shape
    g = torch.randn(expected.shape)
    for a, e in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(expected, (x, w, b), g)):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_ambiguous_layout_keeps_torchs_own_format(dispatch_path):
    """A 1x1 image in channels_last strides, grouped, in float64: ATen's own loops convolve each
    group apart and return a contiguous result, oneDNN (float32) a channels_last one; the registered
    ops forced the usual rule on both."""
    x = torch.randn(2, 1, 1, 2, dtype=torch.float64).permute(0, 3, 1, 2)  # (2, 2, 1, 1), NHWC strides
    w = torch.randn(2, 1, 1, 1, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        y = ak.conv2d(x.to(dtype), w.to(dtype), None, 2, 1, 1, 2)
        expected = F.conv2d(x.to(dtype), w.to(dtype), None, 2, 1, 1, 2)
        assert y.stride() == expected.stride(), dtype
        assert_same_as_torch(y, expected)


def _bf16_reference_grads(x, w, b, args, g):
    """float64 gradients of the same bfloat16 values (torch's own bfloat16 ones are wrong here)."""
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    return torch.autograd.grad(F.conv2d(*leaves, **args), leaves, g.double())


def test_bf16_dead_tap_weight_gradient_is_right(dispatch_path):
    """torch 2.14.1's CPU bfloat16 weight gradient is wrong for a kernel tap that reads only padding
    (here the 3-wide kernel's outer columns, on a 1-wide input padded by 2, with a column stride of
    2: off by ~1.4; elsewhere uninitialised values, 1e10 to NaN; found by the fuzz). Its exact value
    is 0. Several seeds, since wrong values can happen to be right."""
    args = dict(stride=(3, 2), padding=(1, 2))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(2, 2, 2, 1, generator=gen).to(torch.bfloat16).to(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.randn(3, 2, 4, 3, generator=gen).to(torch.bfloat16).requires_grad_()
        b = torch.randn(3, generator=gen).to(torch.bfloat16).requires_grad_()
        y = ak.conv2d(x, w, b, **args)
        assert_same_as_torch(y, F.conv2d(x, w, b, **args))  # the forward is torch's, exactly
        g = torch.randn(y.shape, generator=gen).to(torch.bfloat16)
        ours = torch.autograd.grad(y, (x, w, b), g)
        for name, a, e in zip(("input", "weight", "bias"), ours, _bf16_reference_grads(x, w, b, args, g)):
            assert torch.isfinite(a).all(), name
            torch.testing.assert_close(a.double(), e, rtol=2e-2, atol=2e-2, msg=lambda m: f"{name}: {m}")


def test_bf16_single_strided_column_gives_the_right_numbers(dispatch_path):
    """torch 2.14.1's CPU bfloat16 convolution is wrong (outputs off by up to ~18 here) when the
    output is one column wide and the column stride is above 1 (found by the fuzz)."""
    gen = torch.Generator().manual_seed(175085)
    x = torch.randn(1, 3, 7, 7, generator=gen).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(9, 1, 2, 4, generator=gen) / 3).to(torch.bfloat16).requires_grad_()
    b = torch.randn(9, generator=gen).to(torch.bfloat16).requires_grad_()
    args = dict(stride=(1, 2), dilation=(1, 2), groups=3)
    y = ak.conv2d(x, w, b, **args)
    ref = F.conv2d(x.double(), w.double(), b.double(), **args)
    assert y.shape == ref.shape == (1, 9, 6, 1)
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=2e-2)
    g = torch.randn(y.shape, generator=gen).to(torch.bfloat16)
    for name, a, e in zip(("input", "weight", "bias"), torch.autograd.grad(y, (x, w, b), g),
                          _bf16_reference_grads(x, w, b, args, g)):
        torch.testing.assert_close(a.double(), e, rtol=2e-2, atol=5e-2, msg=lambda m: f"{name}: {m}")
