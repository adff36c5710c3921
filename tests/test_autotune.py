"""backend="auto" measures on first use (accelkernels/backends/autotune.py), on the CPU.

Stand-in backends take the places of "cuda" and "triton" (and wrap the reference): each computes
torch's answer and advances a fake clock by the time it is told to take, which the injected
stopwatch reads in place of CUDA events. So the rules are tested exactly — the winner, the margin,
the reference kept, one timing per key, the table on disk, the paths that must not time, threads,
inputs and RNG — and the end-to-end test at the bottom runs the real CPU executor on real clocks.
"""

from __future__ import annotations

import importlib
import json
import random
import threading
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

import accelkernels as ak
from accelkernels import backends
from accelkernels.backends import autotune, torch_backend, tuning_table
from accelkernels.backends.torch_backend import TorchBackend

# The modules (accelkernels.ops.matmul the attribute is the function of that name).
linear_problem = importlib.import_module("accelkernels.ops.linear").linear_problem
matmul_problem = importlib.import_module("accelkernels.ops.matmul").matmul_problem

CARD = {"device": "Stand-in GPU", "capability": "9.0", "torch": "t", "triton": "tr", "accelkernels": "a"}


class FakeClock:
    def __init__(self, jitter: float = 0.0, seed: int = 0):
        self.ms = 0.0
        self.jitter = jitter
        self.rng = random.Random(seed)

    def spend(self, ms: float) -> None:
        self.ms += ms * (1 + self.rng.uniform(-self.jitter, self.jitter))

    def stopwatch(self, fn, reps):
        start = self.ms
        for _ in range(reps):
            fn()
        return (self.ms - start) / reps


_REFERENCE = {name: getattr(torch_backend, name) for name in ("conv2d", "conv2d_backward", "matmul", "linear")}


class Timed:
    """Spends a cost (ms per call, or per pass) on the fake clock; counts calls and what it was given."""

    def __init__(self, name: str, clock: FakeClock, cost: float | dict):
        self.name, self.clock, self.cost = name, clock, cost
        self.fail, self.draw_random = False, False
        self.calls: list[str] = []
        self.tensor_types: set[type] = set()

    def _spend(self, pass_: str, tensors) -> None:
        self.calls.append(pass_)
        self.tensor_types.update(type(t) for t in tensors if t is not None)
        if self.fail:
            raise RuntimeError("stand-in kernel failure")
        if self.draw_random:
            torch.rand(3)  # a kernel that consumed RNG state would change the user's stream
        self.clock.spend(self.cost[pass_] if isinstance(self.cost, dict) else self.cost)


class StandIn(Timed, TorchBackend):
    """A kernel backend in place of "cuda" or "triton": torch's answers, at the cost it is given."""

    def why_not(self, op, tensors, **details):
        return None

    def conv2d(self, input, weight, bias, *args):
        self._spend("fwd", (input, weight, bias))
        return _REFERENCE["conv2d"](input, weight, bias, *args)

    def conv2d_input_grad(self, grad_output, input, weight, *args):
        self._spend("dgrad", (grad_output, weight))
        return _REFERENCE["conv2d_backward"](grad_output, input, weight, *args, [True, False, False])[0]

    def conv2d_weight_grad(self, grad_output, input, weight, *args):
        self._spend("wgrad", (grad_output, input))
        return _REFERENCE["conv2d_backward"](grad_output, input, weight, *args, [False, True, False])[1]

    def matmul(self, a, b):
        self._spend("fwd", (a, b))
        return _REFERENCE["matmul"](a, b)

    def linear(self, input, weight, bias, activation):
        self._spend("fwd", (input, weight, bias))
        return _REFERENCE["linear"](input, weight, bias, activation)


