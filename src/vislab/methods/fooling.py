"""Fooling images: nudge an image along the target class's gradient until the network says target.

Paper:
    C. Szegedy, W. Zaremba, I. Sutskever, J. Bruna, D. Erhan, I. Goodfellow, R. Fergus,
    "Intriguing properties of neural networks", ICLR 2014 (arXiv:1312.6199); the normalised
    gradient ascent below is the course's (CS231n) version of it.

Formula (course, on the normalised image x_norm = (x - mean) / std):
    repeat until argmax_k S_k(x) == t, at most ``max_iterations`` times:
        g = d S_t / d x_norm           (S_t: raw score (logit) of the target class t)
        x_norm <- x_norm + lr * g / ||g||_2
    This module optimises the pixels x in [0, 1] directly. With g_pix = dS_t/dx = g / std,
    the course's step is, in pixel space, per channel c:
        x <- x + lr * std_c * g / ||g||_2,    g = std * g_pix   (the normalised-space gradient)
    i.e. lr * std_c^2 * g_pix / ||std * g_pix||_2 -- exactly the course's trajectory
    (``step_space="normalized"``, the default). ``step_space="pixel"`` takes
    x <- x + lr * g_pix / ||g_pix||_2 instead (a step of L2 length lr in pixel units).
    After every step the pixels are clamped to [0, 1] (the course's normalised range), so each
    iterate is a valid image. ||.||_2 is taken per image.

    Each image of a batch stops independently, as soon as its own prediction is the target
    (it is then left untouched); the batch forward and backward passes only include the images
    still running.

    Stopping and 8-bit images: the course's rule stops at the first iterate on the target's side
    of the decision boundary, often only just across it (target probability ~0.3-0.6), and
    rounding that image to 8 bits -- what saving it as PNG does -- can push it back (measured:
    1 of the 20 foolbox photos on efficientnet_lite0). With ``stop_on_uint8=True`` (default) the
    same rule is applied to the image as it will be stored: an image stops when its prediction
    is the target both as float pixels and rounded to round(255 x) / 255. The trajectory is the
    course's, step for step; an image only takes extra steps while its rounded version does not
    fool yet, and the check costs one extra forward pass (no backward) per candidate stop.
    ``stop_on_uint8=False`` is the course's rule exactly. ``margin > 0`` (off by default)
    additionally asks the target logit to lead every other logit by ``margin``, for robustness
    beyond 8-bit rounding (JPEG, resizing).

Arguments:
    model: a :class:`vislab.models.backbones.PixelModel` in eval mode (pixel space in, logits
        out); its ``std`` buffer maps the course's step to pixel space.
    images: (N, 3, H, W) float tensor in [0, 1].
    target: int, or (N,) int64 tensor of target classes.
    learning_rate: step length (course: 1).
    max_iterations: most steps per image (course: 100).
    step_space: "normalized" (course) or "pixel".
    margin: extra logit margin required before stopping (0 = course's rule).
    stop_on_uint8: also require the 8-bit rounded image to be classified as the target.
    autocast_dtype: e.g. torch.bfloat16 to run the network under autocast (faster on CPUs with AMX);
        steps, norms and the stopping test stay in float32.

Shapes:
    images (N, C, H, W) -> FoolingResult: images (N, C, H, W) in [0,1]; success (N,) bool;
    iterations (N,) int64 (steps taken); logits (N, K) float32 of the returned images.

Example:
    >>> model = build_backbone("efficientnet_lite0").pixel_model()
    >>> res = fool(model, images, target=6)          # 6 = stingray
    >>> res.success.all(), res.iterations
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from ..precision import autocast
from .saliency import channel_std

StepSpace = Literal["normalized", "pixel"]


@dataclasses.dataclass
class FoolingResult:
    images: torch.Tensor      # (N, C, H, W) fooled images in [0, 1]
    success: torch.Tensor     # (N,) bool: prediction == target (and margin reached)
    iterations: torch.Tensor  # (N,) int64: gradient steps taken
    logits: torch.Tensor      # (N, K) float32 logits of ``images``


def reached_target(logits: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """(N,) bool: the prediction is ``target`` and its logit leads the runner-up by >= margin."""
    hit = logits.argmax(dim=1) == target
    if margin <= 0:
        return hit
    others = logits.scatter(1, target[:, None], float("-inf"))
    lead = logits.gather(1, target[:, None]).squeeze(1) - others.amax(dim=1)
    return hit & (lead >= margin)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] as an 8-bit file stores them: round(255 x) / 255."""
    return (x * 255).round_().div_(255)


