"""The CUDA kernels of csrc/kernels/, executed on the CPU (ACCELKERNELS_CUDA_EMULATE=1): every kernel
of the registry against the float64 oracle, the paths no GPU test reaches, and the executor's
checks. README: "Running the CUDA kernels without a GPU"."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import assert_within_2x_torch_error

import conv_cases

pytestmark = pytest.mark.emulated

ACTIVATIONS = {"none": lambda x: x, "relu": torch.relu, "gelu": torch.nn.functional.gelu,
               "silu": torch.nn.functional.silu}


@pytest.fixture(scope="module")
def emu():
    """The executor, built once (cached by a hash of the sources), on its default device."""
    saved = os.environ.get("ACCELKERNELS_CUDA_EMULATE")
    os.environ["ACCELKERNELS_CUDA_EMULATE"] = "1"
    from accelkernels import emulator

    module = emulator.module()
    module.configure(sm_count=2, compute_capability=(9, 0), seed=0, tma_delay=3, grid_z_sample=0, replay=True)
    yield module
    module.configure(sm_count=2, compute_capability=(9, 0), seed=0, tma_delay=3, grid_z_sample=0, replay=False,
                     sm90a_code=True)
    if saved is None:
        os.environ.pop("ACCELKERNELS_CUDA_EMULATE", None)
    else:
        os.environ["ACCELKERNELS_CUDA_EMULATE"] = saved


def operands(batch, m, n, k, dtype, a_k_contig=True, b_k_contig=False):
    """Fresh (batch, M, K) and (batch, K, N) operands, each contiguous along K or along M / N."""
    a = torch.randn(batch, m, k) if a_k_contig else torch.randn(batch, k, m).transpose(1, 2)
    b = torch.randn(batch, n, k).transpose(1, 2) if b_k_contig else torch.randn(batch, k, n)
    return a.to(dtype), b.to(dtype)


def check_bmm(a, b, bias, activation, kernel):
    before = (a.clone(), b.clone())
    ours = torch.ops.accelkernels.cuda_bmm(a, b, bias, activation, kernel)
    act = ACTIVATIONS[activation]
    theirs = act(torch.bmm(a, b) + (bias if bias is not None else 0))
    ref = act(torch.bmm(a.double(), b.double()) + (bias.double() if bias is not None else 0))
    assert_within_2x_torch_error(ours, theirs, ref, f"{kernel} output")
    assert torch.equal(a, before[0]) and torch.equal(b, before[1]), "an input was modified"


SIMT = ("naive", "smem_tiled", "blocktile_1d", "blocktile_2d", "vectorized", "warptile")


@pytest.mark.parametrize("kernel", SIMT)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 33, 17, 19), (1, 130, 70, 36), (1, 64, 128, 16)])
@pytest.mark.parametrize("orientation", ["nn", "tt"])
def test_simt_ladder(emu, kernel, shape, orientation):
    a, b = operands(*shape, torch.float32, a_k_contig=orientation[0] == "n", b_k_contig=orientation[1] == "t")
    bias = torch.randn(shape[2]) if shape[1] > 1 else None
    check_bmm(a, b, bias, "relu" if bias is not None else "none", kernel)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("orientation", ["kk", "km", "mk", "mm"])  # A K- or M-contiguous, B K- or N-contiguous
@pytest.mark.parametrize("shape", [(2, 136, 72, 88), (1, 8, 8, 200)])
def test_mma_sync_every_orientation(emu, dtype, orientation, shape):
    a, b = operands(*shape, dtype, a_k_contig=orientation[0] == "k", b_k_contig=orientation[1] == "k")
    check_bmm(a, b, torch.randn(shape[2]).to(dtype), "gelu", "mma_sync")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sms,shape", [
    (1, (1, 130, 70, 600)),   # one SM walks both tiles; 10 K tiles: the 4-stage ring wraps, parities flip
    (2, (2, 200, 136, 72)),   # 8 tiles over 2 persistent blocks, ragged M and N
    (3, (1, 64, 8, 16)),      # fewer tiles than SMs; one K tile
])
def test_wgmma_persistent_ring(emu, dtype, sms, shape):
    emu.configure(sm_count=sms)
    try:
        a, b = operands(*shape, dtype, a_k_contig=True, b_k_contig=True)
        check_bmm(a, b, torch.randn(shape[2]).to(dtype), "silu", "wgmma")
    finally:
        emu.configure(sm_count=2)


# wgmma_v2 (bmm_wgmma_v2.cu) on every shape class of the GEMM: (batch, M, N, K, SMs, activation, bias).
WGMMA_V2_CASES = {
    "ring_wraps": (1, 130, 264, 600, 1, "silu", True),   # 1 SM walks 4 tiles; 10 K tiles wrap the 4-stage ring twice
    "batched": (2, 200, 136, 72, 2, "relu", True),        # 4 tiles over 2 blocks; 2 K tiles: one group in flight
    "one_k_tile": (1, 64, 8, 16, 3, "gelu", True),        # fewer tiles than SMs, a single K tile, N = 8
    "many_tiles": (3, 129, 520, 136, 2, "none", False),   # 18 tiles over 2 blocks, ragged M, N and K, no bias
    "exact_tiles": (1, 256, 512, 64, 1, "relu", True),    # nothing to clip; one K tile, 4 tiles on one block
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", WGMMA_V2_CASES.values(), ids=WGMMA_V2_CASES.keys())
def test_wgmma_v2_every_shape_class(emu, dtype, case):
    """128x256 tiles, one wgmma group in flight, setmaxnreg, the stmatrix + TMA-store epilogue, with
    every launch run twice (the second time in reverse thread order, same bits required)."""
    batch, m, n, k, sms, activation, with_bias = case
    emu.configure(sm_count=sms)
    try:
        a, b = operands(batch, m, n, k, dtype, a_k_contig=True, b_k_contig=True)
        check_bmm(a, b, torch.randn(n).to(dtype) if with_bias else None, activation, "wgmma_v2")
    finally:
        emu.configure(sm_count=2)


# wgmma_cluster (bmm_wgmma_cluster.cu): 2-block clusters along M, B multicast. (batch, M, N, K, SMs, act, bias)
WGMMA_CLUSTER_CASES = {
    "odd_tile_rows": (1, 300, 264, 200, 2, "gelu", True),   # 3 tile rows: the second pair's rank 1 is outside M
    "two_clusters": (3, 129, 520, 136, 4, "relu", True),    # batches over 2 clusters, ragged M, N, K
    "ring_wraps": (1, 260, 136, 600, 2, "silu", False),     # one cluster, 10 K tiles per tile
    "exact_tiles": (1, 512, 512, 128, 2, "none", True),     # nothing to clip, 2 K tiles, 4 pairs on one cluster
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", WGMMA_CLUSTER_CASES.values(), ids=WGMMA_CLUSTER_CASES.keys())
def test_wgmma_cluster_every_shape_class(emu, dtype, case):
    """Both blocks of a cluster run together: multicast halves of B, releases in both blocks, barrier.cluster
    at both ends; every launch twice (the second in reverse thread order, same bits)."""
    batch, m, n, k, sms, activation, with_bias = case
    emu.configure(sm_count=sms)
    try:
        a, b = operands(batch, m, n, k, dtype, a_k_contig=True, b_k_contig=True)
        check_bmm(a, b, torch.randn(n).to(dtype) if with_bias else None, activation, "wgmma_cluster")
    finally:
        emu.configure(sm_count=2)


def test_hopper_kernel_choice(emu):
    """The newest step that serves: the cluster kernel from two tile rows on, wgmma_v2 for one tile row,
    wgmma for ragged N; the cluster kernel refuses what wgmma_v2 refuses."""
    from accelkernels.backends.cuda_gemm import gemm_kernel_for

    def choice(m, n):
        return gemm_kernel_for(*operands(1, m, n, 64, torch.bfloat16, a_k_contig=True, b_k_contig=True))

    assert (choice(129, 64), choice(128, 64), choice(300, 70)) == ("wgmma_cluster", "wgmma_v2", "wgmma")
    a, b = operands(1, 300, 70, 64, torch.bfloat16, a_k_contig=True, b_k_contig=True)
    with pytest.raises(ValueError, match="kernel 'wgmma_cluster' cannot read these operands: the TMA-store"):
        torch.ops.accelkernels.cuda_bmm(a, b, None, "none", "wgmma_cluster")


@pytest.mark.parametrize("kernel,shape,activation", [
    ("wgmma_v2", (1, 130, 264, 200), "gelu"),       # the ring, the in-flight group, the register split, the stores
    ("wgmma_cluster", (2, 300, 264, 136), "none"),  # threads of both blocks of the cluster interleaved
])
def test_hopper_steps_under_shuffled_thread_orders(emu, kernel, shape, activation):
    """Three shuffled thread and TMA-completion orders (seeds): the same bits each time, and right."""
    a, b = operands(*shape, torch.bfloat16, a_k_contig=True, b_k_contig=True)
    bias = torch.randn(shape[2]).to(torch.bfloat16) if activation != "none" else None
    results = []
    try:
        for seed in (1, 2, 3):
            emu.configure(seed=seed, tma_delay=5)
            results.append(torch.ops.accelkernels.cuda_bmm(a, b, bias, activation, kernel))
    finally:
        emu.configure(seed=0, tma_delay=3)
    assert all(torch.equal(results[0], r) for r in results[1:])
    check_bmm(a, b, bias, activation, kernel)


def test_wgmma_v2_refuses_ragged_n_and_the_choice_falls_back_to_wgmma(emu):
    """The TMA store needs output rows of a multiple of 16 bytes: N = 70 is refused with that reason,
    and the kernel choice takes the previous step, which stores element by element."""
    from accelkernels.backends.cuda_gemm import gemm_kernel_for

    a, b = operands(1, 40, 70, 64, torch.bfloat16, a_k_contig=True, b_k_contig=True)
    with pytest.raises(ValueError, match="kernel 'wgmma_v2' cannot read these operands: the TMA-store epilogue"):
        torch.ops.accelkernels.cuda_bmm(a, b, None, "none", "wgmma_v2")
    assert gemm_kernel_for(a, b) == "wgmma"
    a, b = operands(1, 40, 72, 64, torch.bfloat16, a_k_contig=True, b_k_contig=True)
    assert gemm_kernel_for(a, b) == "wgmma_v2"


@pytest.mark.parametrize("kernel,dtype", [(k, torch.float32) for k in SIMT] +
                         [("mma_sync", torch.float16), ("wgmma", torch.bfloat16), ("wgmma_v2", torch.float16)])
def test_k_zero_gives_the_epilogue_of_zero(emu, kernel, dtype):
    # Slices of K = 8 operands keep the strides the tensor-core kernels need (multiples of 8).
    a = torch.randn(2, 16, 8).to(dtype)[:, :, :0]
    b = torch.randn(2, 16, 8).to(dtype)[:, :, :0].transpose(1, 2) if kernel.startswith("wgmma") else \
        torch.randn(2, 8, 16).to(dtype)[:, :0, :]
    bias = torch.randn(16).to(dtype)
    out = torch.ops.accelkernels.cuda_bmm(a, b, bias, "relu", kernel)
    assert torch.equal(out, torch.relu(bias).expand(2, 16, 16))


@pytest.mark.parametrize("kernel,dtype", [("warptile", torch.float32), ("mma_sync", torch.float16),
                                          ("mma_sync", torch.bfloat16), ("wgmma", torch.bfloat16),
                                          ("wgmma_v2", torch.bfloat16), ("wgmma_cluster", torch.float16)])
@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "silu"])
def test_k_zero_of_any_strides_is_act_of_bias_without_a_launch(emu, kernel, dtype, activation):
    """Fresh zero-width operands (their strides are no multiple of 8, and TMA cannot describe them):
    C = act(bias) in float32 rounded once, or zeros, for every kernel; the public functions too."""
    a, b = torch.randn(3, 5, 0).to(dtype), torch.randn(3, 0, 7).to(dtype)
    bias = torch.randn(7).to(dtype)
    act = {"none": lambda x: x, "relu": torch.relu, "gelu": torch.nn.functional.gelu,
           "silu": torch.nn.functional.silu}[activation]
    expected = act(bias.float()).to(dtype).expand(3, 5, 7)
    assert torch.equal(torch.ops.accelkernels.cuda_bmm(a, b, bias, activation, kernel), expected)
    assert torch.equal(torch.ops.accelkernels.cuda_bmm(a, b, None, activation, kernel), torch.zeros(3, 5, 7, dtype=dtype))
    import accelkernels as ak

    public = None if activation == "none" else activation
    assert torch.equal(ak.linear(a[0], torch.randn(7, 0).to(dtype), bias, activation=public, backend="cuda"),
                       expected[0])
    assert torch.equal(ak.matmul(a, b, backend="cuda"), torch.zeros(3, 5, 7, dtype=dtype))


def test_wgmma_without_sm90a_code_is_refused_and_never_chosen(emu):
    """A build without sm_90a code holds empty wgmma stubs (csrc/kernels/wgmma_gate.cuh): the host refuses
    an explicit request of either step, naming the reason, and the kernel choice takes mma.sync instead."""
    from accelkernels.backends.cuda_gemm import gemm_kernel_for

    a, b = operands(1, 64, 64, 64, torch.bfloat16, b_k_contig=True)
    assert gemm_kernel_for(a, b) == "wgmma_v2"
    emu.configure(sm90a_code=False)
    try:
        for kernel in ("wgmma", "wgmma_v2", "wgmma_cluster"):
            with pytest.raises(RuntimeError, match=f"kernel '{kernel}' needs sm_90a code, and this build has none"):
                torch.ops.accelkernels.cuda_bmm(a, b, None, "none", kernel)
        assert gemm_kernel_for(a, b) == "mma_sync"
        import accelkernels as ak

        assert_within_2x_torch_error(ak.matmul(a, b, backend="cuda"), torch.bmm(a, b), torch.bmm(a.double(), b.double()))
    finally:
        emu.configure(sm90a_code=True)
    assert gemm_kernel_for(a, b) == "wgmma_v2"


@pytest.mark.parametrize("kernel,dtype", [("naive", torch.float32), ("warptile", torch.float32),
                                          ("mma_sync", torch.bfloat16)])
def test_batches_above_the_grid_z_limit(emu, kernel, dtype):
    """70000 batches of 8x8x8: two launches (65535 + 4465 along grid z). Only the first and last two
    blocks of each launch run (grid_z_sample=2); their batches must be right, the rest never written."""
    batch = 70000
    a, b = operands(batch, 8, 8, 8, dtype)
    emu.configure(grid_z_sample=2)
    try:
        out = torch.ops.accelkernels.cuda_bmm(a, b, None, "none", kernel)
    finally:
        emu.configure(grid_z_sample=0)
    ran = [0, 1, 65533, 65534, 65535, 65536, 69998, 69999]
    assert_within_2x_torch_error(out[ran], torch.bmm(a[ran], b[ran]), torch.bmm(a[ran].double(), b[ran].double()))
    assert torch.isnan(out[2:65533]).all() and torch.isnan(out[65537:69998]).all()


def test_backend_cuda_serves_cpu_tensors_with_the_gpu_kernel_choice(emu):
    import accelkernels as ak
    from accelkernels.backends.cuda_gemm import gemm_kernel_for

    x, w = torch.randn(5, 64).to(torch.bfloat16), torch.randn(24, 64).to(torch.bfloat16)
    a3, b3 = x.unsqueeze(0), w.t().unsqueeze(0)
    assert gemm_kernel_for(a3, b3) == "wgmma_v2"  # emulated Hopper, K-contiguous operands, N % 8 == 0
    emu.configure(compute_capability=(8, 0))
    try:
        assert gemm_kernel_for(a3, b3) == "mma_sync"  # the Ampere dispatch
        out = ak.linear(x, w, None, backend="cuda")
    finally:
        emu.configure(compute_capability=(9, 0))
    assert_within_2x_torch_error(out, x @ w.t(), x.double() @ w.double().t())
    xf, wf = torch.randn(3, 7, requires_grad=True), torch.randn(5, 7, requires_grad=True)
    out = ak.linear(xf, wf, None, activation="gelu", backend="cuda")
    out.sum().backward()  # the backward's GEMMs run on the executor too
    assert xf.grad is not None and torch.isfinite(xf.grad).all()


# ---- convolutions through backend="cuda" with autograd -------------------------------------------

@pytest.mark.parametrize("case,args,activation",
                         list(conv_cases.random_cases(24, seed=1515, channel_multiples=(1, 8, 8))))
def test_conv2d_random_configurations(emu, case, args, activation):
    x, wt, b = conv_cases.make_conv(**case)
    conv_cases.check_against_float64(x, wt, b, args, activation, backend="cuda")


def _on_wgmma_cases():
    """The GPU suite's 48 random configurations (tests/test_cuda_conv2d.py) in fp16 / bf16 with 8 or 16 channels
    per unit, so that the wgmma kernels serve every pass they can describe."""
    for i, param in enumerate(conv_cases.random_cases(48, seed=707, channel_multiples=(8, 16))):
        case, args, activation = param.values
        yield pytest.param(dict(case, dtype=(torch.float16, torch.bfloat16)[i % 2]), args, activation, id=param.id)


@pytest.mark.parametrize("case,args,activation", list(_on_wgmma_cases()))
def test_conv2d_random_configurations_on_wgmma(emu, case, args, activation):
    """Forward and both gradients through backend="cuda" with autograd, on the wgmma kernels wherever they serve
    (checked), against the float64 oracle."""
    from accelkernels.backends import cuda_conv
    from accelkernels.backends._batched import is_depthwise, is_pointwise

    x, wt, b = conv_cases.make_conv(**case)
    stride, padding, dilation, groups = args["stride"], args["padding"], args["dilation"], args["groups"]
    if not isinstance(padding, str) and not is_pointwise(wt.shape, stride, padding, groups):
        expected = "depthwise" if is_depthwise(x.shape[1], groups) else "wgmma"
        assert cuda_conv.forward_kernel_for(x, wt.shape, stride, padding, dilation, groups) == expected
        assert cuda_conv.input_grad_kernel_for(x, x.shape, wt.shape, stride, padding, dilation, groups) == (
            "direct" if expected == "depthwise" else "wgmma")
        assert cuda_conv.weight_grad_kernel_for(x, wt.shape, stride, padding, dilation, groups) == (
            "direct" if expected == "depthwise" else "wgmma")
    conv_cases.check_against_float64(x, wt, b, args, activation, backend="cuda")


def test_conv2d_wgmma_groups_do_not_mix(emu):
    """A group's im2col map ends at its own channels (zero-filled past them), so a NaN in one group's input
    reaches only that group's outputs, as in torch; the same for dy in the input gradient, and for x and dy in
    the weight gradient (only the group's filters)."""
    x, wt, b = conv_cases.make_conv(1, 32, 6, 7, 16, 3, 3, 2, torch.bfloat16, "nhwc")
    x[:, 16:, 2, 3] = float("nan")  # group 1's channels
    y = torch.ops.accelkernels.cuda_conv2d(x, wt, b, [1, 1], [1, 1], [1, 1], 2, "none", "wgmma", True)
    ref = torch.nn.functional.conv2d(x.double(), wt.double(), b.double(), 1, 1, 1, 2)
    assert torch.isfinite(y[:, :8]).all() and torch.isnan(y[:, 8:]).any()
    assert_within_2x_torch_error(y[:, :8], torch.nn.functional.conv2d(x, wt, b, 1, 1, 1, 2)[:, :8], ref[:, :8])
    dy = torch.randn(1, 16, 6, 7).to(torch.bfloat16).to(memory_format=torch.channels_last)
    dy[:, 8:, 2, 2] = float("nan")  # (1, 1) of the stride-2 dy below
    for stride in (1, 2):
        dy_s = dy[:, :, ::stride, ::stride].contiguous(memory_format=torch.channels_last)
        dx = torch.ops.accelkernels.cuda_conv2d_input_grad(dy_s, wt, [1, 32, 6, 7], [stride] * 2, [1, 1], [1, 1], 2,
                                                           "wgmma", True)
        assert torch.isfinite(dx[:, :16]).all() and torch.isnan(dx[:, 16:]).any(), stride
    dy = torch.randn(1, 16, 6, 7).to(torch.bfloat16).to(memory_format=torch.channels_last)
    dw = torch.ops.accelkernels.cuda_conv2d_weight_grad(dy, x, list(wt.shape), [1, 1], [1, 1], [1, 1], 2, "wgmma",
                                                        True)
    assert torch.isfinite(dw[:8]).all() and torch.isnan(dw[8:]).any()  # x's NaN: group 1's filters only
    x[:, 16:] = 1.0
    dy[:, 2:3, 4, 4] = float("nan")  # group 0's output channel 2
    dw = torch.ops.accelkernels.cuda_conv2d_weight_grad(dy, x, list(wt.shape), [1, 1], [1, 1], [1, 1], 2, "wgmma",
                                                        True)
    assert torch.isnan(dw[2]).any() and torch.isfinite(dw[:2]).all() and torch.isfinite(dw[3:]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("geometry", [
    dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
    dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1)),   # input_grad stride phases
    dict(stride=(3, 2), padding=(0, 1), dilation=(2, 1)),   # phases with gcd(dilation, stride) > 1
])
def test_implicit_gemm_passes(emu, dtype, layout, geometry):
    """The mma.sync implicit GEMMs, all three passes: on compute capability 8.0 backend="cuda" takes them."""
    from accelkernels.backends import cuda_conv

    x, wt, b = conv_cases.make_conv(2, 16, 9, 11, 24, 3, 3, 1, dtype, layout)
    emu.configure(compute_capability=(8, 0))
    try:
        args = (wt.shape, geometry["stride"], geometry["padding"], geometry["dilation"], 1)
        assert (cuda_conv.forward_kernel_for(x, *args), cuda_conv.weight_grad_kernel_for(x, *args)) == (
            "implicit_gemm", "implicit_gemm")
        conv_cases.check_against_float64(x, wt, b, dict(geometry, groups=1), "relu", backend="cuda")
    finally:
        emu.configure(compute_capability=(9, 0))


