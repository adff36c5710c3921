"""`accelkernels bench` and `accelkernels tune`."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

import torch

from .problems import DTYPES, MODES
from .suites import OPS, available_suites


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", choices=[*OPS, "all"], default="all", help="which op to benchmark")
    p.add_argument("--suite", action="append", choices=available_suites(), help="suite(s) to run (default: all)")
    p.add_argument("--dtype", action="append", choices=list(DTYPES),
                   help="dtype(s) (default: bf16 and fp32 on a GPU, fp32 on the CPU; --full adds fp16)")
    p.add_argument("--backend", action="append", help="provider(s): torch, cuda, triton, auto, cuda:<kernel> "
                   "(default: the reference, every backend, and the CUDA ladder's steps)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True, help="the quick subset (default)")
    size.add_argument("--full", action="store_true", help="every case, dtype, layout and mode")
    p.add_argument("--mode", action="append", choices=MODES, help="modes (default: fwd and fwd+bwd; --full: all)")
    p.add_argument("--out", type=Path, help="output folder (default: ./accelkernels-bench/<date>-<device>)")
    p.add_argument("--ceilings", action="store_true", help="measure copy bandwidth and matmul peak first, for the roofline")
    p.add_argument("--tune", action="store_true", help="also write the tuning table that backend='auto' consults")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _default_out(device_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower()
    return Path("accelkernels-bench") / f"{datetime.date.today().isoformat()}-{slug}"


def bench(args: argparse.Namespace) -> int:
    from .. import _extension
    from . import ceilings, report, runner
    from .suites import select

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        print("accelkernels bench: no CUDA GPU found; timing the CPU reference path (and any backend that runs "
              "on the CPU). GPU numbers need a GPU machine.", file=sys.stderr)
    full = args.full
    dtypes = args.dtype or (["fp16", "bf16", "fp32"] if full and device == "cuda" else
                            ["bf16", "fp32"] if device == "cuda" else ["fp32"])
    modes = args.mode or (list(MODES) if full else ["fwd", "fwd+bwd"])
    layouts = ["nhwc", "nchw"] if full else ["nhwc" if device == "cuda" else "nchw"]
    providers = args.backend or [*runner.PROVIDERS, *runner.ladder_providers()]
    cases = select(args.suite, None if args.op == "all" else [args.op], quick=not full)
    settings = runner.Settings(device=device, dtypes=dtypes, modes=modes, layouts=layouts, providers=providers,
                               ceilings=ceilings.measure(device) if args.ceilings else runner.default_ceilings(device))
    env = runner.environment(device)
    rows = runner.run(cases, settings, progress=not args.no_progress, env=env)
    out = args.out or _default_out(env["device"] if device == "cuda" else "cpu")
    settings_text = (f"{'full' if full else 'quick'}; dtypes {', '.join(dtypes)}; modes {', '.join(modes)}; "
                     f"conv layouts {', '.join(layouts)}; providers {', '.join(providers)}; "
                     f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}; "
                     f"cudnn.benchmark {torch.backends.cudnn.benchmark}; extension {_extension.status().mode}")
    meta = {"settings_text": settings_text, "no_gpu": device == "cpu", "ceilings": settings.ceilings, **env}
    report.write_data(rows, out, meta)
    plots = report.write_plots(rows, out, settings.ceilings)
    report.write_markdown(rows, out, meta, plots)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "wrong", "error", "skipped", "unavailable")}
    print(f"accelkernels bench: {len(rows)} rows ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}) -> "
          f"{out / 'report.md'}")
    if args.tune:
        _write_tuning(rows, device)
    return 1 if counts["wrong"] or counts["error"] else 0


def _write_tuning(rows: list[dict], device: str) -> None:
    from . import tuning

    if device != "cuda":
        print("accelkernels tune: no CUDA GPU: backend='auto' always uses the reference on the CPU; nothing to tune")
        return
    key = tuning.card_key()
    table = tuning.build_table(rows, key)
    path = tuning.save(table, tuning.table_path(key))
    tuning.forget()
    print(f"accelkernels tune: {len(table['entries'])} buckets -> {path}")
    print(json.dumps(table["entries"], indent=1))


def tune(args: argparse.Namespace) -> int:
    args.tune, args.mode = True, args.mode or ["fwd"]
    return bench(args)
