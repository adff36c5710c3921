"""GPU tests: the CUDA C++ kernels and the reference path on a real device. Skipped without one,
and separately when the extension is not built, so each skip says exactly what is missing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_within_2x_torch_error, requires_cuda
from references import ACTIVATIONS, linear as ref_linear, seed_cnn

import accelkernels as ak

pytestmark = [pytest.mark.gpu, requires_cuda]


def _cuda_backend_or_skip():
    if not ak.is_available("cuda"):
        pytest.skip(f"cuda backend unavailable: {ak.available_backends()['cuda']['reason']}")


def _poison_allocator(numel: int) -> None:
    """Leave a NaN-filled block in the caching allocator, so an output that is allocated next and not
    fully written by the kernel shows NaNs instead of stale zeros."""
    torch.full((numel,), float("nan"), device="cuda")
    torch.cuda.synchronize()


SHAPES = {
    "1x1x1": ((1, 1), (1, 1)),
    "ragged": ((97, 61), (61, 75)),
    "batched_broadcast": ((3, 1, 33, 40), (2, 40, 31)),
    "vec_mat": ((129,), (129, 65)),
    "square_512": ((512, 512), (512, 512)),
}


@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "transposed"])
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
def test_cuda_matmul_fp32_against_float64(shapes, transposed):
    _cuda_backend_or_skip()
    make = (lambda s: torch.randn(*s[:-2], s[-1], s[-2], device="cuda").mT) if transposed else (
        lambda s: torch.randn(s, device="cuda"))
    a = make(shapes[0]) if len(shapes[0]) > 1 else torch.randn(shapes[0], device="cuda")
    b = make(shapes[1])
    _poison_allocator(4 * 1024 * 1024)
    ours = ak.matmul(a, b, backend="cuda")
    assert_within_2x_torch_error(ours, torch.matmul(a, b), torch.matmul(a.double(), b.double()))


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_cuda_linear_epilogue_and_gradients(activation):
    _cuda_backend_or_skip()
    x = torch.randn(4, 37, 129, device="cuda", requires_grad=True)
    w = (torch.randn(67, 129, device="cuda") / 129**0.5).requires_grad_(True)
    b = torch.randn(67, device="cuda", requires_grad=True)
    ours = ak.linear(x, w, b, activation=activation, backend="cuda")
    g = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, (x, w, b), g)
    theirs = ref_linear(x, w, b, activation)
    theirs_grads = torch.autograd.grad(theirs, (x, w, b), g)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = ref_linear(x64, w64, b64, activation)
    ref_grads = torch.autograd.grad(ref, (x64, w64, b64), g.double())
    assert_within_2x_torch_error(ours, theirs, ref.detach())
    for name, o, t, r in zip(("input", "weight", "bias"), ours_grads, theirs_grads, ref_grads):
        assert_within_2x_torch_error(o, t, r, f"grad {name}")


def test_cuda_backend_refuses_what_it_cannot_serve():
    _cuda_backend_or_skip()
    a = torch.randn(8, 8, device="cuda", dtype=torch.float64)
    with pytest.raises(ak.BackendUnavailableError, match="float64"):
        ak.matmul(a, a, backend="cuda")
    with pytest.raises(ak.BackendUnavailableError, match="on cpu"):
        ak.matmul(torch.randn(2, 2), torch.randn(2, 2), backend="cuda")


def test_cuda_op_runs_on_the_current_stream_and_device():
    _cuda_backend_or_skip()
    a, b = torch.randn(64, 48, device="cuda"), torch.randn(48, 80, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = ak.matmul(a, b, backend="cuda")
    stream.synchronize()
    torch.testing.assert_close(out, a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_conv2d_reference_path_on_gpu(dtype, channels_last):
    x = torch.randn(4, 16, 15, 17, device="cuda", dtype=dtype)
    w = torch.randn(32, 16, 3, 3, device="cuda", dtype=dtype) / 12
    if channels_last:
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    b = torch.randn(32, device="cuda", dtype=dtype)
    ours = ak.conv2d(x, w, b, padding=1, activation="relu")
    theirs = F.relu(F.conv2d(x, w, b, padding=1))
    torch.testing.assert_close(ours, theirs)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_converted_cnn_on_gpu_matches_torch():
    model = seed_cnn().cuda()
    converted = ak.convert(seed_cnn().cuda())
    converted.load_state_dict(model.state_dict())
    x = torch.randn(8, 3, 32, 32, device="cuda")
    torch.testing.assert_close(converted(x), model(x))


def test_auto_follows_the_tuning_table(tmp_path, monkeypatch):
    from accelkernels import backends
    from accelkernels.backends import autotune, tuning_table
    from accelkernels.ops.matmul import matmul_problem

    if not ak.is_available("triton"):
        pytest.skip("triton unavailable")
    monkeypatch.setenv("ACCELKERNELS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "0")
    autotune.forget()
    a = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    assert backends.resolve("matmul", "auto", (a, a), problem=matmul_problem(a, a)).name == "torch"  # no table
    key = tuning_table.card_key()
    tuning_table.add(tuning_table.table_path(key), key, {matmul_problem(a, a).key: {
        "backend": "triton", "by": "tune", "ratios": {"triton": 1.5}, "reference_ms": 1.0}})
    autotune.forget()
    try:
        assert backends.resolve("matmul", "auto", (a, a), problem=matmul_problem(a, a)).name == "triton"
        torch.testing.assert_close(ak.matmul(a, a), a @ a)
    finally:
        autotune.forget()


def test_auto_times_on_first_use_on_the_gpu(tmp_path, monkeypatch):
    """The real clock (CUDA events): one decision per key, written to this card's table, torch's answer."""
    from accelkernels.backends import autotune, tuning_table

    monkeypatch.setenv("ACCELKERNELS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "1")
    autotune.forget()
    try:
        a = torch.randn(512, 512, device="cuda", dtype=torch.float16)
        out = ak.matmul(a, a)
        torch.testing.assert_close(out, a @ a, rtol=2e-2, atol=2e-2)
        (slot, key), = autotune.decisions()
        d = autotune.decisions()[(slot, key)]
        assert slot == f"cuda:{torch.cuda.current_device()}" and d.by == "first use" and d.reference_ms > 0
        card = tuning_table.card_key()
        assert key in tuning_table.load(tuning_table.table_path(card), card)
    finally:
        autotune.forget()


@pytest.mark.parametrize("kernel", ["tiled", "persistent", "tma"])
def test_triton_kernels_autotuned_on_the_gpu(kernel, monkeypatch):
    """The suite runs one fixed config (ACCELKERNELS_TRITON_AUTOTUNE=0); here the autotuner picks."""
    from accelkernels.triton_kernels import matmul as triton_matmul

    if not ak.is_available("triton"):
        pytest.skip("triton unavailable")
    monkeypatch.setenv("ACCELKERNELS_TRITON_AUTOTUNE", "1")
    a = torch.randn(1, 1000, 512, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(1, 384, 512, device="cuda", dtype=torch.bfloat16) / 512**0.5
    bias = torch.randn(384, device="cuda", dtype=torch.bfloat16)
    out = triton_matmul.bmm(a, w.mT, bias, "gelu", kernel=kernel)
    ref = torch.nn.functional.gelu(a.double() @ w.double().mT + bias.double())
    assert_within_2x_torch_error(out, torch.nn.functional.gelu(a @ w.mT + bias), ref)


# ResNet-50's convolutions with their real channel counts and padding, at batch 2 (for time):
# (C, H, K, R, stride, padding). The bench times them at batch 32 and 128.
RESNET50_LAYERS = {
    "stem_7x7_s2": (3, 56, 64, 7, 2, 3),
    "3x3_64": (64, 28, 64, 3, 1, 1),
    "3x3_128_s2": (128, 28, 128, 3, 2, 1),
    "3x3_256": (256, 14, 256, 3, 1, 1),
    "1x1_64_256": (64, 28, 256, 1, 1, 0),
    "1x1_256_128_s2": (256, 28, 128, 1, 2, 0),
    "3x3_512": (512, 7, 512, 3, 1, 1),
}


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layer", RESNET50_LAYERS.keys())
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_conv2d_resnet50_layers_against_cudnn(backend, layer, dtype, layout):
    """Forward (+bias+ReLU) and every gradient within 2x cuDNN's error against float64, for each
    kernel backend (the CUDA one: implicit GEMM, the stem on the direct kernel, 1x1 on the GEMM)."""
    if not ak.is_available(backend):
        pytest.skip(f"{backend} unavailable: {ak.available_backends()[backend]['reason']}")
    c, hw, k, r, stride, padding = RESNET50_LAYERS[layer]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = torch.randn(2, c, hw, hw, device="cuda", dtype=dtype).contiguous(memory_format=fmt).requires_grad_(True)
    w = (torch.randn(k, c, r, r, device="cuda", dtype=dtype) / (c * r * r) ** 0.5).contiguous(memory_format=fmt)
    w.requires_grad_(True)
    b = torch.randn(k, device="cuda", dtype=dtype, requires_grad=True)
    leaves = (x, w, b)
    leaves64 = [t.detach().double().requires_grad_(True) for t in leaves]
    _poison_allocator(64 * 1024 * 1024)
    ours = ak.conv2d(x, w, b, stride, padding, activation="relu", backend=backend)
    theirs = F.relu(F.conv2d(x, w, b, stride, padding))
    ref = F.relu(F.conv2d(*leaves64, stride, padding))
    assert_within_2x_torch_error(ours, theirs, ref.detach())
    g = torch.randn_like(ours)
    for name, o, t, r64 in zip(("input", "weight", "bias"), torch.autograd.grad(ours, leaves, g),
                               torch.autograd.grad(theirs, leaves, g), torch.autograd.grad(ref, leaves64, g.double())):
        assert_within_2x_torch_error(o, t, r64, f"grad {name}")


def test_triton_conv2d_autotuned_on_the_gpu(monkeypatch):
    """The suite runs one fixed config; here the autotuner picks, forward and backward."""
    if not ak.is_available("triton"):
        pytest.skip("triton unavailable")
    monkeypatch.setenv("ACCELKERNELS_TRITON_AUTOTUNE", "1")
    x = torch.randn(4, 64, 28, 28, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = (torch.randn(128, 64, 3, 3, device="cuda", dtype=torch.bfloat16) / 24).to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w.requires_grad_(True)
    ours = ak.conv2d(x, w, None, 1, 1, activation="gelu", backend="triton")
    theirs = F.gelu(F.conv2d(x, w, None, 1, 1))
    ref = F.gelu(F.conv2d(x.double(), w.double(), None, 1, 1))
    assert_within_2x_torch_error(ours, theirs, ref)
    g = torch.randn_like(ours)
    x64, w64 = (t.detach().double().requires_grad_(True) for t in (x, w))
    ref_grads = torch.autograd.grad(F.gelu(F.conv2d(x64, w64, None, 1, 1)), (x64, w64), g.double())
    for name, o, t, r64 in zip(("input", "weight"), torch.autograd.grad(ours, (x, w), g),
                               torch.autograd.grad(theirs, (x, w), g), ref_grads):
        assert_within_2x_torch_error(o, t, r64, f"grad {name}")
