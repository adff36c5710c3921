"""What one benchmark case computes: its FLOPs and bytes, its inputs, and the call each provider
makes in each mode (forward, backward, forward+backward)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import conv2d, linear, matmul
from .suites import Case

MODES = ("fwd", "bwd", "fwd+bwd")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def conv_output_hw(d: dict) -> tuple[int, int]:
    def out(size, kernel):
        return (size + 2 * d["padding"] - kernel) // d["stride"] + 1

    return out(d["height"], d["kernel_h"]), out(d["width"], d["kernel_w"])


def forward_flops(case: Case) -> float:
    """2·M·N·K for a GEMM; 2·N·K·P·Q·(C/groups)·R·S for a convolution."""
    d = case.dims
    if case.op == "conv2d":
        p, q = conv_output_hw(d)
        return 2.0 * d["batch"] * d["out_ch"] * p * q * (d["in_ch"] // d["groups"]) * d["kernel_h"] * d["kernel_w"]
    return 2.0 * d["m"] * d["n"] * d["k"]


def flops(case: Case, mode: str) -> float:
    """Backward = input grad + weight grad, each a GEMM/conv as large as the forward."""
    return forward_flops(case) * {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]


def _tensor_elements(case: Case) -> tuple[int, int, int]:
    """(input, weight, output) element counts."""
    d = case.dims
    if case.op == "conv2d":
        p, q = conv_output_hw(d)
        return (d["batch"] * d["in_ch"] * d["height"] * d["width"],
                d["out_ch"] * (d["in_ch"] // d["groups"]) * d["kernel_h"] * d["kernel_w"],
                d["batch"] * d["out_ch"] * p * q)
    return d["m"] * d["k"], d["k"] * d["n"], d["m"] * d["n"]


def bytes_moved(case: Case, mode: str, dtype: torch.dtype) -> float:
    """Each tensor read once and each result written once (the floor a kernel cannot go under)."""
    x, w, y = _tensor_elements(case)
    per_mode = {"fwd": x + w + y, "bwd": 2 * (x + w + y), "fwd+bwd": 3 * (x + w + y)}[mode]
    return float(per_mode * torch.empty((), dtype=dtype).element_size())


def separate_pass_bound(case: Case, dtype: torch.dtype, tflops: float, tbps: float) -> dict[str, float]:
    """Roofline times (ms) of a GEMM case's forward and of a separate elementwise pass over its output
    (read and write C once: what cuBLAS followed by F.gelu pays), on a card of ``tflops`` and ``tbps``;
    ``share`` = pass / GEMM, and ``fused_bound`` = (GEMM + pass) / GEMM, the most a GEMM that fuses the
    pass into its epilogue can gain over the two (at equal GEMM speed)."""
    size = torch.empty((), dtype=dtype).element_size()
    gemm_ms = max(forward_flops(case) / (tflops * 1e12), bytes_moved(case, "fwd", dtype) / (tbps * 1e12)) * 1e3
    pass_ms = 2 * _tensor_elements(case)[2] * size / (tbps * 1e12) * 1e3
    return {"gemm_ms": gemm_ms, "pass_ms": pass_ms, "share": pass_ms / gemm_ms, "fused_bound": 1 + pass_ms / gemm_ms}


def throughput_unit(case: Case) -> tuple[float, str]:
    """Work items per call, for the article's throughput: images for conv, rows (tokens) for GEMMs."""
    return (float(case.dims["batch"]), "images/s") if case.op == "conv2d" else (float(case.dims["m"]), "rows/s")


@dataclass
class Inputs:
    tensors: list[torch.Tensor]  # input/a, weight/b, and bias (linear, conv2d)
    layout: str


