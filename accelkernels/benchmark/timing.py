"""Timing. Absolute latencies: CUDA events with the L2 flushed (triton.testing.do_bench) on the GPU,
CUDA graphs for launch-bound forward calls, a wall-clock loop on the CPU (median with p20/p80).

Ratios (speedup, α, β) are never the quotient of two separate medians: on a shared or throttling
machine the two medians come from different moments, and a 2-core VM measured five `accelkernels
bench` runs giving one unchanged layer "speedups" from 0.10 to 9.21 that way (issue 16). ``paired``
times the reference and the provider in alternating rounds (ABBA...: drift and warm-up order cancel
within a round), takes the ratio of each round, and reports the median of those ratios with a
distribution-free confidence interval (order statistics of the median, exact binomial coverage: no
assumption about the shape of the noise, robust to preemption spikes). Rounds continue until the
interval is tight or the time budget is spent; an interval that stays wide is flagged, and one that
contains 1 is "no difference", never a speedup.

The bench's runner uses the paired samples for latencies too (``timer_for`` picks one timer per case
and mode: the wall clock, CUDA events, or CUDA graphs), ``geomean_interval`` for α and β over
cases, and ``steady_host_allocator`` on a CPU so that glibc's malloc does not hand large buffers
back as fresh pages from one call to the next.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

QUANTILES = [0.5, 0.2, 0.8]
# Below this a forward call is dominated by launch gaps, so it is re-timed inside a CUDA graph.
LAUNCH_BOUND_MS = 0.05
CPU_BUDGET_S = 0.3  # per (case, provider, mode) on the CPU: enough runs for a median, bounded time
CPU_MIN_RUNS = 5

# 99%, not 95%: one `accelkernels bench` run compares dozens of rows, and at 95% a run of 40 rows of
# identical code would still show about two false "speedups" every time (at 99%: one in every
# two or three runs). A synthetic noisy clock checks the rate (tests/test_timing.py).
CONFIDENCE = 0.99
# A ratio's interval counts as tight when its half-width is at most this fraction of the ratio:
# tight enough that a 10% difference is never called "no difference" by a tight interval.
TIGHT_HALF_WIDTH = 0.05
MIN_ROUNDS = 16  # a 99% interval from 16 rounds drops the 2 extremes at each end (order statistics)
# Calls so slow that MIN_ROUNDS would overrun the budget (a naive SGEMM at 8192^3 takes ~1 s a call)
# stop at this many instead: the fewest rounds with a 99% interval at all ([min, max] of 8 rounds
# covers the median with probability 1 - 2/2^8 = 99.2%), so the row is wide rather than missing.
MIN_ROUNDS_FLOOR = 8
MAX_ROUNDS = 400
# One timed sample runs the call enough times to last this long, so the clock's resolution
# (1 ns here: CLOCK_MONOTONIC) and the per-sample overhead are negligible. Shorter than the
# scheduler's 4 ms quantum so that one preemption spoils few samples (it lands in one round's
# ratio, which the median then ignores).
CPU_SAMPLE_S = 0.002
PAIR_BUDGET_S = {"cpu": 1.0, "cuda": 2.0}


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
    return summary_ms(samples), "wall-clock"


def time_call(fn: Callable[[], object], device: str, graphable: bool) -> tuple[list[float], str]:
    return time_gpu(fn, graphable) if device == "cuda" else time_cpu(fn)


def summary_ms(samples: list[float]) -> list[float]:
    """[median, p20, p80] of per-call times in ms."""
    if len(samples) < 2:
        return [samples[0]] * 3
    q = statistics.quantiles(samples, n=10)
    return [statistics.median(samples), q[1], q[7]]


# --- paired ratios ---------------------------------------------------------------------------------


def _binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_interval_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted sample bounding the median with at least ``confidence``
    coverage for any continuous distribution: the largest k with P(Binom(n, 1/2) < k) <= (1-c)/2
    gives [x_(k), x_(n+1-k)] (1-based). None when n is too small for any interval at that level."""
    tail = (1 - confidence) / 2
    k = 0
    while _binomial_cdf(k, n) <= tail:
        k += 1
    if k == 0:
        return None
    return k - 1, n - k


