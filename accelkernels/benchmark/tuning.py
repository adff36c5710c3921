"""The tuning table: for this card, the fastest backend per op, dtype, layout and shape bucket.

``accelkernels tune`` (or ``bench --tune``) writes it from benchmark rows as JSON under the user's
cache directory, one file per card and versions; ``backend="auto"`` consults it for CUDA tensors,
falling back to the built-in order. A corrupt file, or one written for another card or versions, is
ignored with a warning. Buckets are powers of two of the GEMM (or implicit-GEMM) dimensions, so
nearby shapes share a decision.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import torch

from .problems import DTYPES

FORMAT = 1
CANDIDATES = ("torch", "cuda", "triton")  # "auto" and ladder steps are not choices


def cache_dir() -> Path:
    if os.environ.get("ACCELKERNELS_CACHE_DIR"):
        return Path(os.environ["ACCELKERNELS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accelkernels"


def card_key(device_index: int = 0) -> dict:
    from .. import __version__

    props = torch.cuda.get_device_properties(device_index)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {"device": props.name, "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
            "triton": triton_version, "accelkernels": __version__}


def table_path(key: dict) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{key['device']}-sm{key['capability']}-torch{key['torch']}-triton{key['triton']}")
    return cache_dir() / "tuning" / f"{slug}.json"


def _log2_bucket(x: int) -> int:
    return round(math.log2(x)) if x > 0 else 0


def bucket(op: str, dtype_name: str, layout: str, gemm_dims: tuple[int, int, int], depthwise: bool = False) -> str:
    m, n, k = (_log2_bucket(v) for v in gemm_dims)
    return f"{op}|{dtype_name}|{layout}|m{m}|n{n}|k{k}" + ("|dw" if depthwise else "")


def case_bucket(op: str, dtype_name: str, layout: str, dims: dict) -> str:
    """Bucket of a benchmark case (suites' columns)."""
    if op == "conv2d":
        g = dims["groups"]
        gemm = (dims["batch"] * dims["height"] * dims["width"], dims["out_ch"],
                dims["in_ch"] // g * dims["kernel_h"] * dims["kernel_w"])
        return bucket(op, dtype_name, layout, gemm, depthwise=g > 1 and g == dims["in_ch"])
    return bucket(op, dtype_name, "row-major", (dims["m"], dims["n"], dims["k"]))


_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def call_bucket(op: str, tensors) -> str | None:
    """Bucket of a live call (the same dimensions as case_bucket), or None when it has no bucket."""
    x, w = tensors[0], tensors[1]
    dtype_name = _DTYPE_NAMES.get(x.dtype)
    if dtype_name is None:
        return None
    if op == "conv2d" and x.dim() == 4:
        n, c, h, wd = x.shape
        k, cg, r, s = w.shape
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else "nchw"
        return bucket(op, dtype_name, layout, (n * h * wd, k, cg * r * s), depthwise=cg == 1 and k % c == 0 and c > 1)
    if op == "linear":
        return bucket(op, dtype_name, "row-major", (x.numel() // max(x.shape[-1], 1), w.shape[0], w.shape[-1]))
    if op == "matmul" and x.dim() >= 2 and w.dim() >= 2:
        return bucket(op, dtype_name, "row-major", (x.shape[-2], w.shape[-1], x.shape[-1]))
    return None


def build_table(rows: list[dict], key: dict) -> dict:
    """The backend per bucket from forward rows that passed their correctness check.

    Rows of paired timing (with a ``verdict``): a backend replaces the reference only where its
    interval says "faster" (a "no difference" is no reason to leave cuBLAS/cuDNN), the largest
    ratio winning. Rows without a verdict (older results): the lowest median latency."""
    from .suites import load_suite

    dims_of = {}
    best: dict[str, tuple[float, str]] = {}
    for r in rows:
        if r["status"] != "ok" or r["mode"] != "fwd" or r["provider"] not in CANDIDATES:
            continue
        if (r["suite"], r["case"]) not in dims_of:
            dims_of.update({(c.suite, c.name): c.dims for c in load_suite(r["suite"])})
        b = case_bucket(r["op"], r["dtype"], r["layout"], dims_of[(r["suite"], r["case"])])
        if "verdict" in r and r["verdict"] is not None:
            # score: the ratio to the reference (the reference itself 1), higher is better
            score = 1.0 if r["provider"] == "torch" else (r["speedup"] if r["verdict"] == "faster" else None)
        else:
            score = -r["median_ms"]
        if score is not None and (b not in best or score > best[b][0]):
            best[b] = (score, r["provider"])
    return {"format": FORMAT, "key": key, "entries": {b: p for b, (_, p) in sorted(best.items())}}


def save(table: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def load(path: Path, key: dict) -> dict[str, str] | None:
    """The entries of a valid table for ``key``; None (with a warning) for a corrupt or foreign file."""
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text())
        ok = (isinstance(table, dict) and table.get("format") == FORMAT and isinstance(table.get("entries"), dict)
              and all(isinstance(v, str) and v in CANDIDATES for v in table["entries"].values()))
    except (OSError, ValueError) as exc:
        warnings.warn(f"accelkernels: ignoring unreadable tuning file {path}: {exc}", RuntimeWarning, stacklevel=2)
        return None
    if not ok:
        warnings.warn(f"accelkernels: ignoring malformed tuning file {path}", RuntimeWarning, stacklevel=2)
        return None
    if table.get("key") != key:
        warnings.warn(f"accelkernels: ignoring tuning file {path}: written for {table.get('key')}, this is {key}; "
                      "rerun `accelkernels tune`", RuntimeWarning, stacklevel=2)
        return None
    return table["entries"]


_tables: dict[int, dict[str, str]] = {}  # device index -> entries ({} when there is no table)


def lookup(op: str, tensors) -> str | None:
    """The tuned backend for this CUDA call, or None. The table is read once per device."""
    index = tensors[0].device.index or 0
    if index not in _tables:
        key = card_key(index)
        _tables[index] = load(table_path(key), key) or {}
    entries = _tables[index]
    if not entries:
        return None
    b = call_bucket(op, tensors)
    return entries.get(b) if b else None


def forget() -> None:
    """Drop the tables read so far (after `tune` writes a new one, and in tests)."""
    _tables.clear()
