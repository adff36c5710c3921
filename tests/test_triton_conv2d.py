"""backend="triton" conv2d — forward, grad-input, grad-weight, grad-bias, fused activation — against a
float64 reference: our error at most 2x torch's own error at the same dtype.

On a GPU the kernels run compiled; without one, in Triton's interpreter on CPU tensors (conftest
sets TRITON_INTERPRET=1), which is how CI proves them. Shapes are kept small for the interpreter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import conv_cases
from conftest import TRITON_DEVICE
from conv_cases import DTYPES, LAYOUTS

import accelkernels as ak

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not ak.is_available("triton"), reason="the triton backend cannot run here")


def make_conv(*args, **kwargs):
    return conv_cases.make_conv(*args, **kwargs, device=TRITON_DEVICE)


def check_against_float64(x, wt, b, args: dict, activation, grads=True):
    conv_cases.check_against_float64(x, wt, b, args, activation, backend="triton", grads=grads)


# --- every kernel path, each dtype and layout -----------------------------------------------------

# (N, C, H, W, K, R, S, stride, padding, dilation, groups) -> the kernel that serves the forward.
PATHS = {
    "implicit_gemm_3x3": ((2, 5, 7, 9, 6, 3, 3, 1, 1, 1, 1), "implicit_gemm"),
    "implicit_gemm_s2_dil2_groups": ((1, 4, 11, 10, 6, 3, 2, (2, 1), (2, 1), (2, 1), 2), "implicit_gemm"),
    "depthwise_3x3": ((2, 6, 8, 7, 6, 3, 3, 1, 1, 1, 6), "depthwise"),
    "depthwise_x2_s2": ((1, 3, 9, 9, 6, 3, 3, 2, 1, 1, 3), "depthwise"),
    "pointwise_1x1": ((2, 7, 5, 6, 9, 1, 1, 1, 0, 1, 1), "gemm"),
    "pointwise_1x1_s2": ((2, 7, 5, 6, 9, 1, 1, 2, 0, 1, 1), "implicit_gemm"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", PATHS.keys())
def test_every_kernel_path_against_float64(path, dtype, layout):
    (n, c, h, w, k, r, s, stride, padding, dilation, groups), kernel = PATHS[path]
    x, wt, b = make_conv(n, c, h, w, k, r, s, groups, dtype, layout)
    from accelkernels.triton_kernels import conv2d as triton_conv2d

    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    assert triton_conv2d.forward_kernel(x.shape, wt.shape, pair(stride), pair(padding), groups) == kernel
    check_against_float64(x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups), "relu")


# --- random configurations over every argument ----------------------------------------------------


@pytest.mark.parametrize("case,args,activation", list(conv_cases.random_cases(36, seed=2026)))
def test_random_configurations_against_float64(case, args, activation):
    x, wt, b = make_conv(**case)
    check_against_float64(x, wt, b, args, activation)


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_unbatched_input_and_no_bias(activation):
    x, wt, _ = make_conv(1, 4, 6, 5, 3, 3, 3, 1, torch.float32, "nchw", bias=False)
    check_against_float64(x[0], wt, None, dict(stride=1, padding="same", dilation=1, groups=1), activation)


def test_only_requested_gradients():
    x, wt, b = make_conv(2, 3, 6, 6, 4, 3, 3, 1, torch.float32, "nhwc")
    wt.requires_grad_(True)
    y = ak.conv2d(x, wt, b, padding=1, activation="relu", backend="triton")
    (gw,) = torch.autograd.grad(y, (wt,), torch.ones_like(y))
    expected = torch.autograd.grad(F.relu(F.conv2d(x.double(), wt.double(), b.double(), padding=1)),
                                   (wt,), torch.ones_like(y, dtype=torch.float64))[0]
    torch.testing.assert_close(gw, expected, rtol=1e-5, atol=1e-5)


def test_empty_batch():
    x, wt, b = make_conv(0, 3, 6, 6, 4, 3, 3, 1, torch.float32, "nchw")
    x.requires_grad_(True)
    wt.requires_grad_(True)
    y = ak.conv2d(x, wt, b, padding=1, backend="triton")
    assert y.shape == (0, 4, 6, 6)
    gx, gw = torch.autograd.grad(y, (x, wt), torch.ones_like(y))
    assert gx.shape == x.shape and gw.shape == wt.shape and not gw.any()


# --- every output element written; only our kernels run --------------------------------------------


@pytest.mark.parametrize("path", ["implicit_gemm_s2_dil2_groups", "depthwise_x2_s2", "pointwise_1x1"])
def test_every_output_element_is_written(path, monkeypatch):
    """Poison: every buffer the Triton conv code allocates starts as NaN; none may survive."""
    from accelkernels.triton_kernels import conv2d as triton_conv2d

    real_empty = torch.empty
    monkeypatch.setattr(triton_conv2d.torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    (n, c, h, w, k, r, s, stride, padding, dilation, groups), _ = PATHS[path]
    x, wt, b = make_conv(n, c, h, w, k, r, s, groups, torch.float32, "nhwc")
    check_against_float64(x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups), "silu")


def test_backend_triton_runs_no_aten_convolution_or_epilogue_backward():
    x, wt, b = make_conv(2, 4, 6, 6, 4, 3, 3, 2, torch.float32, "nhwc")
    leaves = [t.requires_grad_(True) for t in (x, wt, b)]
    with torch.profiler.profile() as prof:
        y = ak.conv2d(*leaves, padding=1, groups=2, activation="gelu", backend="triton")
        torch.autograd.grad(y, leaves, torch.randn_like(y))
    names = {e.name for e in prof.events()}
    assert {"accelkernels::conv2d", "accelkernels::conv2d_input_grad", "accelkernels::conv2d_weight_grad",
            "accelkernels::activation_backward"} <= names, names
    forbidden = {"aten::convolution", "aten::_convolution", "aten::conv2d", "aten::convolution_backward",
                 "aten::gelu_backward", "aten::gelu", "aten::mkldnn_convolution", "aten::mm", "aten::bmm"}
    assert not names & forbidden, names & forbidden


def test_pointwise_conv_runs_on_the_gemm_kernel(monkeypatch):
    from accelkernels.triton_kernels import conv2d as triton_conv2d

    calls = []
    real_bmm = triton_conv2d.bmm
    monkeypatch.setattr(triton_conv2d, "bmm", lambda *a, **k: calls.append(a[0].shape) or real_bmm(*a, **k))
    x, wt, b = make_conv(2, 5, 4, 3, 6, 1, 1, 1, torch.float32, "nhwc")
    x.requires_grad_(True)
    y = ak.conv2d(x, wt, b, backend="triton")
    torch.autograd.grad(y, (x,), torch.ones_like(y))
    assert calls == [(1, 24, 5), (1, 24, 6)], calls  # forward, then dgrad: N·H·W rows, no copy


def test_triton_refuses_float64():
    x, wt, b = make_conv(1, 2, 4, 4, 2, 3, 3, 1, torch.float64, "nchw")
    with pytest.raises(ak.BackendUnavailableError, match="float64"):
        ak.conv2d(x, wt, b, backend="triton")


def test_opcheck_triton_conv2d():
    from accelkernels import ops

    x, wt, b = make_conv(2, 4, 5, 5, 4, 3, 3, 2, torch.float32, "nhwc")
    x, wt, b = (t.requires_grad_(True) for t in (x, wt, b))
    torch.library.opcheck(ops.conv2d_op, (x, wt, b, [2, 1], [1, 0], [1, 2], 2, "relu", "triton"))


def test_compile_fullgraph_with_triton_conv():
    torch._dynamo.reset()
    x, wt, b = make_conv(2, 3, 6, 6, 4, 3, 3, 1, torch.float32, "nhwc")

    def fn(x, w, b):
        return ak.conv2d(x, w, b, padding=1, activation="silu", backend="triton").sum()

    leaves = [t.requires_grad_(True) for t in (x, wt, b)]
    compiled = torch.compile(fn, fullgraph=True)
    eager_grads = torch.autograd.grad(fn(*leaves), leaves)
    compiled_grads = torch.autograd.grad(compiled(*leaves), leaves)
    for e, c in zip(eager_grads, compiled_grads):
        torch.testing.assert_close(c, e)