def timed_reference(monkeypatch, reference: Timed) -> None:
    """The reference's functions (which the eager shortcut and the torch backend both call) spend its cost."""

    def conv2d(input, weight, bias, *args):
        reference._spend("fwd", (input, weight, bias))
        return _REFERENCE["conv2d"](input, weight, bias, *args)

    def conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, mask):
        reference._spend("dgrad" if mask[0] else "wgrad", (grad_output, input, weight))
        return _REFERENCE["conv2d_backward"](grad_output, input, weight, stride, padding, dilation, groups, mask)

    def matmul(a, b):
        reference._spend("fwd", (a, b))
        return _REFERENCE["matmul"](a, b)

    def linear(input, weight, bias, activation="none"):
        reference._spend("fwd", (input, weight, bias))
        return _REFERENCE["linear"](input, weight, bias, activation)

    for fn in (conv2d, conv2d_backward, matmul, linear):
        monkeypatch.setattr(torch_backend, fn.__name__, fn)


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """-> (clock, {"torch": ..., "cuda": ..., "triton": ...}); set costs with ``set_costs``."""
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "1")
    monkeypatch.setenv("ACCELKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    clock = FakeClock()
    made = {"torch": Timed("torch", clock, 1.0), **{name: StandIn(name, clock, 1.0) for name in ("cuda", "triton")}}
    timed_reference(monkeypatch, made["torch"])
    for name in ("cuda", "triton"):
        monkeypatch.setitem(backends.BACKENDS, name, made[name])
    monkeypatch.setattr(backends, "_kernels_possible_on_cpu", lambda: True)
    monkeypatch.setattr(autotune, "stopwatch_for", lambda device: clock.stopwatch)
    autotune.forget()
    yield clock, made
    autotune.forget()


def set_costs(made, **costs):
    for name, cost in costs.items():
        made[name].cost = cost


def decision(key_part: str) -> autotune.Decision:
    found = [d for (slot, key), d in autotune.decisions().items() if key_part in key]
    assert len(found) == 1, (key_part, autotune.decisions())
    return found[0]


def conv_inputs(channels=8, size=6, batch=2):
    x = torch.randn(batch, channels, size, size)
    w = torch.randn(16, channels, 3, 3)
    return x, w, torch.randn(16)


# --- the rules ------------------------------------------------------------------------------------------


def test_the_fastest_backend_wins_and_gives_torchs_answer(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=0.8)
    x, w, b = conv_inputs()
    out = ak.conv2d(x, w, b, padding=1, activation="relu")
    torch.testing.assert_close(out, F.relu(F.conv2d(x, w, b, padding=1)), rtol=0, atol=0)
    d = decision("conv2d|fwd")
    assert d.backend == "cuda" and d.by == "first use"
    assert d.ratios == {"cuda": pytest.approx(2.0, rel=1e-3), "triton": pytest.approx(1.25, rel=1e-3)}
    assert d.reference_ms == pytest.approx(1.0, rel=1e-3)
    assert made["cuda"].calls[-1] == "fwd"  # the user's call ran on the winner


@pytest.mark.parametrize("cuda_cost,winner", [(1 / 1.02, "torch"), (1 / 1.04, "cuda")])
def test_a_winner_must_beat_the_reference_by_the_margin(stand_ins, cuda_cost, winner):
    assert autotune.MARGIN == 0.03  # the rule the README states
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=cuda_cost, triton=2.0)
    ak.matmul(torch.randn(32, 16), torch.randn(16, 24))
    assert decision("matmul|fwd").backend == winner


def test_the_reference_stays_when_nothing_beats_it_and_a_far_slower_one_is_dropped_early(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=1.5, triton=50.0)
    ak.linear(torch.randn(8, 16), torch.randn(4, 16))
    d = decision("linear|fwd")
    assert d.backend == "torch"
    assert d.ratios["cuda"] == pytest.approx(1 / 1.5, rel=1e-3)
    assert "dropped" in d.notes["triton"] and d.ratios["triton"] == pytest.approx(1 / 50, rel=1e-3)
    assert made["triton"].calls == ["fwd", "fwd"]  # the warm-up and the estimate, no rounds
    assert len(made["cuda"].calls) > 2  # cuda was close enough to be timed in rounds


