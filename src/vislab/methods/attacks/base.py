"""What the attacks share: their result, the loss gradient they step along, and the final check."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass
class AttackResult:
    images: torch.Tensor      # (N, C, H, W) adversarial images in [0, 1]
    success: torch.Tensor     # (N,) bool: targeted, prediction == target; untargeted, prediction != label
    linf: torch.Tensor        # (N,) max |adversarial - original| over the pixels, pixel units
    l2: torch.Tensor          # (N,) ||adversarial - original||_2 over all pixels and channels
    iterations: torch.Tensor  # (N,) int64 gradient steps taken
    logits: torch.Tensor      # (N, K) float32 logits of ``images``


def check_inputs(images: torch.Tensor, labels: torch.Tensor | int, eps: float) -> torch.Tensor:
    """Validate the arguments every attack takes; returns ``labels`` as an (N,) int64 tensor."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, C, H, W) pixels in [0, 1], got {images.dtype} {tuple(images.shape)}")
    if eps < 0:
        raise ValueError(f"eps={eps} must be >= 0 (an L-inf budget in pixel units, e.g. 8/255)")
    return torch.as_tensor(labels, dtype=torch.long, device=images.device).reshape(-1).expand(len(images)).clone()


def ascent_direction(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                     targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The direction each pixel of ``x`` moves in: the sign of the gradient that raises the
    cross-entropy with the true ``labels`` (untargeted) or lowers it with the target ``labels``
    (targeted); and the logits of ``x`` (N, K) from the same forward pass."""
    x = x.detach().requires_grad_(True)
    logits = model(x).float()
    # summed, not averaged: each image's gradient is independent of the batch size (signs are the same)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return (-grad.sign() if targeted else grad.sign()), logits.detach()


def reached(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(N,) bool: the attack's goal holds for these logits."""
    predicted = logits.argmax(dim=1)
    return predicted == labels if targeted else predicted != labels


@torch.no_grad()
def finish(model: nn.Module, original: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
           targeted: bool, iterations: torch.Tensor) -> AttackResult:
    logits = model(adversarial).float()
    delta = (adversarial - original).flatten(1)
    return AttackResult(images=adversarial, success=reached(logits, labels, targeted),
                        linf=delta.abs().amax(dim=1), l2=delta.norm(dim=1), iterations=iterations, logits=logits)
