"""Shape suites: data, not code. Each is a CSV table in bench/suites/ (installed with the package as
accelkernels.bench_suites); the columns used depend on the row's op:

- matmul / linear: m, n, k (linear: input (m, k), weight (n, k)).
- conv2d: batch, in_ch, height, width, out_ch, kernel_h, kernel_w, stride, padding, groups.
- quick: 1 when the case belongs to the ``--quick`` run.
- activation (optional column; conv2d and linear): relu, gelu or silu fused into our call; torch's
  provider runs its op, then the activation as a separate kernel (what a model without fusion does).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources

GEMM_FIELDS = ("m", "n", "k")
CONV_FIELDS = ("batch", "in_ch", "height", "width", "out_ch", "kernel_h", "kernel_w", "stride", "padding", "groups")
OPS = ("conv2d", "matmul", "linear")
ACTIVATIONS = ("relu", "gelu", "silu")


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    op: str
    dims: dict = field(hash=False)
    quick: bool = True
    activation: str | None = None

    def shape_text(self) -> str:
        d = self.dims
        if self.op == "conv2d":
            text = (f"N{d['batch']} C{d['in_ch']} {d['height']}x{d['width']} -> K{d['out_ch']} "
                    f"{d['kernel_h']}x{d['kernel_w']} s{d['stride']} p{d['padding']} g{d['groups']}")
        else:
            text = f"{d['m']}x{d['n']}x{d['k']}"
        return text + (f" +{self.activation}" if self.activation else "")


def _suite_dir():
    return resources.files("accelkernels.bench_suites")


def available_suites() -> list[str]:
    return sorted(p.name.removesuffix(".csv") for p in _suite_dir().iterdir() if p.name.endswith(".csv"))


def _parse_row(suite: str, row: dict, line: int) -> Case:
    op = row.get("op", "").strip()
    if op not in OPS:
        raise ValueError(f"suite {suite!r} line {line}: op must be one of {OPS}, got {op!r}")
    fields = CONV_FIELDS if op == "conv2d" else GEMM_FIELDS
    try:
        dims = {f: int(row[f]) for f in fields}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"suite {suite!r} line {line}: {op} needs integer columns {fields} ({exc})") from exc
    if min(v for f, v in dims.items() if f != "padding") <= 0 or dims.get("padding", 0) < 0:
        raise ValueError(f"suite {suite!r} line {line}: sizes must be positive, got {dims}")
    activation = (row.get("activation") or "").strip() or None
    if activation is not None and (activation not in ACTIVATIONS or op == "matmul"):
        raise ValueError(f"suite {suite!r} line {line}: activation must be empty or one of {ACTIVATIONS} "
                         f"(conv2d and linear only), got {activation!r} for {op}")
    return Case(suite, row["name"].strip(), op, dims, row.get("quick", "1").strip() == "1", activation)


def load_suite(name: str) -> list[Case]:
    path = _suite_dir() / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"unknown suite {name!r}; available: {', '.join(available_suites())}")
    with path.open(newline="") as f:
        return [_parse_row(name, row, i) for i, row in enumerate(csv.DictReader(f), start=2)]


def select(suites: list[str] | None, ops: list[str] | None, quick: bool) -> list[Case]:
    """Cases of the named suites (all when None), for these ops, quick subset or all."""
    cases = [c for s in (suites or available_suites()) for c in load_suite(s)]
    return [c for c in cases if (ops is None or c.op in ops) and (c.quick or not quick)]