def test_the_median_of_interleaved_rounds_sees_through_jitter(stand_ins):
    clock, made = stand_ins
    clock.jitter = 0.1  # each call takes ±10% of its cost (a noisy GPU: PERFORMANCE.md sees 1-3%)
    set_costs(made, torch=1.0, cuda=0.8, triton=1.0)
    for seed in range(20):
        clock.rng.seed(seed)
        autotune.forget()
        ak.matmul(torch.randn(32, 16), torch.randn(16, 24))
        assert decision("matmul|fwd").backend == "cuda", seed  # 1.25x faster: always found


def test_one_timing_per_key_then_a_lookup(stand_ins, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=50.0)
    timings = []
    real = autotune.measure
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: timings.append(1) or real(*a, **k))
    a, b = torch.randn(100, 16), torch.randn(16, 24)
    for _ in range(5):
        ak.matmul(a, b)
    ak.matmul(torch.randn(120, 16), b)  # 100 and 120 rows share a bucket (2^7)
    assert timings == [1]
    assert len(made["triton"].calls) == 2  # only while timing: warm-up and estimate
    ak.matmul(torch.randn(16, 16), b)  # another bucket: timed
    ak.matmul(a, torch.randn(16, 24, dtype=torch.float64).float().t().contiguous().t())  # another layout: timed
    assert len(timings) == 3


def test_explicit_backends_never_time(stand_ins, monkeypatch):
    clock, made = stand_ins
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: pytest.fail("an explicit backend was timed"))
    x, w, b = conv_inputs()
    ak.conv2d(x, w, b, padding=1, backend="triton")
    with backends.use_backend("cuda"):
        ak.matmul(torch.randn(4, 4), torch.randn(4, 4))
    assert made["triton"].calls == ["fwd"] and made["cuda"].calls == ["fwd"]
    assert autotune.decisions() == {}


def test_each_pass_of_the_backward_is_its_own_decision(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch={"fwd": 1.0, "dgrad": 1.0, "wgrad": 1.0},
              cuda={"fwd": 0.5, "dgrad": 2.0, "wgrad": 0.5}, triton={"fwd": 3.0, "dgrad": 3.0, "wgrad": 0.8})
    x, w, b = (t.requires_grad_() for t in conv_inputs())
    out = ak.conv2d(x, w, b, padding=1)
    grad = torch.randn_like(out)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), grad)
    assert decision("conv2d|fwd").backend == "cuda"
    assert decision("conv2d|dgrad").backend == "torch"
    assert decision("conv2d|wgrad").backend == "cuda"
    x2, w2, b2 = (t.detach().requires_grad_() for t in (x, w, b))
    expected = torch.autograd.grad(F.conv2d(x2, w2, b2, padding=1), (x2, w2, b2), grad)
    for ours, theirs in zip((gx, gw, gb), expected):
        torch.testing.assert_close(ours, theirs)


def test_inputs_and_rng_are_untouched_by_the_timing(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=1.2, triton=1.1)  # the reference wins: the user's call draws nothing
    for backend in made.values():
        backend.draw_random = True  # every timed call consumes RNG state
    made["torch"].draw_random = False
    x, w, b = conv_inputs()
    copies, versions = [t.clone() for t in (x, w, b)], [t._version for t in (x, w, b)]
    state = torch.get_rng_state()
    ak.conv2d(x, w, b, padding=1)
    assert len(made["cuda"].calls) > 2  # it was timed, drawing random numbers each call
    assert torch.equal(torch.get_rng_state(), state)
    for t, c, v in zip((x, w, b), copies, versions):
        assert torch.equal(t, c) and t._version == v


