"""Figures of part B: saliency maps beside their images, fooling images with their differences,
class-visualisation snapshots. Tensors of pixels in [0, 1] and plain values in, a PNG path out."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from ...io import save_figure
from ...schemas import FoolImage, SaliencyImage
from . import plt, to_hwc


def saliency_figure(images: torch.Tensor, maps: torch.Tensor, results: Sequence[SaliencyImage],
                    path: str | Path, cols: int = 5) -> Path:
    """Each image (N, 3, H, W) above its saliency map (N, H, W), ``cols`` images per row."""
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.6 * cols, 5.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, r in enumerate(results):
        ax_img, ax_map = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        ax_img.imshow(to_hwc(images[i]))
        ax_img.set_title(f"{r['image']}\n{(r['class_name'] or '')[:24]} p={r['probability']:.2f}", fontsize=7)
        ax_map.imshow(maps[i].numpy(), cmap="hot")
        ax_map.set_title("saliency", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def fooling_figure(original: torch.Tensor, fooled: torch.Tensor, result: FoolImage, target_name: str,
                   path: str | Path) -> Path:
    """Original, fooled image, their difference and the difference x10, side by side."""
    d = fooled - original
    panels = [
        (original, f"{result['image']}\noriginal: {(result['original_prediction_name'] or '')[:22]}"),
        (fooled, f"fooled: {target_name[:16]} p={result['target_probability']:.2f}\n"
                 f"{result['iterations']} it, uint8 {'ok' if result['success_after_uint8'] else 'FAILS'}"),
        (0.5 + d, f"difference (0.5 = none)\nLinf {result['linf_255']:.1f}/255"),
        (0.5 + 10 * d, "difference x10"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(to_hwc(img))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def snapshots_figure(snapshots: Sequence[tuple[int, torch.Tensor]], row_labels: Sequence[str], path: str | Path,
                     final_probs: Sequence[float] | None = None,
                     probs_by_step: dict[int, torch.Tensor] | None = None, title: str | None = None) -> Path:
    """One row per image, one column per snapshot (steps done, (rows, 3, H, W) pixels); each
    panel titled with its steps and, when given, the class probability at that step
    (``probs_by_step``) or at the end (``final_probs``, last column)."""
    rows, cols = len(row_labels), len(snapshots)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows + 0.4), squeeze=False)
    for c, (steps, imgs) in enumerate(snapshots):
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(to_hwc(imgs[r]))
            ax.set_xticks([])
            ax.set_yticks([])
            text = f"{steps} it"
            if probs_by_step is not None:
                text += f", p={float(probs_by_step[steps][r]):.2f}"
            elif final_probs is not None and c == cols - 1:
                text += f", p={final_probs[r]:.2f}"
            ax.set_title(text, fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r][:28], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if title else None)
    return save_figure(fig, path)