class _Interval:
    """What a ratio with an interval says: shared by one row's ratio and a geometric mean of them."""

    ratio: float
    low: float
    high: float

    @property
    def tight(self) -> bool:
        return math.isfinite(self.low) and (self.high - self.low) / 2 <= TIGHT_HALF_WIDTH * self.ratio

    @property
    def verdict(self) -> str:
        """'faster', 'slower', or 'no difference' when the interval contains 1 (or is unknown)."""
        if not math.isfinite(self.low) or self.low <= 1.0 <= self.high:
            return "no difference"
        return "faster" if self.low > 1.0 else "slower"


@dataclass(frozen=True)
class RatioEstimate(_Interval):
    """T_reference / T_provider over paired rounds: above 1 the provider is faster."""

    ratio: float  # median of the per-round ratios
    low: float  # the confidence interval of that median (nan when too few rounds)
    high: float
    rounds: int
    confidence: float = CONFIDENCE


def ratio_interval(reference: list[float], provider: list[float], confidence: float = CONFIDENCE) -> RatioEstimate:
    """The median of per-round ratios reference[i] / provider[i], with its interval."""
    if len(reference) != len(provider) or not reference:
        raise ValueError(f"need equally many rounds of each, got {len(reference)} and {len(provider)}")
    ratios = sorted(r / p for r, p in zip(reference, provider))
    ranks = median_interval_ranks(len(ratios), confidence)
    low, high = (ratios[ranks[0]], ratios[ranks[1]]) if ranks else (math.nan, math.nan)
    return RatioEstimate(statistics.median(ratios), low, high, len(ratios), confidence)


@dataclass(frozen=True)
class PairedTiming:
    reference_ms: list[float]  # per-call time of each round
    provider_ms: list[float]
    estimate: RatioEstimate
    timer: str

    def latency(self, which: str) -> list[float]:
        """[median, p20, p80] in ms of 'reference' or 'provider'."""
        return summary_ms(self.reference_ms if which == "reference" else self.provider_ms)

    def round_ratios(self) -> list[float]:
        """T_reference / T_provider of each round, in round order (what the geomeans resample)."""
        return [r / p for r, p in zip(self.reference_ms, self.provider_ms)]


class WallClockTimer:
    """Times ``repeat`` back-to-back calls on the host clock (CPU tensors). ``clock`` returns
    nanoseconds; tests inject a synthetic one."""

    name = "wall-clock (paired)"

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns, sample_s: float = CPU_SAMPLE_S):
        self.clock, self.sample_s = clock, sample_s

    def repeats_for(self, fn: Callable[[], object]) -> int:
        """Calls per sample so one sample lasts about ``sample_s`` (one untimed warm-up call first)."""
        fn()
        start = self.clock()
        fn()
        one = max(self.clock() - start, 1) * 1e-9
        return max(1, min(1000, round(self.sample_s / one)))

    def sample_ms(self, fn: Callable[[], object], repeat: int) -> float:
        start = self.clock()
        for _ in range(repeat):
            fn()
        return (self.clock() - start) * 1e-6 / repeat


class CudaEventTimer:
    """One call per sample between CUDA events on the current stream, the L2 flushed first (what
    triton.testing.do_bench does), so neither side is timed with the other's operands in cache."""

    name = "cuda-events (paired)"

    def __init__(self):
        import torch

        self.torch = torch
        self.flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")  # > the 50-60 MB L2 of H100/H200

    def repeats_for(self, fn: Callable[[], object]) -> int:
        for _ in range(3):  # warm-up: Triton autotuning and compile-on-first-use happen here
            fn()
        self.torch.cuda.synchronize()
        return 1

    def sample_ms(self, fn: Callable[[], object], repeat: int) -> float:
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        self.flush.zero_()
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeat


_event_timer: CudaEventTimer | None = None


def cuda_event_timer() -> CudaEventTimer:
    """One per process: each holds a 256 MiB flush buffer."""
    global _event_timer
    if _event_timer is None:
        _event_timer = CudaEventTimer()
    return _event_timer


