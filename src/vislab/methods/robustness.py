"""Do fooling images survive outside the lab? Transfer to other networks, JPEG and resizing (B6).

Idea:
    A fooling image is made for one network, as float pixels. In practice it meets other
    networks (transferability: Szegedy et al. 2014 sec. 4.3; Papernot et al., "Transferability
    in Machine Learning", arXiv:1605.07277), lossy compression (JPEG as a defence: Dziugaite et
    al., arXiv:1608.00853) and rescaling (Xie et al., "Mitigating adversarial effects through
    randomization", ICLR 2018). For each model and each condition this module says, per image,
    whether the prediction is still the target class:

    - ``as_is``: the images as given (on the source model: the attack's own success; on the
      others: transfer);
    - ``jpeg_q{q}``: 8-bit rounded, JPEG-encoded at quality q by PIL (in memory, PIL's default
      4:2:0 chroma subsampling) and decoded;
    - ``resize_{f}``: resized by the factor f (< 1: down) and back to the original size,
      bilinear with antialiasing (torch.nn.functional.interpolate).

Arguments:
    images: (N, C, H, W) float pixels in [0, 1] (C = 3 RGB, or 1 grey), the fooled images.
    target: int or (N,) int64 target classes.
    models: {name: model}, pixel-space models (logits out) in eval mode; list the source model
        first by convention.
    jpeg_qualities: JPEG qualities (1-95).
    resize_factors: resize factors in (0, 1].

Returns:
    :class:`RobustnessResult`: ``hits[model][condition]`` (N,) bool, still the target;
    ``rates()`` the share of images per model and condition; ``conditions`` in order.

Example:
    >>> fooled = fool(model, images, target=6)
    >>> check = robustness_check(fooled.images, 6, {"efficientnet_lite0": model, "resnet18": other})
    >>> check.rates()["resnet18"]["as_is"], check.rates()["efficientnet_lite0"]["jpeg_q75"]
"""
from __future__ import annotations

import dataclasses
import io
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..precision import autocast


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """``images`` (N, C, H, W) in [0, 1], C = 1 or 3, JPEG-encoded at ``quality`` and decoded
    (in memory, with PIL); returns float pixels in [0, 1] on the images' device."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality {quality} must lie in [1, 95] (PIL's useful range)")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    pixels = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        decoded.append(np.asarray(Image.open(buffer)).reshape(array.shape))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255
    return out.to(images.device)


def resize_roundtrip(images: torch.Tensor, factor: float) -> torch.Tensor:
    """``images`` (N, C, H, W) resized to round(factor H) x round(factor W) and back (bilinear,
    antialiased), clamped to [0, 1]."""
    if not 0 < factor <= 1:
        raise ValueError(f"resize factor {factor} must lie in (0, 1]")
    size = tuple(images.shape[-2:])
    small = tuple(max(1, round(factor * s)) for s in size)
    down = F.interpolate(images.float(), size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(down, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


@torch.no_grad()
def classified_as(model: nn.Module, images: torch.Tensor, target: int | torch.Tensor, *, batch_size: int = 64,
                  autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(N,) bool: ``model``'s prediction for each of ``images`` is ``target`` (int or (N,))."""
    predictions = []
    for start in range(0, len(images), batch_size):
        with autocast(images.device, autocast_dtype):
            predictions.append(model(images[start:start + batch_size]).float().argmax(dim=1))
    target = torch.as_tensor(target, dtype=torch.long, device=images.device).reshape(-1).expand(len(images))
    return torch.cat(predictions) == target if predictions else torch.zeros(0, dtype=torch.bool)


@dataclasses.dataclass
class RobustnessResult:
    conditions: list[str]                       # "as_is", "jpeg_q75", "resize_0.5", ...
    hits: dict[str, dict[str, torch.Tensor]]    # model -> condition -> (N,) bool: still the target

    def rates(self) -> dict[str, dict[str, float]]:
        """Share of the images still classified as the target, per model and condition."""
        return {model: {c: float(hit.float().mean()) if hit.numel() else float("nan") for c, hit in row.items()}
                for model, row in self.hits.items()}


def robustness_check(images: torch.Tensor, target: int | torch.Tensor, models: Mapping[str, nn.Module], *,
                     jpeg_qualities: Sequence[int] = (90, 75, 50), resize_factors: Sequence[float] = (0.5,),
                     batch_size: int = 64, autocast_dtype: torch.dtype | None = None) -> RobustnessResult:
    """Per model and condition, which fooled ``images`` are still classified as ``target``; see the module doc."""
    if not models:
        raise ValueError("robustness_check needs at least one model")
    variants = {"as_is": images.detach()}
    variants.update({f"jpeg_q{q}": jpeg_roundtrip(images, q) for q in jpeg_qualities})
    variants.update({f"resize_{f:g}": resize_roundtrip(images, f) for f in resize_factors})
    hits = {name: {condition: classified_as(model, x, target, batch_size=batch_size,
                                            autocast_dtype=autocast_dtype).cpu()
                   for condition, x in variants.items()}
            for name, model in models.items()}
    return RobustnessResult(conditions=list(variants), hits=hits)