def make_inputs(case: Case, dtype: torch.dtype, device: str, layout: str, requires_grad: bool) -> Inputs:
    """Fresh random inputs, weights scaled by 1/sqrt(fan_in) so activations stay O(1)."""
    d = case.dims
    if case.op == "conv2d":
        fan_in = d["in_ch"] // d["groups"] * d["kernel_h"] * d["kernel_w"]
        x = torch.randn(d["batch"], d["in_ch"], d["height"], d["width"], device=device, dtype=dtype)
        w = torch.randn(d["out_ch"], d["in_ch"] // d["groups"], d["kernel_h"], d["kernel_w"], device=device, dtype=dtype)
        w = w / math.sqrt(fan_in)
        if layout == "nhwc":
            x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
        tensors = [x, w, torch.randn(d["out_ch"], device=device, dtype=dtype)]
    elif case.op == "linear":
        tensors = [torch.randn(d["m"], d["k"], device=device, dtype=dtype),
                   torch.randn(d["n"], d["k"], device=device, dtype=dtype) / math.sqrt(d["k"]),
                   torch.randn(d["n"], device=device, dtype=dtype)]
    else:
        tensors = [torch.randn(d["m"], d["k"], device=device, dtype=dtype),
                   torch.randn(d["k"], d["n"], device=device, dtype=dtype) / math.sqrt(d["k"])]
    return Inputs([t.requires_grad_(requires_grad) for t in tensors], layout)


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    """torch's unfused path: the activation as its own kernel after the conv/linear."""
    return y if activation is None else getattr(F, activation)(y)


def forward_fn(case: Case, provider: str) -> Callable[..., torch.Tensor]:
    """The forward call of a provider: "torch" is torch's own op (cuDNN/cuBLAS/ATen, no wrapper);
    backend names go through accelkernels; "cuda:<kernel>" / "triton:<kernel>" run one named kernel."""
    d = case.dims
    act = case.activation
    if case.op == "conv2d":
        args = (d["stride"], d["padding"], 1, d["groups"])
        if provider == "torch":
            return lambda x, w, b: _activate(F.conv2d(x, w, b, *args), act)
        return lambda x, w, b: conv2d(x, w, b, *args, activation=act, backend=provider)
    if case.op == "linear":
        if provider.startswith("cuda:"):  # one registry kernel, the weight read as Wᵀ (K-contiguous B)
            kernel = provider.split(":", 1)[1]
            return lambda x, w, b: torch.ops.accelkernels.cuda_bmm(x.unsqueeze(0), w.mT.unsqueeze(0), b, act or "none",
                                                                   kernel)[0]
        if provider == "torch":
            return lambda x, w, b: _activate(F.linear(x, w, b), act)
        return lambda x, w, b: linear(x, w, b, activation=act, backend=provider)
    if provider.startswith("cuda:"):
        kernel = provider.split(":", 1)[1]
        return lambda a, b: torch.ops.accelkernels.cuda_bmm(a.unsqueeze(0), b.unsqueeze(0), None, "none", kernel)[0]
    if provider.startswith("triton:"):
        from ..triton_kernels import matmul as triton_matmul

        kernel = provider.split(":", 1)[1]
        return lambda a, b: triton_matmul.bmm(a.unsqueeze(0), b.unsqueeze(0), None, "none", kernel=kernel)[0]
    if provider == "torch":
        return torch.matmul
    return lambda a, b: matmul(a, b, backend=provider)


def modes_for(case: Case, requested: list[str]) -> list[str]:
    """matmul is timed forward only; conv2d and linear in every requested mode."""
    return [m for m in requested if m == "fwd" or case.op != "matmul"]


def timed_call(case: Case, provider: str, mode: str, inputs: Inputs) -> Callable[[], object]:
    """A no-argument callable doing exactly the work the mode times."""
    fn = forward_fn(case, provider)
    tensors = inputs.tensors
    if mode == "fwd":
        return lambda: fn(*tensors)
    out = fn(*tensors)
    grad = torch.randn_like(out)
    if mode == "bwd":  # the graph is built once; each call runs the backward only
        return lambda: torch.autograd.grad(out, tensors, grad, retain_graph=True)
    return lambda: torch.autograd.grad(fn(*tensors), tensors, grad)


def results_of(case: Case, provider: str, mode: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """What the correctness check compares: the output (fwd) or every gradient (bwd modes)."""
    fn = forward_fn(case, provider)
    out = fn(*tensors)
    if mode == "fwd":
        return [out.detach()]
    grad = torch.Generator(device=out.device).manual_seed(1)
    g = torch.randn(out.shape, generator=grad, device=out.device, dtype=torch.float32).to(out.dtype)
    return [t.detach() for t in torch.autograd.grad(out, tensors, g)]
