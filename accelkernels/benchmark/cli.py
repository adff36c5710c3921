"""`accelkernels bench` and `accelkernels tune`."""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time
from pathlib import Path

import torch

from .problems import DTYPES, MODES
from .runner import CPU_MAX_FLOPS
from .suites import OPS, available_suites


def known_providers() -> tuple[list[str], str | None]:
    """Every provider name `--backend` accepts here, and why the CUDA kernels' names could not be
    listed (None when they could): they come from the compiled extension's registry."""
    from .. import _extension
    from .runner import PROVIDERS, ladder_providers

    status = _extension.status()  # ladder_providers lists cuda:<kernel> only when it is loaded
    return [*PROVIDERS, *ladder_providers()], None if status.loaded else status.reason


def provider_name(value: str) -> str:
    """argparse type of --backend: refuse an unknown name before any case runs, listing the valid
    ones. ``cuda:<kernel>`` is checked against the extension's registry when the extension is
    there; without it the name cannot be checked, and those rows say the extension is missing."""
    names, no_registry = known_providers()
    if value in names:
        return value
    if value.startswith("cuda:") and no_registry is not None and value[5:].isidentifier():
        return value
    hint = "" if no_registry is None else (" (cuda:<kernel> names come from the CUDA extension, not available here: "
                                           f"{no_registry})")
    raise argparse.ArgumentTypeError(f"unknown provider {value!r}; choose from {', '.join(names)}{hint}")


def positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return x


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value!r}")
    return n


def add_arguments(p: argparse.ArgumentParser, command: str | None = None) -> None:
    """The options of `accelkernels bench` (command "bench") or `accelkernels tune` ("tune": no
    --tune, which it implies). Without ``command``, the parser's prog name tells which subcommand
    it is (accelkernels/cli.py passes just the parser)."""
    command = command or ("tune" if p.prog.split()[-1] == "tune" else "bench")
    p.add_argument("--op", choices=[*OPS, "all"], default="all", help="which op to benchmark")
    p.add_argument("--suite", action="append", choices=available_suites(), help="suite(s) to run (default: all)")
    p.add_argument("--dtype", action="append", choices=list(DTYPES),
                   help="dtype(s) (default: bf16 and fp32 on a GPU, fp32 on the CPU; --full adds fp16)")
    p.add_argument("--backend", action="append", type=provider_name, metavar="PROVIDER",
                   help="provider(s): torch, cuda, triton, auto, cuda:<kernel>, triton:<kernel> "
                   "(default: the reference, every backend, and each named GEMM kernel)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True, help="the quick subset (default)")
    size.add_argument("--full", action="store_true", help="every case, dtype, layout and mode")
    p.add_argument("--mode", action="append", choices=MODES,
                   help="modes (default: fwd and fwd+bwd; --full: all)" if command == "bench" else "modes (default: fwd)")
    p.add_argument("--out", type=Path, help="output folder (default: ./accelkernels-bench/<date>-<device>)")
    p.add_argument("--ceilings", action="store_true",
                   help="measure copy bandwidth and matmul peak first, for the roofline and %% peak (default: "
                   "the datasheet of an H100/H200; none on a CPU, where a quick measurement is no ceiling)")
    p.add_argument("--cpu-max-gflop", type=positive_float, default=CPU_MAX_FLOPS / 1e9, metavar="GFLOP",
                   help="on a CPU, skip cases whose forward is over this many GFLOP (default: %(default)g)")
    p.add_argument("--pair-budget", type=positive_float, metavar="SECONDS",
                   help="time budget of each paired measurement (default: 1 s on a CPU, 2 s on a GPU); "
                   "more gives tighter intervals on a noisy machine")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch's CPU threads during the run (default on a CPU: every core but one, so other "
                   "processes do not stall its parallel regions; on a GPU: unchanged)")
    if command == "bench":
        p.add_argument("--tune", action="store_true", help="also write the tuning table that backend='auto' consults")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _default_out(device_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower()
    return Path("accelkernels-bench") / f"{datetime.date.today().isoformat()}-{slug}"


def bench(args: argparse.Namespace) -> int:
    from .. import _extension
    from . import ceilings, report, runner, timing
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
    started = time.perf_counter()
    threads = args.threads or (runner.default_cpu_threads() if device == "cpu" else None)
    with runner.torch_threads(threads):  # a measured ceiling with the threads the run will have
        peaks = ceilings.measure(device) if args.ceilings else runner.default_ceilings(device)
    settings = runner.Settings(device=device, dtypes=dtypes, modes=modes, layouts=layouts, providers=providers,
                               ceilings=peaks, cpu_max_flops=args.cpu_max_gflop * 1e9, pair_budget_s=args.pair_budget,
                               threads=threads)
    env = runner.environment(device)
    rows = runner.run(cases, settings, progress=not args.no_progress, env=env)
    out = args.out or _default_out(env["device"] if device == "cuda" else "cpu")
    budget = args.pair_budget or timing.PAIR_BUDGET_S[device]
    settings_text = (f"{'full' if full else 'quick'}; dtypes {', '.join(dtypes)}; modes {', '.join(modes)}; "
                     f"conv layouts {', '.join(layouts)}; providers {', '.join(providers)}; "
                     f"pairing budget {budget:g} s; "
                     + (f"CPU size limit {args.cpu_max_gflop:g} GFLOP per forward; torch threads "
                        f"{settings.threads or torch.get_num_threads()} of {os.cpu_count()} cores; "
                        if device == "cpu" else "")
                     + f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}; "
                     f"cudnn.benchmark {torch.backends.cudnn.benchmark}; extension {_extension.status().mode}")
    meta = {"settings_text": settings_text, "no_gpu": device == "cpu", "ceilings": settings.ceilings,
            "allocator_pinned": settings.allocator_pinned,
            "cpu_threads": settings.threads if device == "cpu" else None, "cpu_cores": os.cpu_count(), **env}
    plots = report.write_plots(rows, out, settings.ceilings)
    if plots is None:
        print(f"accelkernels bench: {report.PLOTS_HINT}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    meta["run_seconds"] = round(elapsed, 1)
    report.write_data(rows, out, meta)
    report.write_markdown(rows, out, meta, plots)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "wrong", "error", "skipped", "unavailable")}
    print(f"accelkernels bench: {len(rows)} rows ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}) in "
          f"{elapsed:.0f} s -> {out / 'report.md'}")
    if args.tune:
        _write_tuning(rows, device)
    return 1 if counts["wrong"] or counts["error"] else 0


