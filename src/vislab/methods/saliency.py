"""Saliency maps: which pixels the class score is most sensitive to.

Paper:
    K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks: Visualising
    Image Classification Models and Saliency Maps", ICLR workshop 2014 (arXiv:1312.6034).

Formula:
    M[n, h, w] = max_c | d S_y(x_n) / d x_norm[n, c, h, w] |
    with S_y the raw score (logit) of class y -- not the softmax probability, not the loss:
    those mix in the other classes' scores and saturate for confident predictions.
    x_norm = (x - mean) / std is the normalised image the course differentiates with respect to
    (``space="normalized"``, the default, reproducing the course); ``space="pixel"`` gives the
    gradient with respect to the pixels x in [0, 1] instead. The two differ by the factor
    std[c] per channel (d/dx_norm = std * d/dx), which moves the max over channels when the
    channels' std differ (ImageNet statistics) and is a uniform scale otherwise.

Arguments:
    model: a :class:`vislab.models.backbones.PixelModel` (pixel space [0,1] in, logits out),
        in eval mode; with ``space="normalized"`` its ``std`` buffer gives the channel scale.
    images: (N, 3, H, W) float tensor, pixels in [0, 1].
    classes: (N,) int64 tensor of the class of each image (an entry < 0 means: the predicted
        class), or None for the predicted class of every image.
    space: "normalized" (course) or "pixel".

Shapes:
    images (N, C, H, W) -> maps (N, H, W) float32 >= 0, classes (N,) int64, logits (N, K).
    The whole batch takes one forward and one backward pass: the scores of different images do
    not interact in an eval-mode network, so d(sum_n S_{y_n}(x_n))/dx_n = dS_{y_n}(x_n)/dx_n.

Example:
    >>> model = build_backbone("efficientnet_lite0").pixel_model()
    >>> out = saliency_maps(model, images, labels)   # images (N,3,224,224) in [0,1]
    >>> out.maps.shape
    torch.Size([N, 224, 224])
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

Space = Literal["normalized", "pixel"]


@dataclasses.dataclass
class SaliencyResult:
    maps: torch.Tensor      # (N, H, W), max over channels of |gradient|
    classes: torch.Tensor   # (N,) the class whose logit was differentiated
    logits: torch.Tensor    # (N, K) the model's logits for the images


def channel_std(model: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """The (1, C, 1, 1) std a :class:`PixelModel` normalises with, for mapping gradients and
    steps between pixel space and the normalised space the course works in."""
    std = getattr(model, "std", None)
    if not isinstance(std, torch.Tensor):
        raise TypeError(
            f"{type(model).__name__} has no 'std' buffer: pass the PixelModel from "
            f"Backbone.pixel_model(), or use space='pixel'"
        )
    return std.to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1)


def saliency_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor | None = None,
                  *, space: Space = "normalized") -> SaliencyResult:
    """Saliency maps of ``images`` for ``classes`` (default: predicted); see the module doc."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if space not in ("normalized", "pixel"):
        raise ValueError(f"space={space!r}: use 'normalized' or 'pixel'")
    x = images.detach().clone().requires_grad_(True)
    logits = model(x).float()
    predicted = logits.detach().argmax(dim=1)
    if classes is None:
        classes = predicted
    classes = torch.as_tensor(classes, dtype=torch.long, device=logits.device).reshape(-1)
    if classes.numel() != len(x):
        raise ValueError(f"{classes.numel()} classes given for {len(x)} images")
    if (classes >= logits.shape[1]).any():
        raise ValueError(f"classes must lie in [0, {logits.shape[1] - 1}], got {classes.tolist()}")
    classes = torch.where(classes < 0, predicted, classes)
    score = logits.gather(1, classes[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x)
    if space == "normalized":
        grad = grad * channel_std(model, grad)
    maps = grad.abs().amax(dim=1)
    return SaliencyResult(maps=maps.float(), classes=classes, logits=logits.detach())
