"""Classifiers trained by the fit loop (:func:`vislab.training.fit`) for ``vislab transfer``.

- A new linear layer ``W f + b`` (D -> K logits, softmax cross-entropy) trained on frozen
  features (:class:`LinearHead`, :func:`train_linear_head`).
- The whole network fine-tuned end to end, the backbone with a smaller learning rate
  (:class:`FineTuneNet`, :class:`EndToEndTrainer`, which also trains the small CNN of the
  from-scratch baseline).

Shapes: features X (N, D) float32, labels y (N,) int64 in [0, K).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..models.backbones import Backbone
from ..models.layout import in_layout
from ..models.taps import LayerTap
from ..precision import autocast
from ..training import Plan, fit
from .features import pool_output
from .linear import accuracy


# --- a new linear layer on frozen features -------------------------------------------------

class EpochCurves:
    """This epoch's training loss (mean over images) and accuracy, summed as the batches go; part of a
    trainer's state, so that a run resumed mid-epoch reports the same numbers."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.correct, self.n = 0.0, 0, 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.item() * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        self.n += len(y)

    def take(self) -> dict[str, float]:
        """{"train_loss", "train_accuracy"} of the epoch so far, and a fresh start for the next."""
        out = {"train_loss": self.loss_sum / max(self.n, 1), "train_accuracy": self.correct / max(self.n, 1)}
        self.reset()
        return out

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "n": self.n}

    def load_state(self, state: dict) -> None:
        self.loss_sum, self.correct, self.n = state["loss_sum"], state["correct"], state["n"]


def epoch_curves(trainer: "ClassifierTrainer") -> dict[str, float]:
    """The trainer's :meth:`EpochCurves.take`, over every process's images under torchrun (each
    process counts its own slice of the batches)."""
    trainer.curves.load_state(distributed.all_sum(trainer.curves.state()))
    return trainer.curves.take()


def as_curves(history: list[dict]) -> dict[str, list[float]]:
    """The fit loop's per-epoch rows -> {"train_loss": [...], "train_accuracy": [...], "test_accuracy": [...]}."""
    return {k: [row[k] for row in history] for k in ("train_loss", "train_accuracy", "test_accuracy")}


class ClassifierTrainer:
    """A classifier ``model`` trained by ``opt`` on cross-entropy, one fit-loop ``update`` per batch,
    with the epoch's training curves; subclasses turn a batch into logits and labels."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer):
        self.model, self.opt, self.curves = model, opt, EpochCurves()

    def step(self, logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        loss = nn.functional.cross_entropy(logits.float(), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.curves.add(loss, logits, y)
        return {"loss": loss.item()}

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "curves": self.curves.state()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.curves.load_state(state["curves"])


class LinearHead(ClassifierTrainer):
    """``nn.Linear(D, K)`` trained with Adam on fixed features; a batch is (X (B, D), y (B,))."""

    def __init__(self, dim: int, n_classes: int, generator: torch.Generator, lr: float, weight_decay: float):
        layer = nn.Linear(dim, n_classes)
        with torch.no_grad():  # seeded init independent of the global RNG
            bound = 1 / dim ** 0.5
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        super().__init__(layer, torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay))

    def update(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        return self.step(self.model(x), y)


class FeatureBatches:
    """Shuffled batches (X, y) of in-memory features for the fit loop; the last batch may be smaller."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.steps_per_epoch = -(-len(X) // batch_size)

    def order(self, rngs: dict[str, torch.Generator]) -> torch.Tensor:
        return torch.randperm(len(self.X), generator=rngs["order"])

    def batch(self, order: torch.Tensor, i: int, rngs: dict[str, torch.Generator]):
        idx = order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.X[idx], self.y[idx]


def train_linear_head(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                      n_classes: int, *, epochs: int = 100, lr: float = 0.01, weight_decay: float = 1e-4,
                      batch_size: int = 128, seed: int = 0) -> tuple[nn.Linear, dict]:
    """Train ``nn.Linear(D, K)`` with Adam and cross-entropy on fixed features (:class:`LinearHead`,
    through :func:`vislab.training.fit`, no checkpoint: it takes seconds).

    Returns the layer and per-epoch curves: train loss, train accuracy, test accuracy (reported,
    not used for any choice)."""
    g = torch.Generator().manual_seed(seed)  # the initial weights, then each epoch's order
    Xtr, ytr = torch.as_tensor(X_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.long)
    Xte, yte = torch.as_tensor(X_test, dtype=torch.float32), torch.as_tensor(y_test, dtype=torch.long)
    head = LinearHead(Xtr.shape[1], n_classes, g, lr, weight_decay)
    data = FeatureBatches(Xtr, ytr, batch_size)

    @torch.no_grad()
    def evaluate(epoch: int, means: dict, train_seconds: float) -> dict:
        test_acc = float((head.model(Xte).argmax(1) == yte).float().mean()) if len(Xte) else float("nan")
        return {**epoch_curves(head), "test_accuracy": test_acc}

    result = fit(head, data, Plan(epochs, data.steps_per_epoch), rngs={"order": g}, evaluate=evaluate,
                 desc="linear head")
    return head.model, as_curves(result.history)


