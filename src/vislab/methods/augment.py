"""Label-preserving random transforms of small digit images, batched (for pseudo-label training).

Why: training on a model's own confident predictions teaches it little when the images are seen
as they were labelled -- it already fits them (near-zero loss). Asking for the same label on a
randomly transformed copy (the consistency idea of self-training, e.g. FixMatch, Sohn et al. 2020,
and self-ensembling, French et al. 2018) spreads what the confident images teach to their
neighbours, the less confident ones.

Transforms, each drawn independently per image (MNIST-M's nuisance is colour and texture, so the
colour transforms matter most):
- a small affine warp: rotation within +-``rotate`` degrees, scale in [1 - ``scale``, 1 + ``scale``],
  shift within +-``shift`` pixels (bilinear, border pixels repeated);
- a random permutation of the colour channels;
- inversion x -> 1 - x with probability ``invert`` (MNIST-M is |photo - digit|: inverted, it is
  still a digit on a photo).

Shapes: pixels (N, C, H, W) float in [0, 1] -> the same shape, float in [0, 1]. Everything is
drawn from ``generator`` (a CPU ``torch.Generator``), so a seed fixes the transforms.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> xa = augment_digits(images.float() / 255, g)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine_grid(n: int, size: tuple[int, int], generator: torch.Generator, rotate: float,
                       scale: float, shift: float) -> torch.Tensor:
    """Sampling grid (n, H, W, 2) of random rotations, scalings and shifts (in pixels)."""
    h, w = size
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(rotate)
    s = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    # affine_grid works in [-1, 1] coordinates: a shift of one pixel is 2 / size
    theta[:, 0, 2] = u[:, 2] * shift * 2 / w
    theta[:, 1, 2] = u[:, 3] * shift * 2 / h
    return F.affine_grid(theta, [n, 1, h, w], align_corners=False)


def augment_digits(x: torch.Tensor, generator: torch.Generator, *, rotate: float = 10.0, scale: float = 0.1,
                   shift: float = 2.0, permute_channels: bool = True, invert: float = 0.5) -> torch.Tensor:
    """Randomly transformed copies of pixels ``x`` (N, C, H, W) in [0, 1]; see the module doc."""
    if x.ndim != 4:
        raise ValueError(f"augment_digits: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    out = x
    if rotate or scale or shift:
        grid = random_affine_grid(n, (h, w), generator, rotate, scale, shift).to(x.device, x.dtype)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if permute_channels and c > 1:
        perm = torch.rand(n, c, generator=generator).argsort(dim=1).to(x.device)
        out = out.gather(1, perm[:, :, None, None].expand(-1, -1, h, w))
    if invert:
        flip = (torch.rand(n, generator=generator) < invert).to(x.device).view(n, 1, 1, 1)
        out = torch.where(flip, 1 - out, out)
    return out
