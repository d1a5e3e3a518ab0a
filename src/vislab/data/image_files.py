"""Image files as batches for a network: decoding (with :func:`vislab.data.images.load_image`) in
DataLoader workers, unreadable files marked instead of raised, so that one pass finds them all."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageReadError, UserError
from .images import load_image


class ImageFiles(Dataset):
    """One image file per item -> (tensor (3, H, W) in [0,1], ok, label).

    Greyscale files are decoded and transformed on their single channel, then repeated: the same
    tensor as repeat-then-transform at a third of the cost (15-Scene is all greyscale). An
    unreadable file gives ok=False (a zero image after collation)."""

    def __init__(self, paths: Sequence[Path], transform: Callable, labels: Sequence[int] | None = None):
        self.paths, self.transform = list(paths), transform
        self.labels = [-1] * len(self.paths) if labels is None else [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            x = self.transform(load_image(self.paths[i], keep_grayscale=True))
        except ImageReadError:
            return None, False, self.labels[i]
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x, True, self.labels[i]


def _collate(batch, size: tuple[int, int]):
    ok = torch.tensor([b[1] for b in batch])
    x = torch.stack([b[0] if b[1] else torch.zeros(3, *size) for b in batch])
    return x, ok, torch.tensor([b[2] for b in batch], dtype=torch.long)


def image_loader(paths: Sequence[Path], transform: Callable, size: tuple[int, int], *, batch_size: int = 1,
                 workers: int = 0, labels: Sequence[int] | None = None, shuffle: bool = False,
                 generator: torch.Generator | None = None, pin_memory: bool = False,
                 batches: Sequence[Sequence[int]] | None = None) -> DataLoader:
    """Batches (x (B, 3, *size), ok (B,) bool, y (B,) int64) of decoded images, ``workers`` processes
    decoding ahead of the network. ``batches`` (lists of indices into ``paths``) replaces
    ``batch_size`` / ``shuffle`` when given."""
    order = {"batch_sampler": batches} if batches is not None else \
        {"batch_size": batch_size, "shuffle": shuffle, "generator": generator}
    return DataLoader(ImageFiles(paths, transform, labels), num_workers=workers, pin_memory=pin_memory,
                      collate_fn=functools.partial(_collate, size=size),
                      prefetch_factor=4 if workers > 0 else None, **order)


def bad_image_error(bad: Sequence[Path | str]) -> UserError:
    """The error for unreadable images: every file listed, and the two ways out."""
    listing = "\n  ".join(str(p) for p in bad)
    return UserError(f"{len(bad)} image file(s) cannot be read:\n  {listing}\n"
                     f"fix or remove them, or pass --skip-bad to leave them out (they are counted in metrics.json)")
