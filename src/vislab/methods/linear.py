"""Linear classifiers on CNN features (the trained ones: :mod:`vislab.methods.trainers`).

- Linear SVM (one-vs-rest, hinge loss, ``min_w 1/2 ||w||^2 + C sum_i max(0, 1 - y_i w.x_i)^2``:
  scikit-learn's ``LinearSVC``) on L2-normalised features (Chatfield et al. 2014).
- C chosen by k-fold cross-validation on the training set only (``GridSearchCV``); the test
  accuracy of every C is reported as a curve, never used to choose.
- PCA to ``k`` dimensions before the SVM.
- The most confused class pairs of a set of predictions.

Shapes: features X (N, D) float32, labels y (N,) int64 in [0, K).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC


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


def confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], top: int = 5) -> list[dict]:
    """The ``top`` most frequent mistakes as (true class, predicted class) pairs, most frequent first:
    ``{"true", "predicted", "count", "rate"}`` where rate = count / test images of the true class. Ties go
    to the higher rate, then to the class order; pairs that never occur are left out."""
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    support = cm.sum(axis=1)
    pairs = [(int(cm[t, p]), cm[t, p] / support[t], t, p)
             for t in range(len(classes)) for p in range(len(classes)) if t != p and cm[t, p] > 0]
    pairs.sort(key=lambda pair: (-pair[0], -pair[1], pair[2], pair[3]))
    return [{"true": classes[t], "predicted": classes[p], "count": count, "rate": float(rate)}
            for count, rate, t, p in pairs[:top]]


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
