"""`accelkernels tune`: the per-card tuning table from benchmark rows.

The table's format, location and reader are accelkernels/backends/tuning_table.py; its keys are the
problem keys that ``backend="auto"`` computes for a live call (accelkernels/backends/autotune.py),
here computed from each case's inputs made on the meta device (no memory, no data), so a case and
the call a model makes with the same shapes share one entry. ``auto`` also writes this table when it
times a new problem on first use; `tune` measures with the benchmark's paired method instead (longer,
with an interval) and its entries replace those.
"""

from __future__ import annotations

from ..backends import autotune
from ..backends.tuning_table import CANDIDATES, FORMAT, add, card_key, load, save, table_path  # noqa: F401
from .problems import DTYPES, make_inputs
from .suites import Case, load_suite


def case_key(case: Case, dtype_name: str, layout: str) -> str:
    """The problem key of a benchmark case's forward (what `bench` times as that row)."""
    inputs = make_inputs(case, DTYPES[dtype_name], "meta", layout, requires_grad=False).tensors
    activation = case.activation or "none"
    if case.op == "conv2d":
        d = case.dims
        conv = ((d["stride"],) * 2, (d["padding"],) * 2, (1, 1), d["groups"])
        return autotune.conv2d_key("fwd", inputs[0], inputs[1], True, *conv, activation)
    if case.op == "linear":
        return autotune.linear_key(*inputs, activation)
    return autotune.matmul_key(*inputs)


def build_table(rows: list[dict], key: dict) -> dict:
    """The backend per problem key from forward rows that passed their correctness check.

    Rows of paired timing (with a ``verdict``): a backend replaces the reference only where its
    interval says "faster" (a "no difference" is no reason to leave cuBLAS/cuDNN), the largest
    ratio winning. Rows without a verdict (older results): the lowest median latency."""
    cases: dict[tuple[str, str], Case] = {}
    best: dict[str, tuple[float, str]] = {}
    ratios: dict[str, dict[str, float | None]] = {}
    reference_ms: dict[str, float | None] = {}
    plain: dict[str, dict[str, float]] = {}  # key -> provider -> median (rows without a verdict)
    for r in rows:
        if r["status"] != "ok" or r["mode"] != "fwd" or r["provider"] not in CANDIDATES:
            continue
        if (r["suite"], r["case"]) not in cases:
            cases.update({(c.suite, c.name): c for c in load_suite(r["suite"])})
        k = case_key(cases[(r["suite"], r["case"])], r["dtype"], r["layout"])
        if r["provider"] == "torch":
            reference_ms[k] = r.get("median_ms")
        elif r.get("verdict") is not None:
            ratios.setdefault(k, {})[r["provider"]] = r.get("speedup")
        plain.setdefault(k, {})[r["provider"]] = r.get("median_ms")
        if r.get("verdict") is not None:
            # score: the ratio to the reference (the reference itself 1), higher is better
            score = 1.0 if r["provider"] == "torch" else (r["speedup"] if r["verdict"] == "faster" else None)
        else:
            score = -r["median_ms"]
        if score is not None and (k not in best or score > best[k][0]):
            best[k] = (score, r["provider"])
    entries = {}
    for k, (_, provider) in sorted(best.items()):
        found = ratios.get(k)
        if not found and "torch" in plain.get(k, {}):  # older rows: the ratio of medians
            found = {p: plain[k]["torch"] / ms for p, ms in plain[k].items() if p != "torch" and ms}
        entries[k] = {"backend": provider, "by": "tune", "ratios": found or {}, "reference_ms": reference_ms.get(k)}
    return {"format": FORMAT, "key": key, "entries": entries}
