"""Measuring saliency maps: faithfulness (deletion), the randomisation sanity check, noise, and
weakly supervised localisation (questions B1, B2, B3, B4).

Deletion (B1) -- V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized Input Sampling for Explanation
of Black-box Models", BMVC 2018 (arXiv:1806.07421):
    Remove the pixels in order of decreasing saliency, a share k/K of them at step k = 0..K
    (a removed pixel takes the value of a baseline image in all channels), and record the
    class's softmax probability (or logit). The area under that curve (trapezoid over the share
    removed, in [0, 1]) is low when the map ranks the pixels the network relies on first. The same
    with a random pixel order (seeded) gives the reference: faithfulness = random AUC - saliency AUC
    (> 0: the map is better than chance). Baselines: "blur" (the image under a Gaussian blur,
    sigma = max(H, W) / 45, i.e. RISE's sigma 5 at 224 px), "mean" (each channel's mean),
    "zero", or a tensor broadcastable to the images.

Randomisation sanity check (B2) -- J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt,
B. Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018 (arXiv:1810.03292):
    :func:`randomized_copy` re-initialises the weight layers (convolutions, linear layers) of a
    copy of the model -- all of them, or the top ``k`` (cascading randomisation from the logits
    down, as in the paper); normalisation layers keep their statistics. A map that stays similar
    (Spearman rank correlation :func:`rank_correlation` near 1) does not depend on what the
    network learned. :func:`rank_correlation` also compares maps of two backbones (B4).

Noise (B2):
    :func:`map_total_variation`: the mean absolute difference between neighbouring pixels of
    the map divided by its maximum (anisotropic total variation per pixel; 0 for a constant
    map, 1 for a one-pixel checkerboard), to compare vanilla maps with SmoothGrad's
    (:func:`vislab.methods.smoothgrad.smoothgrad_maps`).

Weakly supervised localisation (B3) -- Simonyan et al. 2014 sec. 3.1; the box from the largest
connected component of the thresholded map, as in B. Zhou et al., "Learning Deep Features for
Discriminative Localization" (CAM), CVPR 2016 (threshold 20% of the max):
    :func:`localise` gives the mask and box; :func:`box_iou` / :func:`mask_iou` the overlap with
    a known box or mask. Boxes are (x0, y0, x1, y1) in pixel-edge coordinates (x1, y1
    exclusive, torchvision.ops' convention): pixels y0..y1-1, x0..x1-1.

Example:
    >>> sal = saliency_maps(model, images, labels)
    >>> deletion = deletion_curves(model, images, sal.maps, sal.classes, steps=20)
    >>> deletion.faithfulness                                  # (N,) random AUC - saliency AUC
    >>> rank_correlation(sal.maps, saliency_maps(randomized_copy(model), images, sal.classes).maps)
    >>> box_iou(localise(sal.maps[0]).box, (40, 30, 180, 200))
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal

import numpy as np
import scipy.ndimage
import scipy.stats
import torch
import torch.nn.functional as F
import torchvision.ops
import torchvision.transforms.functional as TF
from torch import nn
from torchmetrics.functional.image import total_variation

from ..precision import autocast

Baseline = Literal["blur", "mean", "zero"]
Score = Literal["probability", "logit"]
Box = tuple[int, int, int, int]

# -- B1: deletion -------------------------------------------------------------------------------


@dataclasses.dataclass
class DeletionResult:
    fractions: torch.Tensor       # (K+1,) share of the pixels removed at each step: 0, 1/K, ..., 1
    saliency_curve: torch.Tensor  # (N, K+1) class score, most salient pixels removed first
    random_curve: torch.Tensor    # (N, K+1) class score, pixels removed in a random order

    @property
    def saliency_auc(self) -> torch.Tensor:
        """(N,) area under the saliency-order curve (trapezoid over the share removed)."""
        return torch.trapezoid(self.saliency_curve, self.fractions, dim=1)

    @property
    def random_auc(self) -> torch.Tensor:
        """(N,) area under the random-order curve."""
        return torch.trapezoid(self.random_curve, self.fractions, dim=1)

    @property
    def faithfulness(self) -> torch.Tensor:
        """(N,) random AUC - saliency AUC: > 0 when the map finds the pixels the score needs sooner than chance."""
        return self.random_auc - self.saliency_auc


def deletion_baseline(images: torch.Tensor, baseline: Baseline | torch.Tensor = "blur") -> torch.Tensor:
    """The (N, C, H, W) image that removed pixels take their values from."""
    if isinstance(baseline, torch.Tensor):
        return baseline.to(images).expand_as(images)
    if baseline == "zero":
        return torch.zeros_like(images)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if baseline == "blur":
        sigma = max(images.shape[-2:]) / 45
        # reflect padding needs the kernel's half-width below the image size
        half = min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1)
        return TF.gaussian_blur(images, [2 * half + 1] * 2, [sigma, sigma]) if half > 0 else images.clone()
    raise ValueError(f"baseline {baseline!r}: use 'blur', 'mean', 'zero' or a tensor")


def _ranks(order: torch.Tensor) -> torch.Tensor:
    """(N, P) position of each pixel in ``order`` (N, P), a permutation per row."""
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


@torch.no_grad()
def _class_scores(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, score: Score,
                  batch_size: int, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    out = []
    for start in range(0, len(x), batch_size):
        with autocast(x.device, autocast_dtype):
            logits = model(x[start:start + batch_size]).float()
        if score == "probability":
            logits = logits.softmax(dim=1)
        out.append(logits.gather(1, classes[start:start + batch_size, None]).squeeze(1))
    return torch.cat(out)


def deletion_curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, *,
                    steps: int = 20, baseline: Baseline | torch.Tensor = "blur", score: Score = "probability",
                    seed: int = 0, batch_size: int = 64,
                    autocast_dtype: torch.dtype | None = None) -> DeletionResult:
    """Deletion curves of ``images`` (N, C, H, W) in [0, 1] for ``classes`` (N,) int64, removing
    pixels in the order of ``maps`` (N, H, W) (ties: raster order) and in a random order (``seed``);
    ``steps`` = K steps of round(k P / K) pixels, P = H W. Costs 2 (K + 1) forward passes per image.
    See the module doc."""
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images (N, C, H, W) and maps (N, H, W) must match, got {tuple(images.shape)} "
                         f"and {tuple(maps.shape)}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if score not in ("probability", "logit"):
        raise ValueError(f"score {score!r}: use 'probability' or 'logit'")
    n, pixels = len(images), maps[0].numel()
    classes = torch.as_tensor(classes, dtype=torch.long, device=images.device).reshape(n)
    base = deletion_baseline(images, baseline)
    salient_first = torch.sort(maps.reshape(n, -1), dim=1, descending=True, stable=True).indices
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([torch.randperm(pixels, generator=generator) for _ in range(n)]).to(images.device)
    counts = [round(k * pixels / steps) for k in range(steps + 1)]
    curves = []
    for order in (salient_first, shuffled):
        ranks = _ranks(order).reshape(n, 1, *images.shape[2:])
        curve = [_class_scores(model, torch.where(ranks < count, base, images), classes, score, batch_size,
                               autocast_dtype) for count in counts]
        curves.append(torch.stack(curve, dim=1).cpu())
    fractions = torch.tensor(counts, dtype=torch.float32) / pixels
    return DeletionResult(fractions=fractions, saliency_curve=curves[0], random_curve=curves[1])


# -- B2: sanity check and noise -----------------------------------------------------------------

_NORMALISATION = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the modules :func:`randomized_copy` re-initialises, input side first: those with
    their own parameters and a ``reset_parameters`` (conv, linear, ...), normalisation excluded."""
    return [name for name, module in model.named_modules()
            if hasattr(module, "reset_parameters") and not isinstance(module, _NORMALISATION)
            and any(True for _ in module.parameters(recurse=False))]


