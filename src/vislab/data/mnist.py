"""MNIST as in-memory uint8 tensors: one loader for domain adaptation and GANs.

``load_mnist(split, root)`` reads the four IDX files (gzip or raw, torchvision's file names) from
``root`` (or ``root/MNIST/raw``, torchvision's layout); with no ``root`` it uses
``torchvision.datasets.MNIST(download=True)`` in vislab's cache. Batches are then sliced from the
tensors and normalised on the fly: no per-sample PIL transforms.
"""
from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .download import cache_dir

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass
class DigitSet:
    """Images (N, H, W) or (N, C, H, W) uint8 and labels (N,) int64, in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _read_idx(path: Path) -> np.ndarray:
    # The IDX format is 20 lines to read; torchvision's reader only takes uncompressed files
    # inside its own folder layout, and users have gzip files in arbitrary folders.
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: {body.size} values for shape {dims}")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(split: str = "train", root: str | Path | None = None) -> DigitSet:
    """MNIST ``split`` ('train' or 'test') as a :class:`DigitSet` of (N, 28, 28) uint8 images."""
    if split not in _FILES:
        raise ValueError(f"MNIST split {split!r}: use 'train' or 'test'")
    if root is None:
        root = cache_dir("mnist")
        if _find(Path(root), _FILES[split][0]) is None:
            fetch_mnist(root)
    root = Path(root)
    paths = [_find(root, stem) for stem in _FILES[split]]
    if None in paths:
        missing = [s for s, p in zip(_FILES[split], paths) if p is None]
        raise UserError(f"MNIST files {', '.join(missing)}(.gz) not found in {root} (nor {root}/MNIST/raw)")
    images, labels = (_read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"MNIST files in {root} have inconsistent shapes {images.shape} / {labels.shape}")
    return DigitSet(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def fetch_mnist(dest: str | Path | None = None) -> Path:
    """Download MNIST with torchvision (which checks each file's MD5) into ``dest`` or the cache."""
    from torchvision.datasets import MNIST

    root = Path(dest) if dest else cache_dir("mnist")
    for train in (True, False):
        try:
            MNIST(str(root), train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise UserError(f"cannot download MNIST ({e})") from e
    return root
