"""The eager shortcut for the reference path.

A call through a registered custom op costs ~100-110 us of Python dispatch machinery on this
project's 2-core CPU machine (torch 2.14.1, a 1x1x4x4 conv2d: 118 us through the op vs 7.5 us for
F.conv2d, measured 2026-11-27). When a call resolves to the reference backend anyway, the public
functions therefore call torch's op directly in eager mode: same numbers, same autograd (torch's
own), none of that cost. Under torch.compile (and export) every call is the accelkernels op, so
graphs always show it; kernel backends always go through the op, and so do their backwards. While
torch.profiler records, calls go through the op too, so a trace names our ops (accelkernels::conv2d)
whichever backend serves them.
"""

from __future__ import annotations

import torch

from ..backends import autotune, resolve

# Tests turn this off to run the reference backend through the registered ops in eager mode too.
ENABLED = True


def reference_directly(op: str, backend: str, tensors, problem) -> bool:
    """True when this eager call should skip the op and call torch itself. With ``auto`` this is
    where a new problem is timed on first use (``problem``: accelkernels.backends.autotune.Problem)."""
    if not ENABLED or torch.compiler.is_compiling() or torch._C._autograd._profiler_enabled():
        return False
    if resolve(op, backend, tensors, problem=problem).name != "torch":
        return False
    autotune.ran(op, "torch")
    return True
