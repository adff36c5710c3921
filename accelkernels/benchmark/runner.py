"""Run the benchmark: for each case, dtype and layout, check every provider against a float64
reference, then time it, and turn each measurement into one row (see ROW_FIELDS)."""

from __future__ import annotations

import contextlib
import datetime
import os
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
from . import problems, timing
from .timing import summary_ms

ROW_FIELDS = (
    "suite", "case", "op", "shape", "fwd_gflop", "dtype", "layout", "mode", "provider", "status", "reason",
    "median_ms", "p20_ms", "p80_ms", "tflops", "gbps", "pct_peak", "throughput", "throughput_unit",
    "speedup", "speedup_low", "speedup_high", "verdict", "tight", "rounds", "same_path", "round_ratios",
    "max_error", "torch_error", "timer", "device", "capability", "torch", "cuda", "triton", "commit", "timestamp",
)
PROVIDERS = ("torch", "cuda", "triton", "auto")
# On the CPU, the reference path runs cases up to this many forward FLOPs (tens of milliseconds of
# fp32 on the 2-core CI machine, so a quick run stays around a minute); larger ones are listed as
# skipped, with the reason. `accelkernels bench --cpu-max-gflop` changes it.
CPU_MAX_FLOPS = 1e9
INTERPRETER_MAX_FLOPS = 2e6  # Triton's interpreter on CPU tensors is ~1e4x slower than the GPU
SAME_PATH_NOTE = "same path as the reference: measures dispatch overhead"


@dataclass
class Settings:
    device: str
    dtypes: list[str]
    modes: list[str]
    layouts: list[str]  # conv2d: "nhwc" and/or "nchw"; GEMMs always "row-major"
    providers: list[str] = field(default_factory=lambda: list(PROVIDERS))
    ceilings: dict | None = None
    cpu_max_flops: float = CPU_MAX_FLOPS
    pair_budget_s: float | None = None  # per pairing; None: timing.PAIR_BUDGET_S for the device
    allocator_pinned: bool = False  # filled by run: whether timing.steady_host_allocator took
    threads: int | None = None  # torch's intra-op threads during the run (None: leave them as they are)
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
    if settings.device == "cpu" and flops(case, "fwd") > settings.cpu_max_flops:
        # One text per limit (the case's own size is its fwd_gflop field), so the report can list
        # every case it applies to under one line.
        return cpu_limit_reason(settings.cpu_max_flops)
    if ":" in provider and case.op != "matmul" and not (provider.startswith("cuda:") and case.op == "linear"):
        return "single kernels are timed on matmul cases (CUDA kernels on linear cases too)"
    if provider in ("cuda:wgmma", "cuda:wgmma_v2", "cuda:wgmma_cluster") and case.op == "matmul":
        return "the wgmma kernels read B as an N x K matrix (K-contiguous): they are timed on the linear cases"
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


def cpu_limit_reason(limit_flops: float) -> str:
    return (f"forward over the CPU run's size limit of {limit_flops / 1e9:g} GFLOP "
            "(`accelkernels bench --cpu-max-gflop N` raises it)")


def same_path(case: Case, provider: str, tensors: list[torch.Tensor]) -> bool | None:
    """Whether ``provider`` runs the reference's own kernels for this call on this machine: "auto"
    whose measured choice (made on its first call) is torch — always so on a CPU, and on a GPU where
    no kernel beat the reference. Its ratio then measures accelkernels' dispatch overhead, not a
    kernel. None for the reference."""
    if provider == "torch":
        return None
    if provider != "auto":
        return False
    from ..backends import record_choices

    with torch.no_grad(), record_choices() as ran:  # what its calls ran, after the timing decided
        problems.forward_fn(case, provider)(*tensors)
    return all(name == "torch" for _, name in ran)


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


def _checked(case: Case, provider: str, mode: str, inputs, cache: dict) -> dict:
    """The correctness fields of one provider's row, or its status and reason when it cannot be
    timed. ``cache`` keeps the float64 reference and torch's own error across providers."""
    need_grad = mode != "fwd"
    if "reference" not in cache:  # correct first: float64 reference and torch's own error, once
        as64 = [t.detach().double().requires_grad_(need_grad) for t in inputs.tensors]
        cache["reference"] = results_of(case, "torch", mode, as64)
        cache["torch_results"] = results_of(case, "torch", mode, inputs.tensors)
        cache["torch_error"] = _max_error(cache["torch_results"], cache["reference"])
    torch_err = cache["torch_error"]
    ours = cache["torch_results"] if provider == "torch" else results_of(case, provider, mode, inputs.tensors)
    err = _max_error(ours, cache["reference"])
    fields = {"max_error": err, "torch_error": torch_err}
    if not err <= 2 * torch_err + 1e-6:
        return {**fields, "status": "wrong", "reason": f"error {err:.3g} > 2 x torch's {torch_err:.3g}"}
    return {**fields, "status": "ok"}


def _latency_fields(case: Case, mode: str, dtype, samples_ms: list[float], timer: str, settings: Settings,
                    dtype_name: str) -> dict:
    median, p20, p80 = summary_ms(samples_ms)
    seconds = median * 1e-3
    work, unit = throughput_unit(case)
    tflops = flops(case, mode) / seconds / 1e12
    peak = _peak(settings, dtype_name, case.op)
    return dict(median_ms=median, p20_ms=p20, p80_ms=p80, timer=timer, tflops=tflops,
                gbps=bytes_moved(case, mode, dtype) / seconds / 1e9,
                pct_peak=100 * tflops / peak if peak else None, throughput=work / seconds, throughput_unit=unit)


def _failure(exc: Exception) -> dict:
    if isinstance(exc, BackendUnavailableError):
        return {"status": "unavailable", "reason": str(exc).split("cannot serve this call: ")[-1]}
    # a crash in one provider must not end the run; it is reported
    return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300]}


