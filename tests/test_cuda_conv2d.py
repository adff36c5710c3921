"""The CUDA C++ conv2d kernels (csrc/kernels/conv2d_*.cu) and the backend's choice among them.

On the CPU: which kernel serves each pass for each dtype, channel count, card and shape, and the
Python glue around them (1x1 convolutions as GEMMs on pixel views, memory formats, gradients),
with CPU stand-ins registered for the kernel ops so the glue's numbers are checked against torch.
On a GPU (skipped elsewhere): every kernel by name against a float64 reference — error at most 2x
cuDNN's at the same dtype — for the forward with its fused epilogue and both gradients, random
configurations over every argument and layout through backend="cuda", and the refusals.
"""

from __future__ import annotations

import conv_cases
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_2x_torch_error, requires_cuda
from references import activate

import accelkernels as ak
from accelkernels.backends import cuda_conv
from accelkernels.backends.cuda_backend import CudaBackend

# --- CPU: which kernel ------------------------------------------------------------------------------


@pytest.mark.parametrize(("pass_", "dtype", "c", "k", "groups", "capability", "expected"), [
    ("forward", torch.bfloat16, 64, 64, 1, (9, 0), "implicit_gemm"),
    ("forward", torch.float16, 32, 48, 2, (8, 0), "implicit_gemm"),  # 16 and 24 channels per group
    ("forward", torch.bfloat16, 3, 64, 1, (9, 0), "direct"),  # the RGB stem: 3 channels
    ("forward", torch.float16, 64, 64, 1, (7, 5), "direct"),  # Turing: no bf16 mma.sync / cp.async
    ("forward", torch.float32, 64, 64, 1, (9, 0), "direct"),  # fp32: SIMT
    ("forward", torch.bfloat16, 64, 128, 64, (9, 0), "depthwise"),  # multiplier 2
    ("input_grad", torch.bfloat16, 64, 64, 64, (9, 0), "direct"),  # depthwise gradients: direct
    ("input_grad", torch.bfloat16, 64, 72, 1, (9, 0), "implicit_gemm"),
    ("weight_grad", torch.float16, 64, 12, 1, (9, 0), "direct"),  # 12 output channels
    ("weight_grad", torch.bfloat16, 128, 256, 1, (9, 0), "implicit_gemm"),
])
def test_conv_kernel_for_each_pass(pass_, dtype, c, k, groups, capability, expected):
    assert cuda_conv.conv_kernel_for(pass_, dtype, c, k, groups, capability) == expected


