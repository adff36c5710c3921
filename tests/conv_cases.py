"""Convolution test cases shared by the kernel backends' tests (Triton, CUDA C++): random inputs in
each layout, random configurations over every argument, and the float64 oracle for the forward and
all three gradients."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import assert_within_2x_torch_error
from references import conv2d as ref_conv2d

import accelkernels as ak

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LAYOUTS = ("nchw", "nhwc", "strided")


def make_conv(n, c, h, w, k, r, s, groups, dtype, layout, bias=True, device="cpu"):
    """Fresh random input, weight (1/sqrt(fan-in) scaled) and bias in the requested layout:
    NCHW, NHWC (channels_last) or "strided" (every other column of a wider tensor: neither)."""
    fan_in = (c // groups) * r * s
    if layout == "strided":
        x = torch.randn(n, c, h, 2 * w, dtype=dtype, device=device)[..., ::2]
        wt = torch.randn(k, c // groups, r, 2 * s, dtype=dtype, device=device)[..., ::2] / fan_in**0.5
    else:
        x = torch.randn(n, c, h, w, dtype=dtype, device=device)
        wt = torch.randn(k, c // groups, r, s, dtype=dtype, device=device) / fan_in**0.5
        if layout == "nhwc":
            x, wt = x.to(memory_format=torch.channels_last), wt.to(memory_format=torch.channels_last)
    b = torch.randn(k, dtype=dtype, device=device) if bias else None
    return x, wt, b


def check_against_float64(x, wt, b, args: dict, activation, backend: str, grads=True):
    """Forward (and every gradient) of ``backend`` vs torch at the same dtype vs float64; the
    memory formats torch picks; inputs unchanged."""
    tensors = [t for t in (x, wt, b) if t is not None]
    before = [t.clone() for t in tensors]
    leaves = [t.detach().requires_grad_(grads) for t in tensors]
    leaves64 = [t.detach().double().requires_grad_(grads) for t in tensors]

    def split(ts):
        return (ts[0], ts[1], ts[2] if b is not None else None)

    ours = ak.conv2d(*split(leaves), **args, activation=activation, backend=backend)
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


def random_cases(count: int, seed: int, channel_multiples=(1,)):
    """Small random convolutions: every argument varies, each dtype / layout / activation / bias.
    Channel counts per group are multiplied by a choice from ``channel_multiples`` (8 reaches the
    CUDA tensor-core kernels, which read 8 channels at a time)."""
    rng = random.Random(seed)
    activations = (None, "relu", "gelu", "silu")
    for i in range(count):
        kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
        groups = {"dense": 1, "grouped": rng.choice([2, 3]), "depthwise": rng.randint(2, 5)}[kind]
        # (no draw for a single choice: the Triton tests' cases stay those they were validated on)
        unit = rng.choice(channel_multiples) if len(channel_multiples) > 1 else channel_multiples[0]
        c = groups * (1 if kind == "depthwise" else unit * rng.randint(1, 4))
        k = groups * (1 if kind == "depthwise" else unit) * rng.randint(1, 3)
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
