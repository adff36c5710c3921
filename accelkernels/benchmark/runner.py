"""Run the benchmark: for each case, dtype and layout, check every provider against a float64
reference, then time it, and turn each measurement into one row (see ROW_FIELDS)."""

from __future__ import annotations

import datetime
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import BackendUnavailableError, _extension, available_backends
from . import ceilings as ceilings_mod
from .problems import (DTYPES, bytes_moved, flops, make_inputs, modes_for, results_of, throughput_unit,
                       timed_call)
from .suites import Case
from .timing import time_call

ROW_FIELDS = (
    "suite", "case", "op", "shape", "dtype", "layout", "mode", "provider", "status", "reason",
    "median_ms", "p20_ms", "p80_ms", "tflops", "gbps", "pct_peak", "speedup", "throughput", "throughput_unit",
    "max_error", "torch_error", "timer", "device", "capability", "torch", "cuda", "triton", "commit", "timestamp",
)
PROVIDERS = ("torch", "cuda", "triton", "auto")
# On the CPU, the reference path runs cases up to this many forward FLOPs (tens of milliseconds of
# fp32 on the 2-core CI machine, so a quick run stays around a minute); larger ones are listed as
# skipped, with the reason.
CPU_MAX_FLOPS = 1e9
INTERPRETER_MAX_FLOPS = 2e6  # Triton's interpreter on CPU tensors is ~1e4x slower than the GPU


@dataclass
class Settings:
    device: str
    dtypes: list[str]
    modes: list[str]
    layouts: list[str]  # conv2d: "nhwc" and/or "nchw"; GEMMs always "row-major"
    providers: list[str] = field(default_factory=lambda: list(PROVIDERS))
    ceilings: dict | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # backend -> why it cannot run here (filled by run)