@pytest.fixture
def stand_in_ops(monkeypatch):
    """CPU implementations of the kernel ops (torch's own ops), recording which kernel was asked
    for: the glue in cuda_conv.py runs for real, only the kernel is a stand-in."""
    calls = []
    lib = torch.library.Library("accelkernels", "IMPL")

    def bmm(a, b, bias, activation, kernel):
        calls.append(("cuda_bmm", kernel, a.stride(), b.stride()))
        return activate(torch.bmm(a, b) + (bias if bias is not None else 0), activation).contiguous()

    def conv(x, w, bias, stride, padding, dilation, groups, activation, kernel, channels_last):
        calls.append(("cuda_conv2d", kernel))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return activate(F.conv2d(x, w, bias, stride, padding, dilation, groups), activation).contiguous(
            memory_format=fmt)

    def input_grad(dy, w, input_size, stride, padding, dilation, groups, kernel, channels_last):
        calls.append(("cuda_conv2d_input_grad", kernel))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.nn.grad.conv2d_input(input_size, w, dy, stride, padding, dilation, groups).contiguous(
            memory_format=fmt)

    def weight_grad(dy, x, weight_size, stride, padding, dilation, groups, kernel, channels_last):
        calls.append(("cuda_conv2d_weight_grad", kernel))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.nn.grad.conv2d_weight(x, weight_size, dy, stride, padding, dilation, groups).contiguous(
            memory_format=fmt)

    for name, fn in (("cuda_bmm", bmm), ("cuda_conv2d", conv), ("cuda_conv2d_input_grad", input_grad),
                     ("cuda_conv2d_weight_grad", weight_grad)):
        lib.impl(name, fn, "CPU")
    # Ampere: the GEMM kernel for fp16/bf16 is mma_sync whatever the operands' layout (no wgmma)
    monkeypatch.setattr(cuda_conv.torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    yield calls
    lib._destroy()


# (N, C, H, W, K, R, S, stride, padding, dilation, groups) -> the op and kernel the forward runs.
GLUE_CASES = {
    "pointwise_1x1": ((2, 16, 4, 6, 24, 1, 1, 1, 0, 1, 1), ("cuda_bmm", "mma_sync")),
    "implicit_gemm_3x3": ((2, 16, 7, 9, 24, 3, 3, 1, 1, 1, 1), ("cuda_conv2d", "implicit_gemm")),
    "direct_stem": ((1, 3, 11, 10, 8, 3, 3, 2, 1, 1, 1), ("cuda_conv2d", "direct")),
    "depthwise": ((2, 8, 8, 7, 16, 3, 3, 1, 1, 1, 8), ("cuda_conv2d", "depthwise")),
    "pointwise_ragged_channels": ((2, 5, 4, 4, 7, 1, 1, 1, 0, 1, 1), ("cuda_conv2d", "direct")),
}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", GLUE_CASES.keys())
def test_backend_glue_with_stand_in_kernels(case, layout, stand_in_ops):
    """Forward and both gradients through CudaBackend's conv2d methods on CPU tensors: the kernel
    chosen, the 1x1 GEMM views (dX = dY·W), memory formats as torch's, values as torch's."""
    (n, c, h, w, k, r, s, stride, padding, dilation, groups), expected = GLUE_CASES[case]
    x, wt, b = conv_cases.make_conv(n, c, h, w, k, r, s, groups, torch.bfloat16, layout)
    geometry = ((stride, stride), (padding, padding), (dilation, dilation), groups)
    backend = CudaBackend()
    y = backend.conv2d(x, wt, b, *geometry, "relu")
    theirs = F.relu(F.conv2d(x, wt, b, stride, padding, dilation, groups))
    assert stand_in_ops[0][:2] == expected
    torch.testing.assert_close(y, theirs, rtol=2e-2, atol=2e-2)
    if expected[0] == "cuda_bmm":  # the pixel views are read in place: no copy for either layout
        a_stride = stand_in_ops[0][2]
        assert a_stride[-1] == 1 or a_stride[-2] == 1
    dy = torch.randn_like(theirs)
    dx = backend.conv2d_input_grad(dy, x, wt, *geometry)
    dw = backend.conv2d_weight_grad(dy, x, wt, *geometry)
    torch.testing.assert_close(dx, torch.nn.grad.conv2d_input(x.shape, wt, dy, stride, padding, dilation, groups),
                               rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(dw, torch.nn.grad.conv2d_weight(x, wt.shape, dy, stride, padding, dilation, groups),
                               rtol=2e-2, atol=2e-2)
    assert dx.shape == x.shape and dw.shape == wt.shape
    ops = [call[0] for call in stand_in_ops]
    assert ops[-1] == "cuda_conv2d_weight_grad"
    if case == "pointwise_1x1":
        assert ops[1] == "cuda_bmm"  # dgrad of a 1x1 convolution is a GEMM too


# --- GPU ----------------------------------------------------------------------------------------------


def gpu(test):
    """A GPU test: marked "gpu" (pytest -m gpu) and skipped without a CUDA device."""
    return pytest.mark.gpu(requires_cuda(test))


def _cuda_backend_or_skip():
    if not ak.is_available("cuda"):
        pytest.skip(f"cuda backend unavailable: {ak.available_backends()['cuda']['reason']}")


def _poison() -> None:
    torch.full((64 * 1024 * 1024,), float("nan"), device="cuda")  # the allocator's next block is NaN


# (N, C, H, W, K, R, S, stride, padding, dilation, groups): ragged against every tile, channel
# counts the tensor-core kernels take (multiples of 8 per group).
KERNEL_SHAPES = {
    "3x3": (2, 16, 13, 11, 24, 3, 3, 1, 1, 1, 1),
    "s2_dil2_groups2": (3, 32, 17, 14, 48, 3, 2, 2, 2, 2, 2),
    "wide_k_1x1_s2": (2, 136, 9, 9, 264, 1, 1, 2, 0, 1, 1),
    "deep_reduction": (1, 256, 10, 10, 40, 5, 5, 1, 2, 1, 1),
}
FORWARD_KERNELS = {"direct": (torch.float32, torch.float16, torch.bfloat16),
                   "implicit_gemm": (torch.float16, torch.bfloat16)}  # the gradient passes have the same two
EACH_KERNEL_AND_DTYPE = pytest.mark.parametrize(
    ("kernel", "dtype"), [(k, d) for k, ds in FORWARD_KERNELS.items() for d in ds], ids=str)


def _kernel_case(shape: str, dtype, layout: str, bias=True):
    """(x, weight, bias) on the GPU for KERNEL_SHAPES[shape], and (stride, padding, dilation, groups)."""
    n, c, h, w, k, r, s, stride, padding, dilation, groups = KERNEL_SHAPES[shape]
    tensors = conv_cases.make_conv(n, c, h, w, k, r, s, groups, dtype, layout, bias=bias, device="cuda")
    return tensors, ([stride] * 2, [padding] * 2, [dilation] * 2, groups)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("shape", KERNEL_SHAPES.keys())
@EACH_KERNEL_AND_DTYPE
@gpu
def test_forward_kernel_against_float64(kernel, dtype, shape, layout):
    _cuda_backend_or_skip()
    (x, wt, b), (stride, padding, dilation, groups) = _kernel_case(shape, dtype, layout)
    _poison()
    ours = torch.ops.accelkernels.cuda_conv2d(x, wt, b, stride, padding, dilation, groups, "gelu", kernel,
                                              layout == "nhwc")
    theirs = F.gelu(F.conv2d(x, wt, b, stride, padding, dilation, groups))
    ref = F.gelu(F.conv2d(x.double(), wt.double(), b.double(), stride, padding, dilation, groups))
    assert_within_2x_torch_error(ours, theirs, ref, kernel)
    assert ours.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)


# (N, C, H, W, K, R, S, stride, padding, dilation): H and W differ in size, stride, padding and dilation,
# so that a swap of the im2col map's corners, traversal strides or offsets shows on the card.
WGMMA_CONV_SHAPES = {
    "asymmetric": (2, 16, 12, 9, 24, 3, 2, (2, 1), (2, 0), (2, 1)),
    "stride_3x2": (1, 40, 16, 21, 8, 3, 2, (3, 2), (1, 0), (1, 1)),
    "stem_7x7_s2": (4, 16, 57, 61, 72, 7, 7, (2, 2), (3, 3), (1, 1)),  # 3720 pixels: several tiles per SM-row
}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [*KERNEL_SHAPES, *WGMMA_CONV_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@gpu
def test_wgmma_forward_and_gradients_against_float64(dtype, shape, layout):
    """The Hopper forward and both gradients (im2col TMA + wgmma; groups one launch each, the input gradient one
    per stride phase, the weight gradient on MN-major tiles with split-K) on the card: compute capability 9.0
    with sm_90a code only. The first run of the MN-major descriptors on hardware is here."""
    _cuda_backend_or_skip()
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the wgmma/im2col-TMA convolution runs on compute capability 9.0 only")
    if shape in WGMMA_CONV_SHAPES:
        n, c, h, w, k, r, s, stride, padding, dilation = WGMMA_CONV_SHAPES[shape]
        x, wt, b = conv_cases.make_conv(n, c, h, w, k, r, s, 1, dtype, layout, device="cuda")
        stride, padding, dilation, groups = list(stride), list(padding), list(dilation), 1
    else:
        (x, wt, b), (stride, padding, dilation, groups) = _kernel_case(shape, dtype, layout)
    _poison()
    ours = torch.ops.accelkernels.cuda_conv2d(x, wt, b, stride, padding, dilation, groups, "gelu", "wgmma",
                                              layout == "nhwc")
    theirs = F.gelu(F.conv2d(x, wt, b, stride, padding, dilation, groups))
    ref = F.gelu(F.conv2d(x.double(), wt.double(), b.double(), stride, padding, dilation, groups))
    assert_within_2x_torch_error(ours, theirs, ref, "wgmma")
    dy = torch.randn_like(theirs)
    _poison()
    dx = torch.ops.accelkernels.cuda_conv2d_input_grad(dy, wt, list(x.shape), stride, padding, dilation, groups,
                                                       "wgmma", layout == "nhwc")
    assert_within_2x_torch_error(dx, torch.nn.grad.conv2d_input(x.shape, wt, dy, stride, padding, dilation, groups),
                                 torch.nn.grad.conv2d_input(x.shape, wt.double(), dy.double(), stride, padding,
                                                            dilation, groups), "wgmma input grad")
    assert dx.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    _poison()
    dw = torch.ops.accelkernels.cuda_conv2d_weight_grad(dy, x, list(wt.shape), stride, padding, dilation, groups,
                                                        "wgmma", layout == "nhwc")
    assert_within_2x_torch_error(dw, torch.nn.grad.conv2d_weight(x, wt.shape, dy, stride, padding, dilation, groups),
                                 torch.nn.grad.conv2d_weight(x.double(), wt.shape, dy.double(), stride, padding,
                                                             dilation, groups), "wgmma weight grad")
    assert dw.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("multiplier", [1, 2])
@gpu
def test_depthwise_kernel_against_float64(multiplier, dtype, layout):
    _cuda_backend_or_skip()
    x, wt, b = conv_cases.make_conv(2, 24, 19, 17, 24 * multiplier, 3, 3, 24, dtype, layout, device="cuda")
    _poison()
    ours = torch.ops.accelkernels.cuda_conv2d(x, wt, b, [2, 1], [1, 1], [1, 2], 24, "relu", "depthwise",
                                              layout == "nhwc")
    theirs = F.relu(F.conv2d(x, wt, b, (2, 1), 1, (1, 2), 24))
    ref = F.relu(F.conv2d(x.double(), wt.double(), b.double(), (2, 1), 1, (1, 2), 24))
    assert_within_2x_torch_error(ours, theirs, ref, "depthwise")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("shape", KERNEL_SHAPES.keys())
@EACH_KERNEL_AND_DTYPE
@gpu
def test_gradient_kernels_against_float64(kernel, dtype, shape, layout):
    _cuda_backend_or_skip()
    (x, wt, _), (stride, padding, dilation, groups) = _kernel_case(shape, dtype, layout, bias=False)
    y = F.conv2d(x, wt, None, stride, padding, dilation, groups)
    dy = torch.randn_like(y)
    args = (stride, padding, dilation, groups)
    _poison()
    dx = torch.ops.accelkernels.cuda_conv2d_input_grad(dy, wt, list(x.shape), *args, kernel, layout == "nhwc")
    _poison()
    dw = torch.ops.accelkernels.cuda_conv2d_weight_grad(dy, x, list(wt.shape), *args, kernel, layout == "nhwc")
    for ours, fn, what in ((dx, torch.nn.grad.conv2d_input, "dx"), (dw, torch.nn.grad.conv2d_weight, "dw")):
        first, second = (x.shape, wt) if what == "dx" else (x, wt.shape)
        first64 = first if what == "dx" else first.double()
        second64 = second.double() if what == "dx" else second
        theirs = fn(first, second, dy, stride, padding, dilation, groups)
        ref = fn(first64, second64, dy.double(), stride, padding, dilation, groups)
        assert_within_2x_torch_error(ours, theirs, ref, f"{kernel} {what}")


@pytest.mark.parametrize("case,args,activation",
                         list(conv_cases.random_cases(48, seed=707, channel_multiples=(1, 8, 8))))
@gpu
def test_random_configurations_through_the_backend(case, args, activation):
    """backend="cuda" end to end (the kernel it picks, autograd, the epilogue's backward)."""
    _cuda_backend_or_skip()
    x, wt, b = conv_cases.make_conv(**case, device="cuda")
    conv_cases.check_against_float64(x, wt, b, args, activation, backend="cuda")


@gpu
def test_backend_cuda_runs_no_aten_convolution():
    _cuda_backend_or_skip()
    x, wt, b = conv_cases.make_conv(2, 32, 14, 14, 64, 3, 3, 1, torch.bfloat16, "nhwc", device="cuda")
    leaves = [t.requires_grad_(True) for t in (x, wt, b)]
    with torch.profiler.profile() as prof:
        y = ak.conv2d(*leaves, padding=1, activation="relu", backend="cuda")
        torch.autograd.grad(y, leaves, torch.randn_like(y))
    names = {e.name for e in prof.events()}
    assert {"accelkernels::cuda_conv2d", "accelkernels::cuda_conv2d_input_grad",
            "accelkernels::cuda_conv2d_weight_grad"} <= names, names
    assert not {n for n in names if "cudnn" in n.lower() or n.startswith("aten::convolution")}, names


@gpu
def test_refusals_name_the_problem():
    _cuda_backend_or_skip()
    x = torch.randn(1, 12, 8, 8, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(16, 12, 3, 3, device="cuda", dtype=torch.bfloat16)
    geometry = ([1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(ValueError, match="multiples of 8"):
        torch.ops.accelkernels.cuda_conv2d(x, w, None, *geometry, "none", "implicit_gemm", False)
    with pytest.raises(TypeError, match="takes float16,bfloat16"):
        torch.ops.accelkernels.cuda_conv2d(x.float(), w.float(), None, *geometry, "none", "implicit_gemm", False)
    with pytest.raises(ValueError, match="no kernel named 'winograd'"):
        torch.ops.accelkernels.cuda_conv2d(x, w, None, *geometry, "none", "winograd", False)
    with pytest.raises(ValueError, match="groups"):
        torch.ops.accelkernels.cuda_conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 5, "none", "direct", False)
    with pytest.raises(ValueError, match="depthwise"):
        torch.ops.accelkernels.cuda_conv2d(x, w, None, *geometry, "none", "depthwise", False)
    with pytest.raises(ValueError, match="does not fit the padded input"):  # a 3x3 filter on 2x2, stride 2
        torch.ops.accelkernels.cuda_conv2d(x[:, :, :2, :2], w, None, [2, 2], [0, 0], [1, 1], 1, "none", "direct",
                                           False)
    # the backend itself never refuses: channels that are not multiples of 8 run on the direct kernel
    torch.testing.assert_close(ak.conv2d(x, w, padding=1, backend="cuda"), F.conv2d(x, w, padding=1),
                               rtol=2e-2, atol=2e-2)
