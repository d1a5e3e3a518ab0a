"""Class visualisation: synthesise an image that the network scores highly for a class.

Paper:
    K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks: Visualising
    Image Classification Models and Saliency Maps", ICLR workshop 2014 (arXiv:1312.6034);
    regularisers (jitter, blur, clamping) after J. Yosinski, J. Clune, A. Nguyen, T. Fuchs,
    H. Lipson, "Understanding Neural Networks Through Deep Visualization", ICML DL workshop 2015.

Formula (course, on the normalised image x_norm = (x - mean) / std), for t = 0 .. T-1:
        (ox, oy) ~ uniform{0..max_jitter}^2;  x_norm <- roll(x_norm, (oy, ox))
        L = S_y(x_norm) - l2_reg * ||x_norm||_2^2             (S_y: raw score of class y)
        x_norm <- x_norm + lr * dL/dx_norm                     (plain gradient ascent)
        x_norm <- roll(x_norm, (-oy, -ox))                     (jitter undone)
        clamp x_norm to the range that pixels [0, 1] map to
        if blur_every and t % blur_every == 0: x_norm <- GaussianBlur_sigma=0.5(x_norm)
    This module optimises the pixels x in [0, 1]. Because dL/dx = (dL/dx_norm) / std per
    channel, the course's step is, in pixel space, x <- x + lr * std_c^2 * dL/dx, and the
    regulariser stays on the normalised image, ||(x - mean) / std||^2 -- so learning_rate 5 and
    l2_reg 1e-3 mean what they mean in the course whatever the backbone's normalisation.
    Clamping to [0, 1] is the course's clamp; the blur commutes with the per-channel affine
    normalisation (its kernel sums to 1), so blurring pixels equals blurring x_norm.
    The blur is torchvision's ``gaussian_blur`` with sigma 0.5 and a 5x5 kernel (radius
    round(4 sigma), as scipy's gaussian_filter that the course uses). Noise starts as in the
    course, x_norm ~ N(0, 1), i.e. x = mean + std * N(0, 1), clamped to [0, 1].

Arguments:
    model: a :class:`vislab.models.backbones.PixelModel` in eval mode.
    target: int or (N,) int64 classes (one image per entry).
    init: (N, 3, H, W) start images in [0, 1], or None for noise of size ``image_size``.
    learning_rate, l2_reg: floats, or (N,) tensors giving each image its own value (a sweep
        in one batch); course defaults 5 and 1e-3.
    iterations: T (course 200); blur_every: 10 (0 disables); max_jitter: 16 pixels;
    show_every: keep a snapshot after every ``show_every`` steps (and after the last);
    generator: torch.Generator for the noise and the jitter (reproducible runs);
    autocast_dtype: e.g. torch.bfloat16 for the network's forward under autocast.

Shapes:
    -> ClassVizResult: images (N, 3, H, W) in [0, 1]; snapshots: list of (steps done,
    (N, 3, H, W) tensor); logits (N, K) float32 of the final images.

Example:
    >>> model = build_backbone("efficientnet_lite0").pixel_model()
    >>> res = class_visualization(model, 76, generator=torch.Generator().manual_seed(0))
    >>> res.logits.softmax(1)[0, 76]      # tarantula
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ..precision import autocast
from .saliency import channel_std

BLUR_SIGMA = 0.5


@dataclasses.dataclass
class ClassVizResult:
    images: torch.Tensor                          # (N, 3, H, W) in [0, 1]
    snapshots: list[tuple[int, torch.Tensor]]     # (steps done, (N, 3, H, W))
    logits: torch.Tensor                          # (N, K) float32 of ``images``


def jitter(x: torch.Tensor, ox: int, oy: int) -> torch.Tensor:
    """Roll (N, C, H, W) images by ``ox`` pixels right and ``oy`` down, wrapping around (the
    course's jitter); ``jitter(jitter(x, ox, oy), -ox, -oy)`` is ``x`` exactly."""
    return torch.roll(x, shifts=(oy, ox), dims=(2, 3))


def blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur of each channel with std ``sigma`` pixels, kernel radius round(4 sigma)."""
    radius = int(4.0 * sigma + 0.5)
    k = 2 * radius + 1
    return gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


def noise_image(n: int, size: int, mean: torch.Tensor, std: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The course's start: N(0, 1) in normalised space, i.e. mean + std * N(0, 1) pixels,
    clamped to [0, 1] so every iterate, the first included, is an image."""
    z = torch.randn(n, 3, size, size, generator=generator, dtype=mean.dtype)
    return (mean.cpu() + std.cpu() * z).clamp_(0.0, 1.0).to(mean.device)


def ascent_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, ox: int, oy: int,
                learning_rate: torch.Tensor, l2_reg: torch.Tensor, *, blur_now: bool,
                autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One iteration of the formula above on (N, 3, H, W) pixels; returns the new pixels."""
    mean = model.mean.to(x.dtype).view(1, -1, 1, 1)
    std = channel_std(model, x)
    xj = jitter(x, ox, oy).requires_grad_(True)
    with autocast(x.device, autocast_dtype):
        logits = model(xj)
    score = logits.float().gather(1, target[:, None]).squeeze(1)
    reg = ((xj - mean) / std).pow(2).flatten(1).sum(dim=1)
    objective = (score - l2_reg * reg).sum()  # images are independent: one backward for all
    (grad,) = torch.autograd.grad(objective, xj)
    # The course's step lr * dL/dx_norm on x_norm, in pixels: dL/dx_norm = std * dL/dx and a
    # change d of x_norm is a change std * d of the pixels, hence lr * std^2 * dL/dx.
    stepped = xj.detach() + learning_rate.view(-1, 1, 1, 1) * std.pow(2) * grad
    out = jitter(stepped, -ox, -oy).clamp_(0.0, 1.0)
    return blur(out) if blur_now else out


def class_visualization(model: nn.Module, target: int | torch.Tensor, *, init: torch.Tensor | None = None,
                        image_size: int = 224, learning_rate: float | torch.Tensor = 5.0,
                        l2_reg: float | torch.Tensor = 1e-3, iterations: int = 200, blur_every: int = 10,
                        max_jitter: int = 16, show_every: int = 25, generator: torch.Generator | None = None,
                        autocast_dtype: torch.dtype | None = None, progress=None) -> ClassVizResult:
    """Gradient-ascent class visualisation; see the module doc. ``progress`` wraps the range of
    iterations (e.g. :func:`vislab.progress.progress`)."""
    if iterations < 0 or blur_every < 0 or max_jitter < 0 or show_every < 0:
        raise ValueError("iterations, blur_every, max_jitter and show_every must be >= 0")
    device, dtype = model.mean.device, model.mean.dtype
    if init is None:
        n = torch.as_tensor(target).numel()
        n = max(n, torch.as_tensor(learning_rate).numel(), torch.as_tensor(l2_reg).numel())
        x = noise_image(n, image_size, model.mean.view(1, -1, 1, 1), model.std.view(1, -1, 1, 1), generator)
    else:
        if init.ndim != 4 or init.shape[1] != 3:
            raise ValueError(f"init must be (N, 3, H, W) pixels in [0, 1], got shape {tuple(init.shape)}")
        x = init.detach().to(device=device, dtype=dtype).clone().clamp_(0.0, 1.0)
    n = len(x)
    target = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1).expand(n).clone()
    lr = torch.as_tensor(learning_rate, dtype=dtype, device=device).reshape(-1).expand(n)
    reg = torch.as_tensor(l2_reg, dtype=dtype, device=device).reshape(-1).expand(n)
    snapshots: list[tuple[int, torch.Tensor]] = []
    steps = range(iterations) if progress is None else progress(range(iterations))
    for t in steps:
        ox, oy = (int(v) for v in torch.randint(0, max_jitter + 1, (2,), generator=generator))
        x = ascent_step(model, x, target, ox, oy, lr, reg, blur_now=bool(blur_every) and t % blur_every == 0,
                        autocast_dtype=autocast_dtype)
        if (show_every and (t + 1) % show_every == 0) or t == iterations - 1:
            snapshots.append((t + 1, x.detach().clone()))
    with torch.no_grad(), autocast(x.device, autocast_dtype):
        logits = model(x).float()
    return ClassVizResult(images=x.detach(), snapshots=snapshots, logits=logits)
