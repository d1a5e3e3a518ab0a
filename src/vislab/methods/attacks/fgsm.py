"""FGSM: one step of size eps along the sign of the loss gradient.

Paper:
    I. Goodfellow, J. Shlens, C. Szegedy, "Explaining and Harnessing Adversarial Examples",
    ICLR 2015 (arXiv:1412.6572).

Formula (pixels x in [0, 1], cross-entropy loss J on the logits):
    untargeted (away from the true label y):  x' = clip_[0,1](x + eps * sign(grad_x J(x, y)))
    targeted (towards the target t):          x' = clip_[0,1](x - eps * sign(grad_x J(x, t)))
    Each pixel moves by exactly eps (or 0 where its gradient is 0), then the image is clipped to
    [0, 1], so ||x' - x||_inf <= eps.

Arguments:
    model: pixel-space model (images in [0, 1] in, logits out), in eval mode.
    images: (N, C, H, W) float in [0, 1].
    labels: int or (N,) int64: the true labels (untargeted) or the target classes (targeted).
    eps: L-inf budget in pixel units (e.g. 8/255).
    targeted: push towards ``labels`` instead of away from them.

Shapes:
    images (N, C, H, W) -> AttackResult: images (N, C, H, W); success, linf, l2, iterations (= 1)
    (N,); logits (N, K).

Example:
    >>> result = fgsm(model, images, labels, eps=8 / 255)
    >>> result.success.float().mean(), result.linf.max()
"""
from __future__ import annotations

import torch
from torch import nn

from .base import AttackResult, ascent_direction, check_inputs, finish


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | int, *, eps: float,
         targeted: bool = False) -> AttackResult:
    """FGSM adversarial images of ``images``; see the module doc."""
    labels = check_inputs(images, labels, eps)
    x = images.detach()
    direction, _ = ascent_direction(model, x, labels, targeted)
    adversarial = (x + eps * direction).clamp(0, 1)
    iterations = torch.ones(len(x), dtype=torch.long, device=x.device)
    return finish(model, x, adversarial, labels, targeted, iterations)
