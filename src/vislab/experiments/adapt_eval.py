"""Evaluation of ``vislab adapt``: test accuracies, the pseudo-label rounds' report and the t-SNE
of the features. With the labelled upper bound (mode ``target-oracle``) aside, this is the only code
that reads target labels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.domains import Domains, to_input
from ..methods.dann import Algorithm
from ..methods.embedding import tsne_2d
from ..methods.pseudo_label import PseudoLabeller

if TYPE_CHECKING:
    from .adapt import AdaptConfig


@torch.no_grad()
def evaluate(algo: Algorithm, domains: Domains, norms: dict, eval_batch: int) -> dict[str, float]:
    """Test accuracy on both domains and the domain classifier's test accuracy."""
    out: dict[str, float] = {}
    dom_correct = dom_total = 0
    for name, ds, is_source in (("source", domains.source_test, True), ("target", domains.target_test, False)):
        correct = 0
        for i in range(0, len(ds), eval_batch):
            logits, dlogits = algo.predict_with_domain(to_input(ds.images[i:i + eval_batch], *norms[name]))
            correct += (logits.argmax(1) == ds.labels[i:i + eval_batch]).sum().item()
            dom_correct += ((dlogits > 0) == is_source).sum().item()
            dom_total += len(logits)
        out[f"{name}_accuracy"] = correct / len(ds)
    out["domain_accuracy"] = dom_correct / dom_total
    return out


class PseudoLabelRounds:
    """The fit loop's ``before_epoch`` hook of a pseudo-labelling algorithm: the labeller's round,
    recorded with how many of its labels are right (evaluation only: the true labels stop here)."""

    def __init__(self, labeller: PseudoLabeller, algo: Algorithm, domains: Domains, norms: dict, eval_batch: int):
        self.labeller, self.algo, self.target, self.norm = labeller, algo, domains.target_train, norms["target"]
        self.eval_batch, self.rows = eval_batch, []

    def probs(self) -> torch.Tensor:
        images, n = self.target.images, self.eval_batch
        return torch.cat([self.algo.predict(to_input(images[i:i + n], *self.norm)).softmax(1)
                          for i in range(0, len(images), n)])

    def __call__(self, epoch: int) -> None:
        info = self.labeller.before_epoch(epoch, self.probs)
        if info is not None:
            pseudo = self.labeller.labels
            right = (pseudo == self.target.labels)[pseudo >= 0]
            acc = right.float().mean().item() if len(right) else float("nan")
            self.rows.append({**info, "accuracy": acc})

    def state(self) -> dict:
        return {"rows": self.rows}

    def load_state(self, state: dict) -> None:
        self.rows = list(state["rows"])


def tsne_features(algo: Algorithm, domains: Domains, norms: dict, cfg: AdaptConfig) -> np.ndarray:
    """2-D t-SNE of G_f features: rows 0..n-1 source test, n..2n-1 target test."""
    g = torch.Generator().manual_seed(1234)  # the same images in every run and mode
    feats = []
    for name, ds in (("source", domains.source_test), ("target", domains.target_test)):
        idx = torch.randperm(len(ds), generator=g)[:cfg.tsne_points].to(ds.images.device)
        feats.append(algo.features(to_input(ds.images[idx], *norms[name])))
    return tsne_2d(torch.cat(feats).cpu().numpy(), cfg.seed, cfg.tsne_iter)
