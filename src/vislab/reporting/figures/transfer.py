"""Figures of ``vislab transfer``: per-class accuracy and confusion, the C sweep, training curves
and the comparison of variants. Arrays and plain values in, a PNG at ``path`` out."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...io import save_figure
from . import plt


def confusion(path: str | Path, y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
              per_class: np.ndarray, title: str) -> Path:
    """Per-class recall bars beside the row-normalised confusion matrix (labels index ``classes``)."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=range(len(classes)), normalize="true")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1, 1.4]})
    ax1.barh(range(len(classes)), per_class, color="tab:blue")
    ax1.set_yticks(range(len(classes)), classes)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("test accuracy (recall)")
    ax1.set_title("per class")
    im = ax2.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax2.set_xticks(range(len(classes)), classes, rotation=90)
    ax2.set_yticks(range(len(classes)), classes)
    ax2.set_xlabel("predicted")
    ax2.set_ylabel("true")
    ax2.set_title("confusion matrix (rows sum to 1)")
    fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.suptitle(title)
    return save_figure(fig, path)


def c_sweep(path: str | Path, Cs: Sequence[float], cv_accuracy: Sequence[float], cv_std: Sequence[float],
            test_accuracy: Sequence[float], best_C: float, folds: int, title: str) -> Path:
    """Validation curve: cross-validated accuracy (+- one std) and test accuracy against C (log axis)."""
    Cs, cv, sd = np.asarray(Cs), np.asarray(cv_accuracy), np.asarray(cv_std)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(Cs, cv, "o-", label=f"{folds}-fold CV on train")
    ax.fill_between(Cs, cv - sd, cv + sd, alpha=0.2)
    ax.semilogx(Cs, test_accuracy, "s--", label="test (reported, not used to choose)")
    ax.axvline(best_C, color="gray", ls=":", label=f"chosen C = {best_C:g}")
    ax.set_xlabel("C")
    ax.set_ylabel("accuracy")
    ax.set_title(f"validation curve: {title}")
    ax.legend()
    return save_figure(fig, path)


def training_curves(path: str | Path, train_loss: Sequence[float], train_accuracy: Sequence[float],
                    test_accuracy: Sequence[float], title: str) -> Path:
    """Per-epoch training loss, and train / test accuracy."""
    epochs = np.arange(1, len(train_loss) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, train_loss)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train cross-entropy")
    ax2.plot(epochs, train_accuracy, label="train")
    ax2.plot(epochs, test_accuracy, label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def variant_comparison(path: str | Path, labels: Sequence[str], accuracy: Sequence[float]) -> Path:
    """One horizontal bar per variant (test accuracy), in the given order."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    ax.barh(range(len(labels)), accuracy, color="tab:green")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, min(accuracy) - 0.05), 1)
    for i, a in enumerate(accuracy):
        ax.text(a, i, f" {a:.3f}", va="center", fontsize=7)
    ax.set_xlabel("test accuracy")
    ax.set_title("variants")
    return save_figure(fig, path)
