"""Drop-in layers: subclasses of torch.nn.Conv2d / torch.nn.Linear whose forward runs accelkernels.

Same constructor (plus ``activation`` and ``backend``), same parameters, same state_dict keys, so
torch checkpoints load unchanged and ``isinstance(m, torch.nn.Conv2d)`` still holds.
"""

from __future__ import annotations

import torch

from . import _activation
from .backends import check_name
from .ops import conv2d, linear

__all__ = ["Conv2d", "Linear"]


def _adopt(cls, module: torch.nn.Module, activation, backend):
    """A ``cls`` instance sharing ``module``'s parameters, buffers, hooks and flags (no copies).

    Containers in the instance dict (_parameters, hooks, ...) are copied shallowly so the two
    modules do not mutate each other's registries, while the Parameter objects stay shared.
    """
    new = cls.__new__(cls)
    new.__dict__.update({k: (v.copy() if isinstance(v, dict) else v) for k, v in module.__dict__.items()})
    new.activation = _activation.public_name(_activation.normalize(activation))
    new.backend = check_name(backend)
    return new


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by ``accelkernels.conv2d``; ``activation`` is fused after the bias."""

    def __init__(self, *args, activation: str | None = None, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(
                f"accelkernels.nn.Conv2d supports padding_mode='zeros' only, got {self.padding_mode!r}; "
                "keep torch.nn.Conv2d for this layer"
            )
        self.activation = _activation.public_name(_activation.normalize(activation))
        self.backend = check_name(backend)

    @classmethod
    def from_torch(cls, module: torch.nn.Conv2d, *, activation: str | None = None, backend: str = "auto") -> Conv2d:
        """Wrap an existing ``torch.nn.Conv2d``, sharing its weight and bias (no copy)."""
        if not isinstance(module, torch.nn.Conv2d):
            raise TypeError(f"from_torch expects a torch.nn.Conv2d, got {type(module).__name__}")
        if module.padding_mode != "zeros":
            raise ValueError(f"accelkernels.nn.Conv2d supports padding_mode='zeros' only, got {module.padding_mode!r}")
        return _adopt(cls, module, activation, backend)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return conv2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            activation=self.activation,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}, backend={self.backend!r}"


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` computed by ``accelkernels.linear``; ``activation`` is fused after the bias."""

    def __init__(self, *args, activation: str | None = None, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = _activation.public_name(_activation.normalize(activation))
        self.backend = check_name(backend)

    @classmethod
    def from_torch(cls, module: torch.nn.Linear, *, activation: str | None = None, backend: str = "auto") -> Linear:
        """Wrap an existing ``torch.nn.Linear``, sharing its weight and bias (no copy)."""
        if not isinstance(module, torch.nn.Linear):
            raise TypeError(f"from_torch expects a torch.nn.Linear, got {type(module).__name__}")
        return _adopt(cls, module, activation, backend)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias, activation=self.activation, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}, backend={self.backend!r}"
