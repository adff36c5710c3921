"""The ops through torch's dispatcher: opcheck, torch.compile(fullgraph=True), autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TRITON_DEVICE
from references import seed_cnn

import accelkernels as ak
from accelkernels import ops


def _conv_args(dtype=torch.float64, channels_last=False, requires_grad=True):
    x = torch.randn(2, 4, 7, 9, dtype=dtype)
    w = torch.randn(6, 2, 3, 3, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    b = torch.randn(6, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (x, w, b)]


@pytest.mark.parametrize("activation", ["none", "relu", "gelu"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck_conv2d(channels_last, activation):
    x, w, b = _conv_args(channels_last=channels_last)
    torch.library.opcheck(ops.conv2d_op, (x, w, b, [2, 1], [1, 0], [1, 2], 2, activation, "torch"))
    torch.library.opcheck(ops.conv2d_op, (x, w, None, [1, 1], [0, 0], [1, 1], 2, activation, "auto"))


def test_opcheck_conv2d_grad_ops():
    x, w, _ = _conv_args(requires_grad=False)
    g = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    args = ([1, 1], [1, 1], [1, 1], 2, "torch")
    torch.library.opcheck(ops.conv2d_input_grad_op, (g, x, w, *args))
    torch.library.opcheck(ops.conv2d_weight_grad_op, (g, x, w, *args))


@pytest.mark.parametrize("shapes", [((5, 3), (3, 4)), ((2, 5, 3), (3, 4)), ((3,), (2, 3, 4)), ((2, 1, 5, 3), (4, 3, 2))])
def test_opcheck_matmul(shapes):
    a = torch.randn(shapes[0], dtype=torch.float64, requires_grad=True)
    b = torch.randn(shapes[1], dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops.matmul_op, (a, b, "torch"))


@pytest.mark.parametrize("activation", ["none", "relu", "silu"])
def test_opcheck_linear(activation):
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops.linear_op, (x, w, b, activation, "torch"))
    torch.library.opcheck(ops.linear_op, (x, w, None, activation, "torch"))


def test_opcheck_linear_triton_kernel():
    x = torch.randn(3, 5, device=TRITON_DEVICE, requires_grad=True)
    w = torch.randn(4, 5, device=TRITON_DEVICE, requires_grad=True)
    b = torch.randn(4, device=TRITON_DEVICE, requires_grad=True)
    torch.library.opcheck(ops.linear_op, (x, w, b, "gelu", "triton"))


def _count_graph_breaks(fn, *args):
    explanation = torch._dynamo.explain(fn)(*args)
    return explanation.graph_break_count


def test_compile_fullgraph_converted_model_matches_eager():
    torch._dynamo.reset()
    model = ak.convert(seed_cnn())
    x = torch.randn(4, 3, 32, 32)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    # and the backward through the compiled graph matches eager autograd
    g_eager = torch.autograd.grad(eager.sum(), list(model.parameters()))
    g_comp = torch.autograd.grad(compiled(x).sum(), list(model.parameters()))
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)
    assert _count_graph_breaks(model, x) == 0


def test_compile_sees_the_accelkernels_ops():
    torch._dynamo.reset()
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    def fn(x, w, b, a):
        y = ak.conv2d(x, w, b, padding="same", activation="relu")
        return ak.linear(y.flatten(1), a, activation="silu")

    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    a = torch.randn(5, 256)
    out = torch.compile(fn, backend=backend, fullgraph=True)(x, w, b, a)
    torch.testing.assert_close(out, fn(x, w, b, a))
    assert any("accelkernels.conv2d" in s for s in seen), seen
    assert any("accelkernels.linear" in s for s in seen), seen


def test_autocast_runs_in_the_autocast_dtype_like_torch():
    x, w, b = _conv_args(dtype=torch.float32, requires_grad=False)
    lin_w = torch.randn(5, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ak.conv2d(x, w, b, groups=2)
        theirs = F.conv2d(x, w, b, groups=2)
        ours_lin = ak.linear(x, lin_w)
        ours_mm = ak.matmul(x, lin_w.mT)
        mixed = ak.linear(ours_lin, torch.randn(3, 5))  # bf16 activations meet fp32 weights
        # ... and for conv2d too (a converted CNN's second layer); the cast comes before the dtype check
        w2, b2 = torch.randn(4, ours.shape[1], 1, 1), torch.randn(4)
        mixed_conv = ak.conv2d(ours, w2, b2)
        mixed_theirs = F.conv2d(theirs, w2, b2)
    assert mixed_conv.dtype == mixed_theirs.dtype == torch.bfloat16
    torch.testing.assert_close(mixed_conv, mixed_theirs, rtol=0, atol=0)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert ours_lin.dtype == ours_mm.dtype == mixed.dtype == torch.bfloat16


def _layouts():
    base = torch.randn(3, 4, 5, 6)
    yield base
    yield base.to(memory_format=torch.channels_last)
    yield base[:, :, ::2]
    yield base.permute(0, 2, 3, 1)
    yield base.to(memory_format=torch.channels_last)[:, 1:3]
    yield torch.randn(4, 3, 1, 1)  # 1x1 weights: both layouts at once
    yield torch.randn(4, 1, 3, 3).to(memory_format=torch.channels_last)
    yield torch.randn(1, 8, 1, 1)
    yield torch.randn(2, 1, 1, 5).transpose(1, 3)
    yield torch.randn(0, 3, 4, 4)
    yield torch.randn(2, 3, 4, 4).expand(2, 3, 4, 4)[:, :, :, :1]
    yield torch.randn(5, 6)


def test_fast_memory_format_agrees_with_torch():
    from accelkernels.ops._layout import suggest_memory_format, suggest_memory_format_symbolic

    for t in _layouts():
        assert suggest_memory_format(t) == suggest_memory_format_symbolic(t), (t.shape, t.stride())


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_opcheck_epilogue_backward_ops(activation, backend):
    from accelkernels.ops.epilogue_backward import activation_backward_op, bias_grad_op

    device = TRITON_DEVICE if backend == "triton" else "cpu"
    grad = torch.randn(6, 5, device=device)
    saved = torch.randn(6, 5, device=device)
    torch.library.opcheck(activation_backward_op, (grad, saved, activation, backend))
    torch.library.opcheck(bias_grad_op, (grad, backend))


# --- regressions found by tests/test_fuzz.py (the registered-op path) --------------------------------


@pytest.mark.parametrize("shapes", [((2, 3, 0), (0, 4)), ((2, 3, 4), (4, 0)), ((0, 3, 4), (4, 5)), ((2, 0), (3, 0, 4))],
                         ids=["k0", "n0", "batch0", "m0_broadcast"])
def test_matmul_backward_with_a_zero_sized_dim(shapes, dispatch_path):
    """An ambiguous reshape(-1, 0) in the backward of a batch times a shared matrix raised where
    torch returns zero gradients."""
    a = torch.randn(shapes[0], requires_grad=True)
    b = torch.randn(shapes[1], requires_grad=True)
    out = ak.matmul(a, b)
    g = torch.randn(out.shape)
    for ours, theirs in zip(torch.autograd.grad(out, (a, b), g), torch.autograd.grad(torch.matmul(a, b), (a, b), g)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("x_shape,w_shape,b_shape", [
    ((2, 3, 1), (2, 1), ()),  # a 0-D bias: torch adds it after the product (not the fused addmm sum)
    ((2, 3, 5), (2, 5), (1,)),
    ((4, 5), (2, 5), (4, 2)),  # one bias per row and column
    ((4, 3, 5), (2, 5), (3, 2)),
    ((4, 3, 5), (5,), (4, 3)),  # a 1-D weight with a bias: torch takes it for inputs other than 2-D
    ((5,), (5,), ()),
], ids=["0d_bias", "one_element_bias", "2d_bias_2d_input", "2d_bias_3d_input", "1d_weight_bias", "1d_1d_0d"])
def test_linear_takes_every_bias_torch_takes(x_shape, w_shape, b_shape, dispatch_path):
    """Biases were expanded to (out_features,) (other numbers than torch's: F.linear adds a 0-D
    bias after the product) or refused (2-D biases, a 1-D weight with a bias)."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=gen, dtype=torch.bfloat16).requires_grad_() for s in (x_shape, w_shape, b_shape))
    out = ak.linear(x, w, b, activation="relu")
    expected = F.relu(F.linear(x, w, b))
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    g = torch.randn(expected.shape, generator=gen, dtype=torch.bfloat16)
    for ours, theirs in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(expected, (x, w, b), g)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-2)


def test_linear_refuses_a_1d_weight_with_bias_on_2d_input_like_torch():
    x, w, b = torch.randn(4, 5), torch.randn(5), torch.randn(())
    with pytest.raises(RuntimeError):
        F.linear(x, w, b)
    with pytest.raises(RuntimeError):
        ak.linear(x, w, b)
