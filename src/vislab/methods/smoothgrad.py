"""SmoothGrad: the saliency map averaged over noisy copies of the image.

Paper:
    D. Smilkov, N. Thorat, B. Kim, F. Viegas, M. Wattenberg, "SmoothGrad: removing noise by
    adding noise", ICML workshop 2017 (arXiv:1706.03825).

Formula:
    M_smooth(x) = 1/n sum_{i=1..n} M(x + eps_i),   eps_i ~ N(0, sigma^2 I)
    with M the vanilla saliency map of :func:`vislab.methods.saliency.saliency_maps` (max over
    channels of |dS_y/dx|) for the class y of the *clean* image, and sigma = noise * (x_max - x_min)
    = ``noise`` for pixels in [0, 1] (the paper finds 10-20% best). The noisy copies are not
    clamped, as in the paper. The noise comes from a CPU generator seeded with ``seed``, so the
    maps are the same on every device for a given seed.

Arguments:
    model: pixel-space model (logits out), eval mode; see :func:`saliency_maps` for ``space``.
    images: (N, C, H, W) float in [0, 1].
    classes: (N,) int64 classes, entries < 0 or None meaning the clean image's prediction.
    samples: noisy copies n (the paper: 50; the maps change little beyond).
    noise: sigma as a fraction of the pixel range.
    seed: seed of the noise.

Shapes:
    images (N, C, H, W) -> SaliencyResult: maps (N, H, W) >= 0, classes (N,), logits (N, K) of
    the clean images.

Example:
    >>> out = smoothgrad_maps(model, images, labels, samples=25, noise=0.15)
    >>> out.maps.shape
    torch.Size([N, 224, 224])
"""
from __future__ import annotations

import torch
from torch import nn

from .saliency import SaliencyResult, Space, saliency_maps


def smoothgrad_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor | None = None, *,
                    samples: int = 25, noise: float = 0.15, seed: int = 0,
                    space: Space = "normalized") -> SaliencyResult:
    """SmoothGrad maps of ``images`` for ``classes`` (default: the clean prediction); see the module doc."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    if noise < 0:
        raise ValueError(f"noise={noise} must be >= 0")
    clean = saliency_maps(model, images, classes, space=space)  # fixes the class of each image
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(clean.maps)
    for _ in range(samples):
        eps = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
        total += saliency_maps(model, images + noise * eps, clean.classes, space=space).maps
    return SaliencyResult(maps=total / samples, classes=clean.classes, logits=clean.logits)