def environment(device: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name, capability = props.name, f"{props.major}.{props.minor}"
    else:
        name, capability = "CPU (no CUDA GPU found)", ""
    return {
        "device": name, "capability": capability, "torch": torch.__version__, "cuda": torch.version.cuda or "",
        "triton": triton_version, "commit": commit or "unknown",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def ladder_providers() -> list[str]:
    """Each named GEMM kernel, as "cuda:<kernel>" (the CUDA ladder's steps) and "triton:<kernel>"
    (tiled, persistent), timed on matmul cases so a GPU run shows which one to prefer."""
    status = _extension.status()
    cuda = [f"cuda:{k['name']}" for k in status.module.kernels() if k["op"] == "cuda_bmm"] if status.loaded else []
    from ..triton_kernels import KERNEL_NAMES

    return cuda + [f"triton:{name}" for name in KERNEL_NAMES]


def _skip_reason(case: Case, provider: str, dtype_name: str, settings: Settings) -> str | None:
    backend = provider.split(":", 1)[0]
    if backend in settings.unavailable:  # cannot run on this machine at all: say that first
        return settings.unavailable[backend]
    if settings.device == "cpu" and flops(case, "fwd") > CPU_MAX_FLOPS:
        return f"{flops(case, 'fwd') / 1e9:.1f} GFLOP is too large for a CPU run (limit {CPU_MAX_FLOPS / 1e9:.0f})"
    if ":" in provider and case.op != "matmul" and not (provider.startswith("cuda:") and case.op == "linear"):
        return "single kernels are timed on matmul cases (CUDA kernels on linear cases too)"
    if provider == "cuda:wgmma" and case.op == "matmul":
        return "wgmma reads B as an N x K matrix (K-contiguous): it is timed on the linear cases"
    if provider.startswith("triton:") and settings.device == "cpu" and flops(case, "fwd") > INTERPRETER_MAX_FLOPS:
        return "too large for Triton's interpreter (the CPU stand-in for a GPU)"
    if provider == "triton:tma":
        row_bytes = [case.dims[d] * torch.empty((), dtype=DTYPES[dtype_name]).element_size() for d in ("k", "n")]
        if any(b % 16 for b in row_bytes):
            return "TMA needs rows that are multiples of 16 bytes (K and N here are not)"
    if provider.startswith("cuda:"):
        kernel = next((k for k in _extension.status().module.kernels()
                       if k["op"] == "cuda_bmm" and f"cuda:{k['name']}" == provider), None)
        if kernel is None:
            return "no such kernel in the registry"
        if DTYPES[dtype_name] not in [getattr(torch, d, None) for d in kernel["dtypes"].split(",")]:
            return f"kernel takes {kernel['dtypes']}"
        if kernel.get("tensor_cores") and any(case.dims[d] % 8 for d in ("k", "n")):
            return "the tensor-core kernel reads 16-byte chunks: K and N must be multiples of 8"
        if kernel["min_arch"].endswith("a") and settings.device == "cuda":  # e.g. wgmma: sm_90a only
            major, minor = torch.cuda.get_device_capability()
            if kernel["min_arch"] != f"{major}.{minor}a":
                return f"kernel runs on compute capability {kernel['min_arch']} only"
    if provider == "triton" and settings.device == "cpu" and flops(case, "fwd") > INTERPRETER_MAX_FLOPS:
        return "too large for Triton's interpreter (the CPU stand-in for a GPU)"
    return None


def _max_error(results: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return max(((r.double() - ref).abs().max().item() if r.numel() else 0.0) for r, ref in zip(results, reference))


def _peak(settings: Settings, dtype_name: str, op: str) -> float | None:
    """The ceiling this case runs against; fp32 counts as TF32 where torch lets that op use it."""
    c = settings.ceilings
    if not c:
        return None
    tf32 = torch.backends.cudnn.allow_tf32 if op == "conv2d" else torch.backends.cuda.matmul.allow_tf32
    key = "tf32" if dtype_name == "fp32" and tf32 else dtype_name
    return c["tflops"].get(key) or c["tflops"].get(dtype_name)


def run_case(case: Case, dtype_name: str, layout: str, settings: Settings, env: dict) -> list[dict]:
    dtype, device = DTYPES[dtype_name], settings.device
    rows = []
    for mode in modes_for(case, settings.modes):
        base = {"suite": case.suite, "case": case.name, "op": case.op, "shape": case.shape_text(),
                "dtype": dtype_name, "layout": layout, "mode": mode, **env}
        need_grad = mode != "fwd"
        inputs = make_inputs(case, dtype, device, layout, requires_grad=need_grad)
        reference = torch_results = torch_err = None
        timed: dict[str, float] = {}
        for provider in settings.providers:
            row = dict(base, provider=provider)
            why = _skip_reason(case, provider, dtype_name, settings)
            if why is None and ":" in provider and mode != "fwd":
                why = "single kernels are timed forward (the backward goes through the op)"
            if why is not None:
                rows.append(dict(row, status="skipped", reason=why))
                continue
            try:
                if reference is None:  # correct first: float64 reference and torch's own error, once
                    as64 = [t.detach().double().requires_grad_(need_grad) for t in inputs.tensors]
                    reference = results_of(case, "torch", mode, as64)
                    torch_results = results_of(case, "torch", mode, inputs.tensors)
                    torch_err = _max_error(torch_results, reference)
                ours = torch_results if provider == "torch" else results_of(case, provider, mode, inputs.tensors)
                err = _max_error(ours, reference)
                row.update(max_error=err, torch_error=torch_err)
                if not err <= 2 * torch_err + 1e-6:
                    rows.append(dict(row, status="wrong", reason=f"error {err:.3g} > 2 x torch's {torch_err:.3g}"))
                    continue
                fn = timed_call(case, provider, mode, inputs)
                (median, p20, p80), timer = time_call(fn, device, graphable=mode == "fwd")
            except BackendUnavailableError as exc:
                rows.append(dict(row, status="unavailable", reason=str(exc).split("cannot serve this call: ")[-1]))
                continue
            except Exception as exc:  # a crash in one provider must not end the run; it is reported
                rows.append(dict(row, status="error", reason=f"{type(exc).__name__}: {exc}"[:300]))
                continue
            seconds = median * 1e-3
            work, unit = throughput_unit(case)
            tflops = flops(case, mode) / seconds / 1e12
            peak = _peak(settings, dtype_name, case.op)
            row.update(status="ok", reason="", median_ms=median, p20_ms=p20, p80_ms=p80, timer=timer,
                       tflops=tflops, gbps=bytes_moved(case, mode, dtype) / seconds / 1e9,
                       pct_peak=100 * tflops / peak if peak else None,
                       throughput=work / seconds, throughput_unit=unit)
            timed[provider] = median
            rows.append(row)
        for row in rows:
            if row["mode"] == mode and row.get("status") == "ok" and "torch" in timed:
                row["speedup"] = timed["torch"] / row["median_ms"]
    return [{f: r.get(f) for f in ROW_FIELDS} for r in rows]


def run(cases: list[Case], settings: Settings, progress: bool = True, env: dict | None = None) -> list[dict]:
    from tqdm import tqdm

    if settings.device == "cuda":
        # The reference at its best: cuDNN picks its fastest algorithm per shape; fp32 stays IEEE
        # (no TF32) on both sides unless the user turned TF32 on, and the report says which.
        torch.backends.cudnn.benchmark = True
    env = env or environment(settings.device)
    settings.unavailable = {name: b["reason"] for name, b in available_backends().items() if not b["available"]}
    work = [(c, d, l) for c in cases for d in settings.dtypes
            for l in (settings.layouts if c.op == "conv2d" else ["row-major"])]
    rows: list[dict] = []
    bar = tqdm(work, desc="accelkernels bench", unit="case", disable=not progress, file=sys.stderr)
    for case, dtype_name, layout in bar:
        bar.set_postfix_str(f"{case.suite}: {case.name} {dtype_name}", refresh=False)
        torch.manual_seed(len(rows))  # fresh random data per case, reproducible run to run
        rows.extend(run_case(case, dtype_name, layout, settings, env))
    return rows


def default_ceilings(device: str) -> dict | None:
    if device != "cuda":
        return None
    return ceilings_mod.datasheet(torch.cuda.get_device_name())
