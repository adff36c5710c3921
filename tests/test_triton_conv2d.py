"""backend="triton" conv2d — forward, grad-input, grad-weight, grad-bias, fused activation — against a
float64 reference: our error at most 2x torch's own error at the same dtype.

On a GPU the kernels run compiled; without one, in Triton's interpreter on CPU tensors (conftest
sets TRITON_INTERPRET=1), which is how CI proves them. Shapes are kept small for the interpreter.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from conftest import TRITON_DEVICE, assert_within_2x_torch_error
from references import conv2d as ref_conv2d

import accelkernels as ak

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not ak.is_available("triton"), reason="the triton backend cannot run here")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LAYOUTS = ("nchw", "nhwc", "strided")


def make_conv(n, c, h, w, k, r, s, groups, dtype, layout, bias=True):
    """Fresh random input, weight (1/sqrt(fan-in) scaled) and bias in the requested layout:
    NCHW, NHWC (channels_last) or "strided" (every other column of a wider tensor: neither)."""
    fan_in = (c // groups) * r * s
    if layout == "strided":
        x = torch.randn(n, c, h, 2 * w, dtype=dtype, device=TRITON_DEVICE)[..., ::2]
        wt = torch.randn(k, c // groups, r, 2 * s, dtype=dtype, device=TRITON_DEVICE)[..., ::2] / fan_in**0.5
    else:
        x = torch.randn(n, c, h, w, dtype=dtype, device=TRITON_DEVICE)
        wt = torch.randn(k, c // groups, r, s, dtype=dtype, device=TRITON_DEVICE) / fan_in**0.5
        if layout == "nhwc":
            x, wt = x.to(memory_format=torch.channels_last), wt.to(memory_format=torch.channels_last)
    b = torch.randn(k, dtype=dtype, device=TRITON_DEVICE) if bias else None
    return x, wt, b


def check_against_float64(x, wt, b, args: dict, activation, grads=True):
    """Forward (and every gradient) of backend="triton" vs torch at the same dtype vs float64."""
    tensors = [t for t in (x, wt, b) if t is not None]
    before = [t.clone() for t in tensors]
    leaves = [t.detach().requires_grad_(grads) for t in tensors]
    leaves64 = [t.detach().double().requires_grad_(grads) for t in tensors]

    def split(ts):
        return (ts[0], ts[1], ts[2] if b is not None else None)

    ours = ak.conv2d(*split(leaves), **args, activation=activation, backend="triton")
    theirs = ref_conv2d(*split(leaves), **args, activation=activation)
    ref = ref_conv2d(*split(leaves64), **args, activation=activation)
    assert_within_2x_torch_error(ours, theirs, ref.detach())
    for fmt in (torch.channels_last, torch.contiguous_format):  # the memory format torch picks
        assert ours.is_contiguous(memory_format=fmt) == theirs.is_contiguous(memory_format=fmt), fmt
    if grads:
        g = torch.randn_like(ours)
        ours_g = torch.autograd.grad(ours, leaves, g)
        theirs_g = torch.autograd.grad(theirs, leaves, g)
        ref_g = torch.autograd.grad(ref, leaves64, g.double())
        for name, o, t, r in zip(("input", "weight", "bias"), ours_g, theirs_g, ref_g):
            assert_within_2x_torch_error(o, t, r, f"grad {name}")
            assert o.is_contiguous(memory_format=torch.channels_last) == t.is_contiguous(
                memory_format=torch.channels_last) or o.dim() != 4, f"grad {name} layout"
    for t, t0 in zip(tensors, before):
        assert torch.equal(t, t0), "an input was modified"


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


def random_cases(count: int, seed: int):
    """Small random convolutions: every argument varies, each dtype / layout / activation / bias."""
    rng = random.Random(seed)
    activations = (None, "relu", "gelu", "silu")
    for i in range(count):
        kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
        groups = {"dense": 1, "grouped": rng.choice([2, 3]), "depthwise": rng.randint(2, 5)}[kind]
        c = groups * (1 if kind == "depthwise" else rng.randint(1, 4))
        k = groups * rng.randint(1, 3)
        r, s = rng.choice([1, 2, 3]), rng.choice([1, 2, 3])
        dilation = (rng.choice([1, 1, 2]), rng.choice([1, 2]))
        stride = (rng.choice([1, 1, 2, 3]), rng.choice([1, 2]))
        if stride == (1, 1) and rng.random() < 0.3:
            padding = rng.choice(["same", "valid"])
            pad = (0, 0)
        else:
            padding = (rng.randint(0, 2), rng.randint(0, 2))
            pad = padding
        reach = (dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1)
        h = max(1, reach[0] - 2 * pad[0]) + rng.randint(0, 6)
        w = max(1, reach[1] - 2 * pad[1]) + rng.randint(0, 6)
        case = dict(n=rng.randint(1, 2), c=c, h=h, w=w, k=k, r=r, s=s, groups=groups,
                    dtype=DTYPES[i % 3], layout=LAYOUTS[(i // 3) % 3], bias=rng.random() < 0.7)
        args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        yield pytest.param(case, args, activations[i % 4], id=f"{i}-{kind}")


@pytest.mark.parametrize("case,args,activation", list(random_cases(36, seed=2026)))
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
