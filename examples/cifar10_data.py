"""CIFAR-10 for the worked example: the binary distribution's reader, a synthetic stand-in, and the
on-device preprocessing (normalisation and random flips).

The binary distribution (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extracted) holds
``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin``: 10000 records each, one label
byte (0-9) then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32). It is read with
numpy, never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

RECORD_BYTES = 1 + 3 * 32 * 32
CLASSES = 10
# Per-channel mean and std of the CIFAR-10 training images (on the 0-1 scale), the usual constants.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class CifarFormatError(ValueError):
    """A file that is not in the CIFAR-10 binary format."""


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.numel()


def read_batch(path: str | Path) -> Split:
    """One ``*.bin`` file of the binary distribution, checked: whole records, labels 0-9."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 binary file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise CifarFormatError(
            f"{path}: {raw.size} bytes is not a whole number of {RECORD_BYTES}-byte records "
            "(1 label byte + 3072 pixel bytes): truncated, or not the CIFAR-10 *binary* version")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= CLASSES:
        bad = int(np.argmax(labels >= CLASSES))
        raise CifarFormatError(f"{path}: record {bad} has label {labels[bad]}, expected 0-9 (a CIFAR-100 file?)")
    images = records[:, 1:].reshape(-1, 3, 32, 32)
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels))


def load_cifar10(directory: str | Path) -> tuple[Split, Split]:
    """(train, test) from an extracted ``cifar-10-batches-bin`` directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--data {directory}: no such directory")
    train_files = sorted(directory.glob("data_batch_*.bin"))
    if not train_files:
        raise FileNotFoundError(
            f"--data {directory}: no data_batch_*.bin files (expected the extracted cifar-10-batches-bin folder)")
    parts = [read_batch(f) for f in train_files]
    train = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    return train, read_batch(directory / "test_batch.bin")


def synthetic_cifar10(train_size: int = 5000, test_size: int = 1000, seed: int = 0) -> tuple[Split, Split]:
    """A deterministic CIFAR-shaped dataset that can be learned, though not instantly: each class is a
    fixed random low-frequency pattern, each image a faint copy of it under strong noise (uint8, like
    the real thing)."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.nn.functional.interpolate(torch.rand(CLASSES, 3, 8, 8, generator=g), size=32,
                                               mode="bilinear", align_corners=False)

    def split(n: int) -> Split:
        labels = torch.randint(0, CLASSES, (n,), generator=g)
        images = patterns[labels] * 0.12 + torch.rand(n, 3, 32, 32, generator=g) * 0.88
        return Split((images * 255).round().to(torch.uint8), labels)

    return split(train_size), split(test_size)


def preprocess(images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) on the device -> normalised float32; ``flip`` (N,) bool mirrors those
    images left-right (the random-flip augmentation, drawn by the caller so runs can share it)."""
    x = images.float().div_(255)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x