def fooling_step(x: torch.Tensor, grad: torch.Tensor, learning_rate: float | torch.Tensor,
                 std: torch.Tensor | None) -> torch.Tensor:
    """One step x + lr * std * g / ||g||_2 with g = std * grad (``std`` None: pixel-space step
    x + lr * grad / ||grad||_2), clamped to [0, 1]. x, grad: (N, C, H, W); std (1, C, 1, 1)."""
    # The course steps on x_norm = (x - mean) / std along g = dS/dx_norm = std * dS/dx, normalised
    # by ||g||_2 in that space; moving x_norm by d moves the pixels by std * d -- hence std twice.
    if std is not None:
        grad = grad * std
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    step = grad / norm
    if std is not None:
        step = step * std
    lr = torch.as_tensor(learning_rate, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    return (x + lr * step).clamp_(0.0, 1.0)


def fool(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor, *,
         learning_rate: float = 1.0, max_iterations: int = 100, step_space: StepSpace = "normalized",
         margin: float = 0.0, stop_on_uint8: bool = True, autocast_dtype: torch.dtype | None = None,
         progress=None) -> FoolingResult:
    """Fooling images of ``images`` towards ``target``; see the module doc. ``progress`` wraps
    the range of iterations (e.g. :func:`vislab.progress.progress`)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if step_space not in ("normalized", "pixel"):
        raise ValueError(f"step_space={step_space!r}: use 'normalized' or 'pixel'")
    if max_iterations < 0:
        raise ValueError(f"max_iterations={max_iterations} must be >= 0")
    n = len(images)
    target = torch.as_tensor(target, dtype=torch.long, device=images.device).reshape(-1).expand(n).clone()
    if not images.is_floating_point():
        raise TypeError(f"images must be float pixels in [0, 1], got dtype {images.dtype}")
    x = images.detach().clone()
    std = channel_std(model, x) if step_space == "normalized" else None
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    final_logits: torch.Tensor | None = None
    steps = range(max_iterations + 1)
    for it in (steps if progress is None else progress(steps)):
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa = x[idx].requires_grad_(True)
        with autocast(x.device, autocast_dtype):
            logits = model(xa)
        logits = logits.float()
        if final_logits is None:
            final_logits = torch.empty(n, logits.shape[1], device=x.device, dtype=logits.dtype)
        final_logits[idx] = logits.detach()
        ta = target[idx]
        reached = reached_target(logits.detach(), ta, margin)
        if stop_on_uint8 and reached.any():
            cand = reached.nonzero().squeeze(1)
            with torch.no_grad(), autocast(x.device, autocast_dtype):
                q_logits = model(quantize_uint8(x[idx[cand]])).float()
            reached[cand] = reached_target(q_logits, ta[cand], margin)
        done[idx[reached]] = True
        if it == max_iterations:
            break
        go = ~reached
        if not go.any():
            break
        # Summing the target logits of the running images gives each its own gradient in one
        # backward (images do not interact in eval mode); rows of finished images stay zero.
        score = logits.gather(1, ta[:, None]).squeeze(1)[go].sum()
        (grad,) = torch.autograd.grad(score, xa)
        rows = idx[go]
        x[rows] = fooling_step(x[rows], grad[go].to(x.dtype), learning_rate, std)
        iterations[rows] += 1
    if final_logits is None:  # no images
        final_logits = torch.empty(0, 0, device=x.device)
    return FoolingResult(images=x, success=done.clone(), iterations=iterations, logits=final_logits)
