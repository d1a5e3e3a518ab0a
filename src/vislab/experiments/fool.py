"""``vislab fool``: fooling images, normalised gradient ascent on a target logit until the
prediction flips (SPEC Part B), measured as the user keeps them: 8-bit PNG files."""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Literal

import torch

from ..config import add_command, option
from ..io import write_bytes
from ..methods.attacks import AttackResult, fgsm, pgd
from ..methods.fooling import FoolingResult, fool
from ..methods.robustness import robustness_check
from ..errors import UserError
from ..models.backbones import BACKBONES, build_backbone
from ..precision import autocast, resolve_precision
from ..progress import progress
from ..reporting.figures.visualize import fooling_figure
from ..runs import Run
from ..schemas import FoolImage, FoolMetrics, FoolRobustness, Precision, Space
from .visualize import ImageSetConfig, batches, check_class, class_name, pixel_model, png_roundtrip, setup


@dataclasses.dataclass
class FoolConfig(ImageSetConfig):
    target: int = option(6, "target class (6 = stingray)", min=0)
    batch_size: int | None = option(None, "images fooled together (each stops on its own); default: 5 on a CPU, "
                                          "64 on a GPU (README: fooling speed)", min=1)
    learning_rate: float = option(1.0, "step length of x <- x + lr * g / ||g||_2 (course: 1, on the normalised image)",
                                  min=0, min_exclusive=True)
    max_iterations: int = option(100, "most gradient steps per image", min=0)
    step_space: Space = option(
        "normalized", "space whose gradient and L2 norm define the step: 'normalized' reproduces the course, "
                      "'pixel' takes steps of L2 length lr in [0,1] pixel units")
    margin: float = option(0.0, "keep stepping until the target logit leads every other logit by MARGIN "
                                "(0 = the course's rule: stop as soon as the prediction is the target)", min=0)
    uint8_stop: bool = option(True, "stop an image only when it also fools once rounded to 8 bits (as saved to PNG); "
                                    "--no-uint8-stop is the course's rule (float image only), which leaves some "
                                    "images fooling so barely that saving them undoes it")
    precision: Precision = option("fp32", "network arithmetic: fp32, or bf16 autocast (faster on CPUs with AMX)")
    attack: Literal["naive", "fgsm", "pgd"] = option(
        "naive", "'naive' = the course's gradient ascent until the prediction flips (no bound on the change); "
                 "'fgsm' / 'pgd' = targeted attacks at a fixed L-inf budget --eps")
    eps: float = option(8.0, "fgsm / pgd: L-inf budget in 0-255 units (each pixel moves by at most EPS/255)",
                        min=0, max=255)
    pgd_steps: int = option(10, "pgd: number of signed-gradient steps", min=1, max=10_000)
    pgd_alpha: float = option(2.0, "pgd: step size in 0-255 units (Madry et al.: about 2.5 eps / steps)",
                              min=0, min_exclusive=True, max=255)
    check_models: list[str] = option([], "other backbones the saved fooled images are shown to (do they transfer?)")
    jpeg_quality: int = option(0, "also check whether the fooled images survive JPEG at this quality (0 = off)",
                               min=0, max=95)
    resize_scale: float = option(0.0, "also check whether they survive a resize by this factor and back "
                                      "(e.g. 0.5; 0 = off)", min=0, max=1)


def register(subparsers) -> None:
    add_command(subparsers, "fool", FoolConfig, fool_images,
                help="fooling images: normalised gradient ascent on a target logit until the prediction flips")


