"""Sample-quality numbers for GANs on digits: Frechet distance, KID, conditional accuracy.

* Frechet distance (Heusel et al. 2017, "FID"): fit Gaussians (mu_r, S_r), (mu_g, S_g) to the
  features of real and generated images, ``d = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``.
* Kernel distance (Binkowski et al. 2018, "KID"): unbiased MMD^2 with the cubic polynomial kernel
  ``k(a, b) = (a.b / d + 1)^3``, averaged over random subsets.

Both are torchmetrics' implementations, given vislab's MNIST classifier features
(:class:`vislab.models.mnist_classifier.ClassifierFeatures`, 128-d) instead of Inception's; the
features of each image set are computed once and handed to both metrics. FID is
biased by the sample size, so the real-vs-real baseline (train images vs test images, same counts)
is computed beside it: that is the floor a perfect generator would reach.

Images are ``(N, 1, S, S)`` floats in [-1, 1], the range the generators produce.
:func:`real_baseline` and :func:`sample_metrics` are the two halves of a GAN run's evaluation: the
first depends only on the data and the classifier (the experiments cache it on disk), the second
on the generated images.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .gan_probes import class_histogram


class _Precomputed(nn.Module):
    """Pass-through "feature extractor" for torchmetrics when the features are already computed:
    each image set goes through the (comparatively slow) classifier once, not once per metric."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


@torch.no_grad()
def extract_features(feature: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``feature`` applied to ``images (N, 1, S, S)`` in batches -> ``(N, num_features)`` float32."""
    if not hasattr(feature, "num_features"):
        raise ValueError("the feature module needs a num_features attribute (torchmetrics would otherwise "
                         "probe it with a 3x299x299 image)")
    return torch.cat([feature(images[i:i + batch_size].float()).float() for i in range(0, len(images), batch_size)])


def fid_kid_from_features(real: torch.Tensor, fake: torch.Tensor, *, kid_subsets: int = 100,
                          kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Frechet distance and KID (mean, std over subsets) between feature sets ``real (N, F)`` and
    ``fake (M, F)`` with torchmetrics.

    KID's subsets (``kid_subset_size`` images, at most half the smaller set) are drawn from a forked
    RNG seeded with ``seed``: the numbers are reproducible and the caller's random stream is untouched."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} generated")
    ident = _Precomputed(real.shape[1])
    fid = FrechetInceptionDistance(feature=ident, reset_real_features=True)
    # At most half the smaller set: subsets as large as the sets are all the same images, so their
    # "std" was rounding noise (2e-5 on the quick study's 1,000 samples) for 100 times the work of one.
    subset = max(1, min(kid_subset_size, min(len(real), len(fake)) // 2))
    with warnings.catch_warnings():
        # its "will save all extracted features" notice: 10,000 x 128 floats are 5 MB
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=ident, subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real.float(), real=True)
        metric.update(fake.float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance alone between feature sets ``real (N, F)`` and ``fake (M, F)`` (no KID: the
    cheap measure of a training curve)."""
    fid = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), reset_real_features=True)
    fid.update(real.float(), real=True)
    fid.update(fake.float(), real=False)
    return float(fid.compute())


class FidCurve:
    """FID of a fixed set of generator inputs against fixed reference features, measured every
    ``every`` training steps (SPEC D4 / D8); checkpointed with the run (``state`` / ``load_state``)."""

    def __init__(self, every: int, generate, feature: nn.Module, reference: torch.Tensor, inputs: tuple):
        self.every, self.generate, self.feature, self.reference = every, generate, feature, reference
        self.inputs = inputs  # (z, y or None) on the generator's device
        self.points: list[dict] = []

    def on_step(self, step: int) -> None:
        if self.every and step % self.every == 0:
            fake = self.generate(*self.inputs).cpu()
            self.points.append({"batch": step, "fid": fid_from_features(self.reference,
                                                                        extract_features(self.feature, fake))})

    def state(self) -> list[dict]:
        return self.points

    def load_state(self, state: list[dict]) -> None:
        self.points = state


def fid_kid(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module, *, batch_size: int = 1000,
            kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Frechet distance and KID between images ``real (N, 1, S, S)`` and ``fake (M, 1, S, S)`` on the
    features of ``feature`` (a module with ``num_features``, e.g. ``ClassifierFeatures``)."""
    return fid_kid_from_features(extract_features(feature, real, batch_size), extract_features(feature, fake, batch_size),
                                 kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed)


@torch.no_grad()
def predicted_classes(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``classifier``'s class (argmax) for each of ``images (N, 1, S, S)`` -> ``(N,)``, in eval mode."""
    classifier.eval()
    return torch.cat([classifier(images[i:i + batch_size].float()).argmax(1) for i in range(0, len(images), batch_size)])


def conditional_accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         batch_size: int = 1000, predictions: torch.Tensor | None = None) -> float:
    """Share of generated ``images (N, 1, S, S)`` that ``classifier`` assigns to the requested
    ``labels (N,)`` (``predictions``: the classes already predicted for ``images``)."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images (got {len(images)} images, {len(labels)} labels)")
    if predictions is None:
        predictions = predicted_classes(classifier, images, batch_size)
    return (predictions == labels).sum().item() / len(images)


def class_histogram_metrics(predictions: torch.Tensor) -> dict:
    """metrics.json's ``class_histogram`` of the predicted classes of generated samples (SPEC D2)."""
    h = class_histogram(predictions)
    return {"counts": h.counts.tolist(), "max_share": h.most_share, "min_share": h.least_share,
            "kl_to_uniform": h.kl_to_uniform}


def real_baseline(feature: nn.Module, real_test: torch.Tensor, real_train: torch.Tensor, *,
                  seed: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """The reference features (of ``real_test``) and the real-vs-real FID / KID of ``real_train``
    against them: the floor a perfect generator reaches with as many images."""
    f_test = extract_features(feature, real_test)
    return f_test, fid_kid_from_features(f_test, extract_features(feature, real_train), seed=seed)


def sample_metrics(feature: nn.Module, classifier: nn.Module, reference: torch.Tensor, baseline: dict[str, float],
                   fake: torch.Tensor, labels: torch.Tensor | None = None, *, seed: int = 0) -> dict[str, float]:
    """FID / KID of generated images ``fake`` against the ``reference`` features beside the
    ``baseline`` of :func:`real_baseline`, and with ``labels`` (the classes asked of a conditional
    generator) the share the classifier assigns to them."""
    m = fid_kid_from_features(reference, extract_features(feature, fake), seed=seed)
    out = {"fid": m["fid"], "kid": m["kid"], "kid_std": m["kid_std"],
           "fid_real_baseline": baseline["fid"], "kid_real_baseline": baseline["kid"]}
    predictions = predicted_classes(classifier, fake)
    out["class_histogram"] = class_histogram_metrics(predictions)
    if labels is not None:
        out["conditional_accuracy"] = conditional_accuracy(classifier, fake, labels, predictions=predictions)
    return out
