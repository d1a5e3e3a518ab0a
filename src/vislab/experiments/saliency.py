"""``vislab saliency``: saliency maps of a backbone's class scores beside the images (SPEC Part B)."""
from __future__ import annotations

import dataclasses
import time

import torch

from ..config import add_command, option
from ..errors import UserError
from ..io import torch_save
from ..methods.saliency import saliency_maps
from ..models.backbones import imagenet_classes
from ..progress import progress
from ..reporting.figures.visualize import saliency_figure
from ..runs import Run
from ..schemas import SaliencyImage, SaliencyMetrics, Space
from .saliency_checks import deletion_check, localization_check, sanity_check, smoothgrad_check
from .visualize import ImageSetConfig, batches, check_class, class_name, setup


@dataclasses.dataclass
class SaliencyConfig(ImageSetConfig):
    target: int | None = option(None, "class whose logit is differentiated for every image "
                                      "(default: each image's true label when known, else its predicted class)",
                                min=0)
    space: Space = option("normalized", "gradient w.r.t. the normalised image (course) or w.r.t. the [0,1] pixels")
    deletion_steps: int = option(0, "deletion test (B1) in K steps: the class probability as the most salient "
                                    "pixels are blurred away first vs in a random order (0 = off)", min=0, max=1000)
    smoothgrad_samples: int = option(0, "also compute SmoothGrad maps from N noisy copies and compare their "
                                        "noise (total variation) with the plain maps (0 = off)", min=0, max=1000)
    smoothgrad_sigma: float = option(0.15, "SmoothGrad's noise std as a share of the pixel range (paper: 0.1-0.2)",
                                     min=0, max=1)
    sanity_check: bool = option(False, "also compute the maps of a copy with every weight layer re-initialised "
                                       "and their rank correlation with the trained network's (Adebayo et al.)")
    localize_threshold: float = option(0.0, "box around the largest region of each map above THRESHOLD x its max "
                                            "(e.g. 0.5; 0 = off)", min=0, max=1)
    localize_sigma: float = option(4.0, "Gaussian smoothing (pixels) of each map before --localize-threshold: "
                                        "a raw gradient map is speckled, its peaks single pixels", min=0, max=100)


def register(subparsers) -> None:
    add_command(subparsers, "saliency", SaliencyConfig, saliency,
                help="saliency maps (|d logit / d image|, max over channels) beside the images")


def saliency(cfg: SaliencyConfig) -> int:
    if cfg.target is not None:
        check_class("target", cfg.target, len(imagenet_classes()))
    with Run("saliency", cfg) as run:
        _, model, samples, x = setup(run, cfg)
        labels = [cfg.target if cfg.target is not None else lab for lab in samples.labels]
        for name, lab in zip(samples.names, labels):
            if lab is not None and not 0 <= lab < len(imagenet_classes()):
                raise UserError(f"{name}: label {lab} is not an ImageNet class index (0 to 999); fix the labels "
                                f"or pass --target")
        wanted = torch.tensor([-1 if lab is None else lab for lab in labels], dtype=torch.long)
        maps, classes, logits = [], [], []
        t0 = time.perf_counter()
        for sl in progress(batches(len(x), cfg.batch_size), desc="saliency", unit="batch"):
            res = saliency_maps(model, x[sl].to(run.device), wanted[sl].to(run.device), space=cfg.space)
            maps.append(res.maps.cpu())
            classes.append(res.classes.cpu())
            logits.append(res.logits.cpu())
        seconds = time.perf_counter() - t0
        maps_t, classes_t = torch.cat(maps), torch.cat(classes)
        probs = torch.cat(logits).softmax(dim=1)
        results: list[SaliencyImage] = []
        for i, name in enumerate(samples.names):
            k, pred = int(classes_t[i]), int(probs[i].argmax())
            results.append({
                "image": name, "label": samples.labels[i], "label_name": class_name(samples.labels[i]),
                "class": k, "class_name": class_name(k),
                "class_source": ("predicted" if wanted[i] < 0 else "target" if cfg.target is not None else "label"),
                "predicted": pred, "predicted_name": class_name(pred),
                "probability": float(probs[i, k]), "map_max": float(maps_t[i].max()),
            })
        known = [r for r in results if r["label"] is not None]
        metrics: SaliencyMetrics = {
            "model": cfg.model, "space": cfg.space, "num_images": len(results), "seconds": round(seconds, 3),
            "top1_accuracy": (sum(r["predicted"] == r["label"] for r in known) / len(known)) if known else None,
            "results": results,
        }
        run.metrics.update(metrics)
        torch_save({"maps": maps_t, "classes": classes_t, "names": samples.names}, run.path("saliency_maps.pt"))
        saliency_figure(x, maps_t, results, run.path("saliency.png"))
        run.metrics.update(_checks(cfg, run, model, x, maps_t, classes_t, samples.names))
        print(f"saliency: {len(results)} images in {seconds:.2f} s -> {run.dir}")
    return 0


def _checks(cfg: SaliencyConfig, run: Run, model, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
            names: list[str]) -> dict:
    """The metrics of the optional measurements of the maps (each also writes its figure)."""
    common = {"batch_size": cfg.batch_size, "device": run.device}
    out = {}
    if cfg.deletion_steps:
        out["deletion"] = deletion_check(model, x, maps, classes, names, steps=cfg.deletion_steps, seed=cfg.seed,
                                         figure=run.path("deletion.png"), **common)
    if cfg.smoothgrad_samples:
        out["smoothgrad"] = smoothgrad_check(model, x, maps, classes, names, samples=cfg.smoothgrad_samples,
                                             sigma=cfg.smoothgrad_sigma, seed=cfg.seed, space=cfg.space,
                                             figure=run.path("smoothgrad.png"), **common)
    if cfg.sanity_check:
        out["sanity"] = sanity_check(model, x, maps, classes, names, seed=cfg.seed, space=cfg.space,
                                     figure=run.path("sanity.png"), **common)
    if cfg.localize_threshold:
        out["localization"] = localization_check(x, maps, names, threshold=cfg.localize_threshold,
                                                 smooth_sigma=cfg.localize_sigma,
                                                 figure=run.path("boxes.png"))
    return out