class CudaGraphTimer:
    """For launch-bound calls (under LAUNCH_BOUND_MS): each callable is captured in a CUDA graph of
    ``calls`` back-to-back calls, and one sample is one replay between events, so the host's launch
    and Python dispatch costs (several us per call, more than the kernel itself) are not timed: what
    triton.testing.do_bench_cudagraph does. No L2 flush: such calls' operands are small, and a
    model's small layers run with theirs in L2 too. Both sides of a pairing use the same timer."""

    name = "cuda-graph (paired)"
    TARGET_MS = 0.2  # one replay lasts about this long: event resolution (~0.5 us) is then < 0.3%

    def __init__(self):
        import torch

        self.torch = torch
        self.graphs: dict[int, tuple[object, int, Callable[[], object]]] = {}

    def repeats_for(self, fn: Callable[[], object]) -> int:
        torch = self.torch
        side = torch.cuda.Stream()  # warm-up off the capturing stream, as torch.cuda.graphs asks
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        one = cuda_event_timer()
        single = statistics.median(one.sample_ms(fn, 1) for _ in range(5))
        calls = max(1, min(100, round(self.TARGET_MS / max(single, 1e-4))))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        self.graphs[id(fn)] = (graph, calls, fn)  # fn kept alive so its id is not reused
        return 1

    def sample_ms(self, fn: Callable[[], object], repeat: int) -> float:
        graph, calls, _ = self.graphs[id(fn)]
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / (repeat * calls)


def timer_for(device: str, reference: Callable[[], object], graphable: bool):
    """The timer for one case and mode, shared by every provider's pairing with the reference: the
    wall clock on the CPU; CUDA events, or CUDA graphs when the reference's call is launch-bound
    (under LAUNCH_BOUND_MS) and graphable (forward calls: a backward keeps autograd state)."""
    if device != "cuda":
        return WallClockTimer()
    events = cuda_event_timer()
    if not graphable:
        return events
    events.repeats_for(reference)
    single = statistics.median(events.sample_ms(reference, 1) for _ in range(5))
    return CudaGraphTimer() if single < LAUNCH_BOUND_MS else events


def paired_or_events(reference: Callable[[], object], provider: Callable[[], object], device: str, timer,
                     **kw) -> PairedTiming:
    """``paired`` with ``timer``; if a CUDA graph cannot be captured (a host sync inside, say), the
    pairing is redone with CUDA events on both sides: the row's ``timer`` field says which ran."""
    try:
        return paired(reference, provider, device=device, timer=timer, **kw)
    except Exception:
        if not isinstance(timer, CudaGraphTimer):
            raise
        return paired(reference, provider, device=device, timer=cuda_event_timer(), **kw)


def solo(fn: Callable[[], object], *, device: str = "cpu", timer=None, budget_s: float | None = None,
         min_samples: int = MIN_ROUNDS, clock: Callable[[], int] = time.perf_counter_ns) -> list[float]:
    """Per-call times (ms) of ``fn`` alone, with the timer a pairing would use: for the reference
    when no other provider is timed against it (its row then has a latency but no ratio)."""
    timer = timer or (cuda_event_timer() if device == "cuda" else WallClockTimer(clock))
    budget_ns = (PAIR_BUDGET_S.get(device, 1.0) if budget_s is None else budget_s) * 1e9 / 2
    repeat = timer.repeats_for(fn)
    samples: list[float] = []
    started = clock()
    while len(samples) < MAX_ROUNDS and (len(samples) < min_samples or clock() - started < budget_ns):
        samples.append(timer.sample_ms(fn, repeat))
    return samples


def paired(reference: Callable[[], object], provider: Callable[[], object], *, device: str = "cpu",
           timer=None, budget_s: float | None = None, min_rounds: int = MIN_ROUNDS,
           max_rounds: int = MAX_ROUNDS, clock: Callable[[], int] = time.perf_counter_ns) -> PairedTiming:
    """Time both callables in alternating rounds until the ratio's interval is tight, ``max_rounds``
    is reached, or ``budget_s`` (host time, measured with ``clock``) is spent after ``min_rounds``.

    Round i runs the reference first when i is even and the provider first when i is odd, so a
    steady drift (throttling, another process starting) and any "second call is warmer" effect
    affect both sides equally over two rounds.
    """
    timer = timer or (cuda_event_timer() if device == "cuda" else WallClockTimer(clock))
    budget_ns = (PAIR_BUDGET_S.get(device, 1.0) if budget_s is None else budget_s) * 1e9
    repeat_ref, repeat_prov = timer.repeats_for(reference), timer.repeats_for(provider)
    ref_ms: list[float] = []
    prov_ms: list[float] = []
    started = clock()
    while len(ref_ms) < max_rounds:
        if len(ref_ms) % 2 == 0:
            ref_ms.append(timer.sample_ms(reference, repeat_ref))
            prov_ms.append(timer.sample_ms(provider, repeat_prov))
        else:
            prov_ms.append(timer.sample_ms(provider, repeat_prov))
            ref_ms.append(timer.sample_ms(reference, repeat_ref))
        n = len(ref_ms)
        if n % 2 or n < min(min_rounds, MIN_ROUNDS_FLOOR):  # whole ABBA pairs only
            continue
        spent = clock() - started
        if n >= min_rounds:
            if ratio_interval(ref_ms, prov_ms).tight or spent > budget_ns:
                break
        elif spent / n * min_rounds > 2 * budget_ns:  # MIN_ROUNDS would take over twice the budget
            break
    return PairedTiming(ref_ms, prov_ms, ratio_interval(ref_ms, prov_ms), timer.name)