def test_a_failing_candidate_is_left_out_with_one_warning(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=0.9)
    made["cuda"].fail = True
    with pytest.warns(RuntimeWarning, match="'cuda' failed: RuntimeError: stand-in kernel failure"):
        out = ak.matmul(torch.randn(8, 8), torch.randn(8, 8))
    d = decision("matmul|fwd")
    assert d.backend == "triton" and d.ratios["cuda"] is None and d.ratios["triton"] == pytest.approx(1 / 0.9, rel=1e-3)
    assert out.shape == (8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ak.matmul(torch.randn(8, 8), torch.randn(8, 8))  # decided: no second warning, no second timing


def test_a_decision_is_taken_only_where_its_backend_can_serve_the_call(stand_ins, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    a, b = torch.randn(64, 16), torch.randn(16, 64)
    ak.matmul(a, b)
    assert decision("matmul|fwd").backend == "cuda"
    monkeypatch.setattr(made["cuda"], "why_not", lambda op, tensors, **d: "misaligned (stand-in)")
    calls = len(made["cuda"].calls)
    torch.testing.assert_close(ak.matmul(a, b), a @ b)
    assert len(made["cuda"].calls) == calls  # the reference ran


# --- the table on disk -----------------------------------------------------------------------------------


@pytest.fixture
def cpu_table(monkeypatch, tmp_path):
    """Give the CPU a card table (real CUDA devices have one; the CPU keeps decisions in memory)."""
    path = tmp_path / "table.json"
    monkeypatch.setattr(autotune, "table_location", lambda slot: (path, CARD))
    return path


def test_decisions_persist_and_the_next_process_reuses_them(stand_ins, cpu_table, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    x, w, b = conv_inputs()
    ak.conv2d(x, w, b, padding=1)
    table = json.loads(cpu_table.read_text())
    assert table["format"] == tuning_table.FORMAT and table["key"] == CARD
    (key, entry), = table["entries"].items()
    assert key.startswith("conv2d|fwd|float32|c.c|none|c8|k16|3x3") and entry["backend"] == "cuda"
    assert entry["by"] == "first use" and entry["ratios"]["cuda"] == pytest.approx(2.0, rel=1e-3)

    autotune.forget()  # a new process: nothing in memory
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: pytest.fail("timed again"))
    calls = len(made["cuda"].calls)
    ak.conv2d(x, w, b, padding=1)
    assert len(made["cuda"].calls) == calls + 1 and decision("conv2d|fwd").backend == "cuda"


@pytest.mark.parametrize("content,why", [
    ("{not json", "unreadable"),
    (json.dumps({"format": 2, "key": CARD, "entries": {"k": {"backend": "os.system"}}}), "malformed entry"),
    (json.dumps({"format": 1, "key": CARD, "entries": {"k": "cuda"}}), "format 1"),
    (json.dumps({"format": 2, "key": {**CARD, "device": "Other GPU"}, "entries": {}}), "written for"),
    (json.dumps({"format": 2, "key": CARD, "entries": {"k": {"backend": "cuda", "notes": "x"}}}), "malformed entry"),
    (json.dumps({"format": 2, "key": CARD, "entries": {"k": {"backend": "cuda", "reference_ms": "1"}}}),
     "malformed entry"),
])
def test_a_corrupt_or_foreign_table_is_ignored_with_one_warning_and_replaced(stand_ins, cpu_table, content, why):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    cpu_table.write_text(content)
    with pytest.warns(RuntimeWarning, match=why) as caught:
        ak.matmul(torch.randn(8, 8), torch.randn(8, 8))
        ak.matmul(torch.randn(8, 16), torch.randn(16, 8))  # a second key: the table is not read again
    assert sum("ignoring tuning file" in str(w.message) for w in caught) == 1
    table = json.loads(cpu_table.read_text())  # replaced by a valid one holding both decisions
    assert table["key"] == CARD and len(table["entries"]) == 2


def test_a_second_writer_keeps_the_firsts_entries(tmp_path):
    path = tmp_path / "t.json"
    entry = {"backend": "cuda", "by": "first use", "ratios": {"cuda": 1.5}, "reference_ms": 1.0}
    tuning_table.add(path, CARD, {"a": entry})
    tuning_table.add(path, CARD, {"b": dict(entry, backend="torch")})  # e.g. another DDP rank
    assert set(json.loads(path.read_text())["entries"]) == {"a", "b"}
    assert not list(tmp_path.glob("*.tmp"))


def test_autotune_off_uses_the_record_and_times_nothing(stand_ins, cpu_table, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    ak.matmul(a, b)
    autotune.forget()
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "0")
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: pytest.fail("timed with ACCELKERNELS_AUTOTUNE=0"))
    ak.matmul(a, b)
    assert decision("matmul|fwd").backend == "cuda"  # on record
    ak.matmul(torch.randn(300, 8), b)  # not on record: the reference, untimed
    assert autotune.decisions()[("cpu", autotune.matmul_key(torch.randn(300, 8), b))].backend == "torch"


# --- where timing is not possible --------------------------------------------------------------------------


def test_no_timing_during_cuda_graph_capture_the_record_is_used(stand_ins, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    monkeypatch.setattr(autotune, "capturing", lambda device: True)
    assert backends.resolve("matmul", "auto", (a, b), problem=matmul_problem(a, b)).name == "torch"
    assert made["cuda"].calls == [] and autotune.decisions() == {}  # not timed, and not remembered
    monkeypatch.setattr(autotune, "capturing", lambda device: False)
    ak.matmul(a, b)  # outside the capture: timed
    monkeypatch.setattr(autotune, "capturing", lambda device: True)
    assert backends.resolve("matmul", "auto", (a, b), problem=matmul_problem(a, b)).name == "cuda"


def test_no_timing_on_fake_tensors_the_record_is_used(stand_ins):
    from torch._subclasses.fake_tensor import FakeTensorMode

    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    real = torch.randn(8, 8), torch.randn(8, 8)
    with FakeTensorMode() as mode:
        fake = tuple(mode.from_tensor(t) for t in real)
        problem = matmul_problem(*fake)
        assert backends.resolve("matmul", "auto", fake, problem=problem).name == "torch"
        assert made["cuda"].calls == []
    ak.matmul(*real)
    with FakeTensorMode() as mode:
        fake = tuple(mode.from_tensor(t) for t in real)
        assert backends.resolve("matmul", "auto", fake, problem=matmul_problem(*fake)).name == "cuda"


def test_no_timing_while_torch_compile_traces(stand_ins, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    x, w, b = torch.randn(4, 16), torch.randn(8, 16), torch.randn(8)
    compiled = torch.compile(lambda x: ak.linear(x, w, b, activation="relu"), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.relu(F.linear(x, w, b)))
    # Tracing runs the op's fake kernel; the graph's op times on its first real run, with real tensors.
    assert made["cuda"].tensor_types <= {torch.Tensor} and made["cuda"].calls
    assert decision("linear|fwd").backend == "cuda"
    autotune.forget()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert backends.resolve("linear", "auto", (x, w, b), problem=linear_problem(x, w, b, "relu")).name \
        == "torch"
    assert autotune.decisions() == {}


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
def test_timing_under_inference_mode_and_no_grad(stand_ins, mode):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    x, w, b = conv_inputs()
    with mode():
        out = ak.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1))
    assert decision("conv2d|fwd").backend == "cuda"


def test_no_timing_under_a_dispatch_mode(stand_ins, monkeypatch):
    """FlopCounterMode (like checkpointing or a debug mode) would see every timing call as the user's."""
    from torch.utils.flop_counter import FlopCounterMode

    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: pytest.fail("timed under a dispatch mode"))
    with FlopCounterMode(display=False) as counter:
        ak.matmul(torch.randn(8, 8), torch.randn(8, 8))
    assert counter.get_total_flops() == 2 * 8 * 8 * 8  # one product, the user's
    assert autotune.decisions() == {}


