"""The per-card tuning table on disk: which backend serves each problem key on this card and versions.

One JSON file per card and versions under the user's cache folder, written by both writers of
decisions: `backend="auto"` when it times a new problem on first use (autotune.py), and
`accelkernels tune` from benchmark rows (accelkernels/benchmark/tuning.py). Both write the same
entries, keyed by autotune's problem keys::

    {"format": 2,
     "key": {"device": "NVIDIA H200", "capability": "9.0", "torch": ..., "triton": ..., "accelkernels": ...},
     "entries": {"conv2d|fwd|float16|cl.cl|relu|c64|k128|3x3|s1x1|p1x1|d1x1|g1|bias|m14":
                 {"backend": "cuda", "ratios": {"cuda": 1.21, "triton": 0.93}, "by": "first use",
                  "reference_ms": 0.412}}}

``ratios`` are the reference's time over each candidate's (above 1: faster than cuBLAS/cuDNN), None
for a candidate that failed or was dropped. A file that cannot be read, has another format or was
written for another card or versions is ignored with one warning (per process and file), and is
replaced by the next decision. Standard library and torch only; nothing here runs at import.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

FORMAT = 2
CANDIDATES = ("torch", "cuda", "triton")  # what an entry may name ("auto" and ladder steps are not choices)
ENTRY_FIELDS = ("backend", "ratios", "by", "reference_ms")


def cache_dir() -> Path:
    from .. import _env

    chosen = _env.check("ACCELKERNELS_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = _env.check("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accelkernels"


def card_key(device_index: int = 0) -> dict:
    """What a table is valid for: the card, its compute capability and the versions that built the kernels."""
    import torch

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
    # Every field of the key: two environments with different versions keep their own tables.
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{key['device']}-sm{key['capability']}-torch{key['torch']}"
                                           f"-triton{key['triton']}-accelkernels{key['accelkernels']}")
    return cache_dir() / "tuning" / f"{slug}.json"


def _number_or_none(v: object) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def valid_entry(entry: object) -> bool:
    """Every field a Decision reads, of the type it reads (a table is data from disk: anything can be there)."""
    if not isinstance(entry, dict) or entry.get("backend") not in CANDIDATES:
        return False
    ratios, notes = entry.get("ratios", {}), entry.get("notes", {})
    return (isinstance(ratios, dict) and all(k in CANDIDATES and _number_or_none(v) for k, v in ratios.items())
            and isinstance(notes, dict) and all(k in CANDIDATES and isinstance(v, str) for k, v in notes.items())
            and isinstance(entry.get("by", ""), str) and _number_or_none(entry.get("reference_ms")))


def read(path: Path) -> tuple[dict | None, str | None]:
    """(the table, None) for a well-formed file; (None, why) for one that is not; (None, None) when absent."""
    if not path.exists():
        return None, None
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    if not isinstance(table, dict) or not isinstance(table.get("entries"), dict):
        return None, "malformed (no entries)"
    if table.get("format") != FORMAT:
        return None, f"malformed: format {table.get('format')!r}, this accelkernels reads format {FORMAT}"
    bad = [k for k, v in table["entries"].items() if not isinstance(k, str) or not valid_entry(v)]
    if bad:
        return None, f"malformed entry {bad[0]!r}"
    return table, None


def load(path: Path, key: dict) -> dict[str, dict] | None:
    """The entries of a valid table written for ``key``; None (with one warning) for a corrupt or foreign file."""
    table, why = read(path)
    if why is None and table is not None and table.get("key") != key:
        why = f"written for {table.get('key')}, this is {key}"
    if why is not None:
        warnings.warn(f"accelkernels: ignoring tuning file {path}: {why}; the next decision replaces it "
                      "(or rerun `accelkernels tune`)", RuntimeWarning, stacklevel=3)
        return None
    return None if table is None else table["entries"]


def save(table: dict, path: Path) -> Path:
    """Write atomically: a reader (another process, another rank) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: ranks may write at once
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def add(path: Path, key: dict, entries: dict[str, dict]) -> Path:
    """Merge ``entries`` into the table at ``path`` (replacing a corrupt or foreign one, silently: the
    reader warned already). Entries other processes wrote before this read are kept; there is no lock,
    so two writers at the same moment (DDP ranks deciding together) can lose one's new entries, which
    are then timed again by the next process. A key both wrote keeps the last writer's."""
    table, _ = read(path)
    old = table["entries"] if table is not None and table.get("key") == key else {}
    return save({"format": FORMAT, "key": key, "entries": {**old, **entries}}, path)


def tables_on_disk() -> list[tuple[Path, dict | None, str | None]]:
    """Every table file in the cache folder, for `accelkernels tune --show`: (path, table or None, why not)."""
    folder = cache_dir() / "tuning"
    if not folder.is_dir():
        return []
    return [(p, *read(p)) for p in sorted(folder.glob("*.json"))]
