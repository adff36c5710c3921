"""The `accelkernels` command: `info`, `build` (compile the extension now), `bench` and `tune`.

An invalid environment variable (accelkernels/_env.py) ends any command with its message and exit
status 2, argparse's status for a bad argument: it is one, given through the environment.
"""

from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    from . import info

    data = info.collect()
    print(json.dumps(data, indent=2) if args.json else info.format_text(data))
    return 0


def torch_cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def _build(args) -> int:
    from . import _env, _extension, emulator

    if _env.flag("ACCELKERNELS_BUILD_EMULATOR") or emulator.enabled():
        try:
            emulator.module()
            print("accelkernels: CPU executor of the CUDA kernels ready (ACCELKERNELS_CUDA_EMULATE=1 uses it)")
        except emulator.EmulatorBuildError as exc:
            print(f"accelkernels: CPU executor of the CUDA kernels not available: {exc}", file=sys.stderr)
            return 1
        if not torch_cuda_visible():
            return 0
    status = _extension.status(build=True)
    if status.loaded:
        print(f"accelkernels: CUDA extension ready ({status.mode}: {status.reason})")
        return 0
    print(
        f"accelkernels: CUDA extension not available: {status.reason}\n"
        f"  compile on first use here: {_extension.describe_jit_possibility()}",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    from . import __version__, _env

    parser = argparse.ArgumentParser(prog="accelkernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"accelkernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser(
        "info", help="versions, GPU, extension build state, environment variables, op x backend availability")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_info.set_defaults(func=_info)
    p_build = sub.add_parser("build", help="compile the CUDA extension now (needs a GPU and nvcc)")
    p_build.set_defaults(func=_build)
    from .benchmark import cli as bench_cli

    p_bench = sub.add_parser("bench", help="time our kernels against cuBLAS/cuDNN; writes JSON, CSV, report.md, plots")
    bench_cli.add_arguments(p_bench)
    p_bench.set_defaults(func=bench_cli.bench)
    p_tune = sub.add_parser("tune", help="measure which backend is fastest per shape on this card, for backend='auto'")
    bench_cli.add_arguments(p_tune)
    p_tune.add_argument("--show", action="store_true",
                        help="print the decisions on record (every table in the cache folder, with the measured "
                             "ratios) instead of measuring")
    p_tune.set_defaults(func=bench_cli.tune)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `accelkernels`: what it can do, like `pip`, rather than a usage error
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except _env.EnvironmentVariableError as exc:
        print(f"accelkernels: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