def test_a_candidate_failing_in_the_timed_rounds_is_left_out_and_not_written(stand_ins, cpu_table):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=0.8)
    real = made["cuda"]._spend

    def fails_on_its_third_call(pass_, tensors):
        real(pass_, tensors)
        made["cuda"].fail = len(made["cuda"].calls) >= 2  # warm-up and estimate pass, the rounds fail

    made["cuda"]._spend = fails_on_its_third_call
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with pytest.warns(RuntimeWarning, match="'cuda' failed"):
        torch.testing.assert_close(ak.matmul(a, b), a @ b)
    d = decision("matmul|fwd")
    assert d.backend == "triton" and d.ratios["cuda"] is None and d.notes["cuda"].startswith("failed")
    assert not cpu_table.exists()  # a failure may be transient (out of memory): this process only


def test_the_reference_failing_while_timed_decides_nothing(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    made["torch"].fail = True
    with pytest.raises(RuntimeError, match="stand-in kernel failure"):
        ak.matmul(torch.randn(8, 8), torch.randn(8, 8))  # the user's own call says why
    assert autotune.decisions() == {}
    made["torch"].fail = False
    ak.matmul(torch.randn(8, 8), torch.randn(8, 8))
    assert decision("matmul|fwd").backend == "cuda"


@pytest.mark.parametrize("call", ["conv_same_even", "conv_unbatched", "linear_1d_weight", "linear_broadcast_bias",
                                  "conv_gelu_backward", "matmul_batched"])
def test_the_shortcut_and_the_op_share_one_key(stand_ins, monkeypatch, call):
    """A kernel wins: the public function decides on its key, the op resolves again and must find it
    (a second timing would mean the two paths build different keys). The backward's lookups too."""
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    timings = []
    real = autotune.measure
    monkeypatch.setattr(autotune, "measure", lambda *a, **k: timings.append(1) or real(*a, **k))
    x, w, b = conv_inputs()
    run = {
        "conv_same_even": lambda: ak.conv2d(x, torch.randn(16, 8, 2, 2), b, padding="same", dilation=1),
        "conv_unbatched": lambda: ak.conv2d(x[0], w, b, stride=2),
        "linear_1d_weight": lambda: ak.linear(torch.randn(5, 8), torch.randn(8)),
        "linear_broadcast_bias": lambda: ak.linear(torch.randn(5, 8), torch.randn(3, 8), torch.randn(5, 3)),
        "conv_gelu_backward": lambda: ak.conv2d(x.requires_grad_(), w.requires_grad_(), b, padding=1,
                                                activation="gelu").sum().backward(),
        "matmul_batched": lambda: ak.matmul(torch.randn(2, 5, 8), torch.randn(8, 3)),
    }[call]
    run()
    first = len(timings)
    assert first == (3 if call == "conv_gelu_backward" else 1)  # forward (and dgrad, wgrad)
    run()
    assert len(timings) == first
    assert all(d.backend == "cuda" for d in autotune.decisions().values())


def test_two_threads_racing_on_one_key_time_it_once(stand_ins, monkeypatch):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    timings = []
    real = autotune.measure

    def slow_measure(*args, **kwargs):
        timings.append(threading.get_ident())
        time.sleep(0.2)  # the other thread arrives while this one times
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "measure", slow_measure)
    a, b = torch.randn(16, 8), torch.randn(8, 16)
    results, start = [], threading.Barrier(2)

    def worker():
        start.wait()
        results.append(ak.matmul(a, b))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(timings) == 1 and len(results) == 2
    for r in results:
        torch.testing.assert_close(r, a @ b)


