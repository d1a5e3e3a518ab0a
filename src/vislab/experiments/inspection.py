"""``vislab inspect``: an ImageNet CNN's layers and parameters, its predictions on image files,
and its first convolution's activation maps (SPEC Part A, inspection)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Literal

import torch

from ..config import RunConfig, add_command, option
from ..data.images import IMAGE_SUFFIXES, find_images, load_image
from ..data.samples import SampleSet, load_samples, to_batch
from ..errors import ImageReadError, UserError
from ..methods.filter_match import match_filters
from ..models.backbones import Backbone, build_backbone, imagenet_classes
from ..models.summary import layer_table, params_by_type
from ..models.taps import LayerTap
from ..progress import progress
from ..reporting.figures.inspection import first_conv_figure, predictions_figure
from ..reporting.tables import layers_markdown
from ..runs import Run
from ..schemas import FirstConvMatch, ImageFailure, InspectMetrics, Prediction
from .options import BackboneOptions, sample_set_option

# A first-conv map counts as an edge / colour detector when its best-matching reference response
# (methods.filter_match) is an edge / colour-opponent one with |r| at least this (schemas.FirstConvMatch).
DETECTOR_MIN_R = 0.5
TOP5 = 5  # top-5 accuracy is the ImageNet convention, whatever --top-k lists


@dataclasses.dataclass
class InspectConfig(BackboneOptions, RunConfig):
    images: list[str] = option([], "image files or folders to classify (any PIL-readable format and mode); "
                                   "unlabelled (e.g. inputs from outside ImageNet)")
    samples: Literal["foolbox"] | None = sample_set_option()
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
    samples = load_samples(samples=cfg.samples) if cfg.samples else None  # before the run: a UserError leaves no folder
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
        inputs = _inputs(backbone, cfg.resize, samples, paths)
        if inputs:
            predictions, errors, matches = _predict(run, backbone, cfg, inputs)
            labelled = [p for p in predictions if p["label"] is not None]
            metrics.update(predictions=predictions, errors=errors, images_failed=len(errors),
                           labelled_images=len(labelled), top1_accuracy=_share(labelled, "top1_correct"),
                           top5_accuracy=_share(labelled, "top5_correct"), first_conv_match=matches)
            if labelled:
                print(f"{len(labelled)} labelled images: top-1 accuracy {metrics['top1_accuracy']:.3f}, "
                      f"top-5 accuracy {metrics['top5_accuracy']:.3f}")
            failed = len(errors)
        run.metrics.update(metrics)
    return 1 if failed else 0


@dataclasses.dataclass
class _Input:
    name: str  # the file's path, or the sample's name
    label: int | None  # ImageNet class, for the labelled sample photos
    pixels: Callable[[], torch.Tensor]  # (3, S, S) in [0, 1]; an unreadable file raises ImageReadError


def _inputs(backbone: Backbone, resize: str, samples: SampleSet | None, paths: list[Path]) -> list[_Input]:
    """The sample photos (first, as saliency and fool order them), then the files."""
    inputs = []
    if samples is not None:
        # to_batch, as saliency and fool: photos already at the input size are used as they are
        x = to_batch(samples.images, backbone.preprocess, resize)
        inputs += [_Input(name, label, lambda i=i: x[i]) for i, (name, label) in enumerate(zip(samples.names,
                                                                                                  samples.labels))]
    transform = backbone.preprocess.pixel_transform(resize)
    inputs += [_Input(str(path), None, lambda path=path: transform(load_image(path))) for path in paths]
    return inputs


def _predict(run: Run, backbone: Backbone, cfg: InspectConfig, inputs: list[_Input]
             ) -> tuple[list[Prediction], list[ImageFailure], list[FirstConvMatch]]:
    """Top-k predictions, first-conv maps and their filter matches for every readable input, and
    the unreadable ones."""
    model = backbone.pixel_model().to(run.device)
    first_conv = backbone.first_conv_path()
    tap = LayerTap(model, [first_conv, ""], root=backbone.net, stop_early=False)
    classes = imagenet_classes()
    predictions: list[Prediction] = []
    matches: list[FirstConvMatch] = []
    errors: list[ImageFailure] = []
    read: list[_Input] = []
    for start in progress(range(0, len(inputs), cfg.batch_size), desc="predict", unit="batch"):
        chunk, pixels = [], []
        for item in inputs[start:start + cfg.batch_size]:
            try:
                pixels.append(item.pixels())
                chunk.append(item)
            except ImageReadError as e:
                print(f"vislab inspect: {e}", file=sys.stderr)
                errors.append({"image": item.name, "error": str(e)})
        if not chunk:
            continue
        x = torch.stack(pixels).to(run.device)
        with torch.inference_mode():
            out = tap(x)
        probs = out[""].float().softmax(dim=1)
        for j, item in enumerate(chunk):
            predictions.append(_prediction(item, probs[j], cfg.top_k, classes))
            matches.append(_first_conv_match(item.name, x[j], out[first_conv][j]))
            top = predictions[-1]["top"]
            print(f"{item.name}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in top)
                  + f"; first conv: {len(matches[-1]['edge_maps'])} edge and {len(matches[-1]['colour_maps'])} "
                    f"colour maps of {len(matches[-1]['maps'])}")
            first_conv_figure(x[j], out[first_conv][j][: cfg.max_maps], backbone.name,
                              backbone.layer_name_of(first_conv),
                              run.path(f"first_conv_{len(predictions):03d}_{Path(item.name).stem}.png"))
        read += chunk
    if predictions:
        # read again rather than kept from the batches, whose pixels are freed as predictions go
        predictions_figure([item.pixels() for item in read], predictions, run.path("predictions.png"))
    return predictions, errors, matches


def _prediction(item: _Input, probs: torch.Tensor, top_k: int, classes: list[str]) -> Prediction:
    """The top-k classes of one input's softmax ``probs`` (all classes), and whether its label is
    the first / among the first five."""
    top_p, top_i = probs.topk(top_k)
    top = [{"index": int(i), "class": classes[int(i)], "prob": float(p)} for p, i in zip(top_p, top_i)]
    top5 = probs.topk(min(TOP5, len(probs))).indices.tolist()
    labelled = item.label is not None
    return {"image": item.name, "top": top, "label": item.label, "prob_sum": float(probs.double().sum()),
            "top1_correct": top[0]["index"] == item.label if labelled else None,
            "top5_correct": item.label in top5 if labelled else None}


def _first_conv_match(name: str, image: torch.Tensor, maps: torch.Tensor) -> FirstConvMatch:
    """Each first-conv map's best-matching reference response (edge, colour-opponent, luminance)."""
    match = match_filters(image, maps)
    kinds = match.kinds(DETECTOR_MIN_R)
    return {"image": name, "maps": [{"map": r["map"], "reference": r["best"], "r": r["r"]} for r in match.rows()],
            "edge_maps": [i for i, kind in enumerate(kinds) if kind == "edge"],
            "colour_maps": [i for i, kind in enumerate(kinds) if kind == "colour"]}


def _share(predictions: list[Prediction], key: str) -> float | None:
    """Share of ``predictions`` whose ``key`` is true; None when there are none."""
    return sum(bool(p[key]) for p in predictions) / len(predictions) if predictions else None