# --- end-to-end fine-tuning ----------------------------------------------------------------

class FineTuneNet(nn.Module):
    """Pixel-space backbone read at ``layer`` (pooled to (N, D)), then a new ``Linear(D, K)``.

    It trains a copy of the backbone's network: the backbone stays as loaded, so that every
    fine-tuning of a run (one per layer, say) starts from the same pretrained weights."""

    def __init__(self, backbone: Backbone, layer: str, n_classes: int, pool: str = "avg"):
        super().__init__()
        self.body = copy.deepcopy(backbone.pixel_model())
        self.body.net.requires_grad_(True)
        self.path, self.pool = backbone.module_path(layer), pool
        self._tap = LayerTap(self.body, [self.path], root=self.body.net)
        with torch.no_grad():
            size = backbone.preprocess.input_size
            dim = self.features(torch.zeros(1, 3, size, size)).shape[1]
        self.head = nn.Linear(dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pool_output(self._tap(x)[self.path], self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).float())

    def train(self, mode: bool = True) -> "FineTuneNet":
        # BatchNorm statistics stay frozen: batches of a few dozen images from 15 classes give
        # worse estimates than ImageNet's (the usual practice when fine-tuning on small data).
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def finetune_optimizer(net: FineTuneNet, lr: float, backbone_lr_mult: float = 0.1, weight_decay: float = 1e-4,
                       momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with the backbone at ``lr * backbone_lr_mult`` and the new head at ``lr``."""
    return torch.optim.SGD([
        {"params": [p for p in net.body.parameters() if p.requires_grad], "lr": lr * backbone_lr_mult},
        {"params": net.head.parameters(), "lr": lr},
    ], lr=lr, momentum=momentum, weight_decay=weight_decay)


def evaluate(net: nn.Module, loader, device: torch.device, dtype: torch.dtype | None = None,
             channels_last: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Accuracy of ``net`` on a loader of (x, ok, y) batches (computed in ``dtype``, see
    :func:`vislab.precision.resolve_precision`, the images channels-last if asked); also the labels
    and predictions."""
    net.eval()
    ys, preds = [], []
    with torch.inference_mode(), autocast(device, dtype):
        for x, ok, y in loader:
            if not ok.any():
                continue
            logits = net(in_layout(x[ok].to(device), channels_last))
            preds.append(logits.argmax(1).cpu())
            ys.append(y[ok])
    y_true, y_pred = torch.cat(ys).numpy(), torch.cat(preds).numpy()
    return accuracy(y_true, y_pred), y_true, y_pred


class EndToEndTrainer(ClassifierTrainer):
    """A network trained end to end on decoded images (a :class:`FineTuneNet` when fine-tuning, the
    small CNN of the from-scratch baseline), its forward pass computed in ``dtype`` (see
    :func:`vislab.precision.resolve_precision`); a batch is (x, ok, y) of decoded images, the
    unreadable ones (ok False) left out. ``channels_last``: the network's weights and the images in
    that layout (on a 2-core CPU a fine-tuning step of EfficientNet-Lite0 took 2.9-3.6 s instead of
    4.4-5.4 s: oneDNN's convolutions, depthwise ones above all, want it)."""

    def __init__(self, net: nn.Module, opt: torch.optim.Optimizer, device: torch.device,
                 dtype: torch.dtype | None = None, channels_last: bool = False):
        super().__init__(net, opt)
        self.device, self.dtype, self.channels_last = device, dtype, channels_last
        if channels_last:
            net.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters

    def update(self, batch) -> dict[str, float]:
        x, ok, y = batch
        if not ok.any():
            return {}
        self.model.train()
        x, y = in_layout(x[ok].to(self.device), self.channels_last), y[ok].to(self.device)
        with autocast(self.device, self.dtype):
            logits = self.model(x)
        return self.step(logits, y)