WGMMA_CONV_CASES = {  # (n, c, h, w, k, r, s, stride, padding, dilation)
    "3x3_same": (2, 16, 9, 11, 24, 3, 3, (1, 1), (1, 1), (1, 1)),
    "stem_7x7_s2": (1, 16, 13, 12, 72, 7, 7, (2, 2), (3, 3), (1, 1)),   # 72 channels: 40 of 64 in the 2nd block
    "dilated": (2, 8, 10, 9, 16, 3, 3, (1, 1), (2, 2), (2, 2)),
    "stride_3x2_filter_3x2": (1, 40, 6, 7, 8, 3, 2, (3, 2), (1, 0), (1, 1)),
    "many_tiles": (3, 8, 17, 15, 264, 1, 3, (1, 1), (0, 1), (1, 1)),     # 765 pixels, 2 column tiles, 6 x 2 tiles
    "asymmetric": (2, 8, 12, 9, 16, 3, 2, (2, 1), (2, 0), (2, 1)),       # H and W differ in everything: a swap shows
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("case", WGMMA_CONV_CASES.values(), ids=WGMMA_CONV_CASES.keys())
def test_conv2d_wgmma_forward(emu, dtype, layout, case):
    """The im2col-TMA + wgmma forward against the float64 oracle: padding, strides, dilation, channels past a
    64-block, pixel tiles across images, bias and an activation, the output in the format asked for."""
    n, c, h, w, k, r, s, stride, padding, dilation = case
    x, wt, b = conv_cases.make_conv(n, c, h, w, k, r, s, 1, dtype, layout)
    activation = {"3x3_same": "relu", "stem_7x7_s2": "gelu", "dilated": "silu"}.get(
        next(name for name, v in WGMMA_CONV_CASES.items() if v == case), "none")
    before = (x.clone(), wt.clone())
    channels_last = layout == "nhwc"
    ours = torch.ops.accelkernels.cuda_conv2d(x, wt, b, list(stride), list(padding), list(dilation), 1, activation,
                                              "wgmma", channels_last)
    act = ACTIVATIONS[activation]
    theirs = act(torch.nn.functional.conv2d(x, wt, b, stride, padding, dilation))
    ref = act(torch.nn.functional.conv2d(x.double(), wt.double(), b.double(), stride, padding, dilation))
    assert_within_2x_torch_error(ours, theirs, ref, "conv2d wgmma")
    assert ours.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(x, before[0]) and torch.equal(wt, before[1])


WGMMA_GROUPED_CASES = {  # (n, c, h, w, k, r, s, stride, padding, dilation, groups)
    "3x3_s1": (2, 16, 9, 11, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1),           # one phase: the TMA-store epilogue
    "3x3_s2": (2, 16, 9, 11, 24, 3, 3, (2, 2), (1, 1), (1, 1), 1),           # 4 phases of 4, 2, 2 and 1 taps
    "stem_7x7_s2": (1, 16, 13, 12, 72, 7, 7, (2, 2), (3, 3), (1, 1), 1),     # phases of 16, 12, 12 and 9 taps
    "s2_dil2": (1, 8, 10, 9, 16, 3, 3, (2, 2), (2, 1), (2, 1), 1),           # gcd(2, 2): rows no tap reaches
    "s3x2": (1, 40, 6, 7, 8, 3, 2, (3, 2), (1, 0), (1, 1), 1),               # a phase past the input's bottom
    "grouped": (2, 32, 7, 8, 48, 3, 3, (1, 1), (1, 1), (1, 1), 2),           # 16 and 24 channels per group
    "grouped_s2": (1, 48, 8, 9, 24, 3, 2, (2, 1), (1, 0), (1, 1), 3),        # 3 groups x 2 phases
    "many_tiles": (2, 264, 12, 11, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1),     # dx: 264 pixels x 264 channels
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("case", WGMMA_GROUPED_CASES.values(), ids=WGMMA_GROUPED_CASES.keys())
def test_conv2d_wgmma_gradients_and_groups(emu, dtype, layout, case):
    """The wgmma input gradient (the transposed implicit GEMM per stride phase, dy fetched by im2col TMA), the
    wgmma weight gradient (MN-major tiles of dy and im2col(x), split-K) and the grouped forward, against the
    float64 oracle: every phase shape (all taps, some, none, none of the rows), groups, more than one tile each
    way, dx and dw in the format asked for."""
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x, wt, b = conv_cases.make_conv(n, c, h, w, k, r, s, groups, dtype, layout)
    geometry = (list(stride), list(padding), list(dilation), groups)
    channels_last = layout == "nhwc"
    y = torch.ops.accelkernels.cuda_conv2d(x, wt, b, *geometry, "silu", "wgmma", channels_last)
    conv = torch.nn.functional.conv2d
    assert_within_2x_torch_error(y, torch.nn.functional.silu(conv(x, wt, b, stride, padding, dilation, groups)),
                                 torch.nn.functional.silu(conv(x.double(), wt.double(), b.double(), stride, padding,
                                                               dilation, groups)), "grouped forward")
    dy = torch.randn(y.shape).to(dtype)
    dy = dy.to(memory_format=torch.channels_last) if channels_last else dy
    before = (dy.clone(), wt.clone())
    dx = torch.ops.accelkernels.cuda_conv2d_input_grad(dy, wt, list(x.shape), *geometry, "wgmma", channels_last)
    theirs = torch.nn.grad.conv2d_input(x.shape, wt, dy, stride, padding, dilation, groups)
    ref = torch.nn.grad.conv2d_input(x.shape, wt.double(), dy.double(), stride, padding, dilation, groups)
    assert_within_2x_torch_error(dx, theirs, ref, "input grad")
    assert dx.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(dy, before[0]) and torch.equal(wt, before[1])
    x_before = x.clone()
    dw = torch.ops.accelkernels.cuda_conv2d_weight_grad(dy, x, list(wt.shape), *geometry, "wgmma", channels_last)
    theirs = torch.nn.grad.conv2d_weight(x, wt.shape, dy, stride, padding, dilation, groups)
    ref = torch.nn.grad.conv2d_weight(x.double(), wt.shape, dy.double(), stride, padding, dilation, groups)
    assert_within_2x_torch_error(dw, theirs, ref, "weight grad")
    assert dw.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(dy, before[0]) and torch.equal(x, x_before)


def test_conv2d_wgmma_choice_and_refusals(emu):
    """backend="cuda" takes the wgmma kernels of all three passes on an emulated Hopper with sm_90a code for the
    fp16/bf16 problems they can describe (groups included); odd channels per group, strides over 8 and boxes the
    im2col map cannot hold stay on implicit_gemm or direct, and an explicit request it cannot serve is refused
    with the reason."""
    import accelkernels as ak
    from accelkernels.backends import cuda_conv

    x, wt, b = conv_cases.make_conv(1, 16, 8, 8, 16, 3, 3, 1, torch.bfloat16, "nhwc")
    reason = cuda_conv.wgmma_conv_unsupported_reason
    assert reason(x.dtype, x.shape, wt.shape, (1, 1), (1, 1), (1, 1), 1) is None
    assert reason(x.dtype, x.shape, (16, 8, 3, 3), (1, 1), (1, 1), (1, 1), 2) is None
    assert "per group" in reason(x.dtype, x.shape, (16, 4, 3, 3), (1, 1), (1, 1), (1, 1), 4)
    assert "strides" in reason(x.dtype, x.shape, wt.shape, (9, 1), (1, 1), (1, 1), 1)
    assert "corner" in reason(x.dtype, x.shape, wt.shape, (1, 1), (129, 1), (1, 1), 1)
    assert "8-bit" in reason(x.dtype, x.shape, wt.shape, (1, 1), (128, 1), (128, 1), 1)
    assert "float16" in reason(torch.float32, x.shape, wt.shape, (1, 1), (1, 1), (1, 1), 1)
    # weight_grad reads x through the forward's view: the forward's limits
    assert reason(x.dtype, x.shape, (16, 8, 3, 3), (2, 1), (1, 1), (1, 1), 2, "weight_grad") is None
    assert "strides" in reason(x.dtype, x.shape, wt.shape, (9, 1), (1, 1), (1, 1), 1, "weight_grad")
    assert "8-bit" in reason(x.dtype, x.shape, wt.shape, (1, 1), (128, 1), (128, 1), 1, "weight_grad")
    # input_grad reads dy at stride 1, so a stride of 9 is no obstacle; taps 128 rows apart are
    assert reason(x.dtype, (1, 16, 40, 40), wt.shape, (9, 1), (1, 1), (1, 1), 1, "input_grad") is None
    assert "8-bit" in reason(x.dtype, x.shape, wt.shape, (1, 1), (128, 1), (128, 1), 1, "input_grad")
    # padding past the filter's reach puts a phase's dy origin far inside dy: the corner range
    assert "corner" in reason(x.dtype, (1, 16, 8, 8), (16, 16, 1, 3), (1, 1), (0, 130), (1, 1), 1, "input_grad")
    args = (x, wt.shape, (1, 1), (1, 1), (1, 1), 1)
    grad_args = (x, x.shape, wt.shape, (2, 2), (1, 1), (1, 1), 1)
    def choice():
        return (cuda_conv.forward_kernel_for(*args), cuda_conv.input_grad_kernel_for(*grad_args),
                cuda_conv.weight_grad_kernel_for(*args))

    choices = [choice()]
    emu.configure(sm90a_code=False)
    choices.append(choice())
    emu.configure(sm90a_code=True, compute_capability=(8, 0))
    choices.append(choice())
    emu.configure(compute_capability=(9, 0))
    assert choices == [("wgmma",) * 3, ("implicit_gemm",) * 3, ("implicit_gemm",) * 3]
    assert cuda_conv.weight_grad_kernel_for(x, wt.shape, (9, 1), (1, 1), (1, 1), 1) == "implicit_gemm"
    assert cuda_conv.forward_kernel_for(x, (16, 8, 3, 3), (1, 1), (1, 1), (1, 1), 2) == "wgmma"
    assert cuda_conv.forward_kernel_for(x, (16, 4, 3, 3), (1, 1), (1, 1), (1, 1), 4) == "direct"
    assert_within_2x_torch_error(ak.conv2d(x, wt, b, padding=1, backend="cuda"),
                                 torch.nn.functional.conv2d(x, wt, b, padding=1),
                                 torch.nn.functional.conv2d(x.double(), wt.double(), b.double(), padding=1))
    with pytest.raises(ValueError, match="kernel 'wgmma' cannot serve this problem: strides must be 1..8"):
        torch.ops.accelkernels.cuda_conv2d(x, wt, b, [9, 1], [1, 1], [1, 1], 1, "none", "wgmma", True)
    with pytest.raises(ValueError, match="kernel 'wgmma' cannot serve this problem: padding or output geometry"):
        torch.ops.accelkernels.cuda_conv2d_input_grad(torch.randn(1, 16, 8, 266).to(torch.bfloat16),
                                                      torch.randn(16, 16, 1, 3).to(torch.bfloat16),
                                                      [1, 16, 8, 8], [1, 1], [0, 130], [1, 1], 1, "wgmma", True)
    dy = torch.randn(1, 16, 8, 8).to(torch.bfloat16)
    emu.configure(sm90a_code=False)
    try:
        with pytest.raises(RuntimeError, match="kernel 'wgmma' needs sm_90a code"):
            torch.ops.accelkernels.cuda_conv2d(x, wt, b, [1, 1], [1, 1], [1, 1], 1, "none", "wgmma", True)
        with pytest.raises(RuntimeError, match="kernel 'wgmma' needs sm_90a code"):
            torch.ops.accelkernels.cuda_conv2d_input_grad(dy, wt, [1, 16, 8, 8], [1, 1], [1, 1], [1, 1], 1, "wgmma",
                                                          True)
        with pytest.raises(RuntimeError, match="kernel 'wgmma' needs sm_90a code"):
            torch.ops.accelkernels.cuda_conv2d_weight_grad(dy, x, list(wt.shape), [1, 1], [1, 1], [1, 1], 1, "wgmma",
                                                           True)
    finally:
        emu.configure(sm90a_code=True)


def test_stride_phase_no_tap_reaches(emu):
    """1x1 filter, stride 2: three of the four input-gradient phases receive no tap (zeros)."""
    x, wt, b = conv_cases.make_conv(1, 16, 8, 8, 8, 1, 1, 1, torch.float16, "nhwc", bias=False)
    conv_cases.check_against_float64(x, wt, b, dict(stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=1),
                                     None, backend="cuda")


@pytest.mark.parametrize("capability,kernel", [((8, 0), "implicit_gemm"), ((9, 0), "wgmma")])
def test_weight_grad_split_k_slices(emu, capability, kernel):
    """Enough SMs that the split-K weight gradient cuts N*P*Q into several slices (and sums them): the mma.sync
    kernel (128 x 128 blocks per tap) and the wgmma kernel (tiles over all taps: 3 column tiles); both cut the
    1152 pixels into 2 slices (at least 512 pixels each: conv_op.cpp, weight_grad_splits)."""
    from accelkernels.backends import cuda_conv

    emu.configure(sm_count=16, compute_capability=capability)
    try:
        x, wt, b = conv_cases.make_conv(2, 8, 24, 24, 8, 3, 3, 1, torch.bfloat16, "nhwc")
        assert cuda_conv.weight_grad_kernel_for(x, wt.shape, (1, 1), (1, 1), (1, 1), 1) == kernel
        conv_cases.check_against_float64(x, wt, b, dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1),
                                         None, backend="cuda")
    finally:
        emu.configure(sm_count=2, compute_capability=(9, 0))


def test_direct_conv_unstaged_path(emu):
    """A dilation so large that one channel's patch does not fit 44 KB: the global-memory path."""
    # patch (7 + 2*60 + 1) x (15 + 2*80 + 1) floats per channel > the 44 KB stage
    x, wt, b = conv_cases.make_conv(1, 2, 125, 165, 3, 3, 3, 1, torch.float32, "nchw")
    conv_cases.check_against_float64(x, wt, b, dict(stride=(1, 1), padding=(0, 0), dilation=(60, 80), groups=1),
                                     "relu", backend="cuda", grads=False)


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_depthwise(emu, multiplier, dtype):
    x, wt, b = conv_cases.make_conv(2, 6, 7, 9, 6 * multiplier, 3, 3, 6, dtype, "nhwc")
    conv_cases.check_against_float64(x, wt, b, dict(stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=6),
                                     "silu", backend="cuda")


# ---- the executor's own behaviour ------------------------------------------------------------------

def test_thread_orders_agree_bit_for_bit(emu):
    """The same launch under shuffled thread orders (and TMA completion orders) gives identical bits."""
    a, b = operands(1, 130, 70, 600, torch.bfloat16, b_k_contig=True)
    af, bf = operands(1, 40, 50, 33, torch.float32)
    results = []
    for seed in (0, 1, 2):
        emu.configure(seed=seed)
        results.append((torch.ops.accelkernels.cuda_bmm(a, b, None, "none", "wgmma"),
                        torch.ops.accelkernels.cuda_bmm(af, bf, None, "none", "warptile")))
    emu.configure(seed=0)
    for r in results[1:]:
        assert torch.equal(r[0], results[0][0]) and torch.equal(r[1], results[0][1])


def test_registry_and_ptx_tables_agree(emu):
    from accelkernels.emulator.rewrite import KNOWN_PTX

    assert set(emu.known_ptx()) == set(KNOWN_PTX)
    names = {(k["name"], k["op"]) for k in emu.kernels()}
    assert {("wgmma", "cuda_bmm"), ("wgmma_v2", "cuda_bmm"), ("wgmma_cluster", "cuda_bmm")} <= names and ("implicit_gemm", "cuda_conv2d_weight_grad") in names


def test_unknown_ptx_fails_the_build_naming_it():
    from accelkernels.emulator.rewrite import RewriteError, rewrite

    text = '# 1 "/x/csrc/kernels/k.cu"\nvoid f(){ asm volatile("bar.arrive 1, 64;\\n" ::); }\n'
    with pytest.raises(RewriteError, match=r"k.cu:1: PTX instruction 'bar.arrive' has no handler"):
        rewrite(text)


def test_bad_settings_are_refused(emu):
    with pytest.raises(ValueError, match="compute capability 9.0 or 8.0"):
        emu.configure(compute_capability=(7, 5))
    with pytest.raises(ValueError, match="sm_count"):
        emu.configure(sm_count=0)


def test_missing_compiler_or_headers_say_what_to_install(monkeypatch, tmp_path):
    from accelkernels.emulator import EmulatorBuildError, build

    monkeypatch.setattr(build, "header_candidates", lambda: [tmp_path])
    with pytest.raises(EmulatorBuildError, match=r"CUDA headers were not found .*CUDA_HOME.*pip install torch"):
        build.cuda_include_dir()
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(EmulatorBuildError, match=r"no C\+\+ compiler found .*apt-get install g\+\+"):
        build.compiler()
