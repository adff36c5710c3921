"""The CUDA implicit-GEMM convolutions' index math, proven on the CPU.

csrc/kernels/conv_gather.cuh holds the functions those kernels use to aim each 16-byte cp.async at
the input pixel a (row, tap) pair reads — pixel decomposition, (tap, channel) order of the
reduction, padding, the stride grid of the input gradient, the weight gradient's per-tap gather.
tests/cuda_gather_check.cpp calls the same functions on the host to build the implicit matrices
the kernels load tile by tile (for the input gradient, phase by phase: each stride phase reduces
over only the taps that reach it); here they are multiplied out, with the weight matrices laid out
as the kernels read them, and compared with torch's convolutions in float64. What this cannot prove
(the tiles, the shared-memory ring, the tensor-core fragments) is left to the GPU tests.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"

pytestmark = pytest.mark.skipif(not (CUDA_INCLUDE / "cuda_runtime.h").exists(),
                                reason=f"CUDA headers not found in {CUDA_INCLUDE} (set CUDA_HOME)")


@pytest.fixture(scope="module")
def gather(tmp_path_factory):
    from torch.utils.cpp_extension import load

    return load(name="accelkernels_gather_check", sources=[str(ROOT / "tests" / "cuda_gather_check.cpp")],
                extra_include_paths=[str(ROOT / "csrc" / "kernels"), str(CUDA_INCLUDE)],
                build_directory=str(tmp_path_factory.mktemp("gather_build")), verbose=False)


def random_geometries(count: int, seed: int):
    rng = random.Random(seed)
    for i in range(count):
        groups = rng.choice([1, 1, 2, 3])
        c, k = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
        r, s = rng.randint(1, 3), rng.randint(1, 3)
        stride, dilation = (rng.randint(1, 3), rng.randint(1, 2)), (rng.randint(1, 2), rng.randint(1, 2))
        padding = (rng.randint(0, 2), rng.randint(0, 2))
        h = max(1, dilation[0] * (r - 1) + 1 - 2 * padding[0]) + rng.randint(0, 5)
        w = max(1, dilation[1] * (s - 1) + 1 - 2 * padding[1]) + rng.randint(0, 5)
        yield pytest.param((rng.randint(1, 2), c, h, w), (k, c // groups, r, s), stride, padding, dilation, groups,
                           id=f"{i}-g{groups}-s{stride[0]}{stride[1]}-d{dilation[0]}{dilation[1]}")


GEOMETRIES = [
    *random_geometries(40, seed=11),
    # stride 2, dilation 2, pad 1: the even input rows and columns are reached by no tap at all (an
    # input_grad phase with an empty reduction, whose rows must still be written, as zeros)
    pytest.param((1, 2, 9, 9), (2, 2, 3, 3), (2, 2), (1, 1), (2, 2), 1, id="phase-without-taps"),
    pytest.param((2, 4, 11, 10), (6, 2, 3, 2), (3, 2), (2, 1), (2, 1), 2, id="stride3-dil2-groups2"),
]


def _tensors(x_shape, w_shape, stride, padding, dilation, groups):
    x = torch.randn(x_shape, dtype=torch.float64).to(memory_format=torch.channels_last)  # the kernels' layout
    w = torch.randn(w_shape, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, w, None, stride, padding, dilation, groups)
    return x, w, y


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", GEOMETRIES)
def test_forward_gather_times_the_weight_matrix_is_the_convolution(gather, x_shape, w_shape, stride, padding,
                                                                   dilation, groups):
    x, w, y = _tensors(x_shape, w_shape, stride, padding, dilation, groups)
    a = gather.implicit_matrix(x, x_shape, w_shape, stride, padding, dilation, groups, False)
    k, cg, r, s = w_shape
    # B as the forward reads it: the weight in channels_last order, (K, R·S·C/groups) per group
    b = w.permute(0, 2, 3, 1).reshape(groups, k // groups, r * s * cg)
    out = torch.bmm(a, b.mT)  # (groups, N·P·Q, K/groups)
    n, _, p, q = y.shape
    ours = out.permute(1, 0, 2).reshape(n, p, q, k).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", GEOMETRIES)
def test_input_grad_gather_times_the_regrouped_weight_is_the_gradient(gather, x_shape, w_shape, stride, padding,
                                                                      dilation, groups):
    _, w, y = _tensors(x_shape, w_shape, stride, padding, dilation, groups)
    dy = torch.randn_like(y).contiguous(memory_format=torch.channels_last)
    a = gather.implicit_matrix(dy, x_shape, w_shape, stride, padding, dilation, groups, True)
    k, cg, r, s = w_shape
    kg = k // groups
    # B as input_grad reads it: Wt[c, r, s, kk] = w[g·KG + kk, c - g·CG, r, s] (csrc/conv_op.cpp builds it)
    b = w.reshape(groups, kg, cg, r, s).permute(0, 2, 3, 4, 1).reshape(groups, cg, r * s * kg)
    out = torch.bmm(a, b.mT)  # (groups, N·H·W, C/groups)
    n, c, h, wd = x_shape
    ours = out.permute(1, 0, 2).reshape(n, h, wd, c).permute(0, 3, 1, 2)
    expected = torch.nn.grad.conv2d_input(x_shape, w, dy, stride, padding, dilation, groups)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", GEOMETRIES[::2])
def test_weight_grad_gather_is_the_gradient(gather, x_shape, w_shape, stride, padding, dilation, groups):
    x, _, y = _tensors(x_shape, w_shape, stride, padding, dilation, groups)
    dy = torch.randn_like(y)
    k, cg, r, s = w_shape
    kg = k // groups
    dy_rows = dy.permute(0, 2, 3, 1).reshape(-1, k)  # the (N·P·Q, K) matrix the kernel reads
    ours = torch.empty(w_shape, dtype=torch.float64)
    for rr in range(r):
        for ss in range(s):
            b = gather.weight_grad_gather(x, w_shape, stride, padding, dilation, groups, rr, ss)
            for g in range(groups):
                ours[g * kg:(g + 1) * kg, :, rr, ss] = dy_rows[:, g * kg:(g + 1) * kg].T @ b[:, g * cg:(g + 1) * cg]
    expected = torch.nn.grad.conv2d_weight(x, w_shape, dy, stride, padding, dilation, groups)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_the_check_can_fail(gather):
    """Not vacuous: the same gather against the weight in NCHW order ((c, r, s) instead of the
    kernels' (r, s, c) reduction order) must not match."""
    x_shape, w_shape = (1, 3, 7, 6), (4, 3, 3, 3)
    x, w, y = _tensors(x_shape, w_shape, (1, 1), (1, 1), (1, 1), 1)
    a = gather.implicit_matrix(x, x_shape, w_shape, (1, 1), (1, 1), (1, 1), 1, False)
    wrong = torch.bmm(a, w.reshape(1, 4, 27).mT).permute(1, 0, 2).reshape(1, 7, 6, 4).permute(0, 3, 1, 2)
    assert not torch.allclose(wrong, y)