def describe(estimate: RatioEstimate) -> str:
    """'1.23 [1.18-1.29]', with the verdict when there is no difference and a flag when wide."""
    text = f"{estimate.ratio:.3g} [{estimate.low:.3g}-{estimate.high:.3g}]"
    if estimate.verdict == "no difference":
        text += " no difference"
    if not estimate.tight:
        text += " (wide)"
    return text


# --- geometric means over cases --------------------------------------------------------------------

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same rows always give the same interval


@dataclass(frozen=True)
class GeomeanEstimate(_Interval):
    """The geometric mean over cases of each case's ratio (α, β), with its interval."""

    ratio: float
    low: float  # nan when some case has no per-round ratios (rows of the old format)
    high: float
    cases: int
    confidence: float = CONFIDENCE


def geomean_interval(per_case_rounds: list[list[float]], confidence: float = CONFIDENCE,
                     replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> GeomeanEstimate:
    """Geomean over cases of the median of each case's per-round ratios, with a seeded bootstrap
    percentile interval: each replicate resamples every case's rounds (with replacement), takes the
    medians and their geomean. The cases are held fixed (they are the suite, not a sample of
    shapes): the interval is the measurement's uncertainty, not the variety of shapes. A case with
    no rounds ([]) makes the point estimate unknown; a case with one round (an old row's single
    ``speedup``) makes the interval unknown, as there is nothing to resample."""
    import torch

    if not per_case_rounds or any(not r for r in per_case_rounds):
        return GeomeanEstimate(math.nan, math.nan, math.nan, len(per_case_rounds), confidence)
    point = math.exp(sum(math.log(statistics.median(r)) for r in per_case_rounds) / len(per_case_rounds))
    if any(len(r) < 2 for r in per_case_rounds):
        return GeomeanEstimate(point, math.nan, math.nan, len(per_case_rounds), confidence)
    gen = torch.Generator().manual_seed(seed)
    log_sum = torch.zeros(replicates, dtype=torch.float64)
    for rounds in per_case_rounds:
        logs = torch.tensor(rounds, dtype=torch.float64).log()
        picks = torch.randint(len(rounds), (replicates, len(rounds)), generator=gen)
        log_sum += logs[picks].quantile(0.5, dim=1)  # the median as statistics.median takes it
    means = (log_sum / len(per_case_rounds)).exp()
    tail = (1 - confidence) / 2
    low, high = means.quantile(torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return GeomeanEstimate(point, low, high, len(per_case_rounds), confidence)


# --- the host allocator ------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's malloc.h
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


@contextmanager
def steady_host_allocator() -> Iterator[bool]:
    """Within the block, glibc's malloc keeps freed memory mapped (no mmap for large blocks, no
    trimming of the heap's top): the host's counterpart of the CUDA caching allocator, which
    already keeps GPU memory between calls. Without it, whether a call's large buffers (a 32x64x56x56
    fp32 output is 25.7 MB) came back as fresh pages depended on the heap's history: the same
    forward took 5 ms in one run and 25 ms in the next, and a forward came out slower than its
    forward+backward (five quick runs at 2d2a000, 2026-12-02, issue 16). Measured on the 2-core VM with getrusage: a 1x1 conv
    forward of that size paid 6,900-18,000 minor page faults per call by default and 0-300 inside
    this block, and ran 1.4-2x faster. Yields whether the setting took (glibc only); on leaving,
    glibc's documented defaults are set back (the process's adaptive threshold is not restored)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to pin
        yield False
        return
    took = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    try:
        yield took
    finally:
        for option, value in _GLIBC_DEFAULTS.items():
            mallopt(option, value)
