"""Figures of ``vislab adapt`` (Part C): training curves and t-SNE of the features."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...io import save_figure
from . import plt


def plot_curves(path: str | Path, title: str, epochs: Sequence[int], source_accuracy: Sequence[float],
                target_accuracy: Sequence[float], domain_accuracy: Sequence[float], *,
                train_domain_accuracy: Sequence[float] | None = None, round_epochs: Sequence[int] = (),
                schedule_epochs: Sequence[float] = (), lr: Sequence[float] = (),
                grl_lambda: Sequence[float] | None = None) -> Path:
    """Three panels: test accuracies per epoch (dotted lines after the pseudo-label rounds at
    ``round_epochs``, 0-based), the domain classifier's accuracy (test, and the training batches'
    when given), and the lr (and GRL lambda when given) against ``schedule_epochs``."""
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(epochs, source_accuracy, "o-", label="source test (MNIST)")
    ax[0].plot(epochs, target_accuracy, "o-", label="target test (MNIST-M)")
    for e in round_epochs:
        ax[0].axvline(e + 0.5, color="grey", lw=0.6, ls=":")
    ax[0].set(xlabel="epoch", ylabel="accuracy", title=f"{title}: test accuracy")
    ax[0].legend()
    ax[1].plot(epochs, domain_accuracy, "o-", label="test")
    if train_domain_accuracy is not None:
        ax[1].plot(epochs, train_domain_accuracy, "s--", label="train batches")
    ax[1].axhline(0.5, color="grey", lw=0.6)
    ax[1].set(xlabel="epoch", ylabel="accuracy", title="domain classifier accuracy", ylim=(0, 1.02))
    ax[1].legend()
    lines = ax[2].plot(schedule_epochs, lr, color="C0", label="lr")
    ax[2].set(xlabel="epoch", ylabel="learning rate", title="schedules")
    if grl_lambda is not None:
        tw = ax[2].twinx()
        lines += tw.plot(schedule_epochs, grl_lambda, color="C1", label="GRL lambda")
        tw.set_ylabel("GRL lambda", color="C1")
    ax[2].legend(lines, [ln.get_label() for ln in lines], loc="center right")
    return save_figure(fig, path)


def plot_tsne(panels: list[tuple[str, np.ndarray]], n: int, path: str | Path, title: str) -> Path:
    """One scatter per (name, embedding (2n, 2)) panel: rows 0..n-1 source, n..2n-1 target."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, emb) in zip(axes[0], panels):
        ax.scatter(emb[:n, 0], emb[:n, 1], s=3, c="C0", label="source (MNIST)")
        ax.scatter(emb[n:, 0], emb[n:, 1], s=3, c="C3", label="target (MNIST-M)")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(markerscale=4)
    fig.suptitle(title)
    return save_figure(fig, path)
