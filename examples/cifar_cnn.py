"""The seed article's worked example (section 5), made real and measurable with accelkernels.

Its CNN (conv 3->32 3x3 + ReLU, max-pool, conv 32->64 3x3 + ReLU, max-pool, conv 64->64 3x3 + ReLU,
flatten, dense 1024->64 + ReLU, dense 64->10; Adam, cross-entropy) is trained twice from the same
initial weights on the same batches — torch's layers, and ``accelkernels.convert(model,
fuse_activations=True)`` (each ReLU computed in the epilogue of the layer before it) — in fp32 and
under autocast (bf16, or fp16 with a GradScaler). Per run it prints the step time, images/s,
inference time and accuracy, and the article's factors (section 4.2):

- α (training) and β (inference) = T_torch / T_accelkernels, above 1 when we are faster (the
  article's own example computes α = T_original / T_accelerator = 1000/500 = 2, though its formula
  reads T_accelerator = α T_original). They are measured by the paired method of
  accelkernels.benchmark.timing: the two models train in lockstep, each step both take the same
  batch, the one that goes first alternating (torch, ours, ours, torch, ...: ABBA, so a steady
  drift of the machine's speed and any "the second one runs warmer" effect fall on both equally);
  each step is one round, α is the median over the rounds after warm-up of t_torch / t_ours, with a
  99% distribution-free interval and a verdict ("no difference" whenever the interval contains 1).
  β is the same over test batches that both models run in turn. A quotient of two medians timed
  minutes apart is not used: on a 2-core VM one such run printed α = 16.05 and α = 0.11 for the
  same code (issue 16).
- γ (parallelism, ``--ddp`` only) = (images/s of n processes) / (n × images/s of one process) for
  the converted model's training step: 1 is linear data-parallel scaling. The article writes
  γ = P_original / P_accelerator as a ratio of parallelism (and computes 10/20 = 2); here the
  parallelism is the number of data-parallel processes, and γ says how much of it turns into speed
  (the speedup is n × γ).

How γ is measured: inside the torchrun job itself, so that both sides share the processes, their
threads (torchrun gives each process OMP_NUM_THREADS=1 unless it is set) and the per-process batch
B. A fresh converted model is trained for ``--steps`` rounds; each round is one step of rank 0
alone (a plain model, not DDP, on its own slice of the global batch, while the other ranks wait at
a barrier) and one DDP step of all ranks, the two in alternating order (ABBA) so that drift cancels
as for α. With per-round times t_1 and t_n (the slowest rank's), images/s are B / t_1 and n·B / t_n,
so γ = median over rounds of t_1 / t_n, with the same 99% interval. The waiting ranks leave the
cores to rank 0: a gloo barrier blocks (a 2 s wait cost the waiting rank 0.01 s of CPU time,
measured 2026-12-02). The baseline is one process as DDP runs it (same threads), not a single
process given every core: that would measure intra-op threading against data parallelism. γ is
measured per precision (fp32, and the autocast one): autocast changes the compute of a step while
the gradients all-reduced stay fp32, so the share of communication changes. What limits γ on a
2-core CPU: two processes of one thread fill both cores, so anything else running on the machine
slows the DDP step (which needs both) more than the alone step (which needs one); and gloo
all-reduces the 122,570 fp32 gradients (490 kB) of every step over TCP loopback on those same cores,
which the alone step never pays. On GPUs (nccl, one card per process) γ measures the all-reduce's
cost and how much of it overlaps the backward pass.

On a CPU — and wherever the converted layers resolve to the reference backend (asked of
accelkernels.backends.resolve per layer, not guessed from the device: ``ACCELKERNELS_CUDA_EMULATE=1``
serves ``--backend cuda`` on the CPU) — both runs execute torch's ops, so α and β measure only what
accelkernels adds or saves around them: its per-call dispatch, and the fused ReLU, which the reference
applies in place when no gradient is needed. That alone made β 1.26 [1.18-1.56] at batch 128 in fp32
(one thread, 2026-12-02), and 0.997 [0.961-1.01] against torch's layers with ReLU(inplace=True).
The summary says when this is the case.

    python examples/cifar_cnn.py                           # synthetic CIFAR-shaped data, runs anywhere
    python examples/cifar_cnn.py --data cifar-10-batches-bin --steps 2000 --backend cuda
    torchrun --nproc_per_node 2 examples/cifar_cnn.py --ddp   # data-parallel (gloo on CPU, nccl on GPUs), and γ

``--data`` takes the extracted *binary* distribution (cifar-10-binary.tar.gz). ``--backend`` is what
the converted layers run (default "auto": the fastest measured backend for the card, the reference
until a GPU run says otherwise; "cuda" or "triton" to time our kernels). ``--compile`` compiles all
models with torch.compile, so α compares like with like. ``--profile DIR`` writes a Chrome/TensorBoard
trace of a few steps of each run, in which our ops appear by name (accelkernels::conv2d, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_data import Split, load_cifar10, preprocess, synthetic_cifar10

import accelkernels as ak
from accelkernels.benchmark.timing import RatioEstimate, ratio_interval

# The two runs of a precision learn alike when the means of their last LOSS_WINDOW losses differ by
# at most this fraction of torch's (of LOSS_FLOOR when torch's is below it, so that two nearly-zero
# losses are not compared by their ratio). The reference backend reproduces torch exactly; kernels
# that round differently drift apart slowly over a run, more so at 16 bits.
LOSS_TOLERANCE = {"fp32": 0.02, "bf16": 0.05, "fp16": 0.05}
LOSS_WINDOW = 10
LOSS_FLOOR = 0.1
# Steps left out of α and γ: the first ones pay for torch.compile, Triton autotuning, oneDNN/cuDNN
# primitive creation, Adam's state and the allocator's growth (eager on the 2-core CPU the first step
# was 10-20% slower than the next ones, 2026-12-02; compiled, it takes seconds). Even, so that the
# rounds kept start with a torch-first step and pair up ABBA. At most a quarter of a short run.
WARMUP_STEPS = 6
# β's paired rounds: passes over the test set repeat until this many full batches are timed; the 99%
# interval of a median of 32 rounds lies between the 9th and the 24th ratio (8 dropped at each end),
# so a few preempted rounds cannot move it.
INFERENCE_ROUNDS = 32
CONFIDENCE = 0.99  # as `accelkernels bench`: one run reports several factors


def build_model() -> nn.Sequential:
    """The article's network, exactly (Keras' Conv2D default: no padding)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(1024, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def converted_model(backend: str = "auto") -> nn.Module:
    """The article's network with accelkernels' layers, each ReLU fused into the layer before it
    (parameters and state_dict keys unchanged, so torch's initial weights load into it)."""
    return ak.convert(build_model(), backend=backend, fuse_activations=True)


@dataclass
class RunResult:
    layers: str  # "torch" or "accelkernels"
    precision: str  # "fp32", "bf16", "fp16"
    step_ms: float  # this run's own median, after warm-up (a latency; the factors come from pairs)
    images_per_s: float
    infer_ms: float
    accuracy: float
    losses: list[float] = field(default_factory=list)
    step_times_ms: list[float] = field(default_factory=list)  # every step, warm-up included


# --- distributed ----------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """torchrun's environment -> a process group (gloo on CPU, nccl on GPUs)."""
    if "RANK" not in os.environ:
        raise SystemExit("--ddp: run under torchrun (e.g. torchrun --nproc_per_node 2 examples/cifar_cnn.py --ddp)")
    import torch.distributed as dist

    info = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return info


def mean_over_ranks(value: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(value)
        value /= dist_info.world
    return value


# --- training -------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def training_batches(train: Split, args, dist_info: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``args.steps`` batches of this process: (uint8 images, labels, flips), on the host.

    The only random draws of training (the models have no dropout, Adam draws nothing), from a
    generator seeded with ``args.seed``: every run and every model sees the same batches and flips,
    however the models are interleaved, because each batch is drawn once and given to all of them.
    """
    order = torch.Generator().manual_seed(args.seed)
    batch, n = args.batch_size, len(train)
    if n < batch * dist_info.world:
        raise SystemExit(f"the training set has {n} images, fewer than one global batch ({batch} x "
                         f"{dist_info.world} processes): lower --batch-size")
    per_epoch = max(1, n // (batch * dist_info.world))
    perm = torch.randperm(n, generator=order)
    for step in range(args.steps):
        if step and step % per_epoch == 0:
            perm = torch.randperm(n, generator=order)
        start = (step % per_epoch) * batch * dist_info.world + dist_info.rank * batch
        idx = perm[start:start + batch]
        flip = torch.rand(batch * dist_info.world, generator=order)[dist_info.rank * batch:][:batch] < 0.5
        yield train.images[idx], train.labels[idx], flip


class Trainer:
    """One model in training: the module (compiled and DDP-wrapped as asked), its Adam and GradScaler,
    and each step's time and loss."""

    def __init__(self, label: str, module: nn.Module, args, precision: str, device: torch.device,
                 dist_info: Dist):
        self.label, self.module, self.precision, self.device = label, module, precision, device
        self.dist_info = dist_info
        model = torch.compile(module) if args.compile else module
        self.local_model = model  # what inference runs: compiled like training, without DDP
        if dist_info.world > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.model = model
        self.optimizer = torch.optim.Adam(module.parameters(), lr=args.lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.seconds: list[float] = []
        self.losses: list[float] = []  # the mean over ranks

    def step(self, images: torch.Tensor, labels: torch.Tensor, flip: torch.Tensor) -> None:
        """One training step, timed from the host batch to the updated weights."""
        synchronize(self.device)
        t0 = time.perf_counter()
        x = preprocess(images.to(self.device, non_blocking=True), flip.to(self.device))
        y = labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - t0)
        # after the clock stopped: the loss all-reduce is bookkeeping, not part of the step
        self.losses.append(mean_over_ranks(loss.detach().float(), self.dist_info).item())


def train_lockstep(trainers: list[Trainer], batches, progress: tqdm | None = None) -> None:
    """Each batch trains every model in turn, the order reversed every other step (ABBA): step i is
    paired round i of the α measurement. All ranks follow the same order, so the DDP collectives of
    the models stay matched."""
    for step, (images, labels, flip) in enumerate(batches):
        for trainer in trainers if step % 2 == 0 else trainers[::-1]:
            trainer.step(images, labels, flip)
        if progress is not None:
            progress.update()
            progress.set_postfix({t.label: f"{t.losses[-1]:.3f}" for t in trainers})


def warmup_steps(steps: int) -> int:
    return min(WARMUP_STEPS, steps // 4 // 2 * 2)


# --- inference ------------------------------------------------------------------------------------


@torch.no_grad()
def paired_inference(models: list[nn.Module], test: Split, args, precision: str,
                     device: torch.device) -> tuple[list[list[float]], list[float]]:
    """Per model: (seconds per forward of each paired round, accuracy over the test set).

    Each full test batch is one round that every model runs, the first one alternating (ABBA);
    passes over the test set repeat (timing only) until INFERENCE_ROUNDS rounds are timed. The
    accuracy comes from the first pass, which covers every test image.
    """
    for model in models:
        model.eval()
    seconds: list[list[float]] = [[] for _ in models]
    correct = [0] * len(models)
    starts = range(0, len(test), args.batch_size)
    first = preprocess(test.images[:args.batch_size].to(device))
    for model in models:  # warm-up: the first forward in eval mode allocates and creates primitives
        with autocast(device, precision):
            model(first)
    timed_rows = min(args.batch_size, len(test))  # a test set smaller than a batch is one short round
    passes = 0
    while passes == 0 or len(seconds[0]) < INFERENCE_ROUNDS:
        for start in starts:
            timed = min(args.batch_size, len(test) - start) == timed_rows
            if passes and not timed:  # the repeats are for timing only
                continue
            x = preprocess(test.images[start:start + args.batch_size].to(device))
            order = list(range(len(models)))
            if len(seconds[0]) % 2:
                order.reverse()
            for i in order:
                synchronize(device)
                t0 = time.perf_counter()
                with autocast(device, precision):
                    logits = models[i](x)
                synchronize(device)
                elapsed = time.perf_counter() - t0
                if timed:  # a short last batch is not timed: it would be an outlier round
                    seconds[i].append(elapsed)
                if passes == 0:
                    correct[i] += (logits.argmax(1).cpu() == test.labels[start:start + args.batch_size]).sum().item()
        passes += 1
    for model in models:
        model.train()
    return seconds, [c / max(1, len(test)) for c in correct]


# --- what the converted layers run ------------------------------------------------------------------


@torch.no_grad()
def backends_serving(model: nn.Module, x: torch.Tensor, device: torch.device, precision: str) -> list[str]:
    """The backends that the model's accelkernels layers ran on a forward of ``x`` under this
    precision's autocast: what ``auto`` decided (timing them on first use where it can), asked of
    accelkernels rather than guessed from the device."""
    with autocast(device, precision), ak.backends.record_choices() as ran:
        model(x)
    return sorted({name for _, name in ran})


# --- γ -------------------------------------------------------------------------------------------


def measure_gamma(train: Split, args, precision: str, device: torch.device, dist_info: Dist) -> dict:
    """γ of the converted model's training step (see the module docstring for the method), on every
    rank: rank 0's alone-times are shared with the others so that all summaries agree."""
    import torch.distributed as dist

    torch.manual_seed(args.seed)
    together = Trainer("ddp", converted_model(args.backend).to(device), args, precision, device, dist_info)
    alone = Trainer("alone", converted_model(args.backend).to(device), args, precision, device, Dist()) \
        if dist_info.main else None
    for step, batch in enumerate(training_batches(train, args, dist_info)):
        for phase in ("alone", "together") if step % 2 == 0 else ("together", "alone"):
            dist.barrier()  # every phase starts on all ranks at once; in "alone" the others wait here
            if phase == "together":
                together.step(*batch)
            elif alone is not None:
                alone.step(*batch)
    dist.barrier()
    # the DDP step of a round lasts until its slowest rank is done; rank 0's alone-times go to all
    t_all = torch.tensor(together.seconds, dtype=torch.float64, device=device)
    dist.all_reduce(t_all, op=dist.ReduceOp.MAX)
    t_one = torch.tensor(alone.seconds if alone else [0.0] * args.steps, dtype=torch.float64, device=device)
    dist.all_reduce(t_one)  # a sum with zeros: a broadcast from rank 0
    warm = warmup_steps(args.steps)
    return {**gamma_from_times(t_one.tolist()[warm:], t_all.tolist()[warm:], dist_info.world, args.batch_size),
            "process_group": dist.get_backend(), "threads_per_process": torch.get_num_threads(),
            "layers": "accelkernels"}


def gamma_from_times(t_one: list[float], t_all: list[float], processes: int, batch: int) -> dict:
    """γ from paired rounds: round r's images/s are batch / t_one[r] alone and processes·batch / t_all[r]
    together, so its γ is t_one[r] / t_all[r]; the median over rounds, with its interval (no verdict:
    below 1 is sub-linear scaling, not "slower")."""
    gamma = estimate_json(ratio_interval(t_one, t_all, confidence=CONFIDENCE))
    del gamma["verdict"]
    return {**gamma, "processes": processes,
            "per_process_batch": batch, "images_per_s_one": batch / statistics.median(t_one),
            "images_per_s_all": processes * batch / statistics.median(t_all)}


# --- the whole example ----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the extracted CIFAR-10 binary folder (data_batch_*.bin, test_batch.bin); "
                   "default: synthetic CIFAR-shaped data")
    p.add_argument("--steps", type=int, default=200, help="training steps per run, and γ rounds (default 200)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step and process (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16",
                   help="the autocast runs after the fp32 ones (fp16 uses a GradScaler; none: fp32 only)")
    p.add_argument("--backend", default="auto", help="what the converted layers run (auto, torch, triton, cuda)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--ddp", action="store_true", help="data-parallel under torchrun, and γ")
    p.add_argument("--profile", metavar="DIR", help="write a torch.profiler trace of each run here")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic-size", type=int, default=5000, help="synthetic training images (default 5000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        p.error(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    ak.backends.check_name(args.backend)
    return args


def pick_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible")
    return choice


def profile_steps(model: nn.Module, train: Split, args, precision: str, device: torch.device, path: Path) -> None:
    """A Chrome/TensorBoard trace of 3 training steps (forward and backward)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    x = preprocess(train.images[:args.batch_size].to(device))
    y = train.labels[:args.batch_size].to(device)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            with autocast(device, precision):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
        synchronize(device)
    model.zero_grad(set_to_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))


def run_precision(precision: str, train: Split, test: Split, args, device: torch.device,
                  dist_info: Dist) -> tuple[list[RunResult], dict]:
    """Both models of one precision, in lockstep: their runs and their comparison (α, β, γ)."""
    torch.manual_seed(args.seed)
    reference = build_model().to(device)
    ours = converted_model(args.backend).to(device)
    ours.load_state_dict(reference.state_dict())  # the same initial weights
    served = backends_serving(ours, preprocess(train.images[:args.batch_size].to(device)), device, precision)
    trainers = [Trainer(label, model, args, precision, device, dist_info)
                for label, model in (("torch", reference), ("accelkernels", ours))]
    progress = tqdm(total=args.steps, desc=precision, disable=not dist_info.main or args.no_progress, leave=False)
    train_lockstep(trainers, training_batches(train, args, dist_info), progress)
    progress.close()
    infer_s, accuracy = paired_inference([t.local_model for t in trainers], test, args, precision, device)
    warm = warmup_steps(args.steps)
    runs = []
    for trainer, seconds, acc in zip(trainers, infer_s, accuracy):
        step_s = statistics.median(trainer.seconds[warm:])
        runs.append(RunResult(trainer.label, precision, step_s * 1e3, args.batch_size * dist_info.world / step_s,
                              statistics.median(seconds) * 1e3, acc, trainer.losses,
                              [s * 1e3 for s in trainer.seconds]))
        if args.profile and dist_info.main:
            profile_steps(trainer.module, train, args, precision, device,
                          Path(args.profile) / f"{trainer.label}_{precision}_rank{dist_info.rank}.json")
    comparison = compare(trainers, infer_s, precision, served, warm)
    comparison["gamma"] = measure_gamma(train, args, precision, device, dist_info) if dist_info.world > 1 else None
    return runs, comparison


def estimate_json(estimate: RatioEstimate) -> dict:
    """A RatioEstimate (made at CONFIDENCE) for JSON: no NaN, an interval that needs more rounds is null."""
    def finite(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return {"ratio": estimate.ratio, "low": finite(estimate.low), "high": finite(estimate.high),
            "rounds": estimate.rounds, "confidence": CONFIDENCE, "tight": estimate.tight,
            "verdict": estimate.verdict}


def compare(trainers: list[Trainer], infer_s: list[list[float]], precision: str, served: list[str], warm: int) -> dict:
    """α and β from the paired rounds (torch's time over ours, round by round), and the losses' agreement."""
    t, a = trainers
    window = min(LOSS_WINDOW, len(t.losses))
    t_loss, a_loss = statistics.fmean(t.losses[-window:]), statistics.fmean(a.losses[-window:])
    difference = abs(t_loss - a_loss) / max(abs(t_loss), LOSS_FLOOR)
    return {
        "precision": precision,
        "alpha": estimate_json(ratio_interval(t.seconds[warm:], a.seconds[warm:], confidence=CONFIDENCE)),
        "beta": estimate_json(ratio_interval(infer_s[0], infer_s[1], confidence=CONFIDENCE)),
        "converted_layers_run": served, "reference_only": served == ["torch"],
        "final_loss_torch": t_loss, "final_loss_accelkernels": a_loss, "loss_difference": difference,
        "loss_tolerance": LOSS_TOLERANCE[precision], "losses_agree": difference <= LOSS_TOLERANCE[precision],
    }


def run(args) -> dict:
    device_name = pick_device(args.device)
    if args.amp == "fp16" and device_name == "cpu":
        raise SystemExit("--amp fp16 needs a GPU (fp16 autocast with a GradScaler); use --amp bf16 on the CPU")
    dist_info = init_distributed(device_name) if args.ddp else Dist()
    device = torch.device(device_name, dist_info.local_rank) if device_name == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.data:
        train, test = load_cifar10(args.data)
    else:
        train, test = synthetic_cifar10(args.synthetic_size, max(args.batch_size * 4, 1000), seed=args.seed)
    results: list[RunResult] = []
    comparisons: list[dict] = []
    for precision in ["fp32"] + ([args.amp] if args.amp != "none" else []):
        runs, comparison = run_precision(precision, train, test, args, device, dist_info)
        results += runs
        comparisons.append(comparison)
    summary = summarize(results, comparisons, args, device, dist_info)
    if dist_info.main:
        print_summary(summary)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary


def summarize(results: list[RunResult], comparisons: list[dict], args, device: torch.device, dist_info: Dist) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "accelkernels": ak.__version__, "backend": args.backend,
        "data": args.data or f"synthetic ({args.synthetic_size} images)", "steps": args.steps,
        "warmup_steps": warmup_steps(args.steps), "batch_size": args.batch_size, "world_size": dist_info.world,
        "threads_per_process": torch.get_num_threads(), "compiled": args.compile,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "runs": [asdict(r) for r in results], "comparisons": comparisons,
    }


def format_factor(factor: dict, verdict: bool = True) -> str:
    """'1.02 [0.99-1.05] no difference': the median of the rounds' ratios, its interval, the verdict."""
    if factor["low"] is None:
        return f"{factor['ratio']:.2f} (no {factor['confidence']:.0%} interval from {factor['rounds']} rounds)"
    text = f"{factor['ratio']:.2f} [{factor['low']:.2f}-{factor['high']:.2f}]"
    if verdict:
        text += f" {factor['verdict']}"
    return text if factor["tight"] else f"{text}, wide"


def print_summary(summary: dict) -> None:
    print(f"\nseed CNN on {summary['device']} | {summary['date']} | data: {summary['data']} | {summary['steps']} "
          f"steps x {summary['batch_size']} images x {summary['world_size']} process(es), "
          f"{summary['threads_per_process']} thread(s) each | converted layers: backend="
          f"{summary['backend']!r}{' | torch.compile' if summary['compiled'] else ''}")
    print(f"{'precision':<9} {'layers':<12} {'step ms':>8} {'images/s':>9} {'infer ms':>9} {'accuracy':>8} "
          f"{'last loss':>9}")
    for r in summary["runs"]:
        last = statistics.fmean(r["losses"][-LOSS_WINDOW:])
        print(f"{r['precision']:<9} {r['layers']:<12} {r['step_ms']:8.2f} {r['images_per_s']:9.0f} "
              f"{r['infer_ms']:9.2f} {r['accuracy']:8.3f} {last:9.4f}")
    runs = {(r["layers"], r["precision"]): r["losses"] for r in summary["runs"]}
    for c in summary["comparisons"]:  # the loss curves side by side, at five points
        t, a = runs[("torch", c["precision"])], runs[("accelkernels", c["precision"])]
        points = sorted({round(i * (len(t) - 1) / 4) for i in range(5)})
        print(f"{c['precision']} loss (torch / accelkernels) at step " +
              ", ".join(f"{i + 1}: {t[i]:.3f} / {a[i]:.3f}" for i in points))
    for c in summary["comparisons"]:
        agree = "agree" if c["losses_agree"] else "DIFFER"
        print(f"{c['precision']}: alpha (training) = {format_factor(c['alpha'])} ({c['alpha']['rounds']} steps), "
              f"beta (inference) = {format_factor(c['beta'])} ({c['beta']['rounds']} batches); "
              f"losses {agree} ({c['loss_difference']:.2%} apart, tolerance {c['loss_tolerance']:.0%})")
        g = c["gamma"]
        if g is not None:
            print(f"{c['precision']}: gamma ({g['processes']} processes, {g['process_group']}, "
                  f"{g['threads_per_process']} thread(s) each) = {format_factor(g, verdict=False)} "
                  f"({g['rounds']} rounds; 1 = linear scaling): {g['images_per_s_all']:.0f} images/s together, "
                  f"{g['images_per_s_one']:.0f} alone")
    if all(c["reference_only"] for c in summary["comparisons"]):
        print("both runs use torch's ops here (every converted layer resolves to the reference backend): "
              "alpha and beta measure accelkernels' per-call dispatch overhead (and the reference's in-place "
              "fused ReLU in inference), not kernels")
    else:
        for c in summary["comparisons"]:
            print(f"{c['precision']}: the converted layers run {', '.join(c['converted_layers_run'])}")


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
