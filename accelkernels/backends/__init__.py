"""Backend registry and choice: which implementation serves a call, and why another one cannot.

Rules (the README states them for users):
- ``"auto"`` means the current default: ``use_backend(...)`` > ``ACCELKERNELS_BACKEND`` > automatic.
- Automatic choice is measured (autotune.py): the first eager call of a problem that a kernel
  backend can serve times them against the reference and keeps the winner only where it beats the
  reference by the margin; decisions are remembered per device, and on CUDA devices in the card's
  table on disk (tuning_table.py, which `accelkernels tune` also writes). Calls that carry no
  problem (the epilogue's backward) and calls that cannot be timed now take ``AUTO_ORDER``, else
  the reference. On the CPU only the CPU executor (ACCELKERNELS_CUDA_EMULATE=1) and Triton's
  interpreter (TRITON_INTERPRET=1) compete with ATen; without them the reference is taken at once.
  With a GPU present but the CUDA extension not built, one warning per process.
- An explicitly requested backend that cannot serve raises BackendUnavailableError; it never
  quietly runs another one, and it never times anything. An unknown name is a ValueError.
"""

from __future__ import annotations

import contextlib
import os
import contextvars
import warnings
from collections.abc import Iterator, Sequence

import torch

from .. import _env
from .. import emulator as _emulator
from ..triton_kernels import interpreting as _interpreting
from .._errors import BackendUnavailableError
from . import autotune
from .autotune import Problem, record_choices
from .base import Backend
from .cuda_backend import CudaBackend
from .torch_backend import TorchBackend
from .triton_backend import TritonBackend

BACKEND_NAMES = ("torch", "triton", "cuda", "auto")
OPS = ("conv2d", "matmul", "linear")

BACKENDS: dict[str, Backend] = {b.name: b for b in (TorchBackend(), TritonBackend(), CudaBackend())}

# What "auto" takes when it cannot measure (a call without a problem, timing impossible now, autotune
# off) and nothing is on record. A backend joins a list only when `accelkernels bench` shows it beating
# cuBLAS/cuDNN on every card we know; none has been measured yet, so the reference serves those calls.
AUTO_ORDER: dict[str, dict[str, tuple[str, ...]]] = {
    "cuda": {"conv2d": (), "matmul": (), "linear": ()},
    "cpu": {"conv2d": (), "matmul": (), "linear": ()},
}

_default: contextvars.ContextVar[str | None] = contextvars.ContextVar("accelkernels_backend", default=None)
_warned_not_built = False


def check_name(name: object, what: str = "backend") -> str:
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(f"{what} must be one of {', '.join(repr(n) for n in BACKEND_NAMES)}; got {name!r}")
    return name


def current_default() -> str:
    """The backend that ``"auto"`` stands for right now."""
    scoped = _default.get()
    if scoped is not None:
        return scoped
    return _env.check("ACCELKERNELS_BACKEND") or "auto"  # validated against _env's copy of BACKEND_NAMES


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within the block, calls made with ``backend="auto"`` (the default) use ``name``.

    ``use_backend("cuda")`` is an explicit request: a call it cannot serve raises.
    """
    token = _default.set(check_name(name))
    try:
        yield
    finally:
        _default.reset(token)


def _warn_once_if_gpu_without_kernels(device_type: str) -> None:
    global _warned_not_built
    if _warned_not_built or device_type != "cuda":
        return
    from .. import _extension

    status = _extension.status()
    if not status.loaded:
        _warned_not_built = True
        warnings.warn(
            f"accelkernels: the CUDA extension is not available ({status.reason}); "
            "using the reference ops (cuBLAS/cuDNN). `accelkernels info` has details.",
            RuntimeWarning,
            stacklevel=4,
        )


def _kernels_possible_on_cpu() -> bool:
    """Whether a kernel backend can take CPU tensors at all: the CPU executor or Triton's interpreter.
    On every CPU call of ``auto``: both unset (the usual case) costs two environment reads."""
    if os.environ.get("ACCELKERNELS_CUDA_EMULATE") is None and os.environ.get("TRITON_INTERPRET") is None:
        return False
    return _emulator.enabled() or _interpreting()


def _built_in_order(op: str, tensors, details) -> Backend:
    for candidate in AUTO_ORDER.get(tensors[0].device.type, {}).get(op, ()):
        backend = BACKENDS[candidate]
        if backend.why_not(op, tensors, **details) is None:
            return backend
    return BACKENDS["torch"]


def _automatic(op: str, tensors, problem: Problem | None, details) -> Backend:
    device_type = tensors[0].device.type  # the first tensor (input / a) is never None
    if device_type == "cuda":
        _warn_once_if_gpu_without_kernels(device_type)
    elif device_type == "cpu" and not _kernels_possible_on_cpu():
        return BACKENDS["torch"]
    if problem is None:
        return _built_in_order(op, tensors, details)
    name = autotune.choose(op, problem, tensors, BACKENDS,
                           lambda: _built_in_order(op, tensors, details).name, details)
    return BACKENDS[name]


def resolve(op: str, requested: str, tensors: Sequence[torch.Tensor | None], *, problem: Problem | None = None,
            **details) -> Backend:
    """The backend that will run ``op`` on these inputs (see the module docstring for the rules).

    ``problem`` (autotune.Problem) is what ``auto`` times on first use; without it ``auto`` takes the
    built-in order. On every eager call's path: kept to a few microseconds (see
    accelkernels/ops/_shortcut.py).
    """
    name = current_default() if requested == "auto" else check_name(requested)
    if name != "auto":
        backend = BACKENDS[name]
        why = backend.why_not(op, tensors, **details)
        if why is not None:
            raise BackendUnavailableError(f"accelkernels.{op}: backend={name!r} cannot serve this call: {why}")
    else:
        backend = _automatic(op, tensors, problem, details)
    return backend


def available_backends() -> dict[str, dict[str, object]]:
    """For each backend name: whether it can run here at all, and if not, why.

    ``{"torch": {"available": True, "reason": "..."}, "triton": {...}, "cuda": {...}, "auto": {...}}``.
    Whether a backend serves a particular call also depends on dtype, shape and layout; an explicit
    request that it cannot serve raises BackendUnavailableError with the reason.
    """
    out: dict[str, dict[str, object]] = {}
    for name, backend in BACKENDS.items():
        why = backend.unavailable_reason()
        out[name] = {"available": why is None, "reason": why or backend.describe()}
    out["auto"] = {"available": True, "reason": "picks the best available backend per call, else the reference"}
    return out


def is_available(name: str) -> bool:
    """Whether backend ``name`` can run here at all (tests use this to skip precisely)."""
    check_name(name)
    return name == "auto" or BACKENDS[name].unavailable_reason() is None


def op_support_table() -> dict[str, dict[str, str]]:
    """op -> backend -> "yes" or the reason it cannot serve the op here (for `accelkernels info`)."""
    table: dict[str, dict[str, str]] = {}
    for op in OPS:
        row = {}
        for name, backend in BACKENDS.items():
            why = backend.unavailable_reason() or backend.op_unsupported_reason(op)
            row[name] = "yes" if why is None else f"no: {why}"
        table[op] = row
    return table


__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "BACKEND_NAMES",
    "BackendUnavailableError",
    "Problem",
    "available_backends",
    "check_name",
    "current_default",
    "is_available",
    "op_support_table",
    "record_choices",
    "resolve",
    "use_backend",
]
