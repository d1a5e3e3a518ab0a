"""Pseudo-labels for self-training on the unlabelled target domain, in rounds.

At the start of some epochs (a *round*), the model's class probabilities on the target training
images decide which of them get a label -- its own prediction -- until the next round: per
predicted class, the most confident ``fraction`` (class-balanced self-training; the fraction grows
linearly from round to round) or every prediction above a confidence ``threshold``. Rounds are
spread evenly from ``start_epoch`` to the end of training. No true target label is ever read.

Example:
    >>> labeller = PseudoLabeller(len(target), epochs=20, start_epoch=8, rounds=4)
    >>> labeller.round_epochs
    [8, 11, 14, 17]
    >>> info = labeller.before_epoch(8, lambda: model_probs(target))  # a round: labels replaced
    >>> labeller.labels  # (N,) int64, -1 where unlabelled
"""
from __future__ import annotations

from typing import Callable

import torch


def select_pseudo_labels(probs: torch.Tensor, how: str = "top", fraction: float = 0.5,
                         threshold: float = 0.9) -> torch.Tensor:
    """Pseudo-labels (N,) int64 from class probabilities (N, C): the argmax where selected, else -1.

    ``how='threshold'``: keep predictions with confidence >= ``threshold``.
    ``how='top'``: per predicted class, keep the ``fraction`` most confident (rounded up), so that
    classes the model is less sure about still get labels (class-balanced self-training).
    """
    conf, pred = probs.max(dim=1)
    out = torch.full_like(pred, -1)
    if how == "threshold":
        keep = conf >= threshold
        out[keep] = pred[keep]
        return out
    if how != "top":
        raise ValueError(f"pseudo-label selection {how!r}: use 'top' or 'threshold'")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"pseudo-label fraction {fraction} must lie in [0, 1]")
    for c in pred.unique():
        idx = torch.nonzero(pred == c).flatten()
        k = int(-(-len(idx) * fraction // 1))  # ceil
        if k:
            # stable sort: ties keep index order, so the selection is deterministic
            order = torch.sort(conf[idx], descending=True, stable=True).indices[:k]
            out[idx[order]] = c
    return out


def round_epochs(start_epoch: int, rounds: int, epochs: int) -> list[int]:
    """Epochs (0-based) at whose start a round happens: ``rounds`` evenly spaced from ``start_epoch``
    (fewer when two fall on the same epoch)."""
    if rounds < 1 or not 0 <= start_epoch < epochs:
        raise ValueError(f"pseudo-label rounds: need rounds >= 1 and 0 <= start epoch {start_epoch} < "
                         f"epochs {epochs}, got {rounds} rounds")
    span = epochs - start_epoch
    return sorted({start_epoch + (r * span) // rounds for r in range(rounds)})


class PseudoLabeller:
    """The pseudo-labels of ``n`` target images and their round schedule; ``state()`` /
    ``load_state()`` put the current labels in a training checkpoint."""

    def __init__(self, n: int, epochs: int, *, select: str = "top", fraction_start: float = 0.4,
                 fraction_end: float = 0.8, threshold: float = 0.95, start_epoch: int = 8, rounds: int = 4,
                 device: torch.device | str = "cpu"):
        if select not in ("top", "threshold"):
            raise ValueError(f"pseudo-label selection {select!r}: use 'top' or 'threshold'")
        self.select, self.threshold = select, threshold
        self.fraction_start, self.fraction_end = fraction_start, fraction_end
        self.round_epochs = round_epochs(start_epoch, rounds, epochs)
        self.labels = torch.full((n,), -1, dtype=torch.int64, device=device)

    def fraction(self, r: int) -> float:
        """Per-class fraction labelled in round ``r``: linear from the start to the end fraction."""
        last = len(self.round_epochs) - 1
        return self.fraction_start + (self.fraction_end - self.fraction_start) * (r / last if last else 1.0)

    def before_epoch(self, epoch: int, predict_probs: Callable[[], torch.Tensor]) -> dict | None:
        """At a round's epoch, relabel from ``predict_probs()`` ((N, C) class probabilities of the target
        images) and return the round's record (round, epoch, fraction, count); else None."""
        if epoch not in self.round_epochs:
            return None
        r = self.round_epochs.index(epoch)
        frac = self.fraction(r)
        self.labels = select_pseudo_labels(predict_probs(), self.select, frac, self.threshold)
        return {"round": r, "epoch": epoch, "fraction": frac if self.select == "top" else None,
                "count": int((self.labels >= 0).sum())}

    def state(self) -> dict:
        return {"labels": self.labels}

    def load_state(self, state: dict) -> None:
        self.labels = state["labels"].to(self.labels.device)
