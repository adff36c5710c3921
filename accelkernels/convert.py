"""accelkernels.convert(model): swap torch's Conv2d/Linear layers for ours, in place."""

from __future__ import annotations

import warnings

import torch

from . import nn as ak_nn
from .backends import check_name

_SWAPS = {torch.nn.Conv2d: ak_nn.Conv2d, torch.nn.Linear: ak_nn.Linear}


def _unservable_reason(module: torch.nn.Module) -> str | None:
    """Why a torch Conv2d/Linear (or subclass) cannot be swapped, or None."""
    if type(module) not in _SWAPS:
        # A subclass may override forward or be relied on by type (e.g. quantization's
        # NonDynamicallyQuantizableLinear); swapping it could change behaviour.
        base = "Conv2d" if isinstance(module, torch.nn.Conv2d) else "Linear"
        return f"{type(module).__qualname__} is a subclass of torch.nn.{base}, left as it is"
    if isinstance(module, torch.nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (only 'zeros' is served)"
    return None


def convert(model: torch.nn.Module, *, backend: str = "auto") -> torch.nn.Module:
    """Replace every ``nn.Conv2d`` and ``nn.Linear`` in ``model`` with accelkernels' layers, in place.

    Parameters are shared, not copied: outputs, gradients, optimizer state and state_dict keys stay
    the same, and torch checkpoints still load. Modules that cannot be served (a non-zero
    ``padding_mode``, subclasses with their own behaviour) stay as they are and are listed in one
    warning. Returns ``model`` (itself replaced when it is a bare Conv2d or Linear).
    """
    check_name(backend)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"accelkernels.convert expects a torch.nn.Module, got {type(model).__name__}")
    left: list[str] = []
    swapped: dict[int, torch.nn.Module] = {}  # a layer shared by several parents stays shared

    def swap(name: str, module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, (ak_nn.Conv2d, ak_nn.Linear)) or not isinstance(module, tuple(_SWAPS)):
            return module
        if id(module) in swapped:
            return swapped[id(module)]
        reason = _unservable_reason(module)
        if reason is not None:
            left.append(f"{name or '<model>'}: {reason}")
            swapped[id(module)] = module
            return module
        swapped[id(module)] = _SWAPS[type(module)].from_torch(module, backend=backend)
        return swapped[id(module)]

    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            new = swap(f"{parent_name}.{child_name}" if parent_name else child_name, child)
            if new is not child:
                setattr(parent, child_name, new)
    model = swap("", model)
    if left:
        warnings.warn(
            "accelkernels.convert left these modules unchanged:\n  " + "\n  ".join(left), UserWarning, stacklevel=2
        )
    return model
