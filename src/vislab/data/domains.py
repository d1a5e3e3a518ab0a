"""The two digit domains of ``vislab adapt`` (MNIST source, MNIST-M target) and their network input.

Both domains live in memory as uint8 tensors (the whole of MNIST + MNIST-M is 0.2 GB, so it also
fits on the device); batches are sliced from them and normalised on the fly by :func:`to_input`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from .mnist import DigitSet, load_mnist
from .mnistm import load_mnistm


@dataclasses.dataclass
class Domains:
    source_train: DigitSet
    source_test: DigitSet
    target_train: DigitSet
    target_test: DigitSet
    backgrounds: str = ""
    mnistm_sha256: dict = dataclasses.field(default_factory=dict)

    def first(self, train_size: int = 0, test_size: int = 0) -> "Domains":
        """The first ``train_size`` images of each training set and ``test_size`` of each test set (0: all),
        for quick runs; MNIST-M keeps its pairing with MNIST (image i of both comes from digit i)."""
        sizes = {"source_train": train_size, "target_train": train_size, "source_test": test_size,
                 "target_test": test_size}
        return dataclasses.replace(self, **{name: _head(getattr(self, name), n) for name, n in sizes.items()})

    def to(self, device: torch.device) -> "Domains":
        """The four sets with images and labels on ``device`` (the training loop slices them there)."""
        sets = {}
        for name in ("source_train", "source_test", "target_train", "target_test"):
            ds = getattr(self, name)
            sets[name] = dataclasses.replace(ds, images=ds.images.to(device), labels=ds.labels.to(device))
        return dataclasses.replace(self, **sets)


def _head(ds: DigitSet, n: int) -> DigitSet:
    return ds if n <= 0 else dataclasses.replace(ds, images=ds.images[:n], labels=ds.labels[:n])


def load_domains(data_root: str | None, backgrounds: str | None, mnistm_seed: int) -> Domains:
    """MNIST from ``data_root`` (None: vislab's cache / download) and the MNIST-M built from it."""
    src_train, src_test = load_mnist("train", data_root), load_mnist("test", data_root)
    tgt = {s: load_mnistm(s, data_root, backgrounds, seed=mnistm_seed, digits=d)
           for s, d in (("train", src_train), ("test", src_test))}
    return Domains(src_train, src_test, tgt["train"], tgt["test"], tgt["train"].backgrounds,
                   {s: m.content_sha256 for s, m in tgt.items()})


def channel_stats(images: torch.Tensor, chunk: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in [0, 1] units) of uint8 images (N, C, H, W), in chunks."""
    s = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    s2 = torch.zeros_like(s)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = len(images) * images.shape[2] * images.shape[3]
    mean = s / n
    return mean.float(), (s2 / n - mean * mean).clamp_min(1e-12).sqrt().float()


def normalize(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """Float pixels (N, C, H, W) in [0, 1] -> normalised; ``mean``/``std`` floats or per-channel (C,)."""
    if isinstance(mean, torch.Tensor):
        return (pixels - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return (pixels - mean) / std


def to_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, H, W) / (N, 1|3, H, W) -> normalised float (N, 3, H, W); grey repeated to 3 channels.
    ``mean``/``std``: floats, or per-channel tensors (C,) in [0, 1] units."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if isinstance(mean, torch.Tensor):
        return normalize(images.float() / 255.0, mean, std).expand(-1, 3, -1, -1)
    x = images.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def domain_norms(domains: Domains, mean: float, std: float, target_own: bool) -> dict[str, tuple]:
    """(mean, std) that normalise each domain's images: ``mean``/``std``, or for the target with
    ``target_own`` its training images' own per-channel statistics (no labels involved)."""
    given = (mean, std)
    return {"source": given, "target": channel_stats(domains.target_train.images) if target_own else given}


@dataclasses.dataclass
class DomainBatch:
    """One training step's data, already normalised float images (N, 3, 28, 28): source images ``xs``
    and labels ``ys``; target images ``xt``; pseudo-labels ``pseudo`` (-1: none) and randomly
    transformed copies ``xt_aug`` of ``xt``; the true target labels ``yt``. Fields an algorithm does
    not declare it uses stay None."""

    xs: torch.Tensor
    ys: torch.Tensor
    xt: torch.Tensor | None = None
    pseudo: torch.Tensor | None = None
    xt_aug: torch.Tensor | None = None
    yt: torch.Tensor | None = None


class DomainBatches:
    """The training batches of one run for :func:`vislab.training.fit`: each epoch a permutation of
    each training set, batches sliced from the in-memory uint8 images and normalised on the fly.

    What a batch holds beyond ``xs``/``ys`` is asked for, not inferred: ``target_images``,
    ``target_labels``; ``pseudo_labels`` (a function giving the current (N_target,) labels) and
    ``augment`` (``f(pixels in [0, 1], generator) -> pixels``, drawn from ``rngs["augment"]``) for
    pseudo-label training.
    """

    def __init__(self, domains: Domains, norms: dict[str, tuple], batch_size: int, *, target_images: bool = True,
                 target_labels: bool = False, pseudo_labels: Callable[[], torch.Tensor] | None = None,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        self.src, self.tgt, self.norms, self.batch_size = domains.source_train, domains.target_train, norms, batch_size
        self.target_images, self.target_labels = target_images, target_labels
        self.pseudo_labels, self.augment = pseudo_labels, augment
        self.device = self.src.images.device

    @property
    def steps_per_epoch(self) -> int:
        n = min(len(self.src), len(self.tgt)) if self.target_images else len(self.src)
        return n // self.batch_size

    def order(self, rngs: dict[str, torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        # drawn on the CPU (one generator, saved for --resume, whatever the device), used on the device
        return (torch.randperm(len(self.src), generator=rngs["order"]).to(self.device),
                torch.randperm(len(self.tgt), generator=rngs["order"]).to(self.device))

    def batch(self, order: tuple[torch.Tensor, torch.Tensor], i: int, rngs: dict[str, torch.Generator]) -> DomainBatch:
        ps, pt = (o.to(self.device) for o in order)  # a resumed checkpoint's order comes back on the CPU
        bs = self.batch_size
        si = ps[i * bs:(i + 1) * bs]
        batch = DomainBatch(to_input(self.src.images[si], *self.norms["source"]), self.src.labels[si])
        if self.target_images:
            ti = pt[i * bs:(i + 1) * bs]
            batch.xt = to_input(self.tgt.images[ti], *self.norms["target"])
            if self.pseudo_labels is not None:
                batch.pseudo = self.pseudo_labels()[ti]
                if self.augment is not None:
                    pixels = self.augment(self.tgt.images[ti].float() / 255.0, rngs["augment"])
                    batch.xt_aug = normalize(pixels, *self.norms["target"])
            if self.target_labels:
                batch.yt = self.tgt.labels[ti]
        return batch
