"""The CPU executor of the CUDA C++ kernels (``ACCELKERNELS_CUDA_EMULATE=1``).

Like ``TRITON_INTERPRET=1`` for Triton: with it set, ``backend="cuda"`` serves CPU tensors by running
the very kernels of ``csrc/kernels/`` — compiled for the host, their inline PTX interpreted — on an
emulated Hopper, with race, bounds, alignment, barrier and deadlock checks (README: "Running the CUDA
kernels without a GPU"). Nothing is built or loaded at import time.
"""

from __future__ import annotations

import threading

from .. import _env
from .build import EmulatorBuildError

__all__ = ["EmulatorBuildError", "enabled", "module", "configure", "settings", "status"]

_lock = threading.Lock()
_module = None
_error: str | None = None


def enabled() -> bool:
    """Whether ACCELKERNELS_CUDA_EMULATE asks for the executor."""
    return _env.flag("ACCELKERNELS_CUDA_EMULATE")  # an invalid value raises here, at first use


def module():
    """The compiled executor (built on first use, cached by a hash of the sources)."""
    global _module, _error
    with _lock:
        if _module is None:
            from . import build

            try:
                _module = build.build(verbose=_env.flag("ACCELKERNELS_VERBOSE_BUILD"))
            except EmulatorBuildError as exc:
                _error = str(exc)
                raise
    return _module


def configure(**kwargs) -> dict:
    """Set the emulated device: sm_count, compute_capability ((9, 0) or (8, 0)), seed, tma_delay."""
    return module().configure(**kwargs)


def settings() -> dict:
    return module().settings()


def capability() -> tuple[int, int]:
    return tuple(settings()["compute_capability"])


def status() -> str:
    """One line for `accelkernels info`."""
    if not enabled():
        return "off (set ACCELKERNELS_CUDA_EMULATE=1 to run backend='cuda' on CPU tensors)"
    if _module is not None:
        s = _module.settings()
        cc = s["compute_capability"]
        return f"on: emulated sm_{cc[0]}{cc[1]}{'a' if cc[0] == 9 else ''}, {s['sm_count']} SMs (module built)"
    if _error:
        return f"on, but unavailable: {_error}"
    return "on (built on first use)"
