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
    ``batch_size`` / ``shuffle`` when given. ``generator``: the shuffle's, and the source of the
    workers' seeds (None: torch's global generator)."""
    order = {"batch_sampler": batches} if batches is not None else {"batch_size": batch_size, "shuffle": shuffle}
    return DataLoader(ImageFiles(paths, transform, labels), num_workers=workers, pin_memory=pin_memory,
                      collate_fn=functools.partial(_collate, size=size), generator=generator,
                      prefetch_factor=4 if workers > 0 else None, **order)


def bad_image_error(bad: Sequence[Path | str]) -> UserError:
    """The error for unreadable images: every file listed, and the two ways out."""
    listing = "\n  ".join(str(p) for p in bad)
    return UserError(f"{len(bad)} image file(s) cannot be read:\n  {listing}\n"
                     f"fix or remove them, or pass --skip-bad to leave them out (they are counted in metrics.json)")


class ShuffledImageBatches:
    """Training batches of image files for :func:`vislab.training.fit`: each epoch, the batches of
    indices a shuffling ``DataLoader(batch_size, shuffle=True, generator=rngs["order"])`` draws (what
    vislab drew before the fit loop, generator draws included), decoded by :func:`image_loader` with
    ``workers`` processes ahead of the network; a resumed epoch continues from its ``i``-th batch."""

    def __init__(self, paths: Sequence[Path], transform: Callable, size: tuple[int, int], labels: Sequence[int],
                 batch_size: int, workers: int = 0):
        self.paths, self.transform, self.size, self.labels = list(paths), transform, size, labels
        self.batch_size, self.workers = batch_size, workers
        self.steps_per_epoch = -(-len(self.paths) // batch_size)
        self._batches, self._next = None, None

    def order(self, rngs: dict[str, torch.Generator]) -> list[torch.Tensor]:
        return list(DataLoader(range(len(self.paths)), batch_size=self.batch_size, shuffle=True,
                               generator=rngs["order"]))

    def batch(self, order: list[torch.Tensor], i: int, rngs: dict[str, torch.Generator]):
        if self._next != (id(order), i):  # a new epoch, or a resumed one: decode from batch i on
            # a generator of its own for the workers' seeds (no transform draws from them), so that
            # iterating leaves the global one, which dropout uses, alone
            self._batches = iter(image_loader(self.paths, self.transform, self.size, labels=self.labels,
                                              workers=self.workers, batches=[b.tolist() for b in order[i:]],
                                              generator=torch.Generator().manual_seed(0)))
        self._next = (id(order), i + 1)
        return next(self._batches)