def randomized_copy(model: nn.Module, *, top_layers: int | None = None, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose top ``top_layers`` weight layers (all with None) are re-initialised
    with PyTorch's default init (``reset_parameters``) from ``seed`` (drawn on the CPU, then moved to
    the model's device); ``model`` is untouched and the global RNGs are left as they were.
    Cascading randomisation: ``top_layers`` = 1, 2, ..., ``len(weight_layers(model))``."""
    names = weight_layers(model)
    if top_layers is not None and not 0 <= top_layers <= len(names):
        raise ValueError(f"top_layers={top_layers}: the model has {len(names)} weight layers")
    chosen = names if top_layers is None else names[len(names) - top_layers:]
    device = next(model.parameters(), torch.empty(0)).device
    # drawn on the CPU: the same random weights whatever device the model lives on
    randomized = copy.deepcopy(model).cpu()
    with torch.random.fork_rng():  # manual_seed also seeds CUDA's generators: restore those too
        torch.manual_seed(seed)
        for name in chosen:
            randomized.get_submodule(name).reset_parameters()
    return randomized.to(device)


def rank_correlation(maps_a: torch.Tensor, maps_b: torch.Tensor) -> np.ndarray:
    """(N,) Spearman rank correlation between ``maps_a[n]`` and ``maps_b[n]`` (N, H, W); maps_b is
    resized (bilinear, antialiased) to maps_a's size if they differ (two backbones). NaN where a
    map is constant (no ranking to compare)."""
    if maps_a.ndim != 3 or maps_b.ndim != 3 or len(maps_a) != len(maps_b):
        raise ValueError(f"maps must be (N, H, W) with the same N, got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}")
    if maps_b.shape[-2:] != maps_a.shape[-2:]:
        maps_b = F.interpolate(maps_b[:, None].float(), size=maps_a.shape[-2:], mode="bilinear",
                               align_corners=False, antialias=True)[:, 0]
    a = maps_a.detach().double().flatten(1).cpu().numpy()
    b = maps_b.detach().double().flatten(1).cpu().numpy()
    return np.array([scipy.stats.spearmanr(x, y).statistic if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
                     for x, y in zip(a, b)])


def map_total_variation(maps: torch.Tensor) -> torch.Tensor:
    """(N,) total variation of each map (N, H, W) scaled to max 1, per pixel: sum of |differences|
    between horizontal and vertical neighbours / (H W). 0 for a constant map."""
    maps = maps.detach().float()
    peak = maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    tv = total_variation((maps / peak[:, None, None])[:, None], reduction="none")
    return tv / maps[0].numel()


# -- B3: localisation ---------------------------------------------------------------------------


@dataclasses.dataclass
class Localisation:
    mask: torch.Tensor  # (H, W) bool: the largest connected component of the thresholded map
    box: Box            # (x0, y0, x1, y1), x1 and y1 exclusive: the mask's bounding box


def localise(saliency: torch.Tensor, *, threshold: float = 0.2, top_fraction: float | None = None,
             smooth_sigma: float = 0.0, connectivity: Literal[4, 8] = 8) -> Localisation:
    """The object's mask and box from one map (H, W): keep the pixels >= ``threshold`` x max (or,
    with ``top_fraction``, the ceil(top_fraction H W) most salient, ties in raster order), after an
    optional Gaussian smoothing of ``smooth_sigma`` pixels; then the largest connected component
    (``connectivity`` 8: diagonal neighbours connect; ties: the first in raster order)."""
    if saliency.ndim != 2:
        raise ValueError(f"map must be (H, W), got shape {tuple(saliency.shape)}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold={threshold} must lie in [0, 1] (a fraction of the map's max)")
    values = saliency.detach().double().cpu().numpy()
    if smooth_sigma > 0:
        values = scipy.ndimage.gaussian_filter(values, smooth_sigma)
    if top_fraction is not None:
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction={top_fraction} must lie in (0, 1]")
        keep = np.zeros(values.size, dtype=bool)
        keep[np.argsort(-values, axis=None, kind="stable")[:math.ceil(top_fraction * values.size)]] = True
        keep = keep.reshape(values.shape)
    else:
        keep = values >= threshold * values.max()
    structure = np.ones((3, 3)) if connectivity == 8 else None  # scipy's default is 4-connectivity
    labels, count = scipy.ndimage.label(keep, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    largest = labels == int(np.argmax(sizes)) + 1
    rows, cols = scipy.ndimage.find_objects(largest.astype(int))[0]
    box = (cols.start, rows.start, cols.stop, rows.stop)
    return Localisation(mask=torch.from_numpy(largest), box=box)


def box_iou(box_a: Box, box_b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (x1, y1 exclusive)."""
    boxes = torch.tensor([box_a, box_b], dtype=torch.float64)
    return float(torchvision.ops.box_iou(boxes[:1], boxes[1:])[0, 0])


def mask_iou(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks of the same shape (0 when both are empty)."""
    union = (mask_a | mask_b).sum().item()
    return (mask_a & mask_b).sum().item() / union if union else 0.0
