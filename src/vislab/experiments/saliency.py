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
from .visualize import ImageSetConfig, batches, check_class, class_name, setup


@dataclasses.dataclass
class SaliencyConfig(ImageSetConfig):
    target: int | None = option(None, "class whose logit is differentiated for every image "
                                      "(default: each image's true label when known, else its predicted class)",
                                min=0)
    space: Space = option("normalized", "gradient w.r.t. the normalised image (course) or w.r.t. the [0,1] pixels")


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
        print(f"saliency: {len(results)} images in {seconds:.2f} s -> {run.dir}")
    return 0
