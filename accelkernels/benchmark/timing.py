"""Timing: CUDA events with the L2 flushed (triton.testing.do_bench) on the GPU, CUDA graphs for
launch-bound forward calls, a wall-clock loop on the CPU. Always the median with p20/p80."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

QUANTILES = [0.5, 0.2, 0.8]
# Below this a forward call is dominated by launch gaps, so it is re-timed inside a CUDA graph.
LAUNCH_BOUND_MS = 0.05
CPU_BUDGET_S = 0.3  # per (case, provider, mode) on the CPU: enough runs for a median, bounded time
CPU_MIN_RUNS = 5


def time_gpu(fn: Callable[[], object], graphable: bool) -> tuple[list[float], str]:
    """[median, p20, p80] in ms, and which timer produced them."""
    from triton.testing import do_bench, do_bench_cudagraph

    times = do_bench(fn, warmup=25, rep=100, quantiles=QUANTILES)
    if graphable and times[0] < LAUNCH_BOUND_MS:
        try:
            return list(do_bench_cudagraph(fn, rep=100, quantiles=QUANTILES)), "cuda-graph"
        except Exception:  # not capturable (e.g. a host sync inside): the event timing stands
            pass
    return list(times), "do_bench"


def time_cpu(fn: Callable[[], object]) -> tuple[list[float], str]:
    fn()  # warm-up
    samples: list[float] = []
    deadline = time.perf_counter() + CPU_BUDGET_S
    while len(samples) < CPU_MIN_RUNS or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
        if len(samples) >= 200:
            break
    if len(samples) < 2:
        return [samples[0]] * 3, "wall-clock"
    q = statistics.quantiles(samples, n=10)
    return [statistics.median(samples), q[1], q[7]], "wall-clock"


def time_call(fn: Callable[[], object], device: str, graphable: bool) -> tuple[list[float], str]:
    return time_gpu(fn, graphable) if device == "cuda" else time_cpu(fn)
