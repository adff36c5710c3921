"""What the Hopper benches share: their command line, the run's metadata, and the exit when this machine
cannot run them (no compute capability 9.0 GPU, or an extension without sm_90a code)."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path


def unavailable_reason() -> str | None:
    import torch

    from accelkernels import _extension

    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    if torch.cuda.get_device_capability() != (9, 0):
        return f"the wgmma kernels run on compute capability 9.0, this GPU is {torch.cuda.get_device_capability()}"
    status = _extension.status(build=True)
    if not status.loaded:
        return f"the CUDA extension is not loaded: {status.reason}"
    if not status.module.wgmma_code_present():
        return "the extension holds no sm_90a code (build with TORCH_CUDA_ARCH_LIST=9.0a)"
    return None


def parse_args(doc: str, argv, quick_help: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json and report.md")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--budget", type=float, default=None, help="seconds per paired measurement")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def start(args: argparse.Namespace, name: str) -> dict | None:
    """The run's metadata, with the device; None (after writing why into OUT/results.json) where it cannot run."""
    import torch

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "dtype": args.dtype,
            "command": " ".join(sys.argv)}
    why = unavailable_reason()
    if why is not None:
        (args.out / "results.json").write_text(json.dumps({"meta": meta, "skipped": why}, indent=1))
        print(f"{name}: {why}", file=sys.stderr)
        return None
    meta["device"] = torch.cuda.get_device_name()
    return meta


def finish(args: argparse.Namespace, lines: list[str], missed: list) -> int:
    """Write OUT/report.md from `lines` and the goals' verdict; the exit status (1: a goal was missed)."""
    lines = lines + ["", f"{len(missed)} goal(s) missed." if missed else "Every goal met."]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"results: {args.out / 'report.md'}")
    return 1 if missed else 0
