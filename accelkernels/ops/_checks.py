"""Argument checks shared by the public functions: clear errors naming the argument, expected vs got.

Errors are InvalidArgumentError, a RuntimeError (what torch raises for the same calls) that is
also a ValueError. Non-tensors where a tensor is expected are TypeErrors, as in torch.

There is no dtype check here: the reference computes every dtype torch's own op computes (integer,
complex, ...), and where torch has no kernel for a dtype, ``not_computed_by_torch`` turns torch's
NotImplementedError into one that names the argument. Kernel backends refuse what they cannot serve
in their own ``inputs_unsupported_reason``.
"""

from __future__ import annotations

import torch


class InvalidArgumentError(RuntimeError, ValueError):
    """Bad input to an accelkernels function; the message names the argument."""


class NotComputedByTorchError(InvalidArgumentError, NotImplementedError):
    """torch itself has no kernel for these inputs (e.g. matmul of bool tensors, gelu of int64).

    Also a NotImplementedError, the type torch raises for the same call, so code that catches
    torch's error catches ours.
    """


def not_computed_by_torch(fn: str, what: str, t: torch.Tensor, exc: BaseException) -> NotComputedByTorchError:
    """The error to raise (from ``exc``) when torch's own op refused ``t``'s dtype on its device;
    ``what`` names the arguments ("a and b", "activation='gelu'")."""
    return NotComputedByTorchError(
        f"accelkernels.{fn}: torch has no kernel for {what} with {t.dtype} tensors on {t.device.type} "
        f"(torch: {exc}); use a dtype torch computes there, e.g. float32"
    )


def fail(fn: str, message: str) -> None:
    raise InvalidArgumentError(f"accelkernels.{fn}: {message}")


def check_tensor(fn: str, name: str, t: object, *, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        expected = "a Tensor or None" if optional else "a Tensor"
        raise TypeError(f"accelkernels.{fn}: {name} must be {expected}, got {type(t).__name__}")
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
