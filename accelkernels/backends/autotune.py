"""Measured choice on first use: what ``backend="auto"`` runs for a problem it has not seen.

The first eager call with a new problem key — op, pass (fwd / dgrad / wgrad), dtype, memory layout,
activation, the layer's fixed sizes and a power-of-two bucket of the size that varies (rows, pixels),
on one device — times every backend that can serve it, the reference (cuBLAS/cuDNN, ATen) always
among them, and remembers the winner. The idea is ``torch.backends.cudnn.benchmark``'s, across
backends. The rules, in the order they apply:

- A decision on record is used: this process's, else the card's table on disk
  (tuning_table.py; `accelkernels tune` writes the same entries). Later calls with the key cost the
  key and one dictionary lookup.
- A dtype no kernel takes: the reference, remembered (the key holds the dtype).
- Timing is not possible now — ``ACCELKERNELS_AUTOTUNE=0``, torch.compile tracing, fake or other
  tensor subclasses, a torch.func transform, torch.jit tracing, an active TorchDispatchMode or
  TorchFunctionMode (FlopCounterMode, checkpointing), CUDA graph capture, or a call made while
  another key is being timed — the built-in order, i.e. the reference, not remembered (a later
  eager call times it), except with ``ACCELKERNELS_AUTOTUNE=0`` (remembered for the process).
- No kernel takes this call (the CPU without an emulator, a misaligned view): the reference, not
  remembered (whether a kernel takes a call also depends on what the key leaves out).
- Otherwise: each candidate runs once to warm up (Triton compiles and autotunes there), once more
  for an estimate (one taking over ``DROP_FACTOR`` x the reference's time is dropped: the CPU
  executor and Triton's interpreter stop here), then ``ROUNDS`` interleaved rounds in rotating order,
  each sample ``SAMPLE_MS`` or more. A candidate's ratio is the median over rounds of
  reference time / its time; it replaces the reference only at ``1 + MARGIN`` or more. The
  candidates run through the registered op with their name (its dispatch cost is theirs to pay);
  the reference runs as torch's own op, the cheapest path a call of it can take — so any doubt
  about the path favours cuBLAS/cuDNN.

Timing runs under no_grad on the user's tensors, read only; its outputs are dropped; the RNG states
of the CPU and of the device are restored (numbers another thread draws meanwhile are drawn again);
one lock serialises it (two threads asking for one key time it once, and timings never overlap). A
candidate that raises, at any call, is left out with one warning, and that decision is not written
to disk; the reference raising ends the timing undecided. On CUDA tensors the clock is CUDA events
on the current stream, idle before each sample; on the CPU ``perf_counter_ns``; tests replace
``stopwatch_for``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .. import _env
from . import tuning_table

log = logging.getLogger("accelkernels.autotune")

KERNEL_BACKENDS = ("cuda", "triton")  # the candidates besides the reference, in the order they are timed
# The constants below are the design's, not tuned on a card (no GPU has run this yet): a 3% margin is
# about the run-to-run spread of one kernel's CUDA-event timings at these sample lengths (PERFORMANCE.md's
# method quotes 1-3%), so a smaller "win" is as likely noise as speed.
MARGIN = 0.03
ROUNDS = 7  # odd: the median is a sample
MIN_ROUNDS = 3  # what is left when the budget is short
SAMPLE_MS = 0.5  # each sample repeats the call until this long (launch overhead and event resolution vanish)
MAX_REPS = 100
BUDGET_MS = 250.0  # the timed rounds of one key, all candidates together (the warm-up calls are extra)
DROP_FACTOR = 10.0  # a candidate whose estimate is this much slower than the reference is not worth rounds


# --- problem keys ------------------------------------------------------------------------------------


def _bucket(x: int) -> int:
    """Power-of-two bucket (nearest exponent): 0.71·2^b <= x < 1.41·2^b share a decision."""
    return round(math.log2(x)) if x > 0 else -1


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _image_layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "c"
    return "cl" if t.is_contiguous(memory_format=torch.channels_last) else "s"


def _matrix_layout(t: torch.Tensor) -> str:
    """r: rows contiguous, t: transposed (columns contiguous), s: other strides, v: a vector."""
    if t.dim() < 2:
        return "v"
    stride, size = t.stride(), t.shape
    if stride[-1] == 1 and (stride[-2] == size[-1] or size[-2] <= 1):
        return "r"
    if stride[-2] == 1 and (stride[-1] == size[-2] or size[-1] <= 1):
        return "t"
    return "s"


def _fp32_math(t: torch.Tensor, op: str) -> str:
    """float32 keys also name whether torch may use TF32 for the op (which changes how fast the
    reference is, and so the decision); other dtypes have nothing to name."""
    if t.dtype != torch.float32:
        return ""
    allowed = torch.backends.cudnn.allow_tf32 if op == "conv2d" else torch.backends.cuda.matmul.allow_tf32
    return "|tf32" if allowed else "|ieee"


def conv2d_key(pass_: str, input: torch.Tensor, weight: torch.Tensor, has_bias: bool, stride, padding, dilation,
               groups: int, activation: str) -> str:
    """Key of a convolution pass, from the forward's input and weight (shapes, dtype, layouts)."""
    n, c, h, w = input.shape
    k, _, r, s = weight.shape
    p = (h + 2 * padding[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + 2 * padding[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return (f"conv2d|{pass_}|{_dtype(input)}|{_image_layout(input)}.{_image_layout(weight)}|{activation}"
            f"|c{c}|k{k}|{r}x{s}|s{stride[0]}x{stride[1]}|p{padding[0]}x{padding[1]}|d{dilation[0]}x{dilation[1]}"
            f"|g{groups}|{'bias' if has_bias else 'nobias'}|m{_bucket(n * p * q)}{_fp32_math(input, 'conv2d')}")


def linear_key(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str) -> str:
    """Key of linear: the layer's features exact, the rows (tokens, batch) bucketed."""
    rows = input.numel() // input.shape[-1] if input.shape[-1] else math.prod(input.shape[:-1])
    out_features = weight.shape[0] if weight.dim() == 2 else 1
    bias_kind = "nobias" if bias is None else "bias" if bias.dim() == 1 and bias.shape[0] == out_features else "bcast"
    return (f"linear|fwd|{_dtype(input)}|{_matrix_layout(input)}.{_matrix_layout(weight)}|{activation}"
            f"|n{out_features}|k{input.shape[-1]}|{bias_kind}|m{_bucket(rows)}{_fp32_math(input, 'linear')}")


def matmul_key(a: torch.Tensor, b: torch.Tensor) -> str:
    """Key of matmul: K exact (a head or feature size, which the kernels' alignment rules read), the
    rows, columns and batch bucketed (attention-like products vary in those)."""
    m = a.shape[-2] if a.dim() >= 2 else 1
    n = b.shape[-1] if b.dim() >= 2 else 1
    batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) if a.dim() > 2 or b.dim() > 2 else 1
    return (f"matmul|fwd|{_dtype(a)}|{_matrix_layout(a)}.{_matrix_layout(b)}|none"
            f"|k{a.shape[-1]}|m{_bucket(m)}|n{_bucket(n)}|b{_bucket(batch)}{_fp32_math(a, 'matmul')}")


class Problem:
    """A call ``auto`` may time: its key (computed when first needed) and how to run it on a backend.

    ``run(name)`` does the work the call would do on backend ``name``, by the path that call would take
    (the registered op with the backend named, so its dispatch cost and copies are timed too); None for a
    lookup that must never time (the backward asking which backend served its forward)."""

    __slots__ = ("_make_key", "_key", "run")

    def __init__(self, make_key: Callable[[], str], run: Callable[[object], object] | None):
        self._make_key, self._key, self.run = make_key, None, run

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self._make_key()
        return self._key


# --- decisions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    backend: str
    by: str  # "first use", "tune", or why nothing was timed
    ratios: dict[str, float | None] = field(default_factory=dict)  # reference time / candidate time
    reference_ms: float | None = None
    notes: dict[str, str] = field(default_factory=dict)  # candidate -> why it has no ratio

    def entry(self) -> dict:
        out = {"backend": self.backend, "by": self.by, "ratios": self.ratios, "reference_ms": self.reference_ms}
        return {**out, "notes": self.notes} if self.notes else out

    @classmethod
    def from_entry(cls, entry: dict) -> Decision:
        return cls(entry["backend"], entry.get("by", "tune"), dict(entry.get("ratios", {})),
                   entry.get("reference_ms"), dict(entry.get("notes", {})))

    def describe(self) -> str:
        parts = []
        for name, r in self.ratios.items():
            note = self.notes.get(name, "no ratio")
            if r is None:
                parts.append(f"{name} ({note})")
            else:
                parts.append(f"{name} x{r:.3g}" + (" from one call, dropped" if note.startswith(DROPPED) else ""))
        ref = f"torch {self.reference_ms:.4g} ms" if self.reference_ms is not None else "torch"
        return f"{self.backend} ({self.by}; {ref}" + (f"; {', '.join(parts)})" if parts else ")")


_lock = threading.RLock()
_decisions: dict[tuple[str, str], Decision] = {}  # (device, key) -> decision, this process
_tables: dict[str, dict[str, dict]] = {}  # device -> entries read from its table on disk ({}: none)
_timing = threading.local()  # .active: this thread is timing a key now
_warned: set[tuple] = set()
DROPPED, FAILED = "dropped", "failed"  # how a candidate's note begins: too slow to time, or it raised


def device_slot(device: torch.device) -> str:
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}" \
        if device.type == "cuda" else device.type


def table_location(slot: str) -> tuple | None:
    """(path, card key) of the table that holds this device's decisions; None: kept in memory only.
    CUDA devices have one per card and versions; CPU decisions (emulator or interpreter against
    ATen) are never worth keeping. Tests replace this to give the CPU a table."""
    if not slot.startswith("cuda"):
        return None
    key = tuning_table.card_key(int(slot.split(":")[1]))
    return tuning_table.table_path(key), key


def _recorded(slot: str, key: str) -> Decision | None:
    if slot not in _tables:
        with _lock:
            if slot not in _tables:
                _tables[slot] = {}  # first: a warning raised as an error must not make the next call read again
                where = table_location(slot)
                _tables[slot] = (tuning_table.load(*where) or {}) if where else {}
    entry = _tables[slot].get(key)
    return None if entry is None else Decision.from_entry(entry)


def _remember(slot: str, key: str, decision: Decision, persist: bool) -> Decision:
    _decisions[(slot, key)] = decision
    # A candidate that failed (out of memory, say) may not fail next time: such a decision lasts this process only.
    persist = persist and not any(note.startswith(FAILED) for note in decision.notes.values())
    if persist and (where := table_location(slot)) is not None:
        _tables.setdefault(slot, {})[key] = decision.entry()
        try:
            tuning_table.add(*where, {key: decision.entry()})
        except OSError as exc:
            _warn_once((slot, "<table>"), f"accelkernels: could not write the tuning table {where[0]} ({exc}); "
                                          "decisions stay in this process")
    return decision


def decisions() -> dict[tuple[str, str], Decision]:
    """This process's decisions so far (a copy): (device, key) -> Decision."""
    with _lock:
        return dict(_decisions)


def forget() -> None:
    """Drop every decision and table read so far (after `tune` writes a table, and in tests)."""
    with _lock:
        _decisions.clear()
        _tables.clear()
        _warned.clear()


def _warn_once(what: tuple, message: str) -> None:
    if what not in _warned:
        _warned.add(what)
        warnings.warn(message, RuntimeWarning, stacklevel=2)


# --- when timing is not possible -----------------------------------------------------------------------

_PLAIN = (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer) if hasattr(torch.nn, "Buffer") else \
    (torch.Tensor, torch.nn.Parameter)


def capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on this device's current stream (tests replace this)."""
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_current_stream_capturing()


def why_no_timing(problem: Problem, tensors: Sequence[torch.Tensor | None]) -> str | None:
    """Why this call must not time anything now, or None."""
    if problem.run is None:
        return "a lookup"
    if getattr(_timing, "active", False):
        return "another key is being timed"
    if torch.compiler.is_compiling():
        return "torch.compile is tracing"
    if torch.jit.is_tracing():
        return "torch.jit is tracing"
    functorch = getattr(torch._C, "_functorch", None)
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _PLAIN:
            return f"a {type(t).__name__} (tensor subclass)"
        if t.device.type == "meta":
            return "meta tensors"
        if functorch is not None and functorch.is_functorch_wrapped_tensor(t):
            return "inside a torch.func transform"
    if torch._C._len_torch_dispatch_stack() > 0 or torch._C._is_torch_function_mode_enabled():
        # FlopCounterMode, activation checkpointing, debug and memory modes: they would see (and count,
        # or keep) every timing call as if the user had made it.
        return "a TorchDispatchMode or TorchFunctionMode is active"
    if capturing(tensors[0].device):
        return "a CUDA graph is being captured"
    if not _env.flag("ACCELKERNELS_AUTOTUNE"):
        return "ACCELKERNELS_AUTOTUNE=0"
    return None


# --- the clock -------------------------------------------------------------------------------------------

Stopwatch = Callable[[Callable[[], object], int], float]  # (fn, reps) -> milliseconds per call


def _cuda_stopwatch(device: torch.device) -> Stopwatch:
    def measure(fn, reps):
        stream = torch.cuda.current_stream(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        # An idle stream first: with work queued ahead, the host would issue every call before the GPU
        # reached `start`, and the events would measure GPU time only, hiding the host's cost of each
        # call (the op dispatch a kernel pays and the reference does not). From idle, the events see
        # whichever is slower, the host issuing the calls or the GPU running them.
        stream.synchronize()
        start.record(stream)
        for _ in range(reps):
            fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / reps

    return measure


def _cpu_stopwatch(fn, reps):
    start = time.perf_counter_ns()
    for _ in range(reps):
        fn()
    return (time.perf_counter_ns() - start) / 1e6 / reps


def stopwatch_for(device: torch.device) -> Stopwatch:
    """CUDA events on the current stream for CUDA tensors, ``perf_counter_ns`` otherwise (tests replace this)."""
    return _cuda_stopwatch(device) if device.type == "cuda" else _cpu_stopwatch


@contextlib.contextmanager
def _untouched_rng(device: torch.device) -> Iterator[None]:
    cpu_state = torch.get_rng_state()
    device_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if device_state is not None:
            torch.cuda.set_rng_state(device_state, device)


# --- timing one key -----------------------------------------------------------------------------------------


class ReferenceFailed(Exception):
    """The reference raised while being timed: nothing is decided (the user's own call will say why)."""


def measure(problem: Problem, candidates: Sequence[str], stopwatch: Stopwatch) -> Decision:
    """Time the reference and ``candidates`` (backend names) on the problem; the decision by the margin rule.

    A candidate that raises, in any call, is left out (its note says why); the reference raising
    raises ReferenceFailed."""
    names = ["torch", *candidates]
    calls = {name: (lambda n=name: problem.run(n)) for name in names}
    notes: dict[str, str] = {}

    def timed(name: str, reps: int) -> float | None:
        try:
            return stopwatch(calls[name], reps)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is left out, the reference never is
            if name == "torch":
                raise ReferenceFailed from exc
            text = str(exc).splitlines()[0] if str(exc) else ""
            notes[name] = f"{FAILED}: {type(exc).__name__}: {text}"[:200]
            return None

    estimate: dict[str, float] = {}
    for name in names:
        first = timed(name, 1)  # warm-up: compiles, autotunes, builds; never used
        second = timed(name, 1) if first is not None else None
        if second is None:
            continue
        estimate[name] = max(second, 1e-6)
        if name != "torch" and estimate[name] > DROP_FACTOR * estimate["torch"]:
            notes[name] = f"{DROPPED} after its estimate ({estimate[name] / estimate['torch']:.3g}x the reference's time)"
    # Candidates dropped after one call keep that call's ratio (with the note); failed ones have none.
    ratios: dict[str, float | None] = {n: (estimate["torch"] / estimate[n] if n in estimate and n in notes else None)
                                       for n in candidates}
    live = [n for n in names if n in estimate and n not in notes]
    samples: dict[str, list[float]] = {n: [] for n in live}
    if len(live) > 1:
        reps = {n: max(1, min(MAX_REPS, math.ceil(SAMPLE_MS / estimate[n]))) for n in live}
        per_round = sum(reps[n] * estimate[n] for n in live)
        rounds = max(MIN_ROUNDS, min(ROUNDS, int(BUDGET_MS // per_round)))
        for r in range(rounds):
            for i in range(len(live)):  # rotating order: no candidate always follows the same one
                n = live[(i + r) % len(live)]
                if n in notes:  # failed in an earlier round
                    continue
                t = timed(n, reps[n])
                if t is not None:
                    samples[n].append(t)
        for n in live[1:]:
            if n not in notes:
                ratios[n] = statistics.median(ref / max(t, 1e-9) for ref, t in zip(samples["torch"], samples[n]))
    reference_ms = statistics.median(samples["torch"]) if samples["torch"] else estimate["torch"]
    contenders = [n for n in live[1:] if n not in notes and ratios[n] >= 1 + MARGIN]
    winner = max(contenders, key=lambda n: ratios[n]) if contenders else "torch"
    return Decision(winner, "first use", {n: (round(v, 4) if v is not None else None) for n, v in ratios.items()},
                    round(reference_ms, 6), notes)


KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what any kernel backend takes (cuda, triton)


def choose(op: str, problem: Problem, tensors: Sequence[torch.Tensor | None], backends: Mapping[str, object],
           fallback: Callable[[], str], details: dict) -> str:
    """The backend name ``auto`` runs for this call (see the module docstring for the rules)."""
    slot = device_slot(tensors[0].device)
    key = problem.key
    decision = _decisions.get((slot, key))
    if decision is None:
        decision = _decide(op, problem, tensors, backends, fallback, details, slot, key)
        if decision is None:  # nothing on record and no timing now
            return fallback()
    name = decision.backend
    if name != "torch" and backends[name].why_not(op, tensors, **details) is not None:
        return "torch"  # the key's decision, but this call has something its backend cannot take
    return name


def _decide(op, problem, tensors, backends, fallback, details, slot, key) -> Decision | None:
    """A decision for a key this process has not decided, or None (nothing on record, no timing now)."""
    recorded = _recorded(slot, key)
    if recorded is not None:
        return _remember(slot, key, recorded, persist=False)
    if tensors[0].dtype not in KERNEL_DTYPES:  # the key holds the dtype: no kernel will ever take it
        return _remember(slot, key, Decision("torch", "only the reference serves this dtype"), persist=False)
    why = why_no_timing(problem, tensors)
    if why == "ACCELKERNELS_AUTOTUNE=0":
        return _remember(slot, key, Decision(fallback(), f"not timed: {why}"), persist=False)
    if why is not None:
        log.debug("%s on %s: not timed now (%s)", key, slot, why)
        return None
    # Which kernels take this call: checked per call, outside the lock (whether a kernel takes a call also
    # depends on what the key leaves out, a view's alignment, so "none" is not remembered).
    candidates = [n for n in KERNEL_BACKENDS if n in backends and backends[n].why_not(op, tensors, **details) is None]
    if not candidates:
        return Decision("torch", "only the reference serves")
    with _lock:
        decision = _decisions.get((slot, key))
        if decision is not None:  # another thread decided while this one waited
            return decision
        device = tensors[0].device
        started = time.perf_counter()
        _timing.active = True
        not_recorded = recording.set(None)  # the timing calls are not what the user's call ran
        try:
            with torch.no_grad(), _untouched_rng(device), \
                    (torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()):
                decision = measure(problem, candidates, stopwatch_for(device))
        except ReferenceFailed as exc:
            log.debug("%s on %s: the reference raised while timed (%s); not decided", key, slot, exc.__cause__)
            return None
        finally:
            _timing.active = False
            recording.reset(not_recorded)
        for name, note in decision.notes.items():
            if note.startswith(FAILED):
                _warn_once((slot, key, name), f"accelkernels: backend {name!r} {note} while timing {key}; "
                                              "backend='auto' uses the others for it")
        log.debug("%s on %s -> %s, timed in %.0f ms", key, slot, decision.describe(), 1e3 * (time.perf_counter() - started))
        return _remember(slot, key, decision, persist=True)


# --- what ran ---------------------------------------------------------------------------------------------

recording: contextvars.ContextVar[list | None] = contextvars.ContextVar("accelkernels_recording", default=None)


@contextlib.contextmanager
def record_choices() -> Iterator[list[tuple[str, str]]]:
    """Within the block, each call's (op, backend name) is appended to the yielded list, once per pass
    that runs (a forward; with a kernel forward, each gradient pass): what ran, for the examples and the
    benchmark, rather than a guess of what ``auto`` would pick. Timing calls are not recorded."""
    seen: list[tuple[str, str]] = []
    token = recording.set(seen)
    try:
        yield seen
    finally:
        recording.reset(token)


def ran(op: str, name: str) -> None:
    """Where work runs (the eager shortcut, each op's implementation): note it for record_choices."""
    seen = recording.get()
    if seen is not None:
        seen.append((op, name))
