"""Every environment variable that changes what accelkernels does, and one validating reader.

The table is what `accelkernels info` shows; the readers are what the package uses, so a typo such as
``ACCELKERNELS_CUDA_EMULATE=maybe`` raises instead of silently meaning "off". The error surfaces where
the variable is first read (the first call that needs it, setup.py, `accelkernels build`); `info`
lists an invalid value as invalid instead of raising. Standard library only: setup.py loads this file
by path, before torch is known to be importable.
"""

from __future__ import annotations

import os
from typing import NamedTuple

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

FLAG = "flag"  # one of TRUE or FALSE (any case); unset or empty means the default
CHOICE = "choice"  # one of `choices`
COUNT = "count"  # a positive integer
TEXT = "text"  # any value (paths, compiler names, arch lists that torch itself parses)


class Variable(NamedTuple):  # not a dataclass: those fail in a module loaded by path and not in sys.modules
    name: str
    kind: str
    means: str  # one line for `accelkernels info`
    default: bool | None = None  # flags only
    choices: tuple[str, ...] = ()
    read_by: str = "accelkernels"  # who acts on it: accelkernels, setup.py, torch or Triton


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    # What runs.
    Variable("ACCELKERNELS_BACKEND", CHOICE,
             "the backend that backend='auto' calls use (unset: automatic choice)",
             choices=("torch", "triton", "cuda", "auto")),  # = accelkernels.backends.BACKEND_NAMES (tested)
    Variable("ACCELKERNELS_CUDA_EMULATE", FLAG,
             "backend='cuda' runs CPU tensors on the CPU executor of the CUDA kernels", default=False),
    Variable("ACCELKERNELS_TRITON_AUTOTUNE", FLAG,
             "off: the Triton kernels run one fixed configuration instead of autotuning", default=True),
    # Triton 3.8 reads 1, true, yes and on (any case) as on (measured: triton.knobs.runtime.interpret),
    # the same spellings as our flags, so both agree on whether the interpreter runs.
    Variable("TRITON_INTERPRET", FLAG,
             "on: Triton kernels run in Triton's interpreter on CPU tensors", default=False, read_by="Triton"),
    Variable("ACCELKERNELS_AUTOTUNE", FLAG,
             "off: backend='auto' never times a new shape (decisions on record still apply)", default=True),
    Variable("ACCELKERNELS_CACHE_DIR", TEXT,
             "where the per-card tuning tables live (unset: $XDG_CACHE_HOME/accelkernels)"),
    Variable("XDG_CACHE_HOME", TEXT, "base of the default cache folder (unset: ~/.cache)"),
    # Building: ahead of time (setup.py), on first use, and the CPU executor.
    Variable("ACCELKERNELS_SKIP_CUDA_BUILD", FLAG,
             "never compile csrc/: Python-only install, no compile on first use", default=False),
    Variable("ACCELKERNELS_FORCE_CUDA", FLAG,
             "setup.py compiles csrc/ or fails (no silent Python-only install; CI sets it)", default=False,
             read_by="setup.py"),
    Variable("TORCH_CUDA_ARCH_LIST", TEXT,
             "architectures to compile for (unset: 8.0;9.0a in setup.py without a GPU, the GPU's on first use)",
             read_by="torch"),
    Variable("CUDA_HOME", TEXT,
             "the CUDA toolkit: nvcc and headers (unset: CUDA_PATH, /usr/local/cuda, nvcc on PATH)"),
    Variable("CUDA_PATH", TEXT, "the CUDA toolkit when CUDA_HOME is unset"),
    Variable("MAX_JOBS", COUNT,
             "parallel compile jobs of the ninja builds (unset: ninja's default, from the core count)",
             read_by="torch"),
    Variable("TORCH_EXTENSIONS_DIR", TEXT,
             "cache of the first-use builds (unset: ~/.cache/torch_extensions)", read_by="torch"),
    Variable("ACCELKERNELS_BUILD_EMULATOR", FLAG,
             "`accelkernels build` (and `info` when emulating) builds the CPU executor now", default=False),
    Variable("ACCELKERNELS_EMULATOR_COVERAGE", FLAG,
             "build the CPU executor with gcov line coverage (-O0 --coverage)", default=False),
    Variable("ACCELKERNELS_VERBOSE_BUILD", FLAG,
             "print the compiler's command lines while building the CPU executor", default=False),
    Variable("CXX", TEXT, "the C++ compiler of the CPU executor (unset: c++, then g++)"),
)}


class EnvironmentVariableError(ValueError):
    """A variable of VARIABLES holds a value it cannot have; the message names it, what it accepts and what it got."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def _accepted(var: Variable) -> str:
    if var.kind == FLAG:
        return f"{', '.join(TRUE[:-1])} or {TRUE[-1]} (on), {', '.join(FALSE[:-1])} or {FALSE[-1]} (off), or unset"
    if var.kind == CHOICE:
        return f"one of {', '.join(var.choices)}, or unset"
    return "a positive integer, or unset"


def problem(name: str) -> str | None:
    """Why the current value of ``name`` is invalid, or None when it is valid (or unset)."""
    var = VARIABLES[name]
    value = _raw(name)
    if value is None or var.kind == TEXT:
        return None
    if var.kind == FLAG:
        ok = value.lower() in TRUE + FALSE
    elif var.kind == CHOICE:
        ok = value in var.choices
    else:
        ok = value.isdigit() and int(value) > 0
    return None if ok else f"{name} must be {_accepted(var)}; got {os.environ[name]!r}"


def check(name: str) -> str | None:
    """The stripped value of ``name`` (None when unset or empty); raises EnvironmentVariableError if invalid."""
    if os.environ.get(name) is None:  # the common case, on every call's path: one read (~0.5 us)
        return None
    why = problem(name)
    if why is not None:
        raise EnvironmentVariableError(why)
    return _raw(name)


def flag(name: str) -> bool:
    """A boolean variable of the table: its value, or its default when unset."""
    var = VARIABLES[name]
    assert var.kind == FLAG, name  # a programming error, not a user's
    value = check(name)
    return var.default if value is None else value.lower() in TRUE


def describe() -> dict[str, dict]:
    """Every variable with its value (None when unset), for `accelkernels info` and --json; never raises."""
    rows = {}
    for var in VARIABLES.values():
        raw = os.environ.get(var.name)
        why = problem(var.name)
        if why is not None:
            effect = "invalid"
        elif var.kind == FLAG:
            effect = "on" if flag(var.name) else "off"
        else:
            effect = None
        rows[var.name] = {"value": raw, "valid": why is None, "error": why, "effect": effect, "means": var.means,
                          "read_by": var.read_by}
    return rows
