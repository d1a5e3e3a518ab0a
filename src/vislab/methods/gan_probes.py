"""Probes of a GAN: which digits it generates (D2, mode coverage) and how strongly each generator
loss pushes G (D3, saturation).

Class histogram (D2) -- mode collapse shows as missing or rare classes among the samples
(Salimans et al., "Improved Techniques for Training GANs", NIPS 2016, classify samples with a
trained network; Metz et al., "Unrolled GANs", ICLR 2017, count the modes covered):
    counts per class of a classifier's predictions on generated samples, the share of the most
    and of the least frequent class, the entropy H(p) (nats; log K when uniform) and
    KL(p || uniform) = log K - H(p) (0 when every class is equally frequent).

Generator gradient norms (D3) -- I. Goodfellow et al., "Generative Adversarial Nets", NIPS 2014,
sec. 3: early in training D rejects the fakes confidently, D(G(z)) = sigmoid(l) ~ 0, and the
minimax loss log(1 - sigmoid(l)) saturates:
    d/dl  log(1 - sigmoid(l)) = -sigmoid(l)      -> 0 as D(G(z)) -> 0
    d/dl -log sigmoid(l)      = sigmoid(l) - 1   -> -1 (the non-saturating loss keeps pushing)
    :func:`generator_gradient_norms` measures the L2 norm of each loss's gradient over all of
    G's parameters, for the same G, D and z (the losses of :mod:`vislab.methods.gan`).

Example:
    >>> histogram = class_histogram(classifier(samples).argmax(1))
    >>> histogram.least_share, histogram.kl_to_uniform
    >>> norms = generator_gradient_norms(g, d, torch.randn(256, 100))
    >>> norms.minimax / norms.non_saturating, norms.d_g_z
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import scipy.stats
import torch
from torch import nn

from .gan import _d, _g, generator_loss


@dataclasses.dataclass
class ClassHistogram:
    counts: np.ndarray    # (K,) samples predicted as each class
    shares: np.ndarray    # (K,) counts / N
    most_share: float     # share of the most frequent class
    least_share: float    # share of the least frequent class (0: a class never generated)
    classes_covered: int  # classes with at least one sample
    entropy: float        # H(shares) in nats; log K when uniform
    kl_to_uniform: float  # KL(shares || uniform) = log K - entropy, nats


def class_histogram(predictions: torch.Tensor | np.ndarray, num_classes: int = 10) -> ClassHistogram:
    """Class histogram of ``predictions``: (N,) predicted classes, or (N, K) logits/probabilities
    (their argmax); ``num_classes`` K. See the module doc.

    Example:
        >>> class_histogram(torch.tensor([0, 0, 1, 1]), num_classes=4).kl_to_uniform   # log 4 - log 2
        0.693...
    """
    predictions = torch.as_tensor(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=1)
    if predictions.ndim != 1 or len(predictions) == 0:
        raise ValueError(f"predictions must be a non-empty (N,) or (N, K), got shape {tuple(predictions.shape)}")
    labels = predictions.long().cpu()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"predicted classes must lie in [0, {num_classes - 1}]")
    counts = torch.bincount(labels, minlength=num_classes).numpy()
    shares = counts / counts.sum()
    entropy = float(scipy.stats.entropy(shares))
    return ClassHistogram(counts=counts, shares=shares, most_share=float(shares.max()),
                          least_share=float(shares.min()), classes_covered=int((counts > 0).sum()),
                          entropy=entropy, kl_to_uniform=math.log(num_classes) - entropy)


@dataclasses.dataclass
class GeneratorGradientNorms:
    non_saturating: float  # ||d(-mean log D(G(z))) / d theta_G||_2
    minimax: float         # ||d(mean log(1 - D(G(z)))) / d theta_G||_2
    d_g_z: float           # mean D(G(z)) at which both were measured


def _parameter_grad_norm(loss: torch.Tensor, parameters: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.double().square().sum()) for g in grads if g is not None))


def generator_gradient_norms(g: nn.Module, d: nn.Module, z: torch.Tensor,
                             y: torch.Tensor | None = None) -> GeneratorGradientNorms:
    """Both generator losses' gradient norms over G's parameters for one batch ``z`` (N, nz) (and
    labels ``y`` (N,) for the conditional models), through copies of ``g`` and ``d`` in their
    current modes (train mode: batch statistics, as in training); the originals, their
    BatchNorm running statistics and their ``.grad`` are untouched."""
    g, d = copy.deepcopy(g), copy.deepcopy(d)  # train-mode BatchNorm would update running statistics
    parameters = [p for p in g.parameters() if p.requires_grad]
    logits = _d(d, _g(g, z, y), y).float()
    return GeneratorGradientNorms(
        non_saturating=_parameter_grad_norm(generator_loss(logits, "non-saturating"), parameters),
        minimax=_parameter_grad_norm(generator_loss(logits, "minimax"), parameters),
        d_g_z=float(torch.sigmoid(logits.detach()).mean()),
    )
