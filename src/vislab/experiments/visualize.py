"""What part B's commands share (``vislab saliency``, ``vislab fool``, ``vislab classviz``, one
module each): their image and backbone options, the pixel-space model, class names, batching
and the 8-bit PNG round trip.

All optimisation happens on pixels in [0, 1] through the backbone's :class:`PixelModel`; the
methods map the course's step sizes (defined on normalised images) to pixel space exactly.
"""
from __future__ import annotations

import dataclasses
import io

import torch

from ..config import RunConfig, option
from ..data.samples import SampleSet, load_samples, to_batch
from ..errors import UserError
from ..models.backbones import Backbone, PixelModel, build_backbone, imagenet_classes
from ..runs import Run
from .options import BackboneOptions, SampleOptions


@dataclasses.dataclass
class ImageSetConfig(SampleOptions, BackboneOptions, RunConfig):
    """Options of the commands that run on a set of images (saliency, fool)."""

    batch_size: int = option(20, "images per forward/backward pass", min=1)


def pixel_model(backbone: Backbone, device: torch.device, dtype: torch.dtype | None = None,
                fold_bn: bool = True) -> PixelModel:
    """The backbone in pixel space on ``device``, for autocast to ``dtype`` (None: fp32)."""
    # BatchNorm folded: the same function and gradients up to rounding, one pass fewer per BN
    # (benchmarks/fooling.py: fooling the 20 photos in batches of 5 on 2 CPU cores, 2.63 s -> 2.15 s;
    # the course loop takes 4.83 s)
    model = backbone.pixel_model(fold_bn=fold_bn).to(device)
    if dtype == torch.bfloat16:
        # oneDNN's bf16 convolutions are fastest in NHWC (benchmarks/fooling.py: 4.5 s vs 6.0 s)
        model = model.to(memory_format=torch.channels_last)
    return model


def setup(run: Run, cfg: ImageSetConfig, dtype: torch.dtype | None = None
          ) -> tuple[Backbone, PixelModel, SampleSet, torch.Tensor]:
    """The backbone, its pixel model, the images and their (N, 3, S, S) pixels."""
    backbone = build_backbone(cfg.model, cfg.weights, run.device)
    samples = load_samples(cfg.images, cfg.samples, cfg.limit)
    x = to_batch(samples.images, backbone.preprocess, cfg.resize)
    return backbone, pixel_model(backbone, run.device, dtype), samples, x


def check_class(name: str, value: int, num_classes: int) -> None:
    if not 0 <= value < num_classes:
        raise UserError(f"--{name} {value}: a class index from 0 to {num_classes - 1} (e.g. 6 stingray, 76 tarantula)")


def class_name(k: int | None) -> str | None:
    if k is None:
        return None
    names = imagenet_classes()
    return names[k] if 0 <= k < len(names) else str(k)


def batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def png_roundtrip(img: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """(3, H, W) pixels -> 8-bit PNG bytes and the pixels read back from them."""
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image, to_tensor

    # round(), not to_pil_image's truncation: nearest 8-bit value, as a careful user would save
    arr = (img.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    buf = io.BytesIO()
    to_pil_image(arr).save(buf, format="PNG")
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as back:
        return data, to_tensor(back.convert("RGB"))
