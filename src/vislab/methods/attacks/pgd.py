"""PGD: iterated FGSM steps of size alpha, projected back onto the L-inf ball of radius eps.

Paper:
    A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu, "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR 2018 (arXiv:1706.06083).

Formula (pixels x in [0, 1], cross-entropy J on the logits, s = +1 untargeted / -1 targeted):
    x_0 = clip_[0,1](x + U(-eps, eps))   with ``random_start`` (else x_0 = x)
    x_{t+1} = clip_[0,1]( clip_[x-eps, x+eps]( x_t + s * alpha * sign(grad J(x_t, label)) ) )
    for ``steps`` steps. Untargeted: label = the true class, success = prediction != label;
    targeted: label = the target, success = prediction == target. The projection is a clamp
    between x - eps and x + eps, so one step with alpha = eps and no random start is exactly
    :func:`vislab.methods.attacks.fgsm` (bit for bit). ``early_stop`` (not in the paper) stops
    each image at its first successful iterate, for comparing iteration counts with the naive
    fooling method; by default every image takes all ``steps``. The random start comes from a
    CPU generator seeded with ``seed`` (same start on every device).

Arguments:
    model: pixel-space model (logits out), in eval mode.
    images: (N, C, H, W) float in [0, 1].
    labels: int or (N,) int64: true labels (untargeted) or target classes (targeted).
    eps: L-inf budget in pixel units (e.g. 8/255).
    alpha: step size in pixel units (e.g. 2/255; Madry et al. use about 2.5 eps / steps).
    steps: number of steps.
    random_start: start from a uniform random point of the eps-ball.
    targeted: push towards ``labels``.
    early_stop: stop each image once the goal holds.
    seed: seed of the random start.

Shapes:
    images (N, C, H, W) -> AttackResult: images (N, C, H, W); success, linf, l2, iterations (N,);
    logits (N, K).

Example:
    >>> result = pgd(model, images, torch.full((N,), 6), eps=8 / 255, alpha=2 / 255, steps=10, targeted=True)
    >>> result.success.float().mean(), result.l2.mean()
"""
from __future__ import annotations

import torch
from torch import nn

from .base import AttackResult, ascent_direction, check_inputs, finish, reached


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | int, *, eps: float, alpha: float,
        steps: int = 10, random_start: bool = True, targeted: bool = False, early_stop: bool = False,
        seed: int = 0) -> AttackResult:
    """PGD adversarial images of ``images``; see the module doc."""
    labels = check_inputs(images, labels, eps)
    if steps < 0 or alpha < 0:
        raise ValueError(f"steps={steps} and alpha={alpha} must be >= 0")
    x = images.detach()
    low, high = x - eps, x + eps
    adversarial = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
        adversarial = (x + (2 * noise.to(x.device) - 1) * eps).clamp(0, 1)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    running = torch.arange(len(x), device=x.device)
    for _ in range(steps):
        if running.numel() == 0:
            break
        direction, logits = ascent_direction(model, adversarial[running], labels[running], targeted)
        if early_stop:  # the iterate's own logits decide: no extra forward pass
            go = ~reached(logits, labels[running], targeted)
            running, direction = running[go], direction[go]
        stepped = adversarial[running] + alpha * direction
        adversarial[running] = torch.clamp(stepped, low[running], high[running]).clamp(0, 1)
        iterations[running] += 1
    return finish(model, x, adversarial, labels, targeted, iterations)
