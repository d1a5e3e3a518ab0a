"""Figures of part A's inspection: an image beside its first-layer activation maps, and the
top-k predictions per image. Tensors of pixels in [0, 1] and plain values in, a PNG path out."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...io import save_figure
from ...schemas import Prediction
from . import plt, to_hwc


def feature_map_grid(maps: torch.Tensor, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """(C, H, W) activation maps -> one (rows*H, cols*W) image, each map min-max scaled on its own
    (a map's absolute scale says little next to its neighbours'); padding is NaN, drawn blank."""
    import torchvision

    maps = maps.detach().float().cpu()
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    scaled = (maps - lo) / (hi - lo).clamp_min(1e-12)
    ncols = ncols or int(np.ceil(np.sqrt(len(maps))))
    grid = torchvision.utils.make_grid(scaled.unsqueeze(1), nrow=ncols, padding=pad, pad_value=float("nan"))
    return grid[0].numpy()


def first_conv_figure(image: torch.Tensor, maps: torch.Tensor, model: str, layer: str, path: str | Path) -> Path:
    """The (3, H, W) input beside the (C, h, w) maps of ``model``'s first convolution ``layer``."""
    fig, (ax_img, ax_maps) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(to_hwc(image))
    ax_img.set_title("input (after preprocessing)")
    ax_maps.imshow(feature_map_grid(maps), cmap="viridis")
    ax_maps.set_title(f"{model}: {len(maps)} maps of the first conv layer ({layer}, {maps.shape[-2]}x{maps.shape[-1]})")
    for ax in (ax_img, ax_maps):
        ax.axis("off")
    return save_figure(fig, path)


def predictions_figure(images: Sequence[torch.Tensor], predictions: Sequence[Prediction], path: str | Path) -> Path:
    """One row per image: the (3, H, W) image beside a bar chart of its top-k probabilities."""
    n = len(predictions)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1.8]})
    for (ax_img, ax_bar), image, pred in zip(axes, images, predictions):
        ax_img.imshow(to_hwc(image))
        ax_img.axis("off")
        top = pred["top"][::-1]
        ax_bar.barh([t["class"] for t in top], [t["prob"] for t in top], color="tab:blue")
        ax_bar.set_xlim(0, 1)
        ax_bar.set_title(pred["image"], fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