def _alone(fn, device: str, timer, budget_s: float | None) -> tuple[list[float], str]:
    """The reference's samples when no provider was paired with it, with the pairing's timer (CUDA
    events if a graph cannot be captured)."""
    try:
        return timing.solo(fn, device=device, timer=timer, budget_s=budget_s), timer.name.replace("paired", "alone")
    except Exception:
        if not isinstance(timer, timing.CudaGraphTimer):
            raise
        events = timing.cuda_event_timer()
        return timing.solo(fn, device=device, timer=events, budget_s=budget_s), events.name.replace("paired", "alone")


def run_case(case: Case, dtype_name: str, layout: str, settings: Settings, env: dict) -> list[dict]:
    """Rows of one case, dtype and layout: per mode, every provider is checked against the float64
    reference first; then each one that passed is timed in rounds alternating with torch's own op
    (timing.paired), which gives its latency and its ratio to the reference with an interval. The
    reference's own row takes its latency from the reference's samples of the first pairing (or,
    when nothing else is timed, from a run alone with the same timer)."""
    dtype, device = DTYPES[dtype_name], settings.device
    rows = []
    for mode in modes_for(case, settings.modes):
        base = {"suite": case.suite, "case": case.name, "op": case.op, "shape": case.shape_text(),
                "fwd_gflop": flops(case, "fwd") / 1e9, "dtype": dtype_name, "layout": layout, "mode": mode, **env}
        inputs = make_inputs(case, dtype, device, layout, requires_grad=mode != "fwd")
        cache: dict = {}
        mode_rows: list[dict] = []
        for provider in settings.providers:
            row = dict(base, provider=provider)
            why = _skip_reason(case, provider, dtype_name, settings)
            if why is None and ":" in provider and mode != "fwd":
                why = "single kernels are timed forward (the backward goes through the op)"
            if why is not None:
                mode_rows.append(dict(row, status="skipped", reason=why))
                continue
            try:
                row.update(_checked(case, provider, mode, inputs, cache),
                           same_path=same_path(case, provider, inputs.tensors))
            except Exception as exc:
                row.update(_failure(exc))
            mode_rows.append(row)
        torch_row = next((r for r in mode_rows if r["provider"] == "torch" and r.get("status") == "ok"), None)
        to_time = [r for r in mode_rows if r.get("status") == "ok" and r["provider"] != "torch"]
        if not to_time and torch_row is None:
            rows.extend(mode_rows)
            continue
        reference_samples = None
        try:
            reference_fn = timed_call(case, "torch", mode, inputs)
            timer = timing.timer_for(device, reference_fn, graphable=mode == "fwd")
        except Exception as exc:  # the reference itself cannot be timed: nothing can
            for r in [torch_row, *to_time]:
                if r is not None:
                    r.update(_failure(exc))
            rows.extend(mode_rows)
            continue
        for row in to_time:
            try:
                fn = timed_call(case, row["provider"], mode, inputs)
                t = timing.paired_or_events(reference_fn, fn, device, timer, budget_s=settings.pair_budget_s)
            except Exception as exc:
                row.update(_failure(exc))
                continue
            est = t.estimate
            row.update(status="ok", reason=SAME_PATH_NOTE if row.get("same_path") else "",
                       **_latency_fields(case, mode, dtype, t.provider_ms, t.timer, settings, dtype_name),
                       speedup=est.ratio, speedup_low=est.low, speedup_high=est.high, verdict=est.verdict,
                       tight=est.tight, rounds=est.rounds, round_ratios=t.round_ratios())
            if reference_samples is None:
                reference_samples = (t.reference_ms, t.timer)
        if torch_row is not None:
            try:
                if reference_samples is None:
                    reference_samples = _alone(reference_fn, device, timer, settings.pair_budget_s)
                torch_row.update(status="ok", reason="", verdict="reference",
                                 **_latency_fields(case, mode, dtype, *reference_samples, settings, dtype_name))
            except Exception as exc:
                torch_row.update(_failure(exc))
        rows.extend(mode_rows)
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
    with torch_threads(settings.threads), (timing.steady_host_allocator() if settings.device == "cpu"
                                           else contextlib.nullcontext(False)) as pinned:
        settings.allocator_pinned = pinned
        for case, dtype_name, layout in bar:
            bar.set_postfix_str(f"{case.suite}: {case.name} {dtype_name}", refresh=False)
            torch.manual_seed(len(rows))  # fresh random data per case, reproducible run to run
            rows.extend(run_case(case, dtype_name, layout, settings, env))
    return rows


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` within the block (unchanged when None), then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_cpu_threads() -> int:
    """Every core but one for torch on a CPU run. With all of them (torch's default), one other
    process is enough to stall each parallel region until a scheduler quantum ends: on the 2-core
    VM under load, the same conv's forward+backward measured 2.6-10 ms a call and a pairing of
    identical code gave intervals as wide as [0.02-31]; with one thread it was 1.7 ms and
    [0.89-0.98]-[0.92-1.01] over four pairings (2026-12-02). `--threads` overrides it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)

def default_ceilings(device: str) -> dict | None:
    """The datasheet on a known GPU (None on another one). None on a CPU, which has no datasheet:
    a measurement (`--ceilings`, ~1 s) is not made by default because on the 2-core VM it is not a
    ceiling: its 64 MiB copy fits in the host's 480 MiB L3, and with other processes running, a
    measured 1024^3 mm peak (0.099 TFLOP/s) came out below a 256^3 mm of the same run (0.25)."""
    if device != "cuda":
        return None
    return ceilings_mod.datasheet(torch.cuda.get_device_name())
