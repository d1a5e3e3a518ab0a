"""The measurements ``vislab saliency`` can add to its maps (questions B1-B3), each a metrics
record plus its figure: deletion faithfulness, SmoothGrad's noise reduction, the
weight-randomisation sanity check and boxes from the thresholded maps. The methods live in
:mod:`vislab.methods.saliency_eval` and :mod:`vislab.methods.smoothgrad`; this module runs them
on a run's images and turns their tensors into JSON values."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..methods.saliency import SaliencyResult, Space, saliency_maps
from ..methods.saliency_eval import (deletion_curves, localise, map_total_variation, randomized_copy,
                                     rank_correlation)
from ..methods.smoothgrad import smoothgrad_maps
from ..reporting.figures.visualize import boxes_figure, deletion_figure, map_columns_figure
from ..schemas import SaliencyDeletion, SaliencyLocalization, SaliencySanity, SaliencySmoothGrad
from .visualize import batches

FIGURE_IMAGES = 4  # rows of the side-by-side map figures


def _batched_maps(fn: Callable[[torch.Tensor, torch.Tensor], SaliencyResult], x: torch.Tensor,
                  classes: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N, H, W) maps of ``fn(images, classes)`` over batches, on the CPU."""
    return torch.cat([fn(x[sl].to(device), classes[sl].to(device)).maps.cpu() for sl in batches(len(x), batch_size)])


def deletion_check(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
                   names: Sequence[str], *, steps: int, seed: int, batch_size: int, device: torch.device,
                   figure: Path) -> SaliencyDeletion:
    """B1: class probability as the most salient pixels are blurred away first vs a seeded random order."""
    res = deletion_curves(model, x.to(device), maps.to(device), classes.to(device), steps=steps, seed=seed,
                          batch_size=batch_size)
    saliency_auc, random_auc = res.saliency_auc, res.random_auc
    deletion_figure(res.fractions, res.saliency_curve, res.random_curve, figure)
    return {"steps": steps, "baseline": "blur", "saliency_auc": float(saliency_auc.mean()),
            "random_auc": float(random_auc.mean()), "faithfulness": float((random_auc - saliency_auc).mean()),
            "per_image": [{"image": name, "saliency_auc": float(s), "random_auc": float(r)}
                          for name, s, r in zip(names, saliency_auc, random_auc)]}


def smoothgrad_check(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
                     names: Sequence[str], *, samples: int, sigma: float, seed: int, space: Space,
                     batch_size: int, device: torch.device, figure: Path) -> SaliencySmoothGrad:
    """B2: total variation of the vanilla maps vs SmoothGrad's, for the same classes."""
    smooth = _batched_maps(lambda xb, cb: smoothgrad_maps(model, xb, cb, samples=samples, noise=sigma, seed=seed,
                                                          space=space), x, classes, batch_size, device)
    k = min(FIGURE_IMAGES, len(names))
    map_columns_figure(x[:k], [("vanilla", maps[:k]), (f"SmoothGrad n={samples}", smooth[:k])], names[:k], figure)
    return {"samples": samples, "sigma": sigma, "tv_vanilla": float(map_total_variation(maps).mean()),
            "tv_smooth": float(map_total_variation(smooth).mean())}


def sanity_check(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
                 names: Sequence[str], *, seed: int, space: Space, batch_size: int, device: torch.device,
                 figure: Path) -> SaliencySanity:
    """B2: Spearman rank correlation between the maps of the trained network and of a copy with
    every weight layer re-initialised (Adebayo et al.'s full randomisation)."""
    randomized = randomized_copy(model, seed=seed)
    random_maps = _batched_maps(lambda xb, cb: saliency_maps(randomized, xb, cb, space=space), x, classes,
                                batch_size, device)
    rho = [float(r) for r in rank_correlation(maps, random_maps)]
    finite = [r for r in rho if math.isfinite(r)]  # NaN: a constant map has no ranking
    k = min(FIGURE_IMAGES, len(names))
    map_columns_figure(x[:k], [("trained", maps[:k]), ("weights randomised", random_maps[:k])], names[:k], figure)
    return {"randomized": "all layers", "spearman_mean": float(np.mean(finite)) if finite else float("nan"),
            "spearman_per_image": rho}


def localization_check(x: torch.Tensor, maps: torch.Tensor, names: Sequence[str], *, threshold: float,
                       smooth_sigma: float, figure: Path) -> SaliencyLocalization:
    """B3: the box around the largest region of each map (smoothed by ``smooth_sigma`` pixels)
    above ``threshold`` x its max."""
    boxes = [localise(m, threshold=threshold, smooth_sigma=smooth_sigma).box for m in maps]
    pixels = maps[0].numel()
    areas = [(x1 - x0) * (y1 - y0) / pixels for x0, y0, x1, y1 in boxes]
    boxes_figure(x, boxes, names, figure)
    return {"threshold": threshold, "smooth_sigma": smooth_sigma, "box_area_fraction_mean": float(np.mean(areas)),
            "boxes": [{"image": name, "box": list(box), "area_fraction": area}
                      for name, box, area in zip(names, boxes, areas)],
            "iou_mean": None}  # the sample sets carry labels, not boxes