def fool_images(cfg: FoolConfig) -> int:
    if cfg.batch_size is None:  # resolved here so that config.json records the size used
        gpu = cfg.device != "cpu" and torch.cuda.is_available()
        cfg = dataclasses.replace(cfg, batch_size=64 if gpu else 5)
    unknown = [name for name in cfg.check_models if name not in BACKBONES]
    if unknown:
        raise UserError(f"--check-models {' '.join(unknown)}: unknown model; choose from {', '.join(BACKBONES)}")
    with Run("fool", cfg) as run:
        dtype = resolve_precision(cfg.precision, run.device)
        _, model, samples, x = setup(run, cfg, dtype)
        before = _classify(model, x, cfg.batch_size, run.device)
        check_class("target", cfg.target, before.shape[1])
        t0 = time.perf_counter()
        res = _fool_batches(model, x, cfg, dtype, run.device)
        seconds = time.perf_counter() - t0
        # What a user keeps is an 8-bit file: save each fooled image as PNG, read it back and
        # classify it again with the fp32 network.
        reloaded = []
        for name, img in zip(samples.names, res.images):
            data, back = png_roundtrip(img)
            write_bytes(run.path(f"fooled/{name}.png"), data)
            reloaded.append(back)
        reloaded_t = torch.stack(reloaded)
        after = _classify(model, reloaded_t, cfg.batch_size, run.device).softmax(dim=1)
        probs = res.logits.softmax(dim=1)
        results = [_image_result(name, samples.labels[i], x[i], res.images[i], reloaded_t[i], before[i], probs[i],
                                 bool(res.success[i]), int(res.iterations[i]), after[i], cfg.target)
                   for i, name in enumerate(samples.names)]
        summary = _fool_summary(results)
        metrics: FoolMetrics = {
            "model": cfg.model, "target": cfg.target, "target_name": class_name(cfg.target),
            "learning_rate": cfg.learning_rate, "max_iterations": cfg.max_iterations, "step_space": cfg.step_space,
            "margin": cfg.margin, "uint8_stop": cfg.uint8_stop, "precision": cfg.precision, **_attack_settings(cfg),
            "num_images": len(results), "seconds": round(seconds, 3), **summary, "results": results}
        run.metrics.update(metrics)
        if cfg.check_models or cfg.jpeg_quality or cfg.resize_scale:
            kept = torch.tensor([r["success_after_uint8"] for r in results], dtype=torch.bool)
            run.metrics["robustness"] = _robustness(cfg, model, reloaded_t, kept, dtype, run.device)
        for i, r in enumerate(results):
            fooling_figure(x[i], res.images[i], r, class_name(cfg.target), run.path(f"fool_{i:02d}_{r['image']}.png"))
        print(f"fool -> {class_name(cfg.target)} ({cfg.target}): success {summary['success_rate']:.2f}, after uint8 "
              f"{summary['success_after_uint8_rate']:.2f}, median iterations {summary['median_iterations']}, "
              f"median Linf {summary['median_linf_255']:.2f}/255, {seconds:.1f} s -> {run.dir}")
    return 0


def _classify(model, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """fp32 logits (N, K) of pixels x, on the CPU."""
    with torch.no_grad():
        return torch.cat([model(x[sl].to(device)).float().cpu() for sl in batches(len(x), batch_size)])


def _fool_batches(model, x: torch.Tensor, cfg: FoolConfig, dtype: torch.dtype | None,
                  device: torch.device) -> FoolingResult:
    """``--attack`` over batches of ``--batch-size`` images, the results on the CPU."""
    parts = []
    for sl in batches(len(x), cfg.batch_size):
        res = _attack_batch(model, x[sl].to(device), cfg, dtype)
        parts.append(FoolingResult(res.images.cpu(), res.success.cpu(), res.iterations.cpu(), res.logits.cpu()))
    return FoolingResult(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(FoolingResult)))


def _attack_batch(model, x: torch.Tensor, cfg: FoolConfig, dtype: torch.dtype | None) -> FoolingResult | AttackResult:
    if cfg.attack == "naive":
        return fool(model, x, cfg.target, learning_rate=cfg.learning_rate, max_iterations=cfg.max_iterations,
                    step_space=cfg.step_space, margin=cfg.margin, stop_on_uint8=cfg.uint8_stop, autocast_dtype=dtype,
                    progress=lambda r: progress(r, desc="fool", unit="step"))
    with autocast(x.device, dtype):
        if cfg.attack == "fgsm":
            return fgsm(model, x, cfg.target, eps=cfg.eps / 255, targeted=True)
        return pgd(model, x, cfg.target, eps=cfg.eps / 255, alpha=cfg.pgd_alpha / 255, steps=cfg.pgd_steps,
                   targeted=True, seed=cfg.seed)


def _attack_settings(cfg: FoolConfig) -> dict:
    """The metrics naming the attack and, for the budgeted ones, its budget and steps."""
    settings: dict = {"attack": cfg.attack}
    if cfg.attack != "naive":
        settings["eps_255"] = cfg.eps
    if cfg.attack == "pgd":
        settings.update(pgd_steps=cfg.pgd_steps, pgd_alpha_255=cfg.pgd_alpha)
    return settings


