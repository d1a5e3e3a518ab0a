"""``vislab inspect``: an ImageNet CNN's layers and parameters, its predictions on image files,
and its first convolution's activation maps (SPEC Part A, inspection)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import torch

from ..config import RunConfig, add_command, option
from ..data.images import IMAGE_SUFFIXES, find_images, load_image
from ..errors import ImageReadError, UserError
from ..models.backbones import Backbone, build_backbone, imagenet_classes
from ..models.summary import layer_table, params_by_type
from ..models.taps import LayerTap
from ..progress import progress
from ..reporting.figures.inspection import first_conv_figure, predictions_figure
from ..reporting.tables import layers_markdown
from ..runs import Run
from ..schemas import ImageFailure, InspectMetrics, Prediction
from .options import BackboneOptions


@dataclasses.dataclass
class InspectConfig(BackboneOptions, RunConfig):
    images: list[str] = option([], "image files or folders to classify (any PIL-readable format and mode)")
    top_k: int = option(5, "how many classes to list per image", short="-k", min=1, max=1000)
    batch_size: int = option(16, "images per forward pass", min=1)
    resize: Literal["crop", "squash"] = option(
        "crop", "crop: resize the shorter side then centre-crop (ImageNet evaluation); squash: resize to a square")
    max_maps: int = option(64, "at most this many first-layer activation maps per image", min=1)


def register(subparsers) -> None:
    add_command(subparsers, "inspect", InspectConfig, inspect,
                help="layer table, parameter counts, top-k predictions and first-layer maps of an ImageNet CNN")


def inspect(cfg: InspectConfig) -> int:
    paths = find_images(cfg.images)
    if cfg.images and not paths:
        raise UserError(f"--images {' '.join(cfg.images)}: no image files found "
                        f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}); give image files or folders holding some")
    with Run("inspect", cfg) as run:
        backbone = build_backbone(cfg.model, cfg.weights, run.device)
        size = backbone.preprocess.input_size
        rows = layer_table(backbone.net, torch.zeros(1, 3, size, size, device=run.device),
                           {path: backbone.layer_name_of(path) for path in backbone.layers.values()})
        by_type = params_by_type(rows)
        table = layers_markdown(rows)
        print(table)
        print("\nparameters by layer type: " + ", ".join(f"{k} {v:,}" for k, v in by_type.items()))
        total = sum(r.params for r in rows)
        print(f"total parameters: {total:,}")
        (run.path("layers.txt")).write_text(table + "\n")  # inside the .partial folder: atomic with the run
        run.save_json("layers.json", [dataclasses.asdict(r) for r in rows])
        metrics: InspectMetrics = {
            "model": cfg.model, "weights": cfg.weights, "params_total": total,
            "params_linear": by_type.get("Linear", 0),  # a network without Linear layers has 0 of them
            "params_conv": sum(v for k, v in by_type.items() if k.startswith("Conv")),
            "params_by_type": by_type, "num_layers": len(rows),
            "output_size": rows[-1].output_shape[-1] if rows[-1].output_shape else None,
        }
        failed = 0
        if paths:
            predictions, errors = _predict(run, backbone, cfg, paths)
            metrics.update(predictions=predictions, errors=errors, images_failed=len(errors))
            failed = len(errors)
        run.metrics.update(metrics)
    return 1 if failed else 0


def _predict(run: Run, backbone: Backbone, cfg: InspectConfig,
             paths: list[Path]) -> tuple[list[Prediction], list[ImageFailure]]:
    """Top-k predictions and first-conv maps for every readable image, and the unreadable ones."""
    transform = backbone.preprocess.pixel_transform(cfg.resize)
    model = backbone.pixel_model().to(run.device)
    first_conv = backbone.first_conv_path()
    tap = LayerTap(model, [first_conv, ""], root=backbone.net, stop_early=False)
    classes = imagenet_classes()
    predictions: list[Prediction] = []
    errors: list[ImageFailure] = []
    for start in progress(range(0, len(paths), cfg.batch_size), desc="predict", unit="batch"):
        chunk, pixels = [], []
        for path in paths[start:start + cfg.batch_size]:
            try:
                pixels.append(transform(load_image(path)))
                chunk.append(path)
            except ImageReadError as e:
                print(f"vislab inspect: {e}", file=sys.stderr)
                errors.append({"image": str(path), "error": str(e)})
        if not chunk:
            continue
        x = torch.stack(pixels).to(run.device)
        with torch.inference_mode():
            out = tap(x)
        probs = out[""].float().softmax(dim=1)
        top_p, top_i = probs.topk(cfg.top_k, dim=1)
        for j, path in enumerate(chunk):
            top = [{"index": int(i), "class": classes[int(i)], "prob": float(p)} for p, i in zip(top_p[j], top_i[j])]
            predictions.append({"image": str(path), "top": top})
            print(f"{path}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in top))
            first_conv_figure(x[j], out[first_conv][j][: cfg.max_maps], backbone.name,
                              backbone.layer_name_of(first_conv),
                              run.path(f"first_conv_{len(predictions):03d}_{path.stem}.png"))
    if predictions:
        # read again rather than kept from the batches, whose pixels are freed as predictions go
        images = [transform(load_image(p["image"])) for p in predictions]
        predictions_figure(images, predictions, run.path("predictions.png"))
    return predictions, errors
