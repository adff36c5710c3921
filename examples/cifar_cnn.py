"""The seed article's worked example (section 5), made real and measurable with accelkernels.

Its CNN (conv 3->32 3x3 + ReLU, max-pool, conv 32->64 3x3 + ReLU, max-pool, conv 64->64 3x3 + ReLU,
flatten, dense 1024->64 + ReLU, dense 64->10; Adam, cross-entropy) is trained twice from the same
initial weights on the same batches — torch's layers, then ``accelkernels.convert(model)`` with each
ReLU fused into the layer before it — in fp32 and under autocast (bf16, or fp16 with a GradScaler).
Per run it prints the step time, images/s, inference time and accuracy, and the article's speedup
factors: α = T_torch / T_accelkernels for a training step, β for inference (above 1: we are faster).

    python examples/cifar_cnn.py                           # synthetic CIFAR-shaped data, runs anywhere
    python examples/cifar_cnn.py --data cifar-10-batches-bin --steps 2000 --backend cuda
    torchrun --nproc_per_node 2 examples/cifar_cnn.py --ddp   # data-parallel (gloo on CPU, nccl on GPUs)

``--data`` takes the extracted *binary* distribution (cifar-10-binary.tar.gz). ``--backend`` is what
the converted layers run (default "auto": the fastest measured backend for the card, the reference
until a GPU run says otherwise; "cuda" or "triton" to time our kernels). ``--compile`` compiles both
models with torch.compile, so α compares like with like. ``--profile DIR`` writes a Chrome/TensorBoard
trace of a few steps of each run, in which our ops appear by name (accelkernels::conv2d, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_data import Split, load_cifar10, preprocess, synthetic_cifar10

import accelkernels as ak

# The two runs of a precision learn alike when the means of their last LOSS_WINDOW losses differ by
# at most this fraction of torch's (of LOSS_FLOOR when torch's is below it, so that two nearly-zero
# losses are not compared by their ratio). The reference backend reproduces torch exactly; kernels
# that round differently drift apart slowly over a run, more so at 16 bits.
LOSS_TOLERANCE = {"fp32": 0.02, "bf16": 0.05, "fp16": 0.05}
LOSS_WINDOW = 10
LOSS_FLOOR = 0.1


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


def fuse_relus(model: nn.Sequential) -> nn.Sequential:
    """In place: each accelkernels Conv2d/Linear followed by an nn.ReLU computes the ReLU in its own
    epilogue (one pass over the output instead of two); the ReLU becomes an Identity. Parameters
    and state_dict keys are unchanged."""
    for i in range(len(model) - 1):
        layer, after = model[i], model[i + 1]
        if isinstance(layer, (ak.nn.Conv2d, ak.nn.Linear)) and type(after) is nn.ReLU and layer.activation is None:
            layer.activation = "relu"
            model[i + 1] = nn.Identity()
    return model


@dataclass
class RunResult:
    layers: str  # "torch" or "accelkernels"
    precision: str  # "fp32", "bf16", "fp16"
    step_ms: float
    images_per_s: float
    infer_ms: float
    accuracy: float
    losses: list[float] = field(default_factory=list)


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


# --- one run ------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def train_and_measure(model: nn.Module, train: Split, test: Split, args, precision: str, device: torch.device,
                      dist_info: Dist, label: str) -> RunResult:
    """Train ``args.steps`` steps (the batches and flips drawn from ``args.seed``: the same for every
    run), timing each; then time inference and measure test accuracy."""
    if args.compile:
        model = torch.compile(model)
    if dist_info.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    order = torch.Generator().manual_seed(args.seed)
    batch, n = args.batch_size, len(train)
    if n < batch * dist_info.world:
        raise SystemExit(f"the training set has {n} images, fewer than one global batch ({batch} x "
                         f"{dist_info.world} processes): lower --batch-size")
    per_epoch = max(1, n // (batch * dist_info.world))
    perm = torch.randperm(n, generator=order)
    losses, times = [], []
    progress = tqdm(range(args.steps), desc=label, disable=not dist_info.main or args.no_progress, leave=False)
    for step in progress:
        if step and step % per_epoch == 0:
            perm = torch.randperm(n, generator=order)
        start = (step % per_epoch) * batch * dist_info.world + dist_info.rank * batch
        idx = perm[start:start + batch]
        flip = torch.rand(batch * dist_info.world, generator=order)[dist_info.rank * batch:][:batch] < 0.5
        synchronize(device)
        t0 = time.perf_counter()
        x = preprocess(train.images[idx].to(device, non_blocking=True), flip.to(device))
        y = train.labels[idx].to(device, non_blocking=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        losses.append(mean_over_ranks(loss.detach().float(), dist_info).item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    warmup = min(5, len(times) // 4)  # first steps: compilation, autotuning, allocator growth
    step_s = statistics.median(times[warmup:])
    infer_s, accuracy = evaluate(model.module if dist_info.world > 1 else model, test, args, precision, device)
    return RunResult(label.split()[0], precision, step_s * 1e3, batch * dist_info.world / step_s, infer_s * 1e3,
                     accuracy, losses)


@torch.no_grad()
def evaluate(model: nn.Module, test: Split, args, precision: str, device: torch.device) -> tuple[float, float]:
    """(median seconds per forward of one batch, accuracy over the whole test set)."""
    model.eval()
    times, correct = [], 0
    for start in range(0, len(test), args.batch_size):
        x = preprocess(test.images[start:start + args.batch_size].to(device))
        synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            logits = model(x)
        synchronize(device)
        if x.shape[0] == args.batch_size:
            times.append(time.perf_counter() - t0)
        correct += (logits.argmax(1).cpu() == test.labels[start:start + args.batch_size]).sum().item()
    model.train()
    timed = times[1:] or times  # the first batch pays for warm-up
    return (statistics.median(timed) if timed else float("nan")), correct / max(1, len(test))


# --- the whole example ----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the extracted CIFAR-10 binary folder (data_batch_*.bin, test_batch.bin); "
                   "default: synthetic CIFAR-shaped data")
    p.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step and process (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16",
                   help="the autocast runs after the fp32 ones (fp16 uses a GradScaler; none: fp32 only)")
    p.add_argument("--backend", default="auto", help="what the converted layers run (auto, torch, triton, cuda)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--ddp", action="store_true", help="data-parallel under torchrun")
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
    precisions = ["fp32"] + ([args.amp] if args.amp != "none" else [])
    results: list[RunResult] = []
    for precision in precisions:
        torch.manual_seed(args.seed)
        reference = build_model().to(device)
        ours = fuse_relus(ak.convert(build_model().to(device), backend=args.backend))
        ours.load_state_dict(reference.state_dict())  # the same initial weights
        for label, model in (("torch", reference), ("accelkernels", ours)):
            results.append(train_and_measure(model, train, test, args, precision, device, dist_info,
                                             f"{label} {precision}"))
            if args.profile and dist_info.main:
                profile_steps(model, train, args, precision, device,
                              Path(args.profile) / f"{label}_{precision}_rank{dist_info.rank}.json")
    summary = summarize(results, args, device, dist_info)
    if dist_info.main:
        print_summary(summary)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary


def summarize(results: list[RunResult], args, device: torch.device, dist_info: Dist) -> dict:
    by = {(r.layers, r.precision): r for r in results}
    comparisons = []
    for precision in dict.fromkeys(r.precision for r in results):
        t, a = by[("torch", precision)], by[("accelkernels", precision)]
        window = min(LOSS_WINDOW, len(t.losses))
        t_loss, a_loss = statistics.fmean(t.losses[-window:]), statistics.fmean(a.losses[-window:])
        difference = abs(t_loss - a_loss) / max(abs(t_loss), LOSS_FLOOR)
        comparisons.append({
            "precision": precision, "alpha": t.step_ms / a.step_ms, "beta": t.infer_ms / a.infer_ms,
            "final_loss_torch": t_loss, "final_loss_accelkernels": a_loss, "loss_difference": difference,
            "loss_tolerance": LOSS_TOLERANCE[precision], "losses_agree": difference <= LOSS_TOLERANCE[precision],
        })
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "accelkernels": ak.__version__, "backend": args.backend,
        "data": args.data or f"synthetic ({args.synthetic_size} images)", "steps": args.steps,
        "batch_size": args.batch_size, "world_size": dist_info.world, "compiled": args.compile,
        "runs": [asdict(r) for r in results], "comparisons": comparisons,
    }


def print_summary(summary: dict) -> None:
    print(f"\nseed CNN on {summary['device']} | data: {summary['data']} | {summary['steps']} steps x "
          f"{summary['batch_size']} images x {summary['world_size']} process(es) | converted layers: backend="
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
        print(f"{c['precision']}: alpha (training) = {c['alpha']:.2f}, beta (inference) = {c['beta']:.2f}; "
              f"losses {agree} ({c['loss_difference']:.2%} apart, tolerance {c['loss_tolerance']:.0%})")


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