# --- what the user sees ------------------------------------------------------------------------------------


def test_one_debug_line_per_decision(stand_ins, caplog):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    with caplog.at_level("DEBUG", logger="accelkernels.autotune"):
        for _ in range(3):
            ak.matmul(torch.randn(8, 8), torch.randn(8, 8))
    lines = [r.getMessage() for r in caplog.records if r.name == "accelkernels.autotune"]
    assert len(lines) == 1 and "matmul|fwd" in lines[0] and "-> cuda" in lines[0] and "cuda x2" in lines[0]


def test_record_choices_says_what_ran_once_per_pass(stand_ins):
    clock, made = stand_ins
    set_costs(made, torch=1.0, cuda=0.5, triton=2.0)
    with backends.record_choices() as ran:
        ak.matmul(torch.randn(8, 8), torch.randn(8, 8))  # timed: the timing calls are not recorded
        ak.linear(torch.randn(8, 8), torch.randn(8, 8), backend="torch")
    assert ran == [("matmul", "cuda"), ("linear", "torch")]
    x, w, b = (t.requires_grad_() for t in conv_inputs())
    ak.conv2d(x, w, b, padding=1)  # decided, outside the block
    with backends.record_choices() as ran:
        ak.conv2d(x, w, b, padding=1).sum().backward()
    assert ran == [("conv2d", "cuda"), ("conv2d_input_grad", "cuda"), ("conv2d_weight_grad", "cuda")]