def _robustness(cfg: FoolConfig, model, saved: torch.Tensor, fooled: torch.Tensor, dtype: torch.dtype | None,
                device: torch.device) -> FoolRobustness:
    """:func:`robustness_record` of the saved images against ``--check-models`` (built here)."""
    # a state-dict FILE belongs to the source model: the others get their ImageNet weights
    weights = cfg.weights if cfg.weights in ("imagenet", "none") else "imagenet"
    models = {cfg.model: model}
    if fooled.any():  # no model to load when nothing is checked
        models.update({name: pixel_model(build_backbone(name, weights, device), device, dtype)
                       for name in cfg.check_models if name != cfg.model})
    return robustness_record(saved.to(device), fooled, cfg.target, models, checked=cfg.check_models,
                             jpeg_quality=cfg.jpeg_quality, resize_scale=cfg.resize_scale,
                             batch_size=cfg.batch_size, dtype=dtype)


def robustness_record(saved: torch.Tensor, fooled: torch.Tensor, target: int, models: dict, *, checked: list[str],
                      jpeg_quality: int, resize_scale: float, batch_size: int,
                      dtype: torch.dtype | None = None) -> FoolRobustness:
    """Of the ``saved`` images (N, 3, H, W) that fool the source model (``fooled`` (N,) bool; the
    source is the first of ``models``, name -> pixel model), the share that the ``checked`` models
    also classify as ``target`` as they are, and that the source still does after JPEG at
    ``jpeg_quality`` / a resize by ``resize_scale`` and back (0 = off: null). Every model sees the
    images at the source model's input size."""
    source = next(iter(models))
    record: FoolRobustness = {"fooled_images": int(fooled.sum()), "transfer": {m: None for m in checked},
                              "jpeg": None, "jpeg_quality": jpeg_quality, "resize": None, "resize_scale": resize_scale}
    if not fooled.any():
        return record
    shown = {source: models[source], **{name: models[name] for name in checked}}
    rates = robustness_check(saved[fooled.to(saved.device)], target, shown,
                             jpeg_qualities=[jpeg_quality] if jpeg_quality else [],
                             resize_factors=[resize_scale] if resize_scale else [],
                             batch_size=batch_size, autocast_dtype=dtype).rates()
    record["transfer"] = {name: rates[name]["as_is"] for name in checked}
    if jpeg_quality:
        record["jpeg"] = rates[source][f"jpeg_q{jpeg_quality}"]
    if resize_scale:
        record["resize"] = rates[source][f"resize_{resize_scale:g}"]
    return record


def _image_result(name: str, label: int | None, original: torch.Tensor, fooled: torch.Tensor, reloaded: torch.Tensor,
                  logits_before: torch.Tensor, probs: torch.Tensor, success: bool, iterations: int,
                  probs_after: torch.Tensor, target: int) -> FoolImage:
    """One image's record: predictions before, after fooling and after the 8-bit round trip
    (``probs``, ``probs_after``: (K,) probabilities), and the perturbation's size."""
    d = fooled - original
    d8 = reloaded - original
    p0 = logits_before.softmax(0)
    return {
        "image": name, "label": label, "label_name": class_name(label),
        "original_prediction": int(p0.argmax()), "original_prediction_name": class_name(int(p0.argmax())),
        "original_target_probability": float(p0[target]),
        "success": success, "iterations": iterations, "target_probability": float(probs[target]),
        "l2": float(d.norm()), "l2_255": float(d.norm() * 255),
        "linf": float(d.abs().max()), "linf_255": float(d.abs().max() * 255),
        "success_after_uint8": bool(probs_after.argmax() == target),
        "target_probability_after_uint8": float(probs_after[target]),
        "linf_255_after_uint8": float((d8.abs().max() * 255).round()),
    }


def _fool_summary(results: list[FoolImage]) -> dict:
    n = len(results)
    ok = [r for r in results if r["success"]]
    return {
        "success_rate": sum(r["success"] for r in results) / n,
        "success_after_uint8_rate": sum(r["success_after_uint8"] for r in results) / n,
        "median_iterations": statistics.median(r["iterations"] for r in results),
        "max_iterations_taken": max(r["iterations"] for r in results),
        "median_linf_255": statistics.median(r["linf_255"] for r in results),
        "median_l2_255": statistics.median(r["l2_255"] for r in results),
        "median_target_probability": statistics.median(r["target_probability"] for r in results),
        "median_iterations_successful": statistics.median(r["iterations"] for r in ok) if ok else None,
    }
