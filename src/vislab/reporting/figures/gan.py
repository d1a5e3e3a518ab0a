"""Part D figures: image grids of generated digits and the training curves of a GAN run."""
from __future__ import annotations

from pathlib import Path

import torch

from ...io import atomic_path, save_figure
from . import plt

CURVES = ((("loss_d", "D loss"), ("loss_g", "G loss")), (("d_x", "D(x)"), ("d_g_z", "D(G(z))")))


def image_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    """Images ``(N, C, S, S)`` in [-1, 1] -> one PNG grid (``nrow`` images per row, 2 px white
    padding), written atomically."""
    import torchvision

    unit = ((images.float() + 1) / 2).clamp(0, 1)
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(unit, tmp, nrow=nrow, padding=2, pad_value=1.0, format="png")
    return Path(path)


def moving_average(values: list[float], k: int = 25) -> list[float]:
    """Means of ``k`` consecutive values (``len - k + 1`` of them); fewer than ``k`` values pass as is."""
    t = torch.tensor(values, dtype=torch.float64)
    if len(t) < k:
        return t.tolist()
    c = torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])
    return ((c[k:] - c[:-k]) / k).tolist()


def training_curves(history: dict[str, list[float]], title: str, path: str | Path) -> Path:
    """Per-batch D and G losses (left) and D(x), D(G(z)) (right), raw and smoothed over 25 batches."""
    steps = list(range(1, len(history["loss_d"]) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, curves in zip(axes, CURVES):
        for key, label in curves:
            ax.plot(steps, history[key], alpha=0.25)
            smooth = moving_average(history[key])
            ax.plot(steps[len(steps) - len(smooth):], smooth, label=label, color=ax.lines[-1].get_color())
        ax.set_xlabel("batch")
        ax.legend()
    axes[0].set_ylabel("loss"), axes[0].set_title("losses")
    axes[1].set_ylim(0, 1), axes[1].set_title("discriminator outputs")
    fig.suptitle(title)
    return save_figure(fig, path)
