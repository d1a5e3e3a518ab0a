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


def deletion_figure(fractions: torch.Tensor, saliency_curve: torch.Tensor, random_curve: torch.Tensor,
                    path: str | Path) -> Path:
    """Mean deletion curves (class probability vs share of pixels removed): saliency order vs
    random order; ``*_curve`` (N, K+1) per image, ``fractions`` (K+1,)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for curve, label in ((saliency_curve, "most salient first"), (random_curve, "random order")):
        mean = curve.float().mean(dim=0)
        ax.plot(fractions.numpy(), mean.numpy(), marker=".",
                label=f"{label} (AUC {float(torch.trapezoid(mean, fractions)):.3f})")
    ax.set_xlabel("share of pixels removed")
    ax.set_ylabel(f"class probability (mean of {len(saliency_curve)})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def map_columns_figure(images: torch.Tensor, columns: Sequence[tuple[str, torch.Tensor]], names: Sequence[str],
                       path: str | Path) -> Path:
    """One row per image (N, 3, H, W): the image, then one map (N, H, W) per ``(title, maps)`` column
    (e.g. vanilla vs SmoothGrad, trained vs randomised network)."""
    rows, cols = len(names), 1 + len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for r, name in enumerate(names):
        axes[r, 0].imshow(to_hwc(images[r]))
        axes[r, 0].set_title(name[:24], fontsize=7)
        for c, (title, maps) in enumerate(columns, start=1):
            axes[r, c].imshow(maps[r].float().numpy(), cmap="hot")
            axes[r, c].set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def boxes_figure(images: torch.Tensor, boxes: Sequence[Sequence[int]], names: Sequence[str], path: str | Path,
                 cols: int = 5) -> Path:
    """Each image (N, 3, H, W) with its box (x0, y0, x1, y1), x1 and y1 exclusive, drawn on it."""
    from matplotlib.patches import Rectangle

    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (name, (x0, y0, x1, y1)) in enumerate(zip(names, boxes)):
        ax = axes[i // cols, i % cols]
        ax.imshow(to_hwc(images[i]))
        # pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
        ax.set_title(name[:24], fontsize=7)
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