def _write_tuning(rows: list[dict], device: str) -> None:
    from ..backends import autotune
    from . import tuning

    if device != "cuda":
        print("accelkernels tune: no CUDA GPU: on the CPU backend='auto' runs the reference (only the CPU "
              "executor and Triton's interpreter compete with it there, and they time themselves); nothing to tune")
        return
    key = tuning.card_key()
    table = tuning.build_table(rows, key)
    path = tuning.add(tuning.table_path(key), key, table["entries"])  # online decisions of other shapes stay
    autotune.forget()
    print(f"accelkernels tune: {len(table['entries'])} decisions -> {path}")
    print(format_decisions(table["entries"]))


def format_decisions(entries: dict[str, dict]) -> str:
    """One line per decision: the backend, who decided, the reference's time and each candidate's ratio."""
    if not entries:
        return "  (no decisions)"
    from ..backends.autotune import Decision

    width = max(map(len, entries))
    return "\n".join(f"  {k:<{width}}  {Decision.from_entry(e).describe()}" for k, e in sorted(entries.items()))


def show(args: argparse.Namespace) -> int:
    """`accelkernels tune --show`: every table in the cache folder, the one this card uses marked."""
    from ..backends import tuning_table

    in_use = None
    if torch.cuda.is_available():
        in_use = tuning_table.table_path(tuning_table.card_key(torch.cuda.current_device()))
    tables = tuning_table.tables_on_disk()
    print(f"tuning tables in {tuning_table.cache_dir() / 'tuning'}: {len(tables)}"
          + ("" if in_use is not None else " (no CUDA GPU here: none is in use)"))
    if in_use is not None and all(path != in_use for path, _, _ in tables):
        print(f"  this card's table {in_use.name} does not exist yet: backend='auto' writes it on first use")
    for path, table, why in tables:
        mark = " (this card's)" if path == in_use else ""
        if table is None:
            print(f"\n{path.name}{mark}: ignored: {why}")
            continue
        k = table.get("key", {})
        print(f"\n{path.name}{mark}: {len(table['entries'])} decisions for {k.get('device')} (sm {k.get('capability')}), "
              f"torch {k.get('torch')}, triton {k.get('triton')}, accelkernels {k.get('accelkernels')}")
        print(format_decisions(table["entries"]))
    return 0


def tune(args: argparse.Namespace) -> int:
    if getattr(args, "show", False):
        return show(args)
    args.tune, args.mode = True, args.mode or ["fwd"]
    return bench(args)
