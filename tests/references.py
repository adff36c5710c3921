"""Reference implementations the tests (and benchmarks) compare against: torch's own functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "relu", "gelu", "silu")


def activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation == "relu":
        return F.relu(x)
    if activation == "gelu":
        return F.gelu(x)
    if activation == "silu":
        return F.silu(x)
    return x


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    return activate(F.conv2d(input, weight, bias, stride, padding, dilation, groups), activation)


def linear(input, weight, bias=None, activation=None):
    return activate(F.linear(input, weight, bias), activation)


def seed_cnn() -> torch.nn.Module:
    """The seed article's CIFAR-10 CNN: 3x(conv 3x3 + ReLU), two max-pools, dense 1024 -> 64 -> 10."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(1024, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
