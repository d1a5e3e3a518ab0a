"""``vislab inspect``: an ImageNet CNN's layers and parameters, its predictions on image files,
and its first convolution's activation maps (SPEC Part A, inspection)."""
from __future__ import annotations

import dataclasses
import sys
from typing import Literal

import torch

from ..config import RunConfig, add_command, option
from ..data.images import IMAGE_SUFFIXES, find_images, load_image
from ..errors import ImageReadError, UserError
from ..models.backbones import Backbone, BackboneOptions, build_backbone, imagenet_classes
from ..models.summary import format_table, layer_table, params_by_type
from ..models.taps import LayerTap
from ..progress import progress
from ..runs import Run


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
        table = format_table(rows)
        print(table)
        print("\nparameters by layer type: " + ", ".join(f"{k} {v:,}" for k, v in by_type.items()))
        total = sum(r.params for r in rows)
        print(f"total parameters: {total:,}")
        (run.path("layers.txt")).write_text(table + "\n")  # inside the .partial folder: atomic with the run
        run.save_json("layers.json", [dataclasses.asdict(r) for r in rows])
        run.metrics.update(
            model=cfg.model, weights=cfg.weights, params_total=total,
            params_linear=by_type.get("Linear", 0),
            params_conv=sum(v for k, v in by_type.items() if k.startswith("Conv")),
            params_by_type=by_type, num_layers=len(rows),
            output_size=rows[-1].output_shape[-1] if rows[-1].output_shape else None,
        )
        failed = 0
        if paths:
            failed = _predict(run, backbone, cfg, paths)
    return 1 if failed else 0


def _predict(run: Run, backbone: Backbone, cfg: InspectConfig, paths: list) -> int:
    """Top-k predictions and first-conv maps for every readable image; returns the failures."""
    transform = backbone.preprocess.pixel_transform(cfg.resize)
    model = backbone.pixel_model().to(run.device)
    tap = LayerTap(model, [backbone.first_conv_path(), ""], root=backbone.net, stop_early=False)
    classes = imagenet_classes()
    predictions, errors = [], []
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
            n = len(predictions)
            _draw_first_conv(run, x[j], out[backbone.first_conv_path()][j][: cfg.max_maps],
                             f"first_conv_{n:03d}_{path.stem}.png", backbone)
    if predictions:
        _draw_predictions(run, predictions, paths=[p["image"] for p in predictions], cfg=cfg, transform=transform)
    run.metrics.update(predictions=predictions, errors=errors, images_failed=len(errors))
    return len(errors)


def _draw_first_conv(run: Run, image: torch.Tensor, maps: torch.Tensor, name: str, backbone: Backbone) -> None:
    from ..reporting.figures import feature_map_grid, plt, to_hwc

    fig, (ax_img, ax_maps) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(to_hwc(image))
    ax_img.set_title("input (after preprocessing)")
    ax_maps.imshow(feature_map_grid(maps), cmap="viridis")
    ax_maps.set_title(f"{backbone.name}: {len(maps)} maps of the first conv layer "
                      f"({backbone.layer_name_of(backbone.first_conv_path())}, {maps.shape[-2]}x{maps.shape[-1]})")
    for ax in (ax_img, ax_maps):
        ax.axis("off")
    run.save_figure(fig, name)


def _draw_predictions(run: Run, predictions: list[dict], paths: list[str], cfg: InspectConfig, transform) -> None:
    from ..reporting.figures import plt, to_hwc

    n = len(predictions)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.8]})
    for (ax_img, ax_bar), pred in zip(axes, predictions):
        ax_img.imshow(to_hwc(transform(load_image(pred["image"]))))
        ax_img.axis("off")
        top = pred["top"][::-1]
        ax_bar.barh([t["class"] for t in top], [t["prob"] for t in top], color="tab:blue")
        ax_bar.set_xlim(0, 1)
        ax_bar.set_title(pred["image"], fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "predictions.png")
