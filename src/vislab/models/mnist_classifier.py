"""A small MNIST classifier trained by vislab: the feature extractor for GAN metrics on digits.

Inception features mean little on 32x32 grey digits, so the Frechet distance and KID of the GAN
experiments are computed on the 128-d penultimate layer of this network, and the cDCGAN's
"conditional accuracy" is its argmax. It takes images the way the GANs produce them:
``(N, 1, 32, 32)`` in [-1, 1] (other sizes are resized to 32x32 first).

Architecture: 3 x [Conv3x3 + BatchNorm + ReLU + MaxPool2] (32, 64, 128 channels; 32 -> 16 -> 8 -> 4),
Linear(2048 -> 128) + ReLU (the features), Dropout(0.3), Linear(128 -> 10). Three epochs of Adam with
a one-cycle schedule (:mod:`vislab.methods.digit_classifier`) give about 99.3 % test accuracy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCH_VERSION = "mnist-cnn-v1"  # part of the key of trained weights kept on disk: change with the network
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