def test_tune_show_prints_decisions_with_ratios(tmp_path, monkeypatch, capsys):
    from accelkernels.cli import main

    monkeypatch.setenv("ACCELKERNELS_CACHE_DIR", str(tmp_path))
    path = tuning_table.table_path(CARD)
    tuning_table.add(path, CARD, {"matmul|fwd|float16|r.r|none|k64|m7|n7|b0":
                                  {"backend": "cuda", "by": "first use", "ratios": {"cuda": 1.21, "triton": 0.93},
                                   "reference_ms": 0.41}})
    (path.parent / "broken.json").write_text("{")
    assert main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert "1 decisions for Stand-in GPU" in out
    assert "matmul|fwd|float16|r.r|none|k64|m7|n7|b0  cuda (first use; torch 0.41 ms; cuda x1.21, triton x0.93)" in out
    assert "broken.json: ignored: unreadable" in out


def test_info_shows_whether_auto_times(monkeypatch):
    from accelkernels import info

    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "0")
    text = info.format_text(info.collect())
    assert "autotune      off (ACCELKERNELS_AUTOTUNE=0)" in text
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "1")
    data = info.collect()
    assert data["autotune"]["enabled"] is True
    if not torch.cuda.is_available():
        assert data["autotune"]["tables"] == [] and "no tuning table in use" in info.format_text(data)
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "sometimes")
    assert info.collect()["autotune"] is None  # invalid: info says it cannot tell, and never raises


def test_keys_name_what_decides_and_bucket_what_varies():
    x, w = torch.randn(2, 8, 6, 6), torch.randn(16, 8, 3, 3)
    key = autotune.conv2d_key("fwd", x, w, True, (1, 1), (1, 1), (1, 1), 1, "relu")
    # 2*6*6 = 72 output pixels -> 2^6; float32 names TF32 (off in the tests: conftest)
    assert key == "conv2d|fwd|float32|c.c|relu|c8|k16|3x3|s1x1|p1x1|d1x1|g1|bias|m6|ieee"
    torch.backends.cudnn.allow_tf32 = True  # conftest's fixture restores it
    assert autotune.conv2d_key("fwd", x, w, True, (1, 1), (1, 1), (1, 1), 1, "relu").endswith("|m6|tf32")
    assert "|tf32" not in autotune.conv2d_key("fwd", x.half(), w.half(), True, (1, 1), (1, 1), (1, 1), 1, "relu")
    cl = autotune.conv2d_key("fwd", x.to(memory_format=torch.channels_last), w, True, (2, 2), (1, 1), (1, 1), 1,
                             "none")
    assert "|cl.c|" in cl and "|s2x2|" in cl
    a = torch.randn(100, 64)
    assert autotune.matmul_key(a, torch.randn(64, 32).t().contiguous().t()) == \
        "matmul|fwd|float32|r.t|none|k64|m7|n5|b0|ieee"
    assert autotune.linear_key(torch.randn(3, 40, 64), torch.randn(10, 64), torch.randn(10), "gelu") == \
        "linear|fwd|float32|r.r|gelu|n10|k64|bias|m7|ieee"
    assert autotune.device_slot(torch.device("cuda", 1)) == "cuda:1" and autotune.device_slot(torch.device("cpu")) == "cpu"
    assert autotune.table_location("cpu") is None  # CPU decisions stay in memory


