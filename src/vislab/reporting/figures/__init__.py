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


__all__ = ["plt", "to_hwc"]
