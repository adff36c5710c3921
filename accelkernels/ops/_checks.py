"""Argument checks shared by the public functions: clear errors naming the argument, expected vs got.

Errors are InvalidArgumentError, a RuntimeError (what torch raises for the same calls) that is
also a ValueError. Non-tensors where a tensor is expected are TypeErrors, as in torch.
"""

from __future__ import annotations

import torch

from ..backends.base import FLOATING


class InvalidArgumentError(RuntimeError, ValueError):
    """Bad input to an accelkernels function; the message names the argument."""


def fail(fn: str, message: str) -> None:
    raise InvalidArgumentError(f"accelkernels.{fn}: {message}")


def check_tensor(fn: str, name: str, t: object, *, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        expected = "a Tensor or None" if optional else "a Tensor"
        raise TypeError(f"accelkernels.{fn}: {name} must be {expected}, got {type(t).__name__}")
    if t.dtype not in FLOATING:
        fail(fn, f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {t.dtype}")
    if t.layout != torch.strided:
        fail(fn, f"{name} must be a dense (strided) tensor, got layout {t.layout}")


def check_same(fn: str, ref_name: str, ref: torch.Tensor, name: str, t: torch.Tensor | None) -> None:
    """dtype and device of ``t`` must match ``ref`` (torch does not promote across these either)."""
    if t is None:
        return
    if t.dtype != ref.dtype:
        fail(fn, f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; they must match")
    if t.device != ref.device:
        fail(fn, f"{name} is on {t.device} but {ref_name} is on {ref.device}; they must be on the same device")


def autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Apply torch.autocast's rule for conv/matmul/linear (they run in the low-precision dtype).

    Custom ops are invisible to autocast, so without this a converted model under autocast would
    get fp16 activations with fp32 weights. Like torch: floating tensors other than float64 are cast.
    """
    device_type = tensors[0].device.type  # the first tensor (input / a) is never None
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t for t in tensors
    )
