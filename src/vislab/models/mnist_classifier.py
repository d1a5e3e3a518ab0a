"""A small MNIST classifier trained by vislab: the feature extractor for GAN metrics on digits.

Inception features mean little on 32x32 grey digits, so the Frechet distance and KID of the GAN
experiments are computed on the 128-d penultimate layer of this network, and the cDCGAN's
"conditional accuracy" is its argmax. It takes images the way the GANs produce them:
``(N, 1, 32, 32)`` in [-1, 1] (other sizes are resized to 32x32 first).

Architecture: 3 x [Conv3x3 + BatchNorm + ReLU + MaxPool2] (32, 64, 128 channels; 32 -> 16 -> 8 -> 4),
Linear(2048 -> 128) + ReLU (the features), Dropout(0.3), Linear(128 -> 10). Three epochs of Adam with
a one-cycle schedule give about 99.3 % test accuracy.

The trained weights are cached (atomically) under ``cache_dir("gan")`` keyed by a digest of the
training images, the architecture version and the training settings, so every GAN run measures
with the same network.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.download import cache_dir
from ..io import torch_load, torch_save
from ..progress import progress

ARCH_VERSION = "mnist-cnn-v1"
NUM_FEATURES = 128


def prepare_digits(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 digits ``(N, H, W)`` or ``(N, 1, H, W)`` -> float ``(N, 1, size, size)`` in [-1, 1].

    One bilinear resize of the whole tensor (what torchvision's per-sample ``Resize(32)`` does to
    each PIL image, without the per-sample cost)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    x = images.unsqueeze(1) if images.ndim == 3 else images
    x = x.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)


class MnistClassifier(nn.Module):
    """``(N, 1, S, S)`` images in [-1, 1] -> ``(N, 10)`` logits; :meth:`features` gives ``(N, 128)``."""

    def __init__(self):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                                  nn.Linear(128 * 4 * 4, NUM_FEATURES), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(NUM_FEATURES, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (32, 32):
            x = F.interpolate(x.float(), size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ClassifierFeatures(nn.Module):
    """The feature extractor handed to torchmetrics' FID/KID: ``(N, 1, S, S)`` in [-1, 1] ->
    ``(N, 128)`` float32, always in eval mode and without gradients.

    ``num_features`` tells torchmetrics the feature size; without it torchmetrics probes the module
    with a 3x299x299 dummy image, which a 1-channel 32x32 network cannot take."""

    def __init__(self, classifier: MnistClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = NUM_FEATURES

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)  # torchmetrics may call .train(); features must stay deterministic

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float()).float()


@torch.no_grad()
def predict(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class indices ``(N,)`` for images ``(N, 1, S, S)`` in [-1, 1]."""
    classifier.eval()
    return torch.cat([classifier(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, amp_dtype: torch.dtype | None = torch.bfloat16) -> MnistClassifier:
    """Train :class:`MnistClassifier` on ``images (N, 1, 32, 32)`` in [-1, 1] and ``labels (N,)``.

    Adam + one-cycle learning rate; random shifts of up to 2 px as the only augmentation. The loss is
    computed in float32 even when the network runs under bf16 autocast."""
    # The global RNG (init, dropout) is forked: whether the classifier comes from the cache or is
    # trained must not change the random numbers a GAN run draws afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(images, labels, epochs, batch_size, lr, torch.Generator().manual_seed(seed), amp_dtype)


def _train(images, labels, epochs, batch_size, lr, gen, amp_dtype) -> MnistClassifier:
    net = MnistClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    autocast = torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None)
    padded = F.pad(images, (2, 2, 2, 2), value=-1.0)
    size = images.shape[-1]
    net.train()
    bar = progress(total=steps, desc="MNIST classifier (GAN metrics)")
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), batch_size):
            idx = perm[i:i + batch_size]
            dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()  # one shift per batch: cheap
            x = padded[idx, :, dy:dy + size, dx:dx + size]
            with autocast:
                logits = net(x)
            loss = F.cross_entropy(logits.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return net.eval()


def _cache_key(images: torch.Tensor, labels: torch.Tensor, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(ARCH_VERSION.encode())
    h.update(repr(sorted(settings.items())).encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def load_or_train_classifier(train_images: torch.Tensor, train_labels: torch.Tensor,
                             test_images: torch.Tensor, test_labels: torch.Tensor, *, epochs: int = 3,
                             seed: int = 0, cache: str | Path | None = None) -> tuple[MnistClassifier, float, str]:
    """The cached classifier for this training set (trained on first use), its test accuracy and its
    cache key (a digest that also keys anything derived from the classifier, e.g. cached features).

    Images are uint8 ``(N, 28, 28)`` as :func:`vislab.data.mnist.load_mnist` gives them; the cache
    file is ``<cache>/mnist-classifier-<digest>.pt`` (``cache`` defaults to ``cache_dir("gan")``)."""
    key = _cache_key(train_images, train_labels, {"epochs": epochs, "seed": seed})
    path = Path(cache or cache_dir("gan")) / f"mnist-classifier-{key}.pt"
    net = MnistClassifier()
    if path.is_file():
        blob = torch_load(path)
        net.load_state_dict(blob["state_dict"])
        return net.eval(), float(blob["test_accuracy"]), key
    net = train_classifier(prepare_digits(train_images), train_labels, epochs=epochs, seed=seed)
    acc = (predict(net, prepare_digits(test_images)) == test_labels).float().mean().item()
    torch_save({"state_dict": net.state_dict(), "test_accuracy": acc, "arch": ARCH_VERSION}, path)
    return net, acc, key
