"""Shared figure helpers (matplotlib, headless Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # vislab writes files; it never opens windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def to_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) / (H, W) tensor in [0,1] -> (H, W[, 3]) numpy for imshow."""
    img = img.detach().float().cpu().clamp(0, 1)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    arr = img.numpy()
    return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr


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


__all__ = ["plt", "to_hwc", "feature_map_grid"]
