"""What `accelkernels info` reports: versions, the GPU, the extension's state, the environment variables,
op x backend support.

`info` is where a user looks when something is wrong, so it never raises on an invalid environment
variable: the variable is listed as invalid (and in the warnings), and the parts that depend on it say
they cannot tell.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import subprocess

import torch

from . import __version__, _env, _extension
from .backends import available_backends, op_support_table


def _triton_version() -> str:
    if importlib.util.find_spec("triton") is None:
        return "not installed"
    import triton

    return triton.__version__


def _nvcc_version() -> str:
    nvcc = _extension.nvcc_path()
    if nvcc is None:
        return "not found (set CUDA_HOME)"
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{nvcc} did not answer ({exc})"
    match = re.search(r"release ([\d.]+)", out)
    return f"{match.group(1) if match else 'unknown'} ({nvcc})"


def _gpus() -> list[dict]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "sms": props.multi_processor_count,
            }
        )
    return gpus


def _autotune() -> dict:
    """Whether auto times new problems, and the tables of decisions it uses (one per card and versions)."""
    from .backends import tuning_table

    tables = []
    if torch.cuda.is_available():
        seen = set()
        for i in range(torch.cuda.device_count()):
            key = tuning_table.card_key(i)
            path = tuning_table.table_path(key)
            if path in seen:
                continue
            seen.add(path)
            table, why = tuning_table.read(path)
            if table is not None and table.get("key") != key:
                table, why = None, "written for another card or versions"
            tables.append({"gpus": [j for j in range(torch.cuda.device_count())
                                    if tuning_table.table_path(tuning_table.card_key(j)) == path],
                           "path": str(path), "exists": path.exists(),
                           "decisions": len(table["entries"]) if table is not None else 0, "ignored": why})
    return {"enabled": _env.flag("ACCELKERNELS_AUTOTUNE"), "tables": tables}


def _emulator_status() -> str:
    from . import emulator

    if _env.flag("ACCELKERNELS_BUILD_EMULATOR") and emulator.enabled():
        try:
            emulator.module()
        except emulator.EmulatorBuildError:
            pass
    return emulator.status()


_SAY_WHY = object()


def _unless_invalid(read, cannot_tell=_SAY_WHY):
    """read(), or "cannot tell: <why>" (or cannot_tell) if it reads an environment variable that holds
    an invalid value."""
    try:
        return read()
    except _env.EnvironmentVariableError as exc:
        return f"cannot tell: {exc}" if cannot_tell is _SAY_WHY else cannot_tell


def collect() -> dict:
    """Everything `info` shows, as plain data (also printed with --json)."""
    ext = _extension.status()
    nvcc = _nvcc_version()
    environment = _env.describe()
    warnings = [v["error"] for v in environment.values() if not v["valid"]]
    if torch.version.cuda and nvcc[0].isdigit() and not nvcc.startswith(torch.version.cuda.split(".")[0] + "."):
        warnings.append(f"nvcc {nvcc.split()[0]} and torch's CUDA {torch.version.cuda} differ in major version")
    return {
        "accelkernels": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none (CPU-only build)",
        "triton": _triton_version(),
        "nvcc": nvcc,
        "gpus": _gpus(),
        "extension": {
            "mode": ext.mode,
            "detail": ext.reason,
            "build_info": ext.build_info,
            "compile_on_first_use": _unless_invalid(_extension.describe_jit_possibility),
        },
        "cuda_emulator": _unless_invalid(_emulator_status),
        "autotune": _unless_invalid(_autotune, None),
        "environment": environment,
        # None when an invalid variable hides the answer (the warnings name it)
        "backends": _unless_invalid(available_backends, None),
        "ops": _unless_invalid(op_support_table, None),
        "warnings": warnings,
    }


def _autotune_lines(auto: dict | None) -> list[str]:
    if auto is None:
        return ["autotune      cannot tell while an environment variable is invalid (see the warnings)"]
    state = ("on: backend='auto' times the backends on the first call of each new problem"
             if auto["enabled"] else "off (ACCELKERNELS_AUTOTUNE=0): decisions on record only")
    lines = [f"autotune      {state}"]
    if not auto["tables"]:
        lines.append("              no CUDA GPU: no tuning table in use (decisions on the CPU stay in the process)")
    for t in auto["tables"]:
        held = (f"{t['decisions']} decisions" if t["exists"] and t["ignored"] is None else
                f"ignored: {t['ignored']}" if t["exists"] else "not written yet")
        lines.append(f"              gpu {','.join(map(str, t['gpus']))}: {t['path']} ({held}; `accelkernels tune --show`)")
    return lines


def format_text(info: dict) -> str:
    lines = [
        f"accelkernels  {info['accelkernels']}",
        f"python        {info['python']}",
        f"torch         {info['torch']} (CUDA {info['torch_cuda']})",
        f"triton        {info['triton']}",
        f"nvcc          {info['nvcc']}",
    ]
    if info["gpus"]:
        for g in info["gpus"]:
            lines.append(
                f"gpu {g['index']}         {g['name']}, compute capability {g['capability']}, "
                f"{g['sms']} SMs, {g['memory_gib']} GiB"
            )
    else:
        lines.append("gpu           none found (the reference path runs everything on the CPU)")
    ext = info["extension"]
    lines.append(f"extension     {ext['mode']}: {ext['detail']}")
    if ext["build_info"]:
        b = ext["build_info"]
        lines.append(
            f"              built for torch {b.get('torch_version')}, CUDA {b.get('cuda_version')}, "
            f"arch {b.get('arch_list')}, kernels: {len(b.get('kernels', []))}"
        )
    lines.append(f"              compile on first use: {ext['compile_on_first_use']}")
    lines.append(f"cpu executor  {info['cuda_emulator']}")
    lines += _autotune_lines(info["autotune"])
    lines.append("")
    lines.append("environment   (value, or unset: what it does)")
    width = max(map(len, info["environment"]))
    for name, v in info["environment"].items():
        value = "unset" if v["value"] is None else repr(v["value"]) if not v["value"].strip() else v["value"]
        if v["effect"] is not None:
            value += f" ({v['effect']})"
        lines.append(f"  {name:<{width}}  {value:<16} {v['means']}")
    lines.append("")
    if info["backends"] is None or info["ops"] is None:
        lines.append("backends      cannot tell while an environment variable is invalid (see the warnings)")
        lines += [f"warning: {w}" for w in info["warnings"]]
        return "\n".join(lines)
    lines.append("backends")
    for name, b in info["backends"].items():
        lines.append(f"  {name:<7} {'available' if b['available'] else 'unavailable':<12} {b['reason']}")
    lines.append("")
    names = [n for n in info["backends"] if n != "auto"]
    reasons: list[str] = []  # footnotes, so the table stays narrow
    lines.append("op x backend  " + "".join(f"{n:<10}" for n in names))
    for op, row in info["ops"].items():
        cells = []
        for n in names:
            if row[n] == "yes":
                cells.append("yes")
                continue
            why = row[n].removeprefix("no: ")
            if why not in reasons:
                reasons.append(why)
            cells.append(f"no [{reasons.index(why) + 1}]")
        lines.append(f"  {op:<11} " + "".join(f"{c:<10}" for c in cells))
    for i, why in enumerate(reasons, 1):
        lines.append(f"  [{i}] {why}")
    for w in info["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
