"""Linear classifiers on CNN features, and end-to-end fine-tuning.

- Linear SVM (one-vs-rest, hinge loss, ``min_w 1/2 ||w||^2 + C sum_i max(0, 1 - y_i w.x_i)^2``:
  scikit-learn's ``LinearSVC``) on L2-normalised features (Chatfield et al. 2014).
- C chosen by k-fold cross-validation on the training set only (``GridSearchCV``); the test
  accuracy of every C is reported as a curve, never used to choose.
- PCA to ``k`` dimensions before the SVM.
- A new linear layer ``W f + b`` (D -> K logits, softmax cross-entropy) trained on frozen
  features; or the whole network fine-tuned end to end, the backbone with a smaller learning rate.

Shapes: features X (N, D) float32, labels y (N,) int64 in [0, K).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score, recall_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from torch import nn

from ..models.backbones import Backbone
from ..models.taps import LayerTap
from .features import pool_output


def make_svm(C: float = 1.0, seed: int = 0) -> LinearSVC:
    """The course's classifier: ``LinearSVC(C)``, one-vs-rest (its default for K > 2 classes)."""
    return LinearSVC(C=C, random_state=seed, max_iter=10_000)


def fit_svm(X: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0) -> tuple[LinearSVC, float]:
    """Fit the SVM; returns it and the fit time in seconds."""
    t0 = time.perf_counter()
    clf = make_svm(C, seed).fit(X, y)
    return clf, time.perf_counter() - t0


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    return float(accuracy_score(y_true, y_pred))


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class, (K,) float64; NaN for a class absent from ``y_true``."""
    return recall_score(y_true, y_pred, labels=np.arange(n_classes), average=None, zero_division=np.nan)


@dataclasses.dataclass
class CSelection:
    Cs: list[float]
    cv_mean: list[float]
    cv_std: list[float]
    best_C: float
    folds: int


def select_c(X_train: np.ndarray, y_train: np.ndarray, Cs: Sequence[float], folds: int = 5,
             seed: int = 0) -> CSelection:
    """Pick C by stratified k-fold cross-validation on the training set (``GridSearchCV``).

    Only training data enters this function: the choice cannot depend on the test set. Ties go to
    the smallest C (GridSearchCV's rank order over the sorted grid), the most regularised model.
    """
    Cs = sorted(float(c) for c in Cs)
    if not Cs:
        raise ValueError("the C grid is empty")
    min_count = int(np.bincount(y_train).min(initial=0)) if len(y_train) else 0
    folds = max(2, min(folds, min_count)) if min_count >= 2 else folds
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    search = GridSearchCV(make_svm(seed=seed), {"C": Cs}, cv=cv, scoring="accuracy", n_jobs=1, refit=False)
    search.fit(X_train, y_train)
    res = search.cv_results_
    return CSelection(Cs, [float(v) for v in res["mean_test_score"]], [float(v) for v in res["std_test_score"]],
                      float(search.best_params_["C"]), folds)


def c_sweep(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
            Cs: Sequence[float], folds: int = 5, seed: int = 0) -> dict:
    """C chosen on train by CV, then the test accuracy of every C (a curve for the report)."""
    sel = select_c(X_train, y_train, Cs, folds, seed)
    test_acc = []
    for C in sel.Cs:
        clf, _ = fit_svm(X_train, y_train, C, seed)
        test_acc.append(accuracy(y_test, clf.predict(X_test)))
    best = sel.Cs.index(sel.best_C)
    return {"C": sel.Cs, "cv_accuracy": sel.cv_mean, "cv_std": sel.cv_std, "folds": sel.folds,
            "test_accuracy": test_acc, "best_C": sel.best_C, "test_accuracy_at_best_C": test_acc[best]}


def pca_svm(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
            n_components: int, C: float = 1.0, seed: int = 0) -> dict:
    """PCA (fit on train) to ``n_components`` dims, then the SVM: accuracy and times."""
    k = min(n_components, X_train.shape[0], X_train.shape[1])
    pipe = make_pipeline(PCA(n_components=k, random_state=seed), make_svm(C, seed))
    t0 = time.perf_counter()
    pipe.fit(X_train, y_train)
    t1 = time.perf_counter()
    pred = pipe.predict(X_test)
    t2 = time.perf_counter()
    pca = pipe.steps[0][1]
    return {"n_components": k, "test_accuracy": accuracy(y_test, pred), "fit_seconds": t1 - t0,
            "predict_seconds": t2 - t1, "explained_variance": float(pca.explained_variance_ratio_.sum())}


# --- a new linear layer on frozen features -------------------------------------------------

def train_linear_head(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                      n_classes: int, *, epochs: int = 100, lr: float = 0.01, weight_decay: float = 1e-4,
                      batch_size: int = 128, seed: int = 0) -> tuple[nn.Linear, dict]:
    """Train ``nn.Linear(D, K)`` with Adam and cross-entropy on fixed features.

    Returns the layer and per-epoch curves: train loss, train accuracy, test accuracy (reported,
    not used for any choice)."""
    g = torch.Generator().manual_seed(seed)
    Xtr, ytr = torch.as_tensor(X_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.long)
    Xte, yte = torch.as_tensor(X_test, dtype=torch.float32), torch.as_tensor(y_test, dtype=torch.long)
    head = nn.Linear(Xtr.shape[1], n_classes)
    with torch.no_grad():  # seeded init independent of the global RNG
        bound = 1 / Xtr.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    hist: dict[str, list[float]] = {"train_loss": [], "train_accuracy": [], "test_accuracy": []}
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        total, correct = 0.0, 0
        for i in range(0, len(Xtr), batch_size):
            idx = perm[i:i + batch_size]
            logits = head(Xtr[idx])
            loss = nn.functional.cross_entropy(logits, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == ytr[idx]).sum())
        with torch.no_grad():
            test_acc = float((head(Xte).argmax(1) == yte).float().mean()) if len(Xte) else float("nan")
        hist["train_loss"].append(total / len(Xtr))
        hist["train_accuracy"].append(correct / len(Xtr))
        hist["test_accuracy"].append(test_acc)
    return head, hist


# --- end-to-end fine-tuning ----------------------------------------------------------------

class FineTuneNet(nn.Module):
    """Pixel-space backbone read at ``layer`` (pooled to (N, D)), then a new ``Linear(D, K)``."""

    def __init__(self, backbone: Backbone, layer: str, n_classes: int, pool: str = "avg",
                 head: nn.Linear | None = None):
        super().__init__()
        self.body = backbone.pixel_model()
        self.body.net.requires_grad_(True)
        self.path, self.pool = backbone.module_path(layer), pool
        self._tap = LayerTap(self.body, [self.path], root=self.body.net)
        with torch.no_grad():
            size = backbone.preprocess.input_size
            dim = self.features(torch.zeros(1, 3, size, size)).shape[1]
        self.head = head if head is not None else nn.Linear(dim, n_classes)

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


def evaluate(net: nn.Module, loader, device: torch.device, bf16: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Accuracy of ``net`` on a loader of (x, ok, y) batches; also the labels and predictions."""
    net.eval()
    ys, preds = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for x, ok, y in loader:
            if not ok.any():
                continue
            logits = net(x[ok].to(device))
            preds.append(logits.argmax(1).cpu())
            ys.append(y[ok])
    y_true, y_pred = torch.cat(ys).numpy(), torch.cat(preds).numpy()
    return accuracy(y_true, y_pred), y_true, y_pred


def finetune_epoch(net: FineTuneNet, loader, opt: torch.optim.Optimizer, device: torch.device,
                   bf16: bool = False) -> tuple[float, float]:
    """One epoch of cross-entropy training over (x, ok, y) batches -> (mean loss, accuracy)."""
    net.train()
    total, correct, n = 0.0, 0, 0
    for x, ok, y in loader:
        if not ok.any():
            continue
        x, y = x[ok].to(device), y[ok].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return total / max(n, 1), correct / max(n, 1)


def finetune(net: FineTuneNet, train_loader, test_loader, *, epochs: int, opt: torch.optim.Optimizer,
             device: torch.device, bf16: bool = False, start_epoch: int = 0, history: dict | None = None,
             on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Fine-tune end to end for ``epochs`` (from ``start_epoch`` when resuming); per-epoch curves.

    ``on_epoch(epoch, history)`` runs after each epoch (where the caller saves a checkpoint)."""
    hist = history or {"train_loss": [], "train_accuracy": [], "test_accuracy": []}
    for epoch in range(start_epoch, epochs):
        loss, acc = finetune_epoch(net, train_loader, opt, device, bf16)
        test_acc, _, _ = evaluate(net, test_loader, device, bf16)
        hist["train_loss"].append(loss)
        hist["train_accuracy"].append(acc)
        hist["test_accuracy"].append(test_acc)
        if on_epoch is not None:
            on_epoch(epoch + 1, hist)
    return hist