def test_the_cpu_without_kernels_takes_the_reference_at_once(monkeypatch):
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "1")
    monkeypatch.setattr(backends, "_kernels_possible_on_cpu", lambda: False)
    monkeypatch.setattr(autotune, "choose", lambda *a, **k: pytest.fail("looked up a key on a CPU without kernels"))
    assert ak.matmul(torch.randn(4, 4), torch.randn(4, 4)).shape == (4, 4)


# --- end to end on real clocks: the CPU executor against ATen ------------------------------------------------


@pytest.mark.emulated
def test_auto_keeps_the_reference_against_the_cpu_executor(monkeypatch, caplog):
    """The never-slower rule on real timings: the emulated kernels (and Triton's interpreter) are far
    slower than ATen, so auto times them once, keeps the reference, and gives torch's answer bit for bit."""
    from accelkernels import emulator

    monkeypatch.setenv("ACCELKERNELS_CUDA_EMULATE", "1")
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "1")
    try:
        emulator.module()
    except emulator.EmulatorBuildError as exc:
        pytest.skip(f"CPU executor not available: {exc}")
    autotune.forget()
    try:
        x = torch.randn(1, 8, 6, 6, dtype=torch.float16)
        w = torch.randn(8, 8, 3, 3, dtype=torch.float16)
        a, b = torch.randn(16, 16, dtype=torch.float16), torch.randn(16, 16, dtype=torch.float16)
        assert backends.BACKENDS["cuda"].why_not("matmul", (a, b)) is None  # the executor can serve them
        with caplog.at_level("DEBUG", logger="accelkernels.autotune"):
            conv = ak.conv2d(x, w, padding=1)
            product = ak.matmul(a, b)
        assert torch.equal(conv, F.conv2d(x, w, padding=1)) and torch.equal(product, a @ b)
        for op in ("conv2d|fwd", "matmul|fwd"):
            d = decision(op)
            assert d.backend == "torch", d
            assert d.ratios["cuda"] is not None and d.ratios["cuda"] < 1 / autotune.DROP_FACTOR, d
        assert sum("-> torch" in r.getMessage() for r in caplog.records) == 2
    finally:
        autotune.forget()


def test_a_broken_table_warns_once_even_when_warnings_are_errors(stand_ins, cpu_table):
    clock, made = stand_ins
    cpu_table.write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="ignoring tuning file"):
            ak.matmul(torch.randn(8, 8), torch.randn(8, 8))
        ak.matmul(torch.randn(8, 8), torch.randn(8, 8))  # not read again: no second warning


def test_a_dtype_no_kernel_takes_is_decided_once(stand_ins, monkeypatch):
    clock, made = stand_ins
    checks = []
    monkeypatch.setattr(made["cuda"], "why_not", lambda *a, **k: checks.append(1))
    a = torch.randn(8, 8, dtype=torch.float64)
    for _ in range(3):
        torch.testing.assert_close(ak.matmul(a, a), a @ a)
    assert checks == [] and decision("matmul|fwd|float64").backend == "torch"
