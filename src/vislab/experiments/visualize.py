"""``vislab saliency``, ``vislab fool``, ``vislab classviz``: looking inside an ImageNet classifier
(SPEC Part B). Each wires images + backbone + one method of :mod:`vislab.methods` + figures.

All optimisation happens on pixels in [0, 1] through the backbone's :class:`PixelModel`; the
methods map the course's step sizes (defined on normalised images) to pixel space exactly.
"""
from __future__ import annotations

import dataclasses
import io
import math
import statistics
import time
from typing import Literal

import torch

from ..config import RunConfig, add_command, option
from ..data.images import load_image
from ..data.samples import SampleOptions, load_samples, to_batch
from ..errors import UserError
from ..io import write_bytes
from ..methods.classviz import ClassVizResult, class_visualization, noise_image
from ..methods.fooling import fool
from ..methods.saliency import saliency_maps
from ..models.backbones import BackboneOptions, build_backbone, imagenet_classes
from ..precision import amp_dtype, autocast
from ..progress import progress
from ..runs import Run

Precision = Literal["fp32", "bf16"]


@dataclasses.dataclass
class _Common(SampleOptions, BackboneOptions, RunConfig):
    batch_size: int = option(20, "images per forward/backward pass", min=1)


@dataclasses.dataclass
class SaliencyConfig(_Common):
    target: int | None = option(None, "class whose logit is differentiated for every image "
                                      "(default: each image's true label when known, else its predicted class)",
                                min=0)
    space: Literal["normalized", "pixel"] = option(
        "normalized", "gradient w.r.t. the normalised image (course) or w.r.t. the [0,1] pixels")


@dataclasses.dataclass
class FoolConfig(_Common):
    target: int = option(6, "target class (6 = stingray)", min=0)
    batch_size: int | None = option(None, "images fooled together (each stops on its own); default: 5 on a CPU "
                                       "(fastest on 2 cores: larger batches are slower per image there), 64 on a "
                                       "GPU (benchmarks/fooling.py, 20 photos on an H100: one batch 5.1x faster "
                                       "than the one-image loop, batches of 5 2.2x)", min=1)
    learning_rate: float = option(1.0, "step length of x <- x + lr * g / ||g||_2 (course: 1, on the normalised image)",
                                  min=0, min_exclusive=True)
    max_iterations: int = option(100, "most gradient steps per image", min=0)
    step_space: Literal["normalized", "pixel"] = option(
        "normalized", "space whose gradient and L2 norm define the step: 'normalized' reproduces the course, "
                      "'pixel' takes steps of L2 length lr in [0,1] pixel units")
    margin: float = option(0.0, "keep stepping until the target logit leads every other logit by MARGIN "
                                "(0 = the course's rule: stop as soon as the prediction is the target)", min=0)
    uint8_stop: bool = option(True, "stop an image only when it also fools once rounded to 8 bits (as saved to PNG); "
                                    "--no-uint8-stop is the course's rule (float image only), which leaves some "
                                    "images fooling so barely that saving them undoes it")
    precision: Precision = option("fp32", "network arithmetic: fp32, or bf16 autocast (faster on CPUs with AMX)")


@dataclasses.dataclass
class ClassVizConfig(BackboneOptions, RunConfig):
    target: list[int] = option([76], "class(es) to visualise, one image each (76 = tarantula)", min=0)
    init_image: str | None = option(None, "start from this image instead of random noise")
    resize: Literal["crop", "squash"] = option("crop", "how --init-image is fitted to the model's input size")
    image_size: int | None = option(None, "side of the image from noise (default: the model's input size)", min=1)
    learning_rate: float = option(5.0, "gradient-ascent step on the normalised image (course: 5)",
                                  min=0, min_exclusive=True)
    l2_reg: float = option(1e-3, "weight of ||x_norm||^2 in the objective (course: 1e-3)", min=0)
    iterations: int = option(200, "gradient-ascent steps", min=1)
    blur_every: int = option(10, "Gaussian blur (sigma 0.5) every this many steps (0: never)", min=0)
    max_jitter: int = option(16, "random roll of up to this many pixels before each step, undone after it", min=0)
    show_every: int = option(25, "keep a snapshot every this many steps", min=0)
    batch_size: int = option(3, "images optimised together (targets, sweep settings); results do not depend on "
                                "it. Small batches are fastest on a 2-core CPU, use 16+ on a GPU", min=1)
    sweep: bool = option(False, "also run a sweep over --sweep-learning-rates x --sweep-l2-regs (first target), "
                                "drawn as one grid with the snapshots as columns (the iterations axis)")
    sweep_learning_rates: list[float] = option([1.0, 5.0, 25.0], "learning rates of the sweep",
                                               min=0, min_exclusive=True)
    sweep_l2_regs: list[float] = option([1e-4, 1e-3, 1e-2], "l2_reg values of the sweep", min=0)
    precision: Precision = option("fp32", "network arithmetic: fp32, or bf16 autocast (faster on CPUs with AMX)")


def register(subparsers) -> None:
    add_command(subparsers, "saliency", SaliencyConfig, saliency,
                help="saliency maps (|d logit / d image|, max over channels) beside the images")
    add_command(subparsers, "fool", FoolConfig, fool_images,
                help="fooling images: normalised gradient ascent on a target logit until the prediction flips")
    add_command(subparsers, "classviz", ClassVizConfig, classviz,
                help="class visualisation: regularised gradient ascent on a class score from noise or an image")


# --- shared pieces ----------------------------------------------------------------------------

def _pixel_model(backbone, device, precision: str = "fp32", fold_bn: bool = True):
    # BatchNorm folded: the same function and gradients up to rounding, one pass fewer per BN
    # (benchmarks/fooling.py: fooling the 20 photos in batches of 5 on 2 CPU cores, 2.63 s -> 2.15 s;
    # the course loop takes 4.83 s)
    model = backbone.pixel_model(fold_bn=fold_bn).to(device)
    if precision == "bf16":
        # oneDNN's bf16 convolutions are fastest in NHWC (benchmarks/fooling.py: 4.5 s vs 6.0 s)
        model = model.to(memory_format=torch.channels_last)
    return model


def _setup(run: Run, cfg: _Common):
    backbone = build_backbone(cfg.model, cfg.weights, run.device)
    samples = load_samples(cfg)
    x = to_batch(samples.images, backbone.preprocess, cfg.resize)
    return backbone, _pixel_model(backbone, run.device, getattr(cfg, "precision", "fp32")), samples, x


def _check_class(name: str, value: int, num_classes: int) -> None:
    if not 0 <= value < num_classes:
        raise UserError(f"--{name} {value}: a class index from 0 to {num_classes - 1} (e.g. 6 stingray, 76 tarantula)")


def _class_name(k: int | None) -> str | None:
    if k is None:
        return None
    names = imagenet_classes()
    return names[k] if 0 <= k < len(names) else str(k)


def _batches(n: int, size: int):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _png_roundtrip(img: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """(3, H, W) pixels -> 8-bit PNG bytes and the pixels read back from them."""
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image, to_tensor

    # round(), not to_pil_image's truncation: nearest 8-bit value, as a careful user would save
    arr = (img.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    buf = io.BytesIO()
    to_pil_image(arr).save(buf, format="PNG")
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as back:
        return data, to_tensor(back.convert("RGB"))


# --- saliency ---------------------------------------------------------------------------------

def saliency(cfg: SaliencyConfig) -> int:
    if cfg.target is not None:
        _check_class("target", cfg.target, len(imagenet_classes()))
    with Run("saliency", cfg) as run:
        backbone, model, samples, x = _setup(run, cfg)
        labels = [cfg.target if cfg.target is not None else lab for lab in samples.labels]
        for name, lab in zip(samples.names, labels):
            if lab is not None and not 0 <= lab < len(imagenet_classes()):
                raise UserError(f"{name}: label {lab} is not an ImageNet class index (0 to 999); fix the labels "
                                f"or pass --target")
        wanted = torch.tensor([-1 if lab is None else lab for lab in labels], dtype=torch.long)
        maps, classes, logits = [], [], []
        t0 = time.perf_counter()
        for sl in progress(_batches(len(x), cfg.batch_size), desc="saliency", unit="batch"):
            res = saliency_maps(model, x[sl].to(run.device), wanted[sl].to(run.device), space=cfg.space)
            maps.append(res.maps.cpu())
            classes.append(res.classes.cpu())
            logits.append(res.logits.cpu())
        seconds = time.perf_counter() - t0
        maps_t, classes_t, logits_t = torch.cat(maps), torch.cat(classes), torch.cat(logits)
        probs = logits_t.softmax(dim=1)
        results = []
        for i, name in enumerate(samples.names):
            k, pred = int(classes_t[i]), int(probs[i].argmax())
            results.append({
                "image": name, "label": samples.labels[i], "label_name": _class_name(samples.labels[i]),
                "class": k, "class_name": _class_name(k),
                "class_source": ("predicted" if wanted[i] < 0 else "target" if cfg.target is not None else "label"),
                "predicted": pred, "predicted_name": _class_name(pred),
                "probability": float(probs[i, k]), "map_max": float(maps_t[i].max()),
            })
        known = [r for r in results if r["label"] is not None]
        run.metrics.update(
            model=cfg.model, space=cfg.space, num_images=len(results), seconds=round(seconds, 3),
            top1_accuracy=(sum(r["predicted"] == r["label"] for r in known) / len(known)) if known else None,
            results=results,
        )
        from ..io import torch_save

        torch_save({"maps": maps_t, "classes": classes_t, "names": samples.names}, run.path("saliency_maps.pt"))
        _draw_saliency(run, x, maps_t, results)
        print(f"saliency: {len(results)} images in {seconds:.2f} s -> {run.dir}")
    return 0


def _draw_saliency(run: Run, x: torch.Tensor, maps: torch.Tensor, results: list[dict], cols: int = 5) -> None:
    from ..reporting.figures import plt, to_hwc

    n = len(results)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.6 * cols, 5.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, r in enumerate(results):
        ax_img, ax_map = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        ax_img.imshow(to_hwc(x[i]))
        ax_img.set_title(f"{r['image']}\n{(r['class_name'] or '')[:24]} p={r['probability']:.2f}", fontsize=7)
        ax_map.imshow(maps[i].numpy(), cmap="hot")
        ax_map.set_title("saliency", fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "saliency.png")


# --- fooling ----------------------------------------------------------------------------------

def fool_images(cfg: FoolConfig) -> int:
    if cfg.batch_size is None:  # resolved here so that config.json records the size used
        gpu = cfg.device != "cpu" and torch.cuda.is_available()
        cfg = dataclasses.replace(cfg, batch_size=64 if gpu else 5)
    with Run("fool", cfg) as run:
        backbone, model, samples, x = _setup(run, cfg)
        amp = amp_dtype(cfg.precision)
        with torch.no_grad():
            before = torch.cat([model(x[sl].to(run.device)).float().cpu() for sl in _batches(len(x), cfg.batch_size)])
        _check_class("target", cfg.target, before.shape[1])
        fooled, success, iters, logits = [], [], [], []
        t0 = time.perf_counter()
        for sl in _batches(len(x), cfg.batch_size):
            res = fool(model, x[sl].to(run.device), cfg.target, learning_rate=cfg.learning_rate,
                       max_iterations=cfg.max_iterations, step_space=cfg.step_space, margin=cfg.margin,
                       stop_on_uint8=cfg.uint8_stop, amp_dtype=amp,
                       progress=lambda r: progress(r, desc="fool", unit="step"))
            fooled.append(res.images.cpu())
            success.append(res.success.cpu())
            iters.append(res.iterations.cpu())
            logits.append(res.logits.cpu())
        seconds = time.perf_counter() - t0
        fooled_t, success_t, iters_t = torch.cat(fooled), torch.cat(success), torch.cat(iters)
        probs = torch.cat(logits).softmax(dim=1)
        # What a user keeps is an 8-bit file: save each fooled image as PNG, read it back and
        # classify it again with the fp32 network.
        reloaded = []
        for name, img in zip(samples.names, fooled_t):
            data, back = _png_roundtrip(img)
            write_bytes(run.path(f"fooled/{name}.png"), data)
            reloaded.append(back)
        reloaded_t = torch.stack(reloaded)
        with torch.no_grad():
            after = torch.cat([model(reloaded_t[sl].to(run.device)).float().cpu()
                               for sl in _batches(len(x), cfg.batch_size)]).softmax(dim=1)
        t = cfg.target
        results = []
        for i, name in enumerate(samples.names):
            d = fooled_t[i] - x[i]
            d8 = reloaded_t[i] - x[i]
            p0 = before[i].softmax(0)
            results.append({
                "image": name, "label": samples.labels[i], "label_name": _class_name(samples.labels[i]),
                "original_prediction": int(p0.argmax()), "original_prediction_name": _class_name(int(p0.argmax())),
                "original_target_probability": float(p0[t]),
                "success": bool(success_t[i]), "iterations": int(iters_t[i]),
                "target_probability": float(probs[i, t]),
                "l2": float(d.norm()), "l2_255": float(d.norm() * 255),
                "linf": float(d.abs().max()), "linf_255": float(d.abs().max() * 255),
                "success_after_uint8": bool(after[i].argmax() == t),
                "target_probability_after_uint8": float(after[i, t]),
                "linf_255_after_uint8": float((d8.abs().max() * 255).round()),
            })
        _summary = _fool_summary(results)
        run.metrics.update(model=cfg.model, target=t, target_name=_class_name(t), learning_rate=cfg.learning_rate,
                           max_iterations=cfg.max_iterations, step_space=cfg.step_space, margin=cfg.margin,
                           uint8_stop=cfg.uint8_stop, precision=cfg.precision, num_images=len(results),
                           seconds=round(seconds, 3), **_summary, results=results)
        for i, r in enumerate(results):
            _draw_fooling(run, x[i], fooled_t[i], r, t, f"fool_{i:02d}_{r['image']}.png")
        print(f"fool -> {_class_name(t)} ({t}): success {_summary['success_rate']:.2f}, after uint8 "
              f"{_summary['success_after_uint8_rate']:.2f}, median iterations {_summary['median_iterations']}, "
              f"median Linf {_summary['median_linf_255']:.2f}/255, {seconds:.1f} s -> {run.dir}")
    return 0


def _fool_summary(results: list[dict]) -> dict:
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


def _draw_fooling(run: Run, orig: torch.Tensor, fooled: torch.Tensor, r: dict, target: int, name: str) -> None:
    from ..reporting.figures import plt, to_hwc

    d = fooled - orig
    panels = [
        (orig, f"{r['image']}\noriginal: {(r['original_prediction_name'] or '')[:22]}"),
        (fooled, f"fooled: {_class_name(target)[:16]} p={r['target_probability']:.2f}\n"
                 f"{r['iterations']} it, uint8 {'ok' if r['success_after_uint8'] else 'FAILS'}"),
        (0.5 + d, f"difference (0.5 = none)\nLinf {r['linf_255']:.1f}/255"),
        (0.5 + 10 * d, "difference x10"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(to_hwc(img))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    run.save_figure(fig, name)


# --- class visualisation ----------------------------------------------------------------------

def classviz(cfg: ClassVizConfig) -> int:
    if not cfg.target:
        raise UserError("--target: give at least one class index (e.g. 76 tarantula)")
    with Run("classviz", cfg) as run:
        backbone = build_backbone(cfg.model, cfg.weights, run.device)
        # Not folded: 200 steps of jittered ascent amplify rounding differences into another image,
        # and the one for the default seed ended at p = 0.65 for tarantula folded vs 0.99 as is (over
        # seeds 0-5 neither won: medians 0.998 folded, 0.95 as is); the default run stays the
        # documented one.
        model = _pixel_model(backbone, run.device, cfg.precision, fold_bn=False)
        num_classes = _num_classes(model, backbone)
        for k in cfg.target:
            _check_class("target", k, num_classes)
        size = cfg.image_size or backbone.preprocess.input_size
        mean, std = model.mean.view(1, -1, 1, 1), model.std.view(1, -1, 1, 1)
        # One start image shared by every target and sweep setting (a controlled comparison):
        # the course's noise, or --init-image.
        if cfg.init_image:
            start = to_batch([load_image(cfg.init_image)], backbone.preprocess, cfg.resize).to(run.device)
        else:
            start = noise_image(1, size, mean, std, torch.Generator().manual_seed(cfg.seed))
        common = dict(blur_every=cfg.blur_every, max_jitter=cfg.max_jitter, show_every=cfg.show_every,
                      iterations=cfg.iterations, amp_dtype=amp_dtype(cfg.precision),
                      progress=lambda r: progress(r, desc="classviz", unit="step"))
        t0 = time.perf_counter()
        n = len(cfg.target)
        res = _classviz_batches(model, start, torch.tensor(cfg.target), torch.full((n,), cfg.learning_rate),
                                torch.full((n,), cfg.l2_reg), cfg, common)
        seconds = time.perf_counter() - t0
        probs = res.logits.softmax(dim=1).cpu()
        results = []
        for i, k in enumerate(cfg.target):
            top = int(probs[i].argmax())
            results.append({"target": k, "target_name": _class_name(k), "probability": float(probs[i, k]),
                            "predicted": top, "predicted_name": _class_name(top)})
            data, _ = _png_roundtrip(res.images[i])
            write_bytes(run.path(f"classviz_{k}.png"), data)
        run.metrics.update(model=cfg.model, iterations=cfg.iterations, learning_rate=cfg.learning_rate,
                           l2_reg=cfg.l2_reg, init="image" if cfg.init_image else "noise", image_size=size,
                           precision=cfg.precision, seconds=round(seconds, 3),
                           seconds_per_iteration=round(seconds / cfg.iterations, 4), results=results)
        _draw_snapshots(run, res.snapshots, [f"{r['target_name']} ({r['target']})" for r in results], "snapshots.png",
                        final_probs=[r["probability"] for r in results])
        for r in results:
            print(f"classviz {r['target_name']} ({r['target']}): p={r['probability']:.3f}")
        print(f"classviz: {cfg.iterations} iterations in {seconds:.1f} s -> {run.dir}")
        if cfg.sweep:
            _sweep(run, cfg, model, start, common)
    return 0


def _num_classes(model, backbone) -> int:
    size = backbone.preprocess.input_size
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, size, size, device=model.mean.device)).shape[1])


def _classviz_batches(model, start, targets, lrs, regs, cfg: ClassVizConfig, common: dict) -> ClassVizResult:
    """:func:`class_visualization` over batches of ``--batch-size`` images. The jitter generator
    restarts from ``--seed`` in every batch, so an image's result does not depend on the batching
    (small batches are faster on a 2-core CPU; larger ones on a GPU)."""
    parts = []
    for sl in _batches(len(targets), cfg.batch_size):
        m = sl.stop - sl.start
        parts.append(class_visualization(model, targets[sl], init=start.expand(m, -1, -1, -1),
                                         learning_rate=lrs[sl], l2_reg=regs[sl],
                                         generator=torch.Generator().manual_seed(cfg.seed), **common))
    snapshots = [(steps, torch.cat([p.snapshots[j][1] for p in parts]))
                 for j, (steps, _) in enumerate(parts[0].snapshots)]
    return ClassVizResult(images=torch.cat([p.images for p in parts]), snapshots=snapshots,
                          logits=torch.cat([p.logits for p in parts]))


def _sweep(run: Run, cfg: ClassVizConfig, model, start, common: dict) -> None:
    """All (lr, l2_reg) pairs for the first target, from the same start and with the same jitter;
    snapshot columns = iterations."""
    pairs = [(lr, reg) for lr in cfg.sweep_learning_rates for reg in cfg.sweep_l2_regs]
    if not pairs:
        raise UserError("--sweep needs at least one value in --sweep-learning-rates and --sweep-l2-regs")
    k = cfg.target[0]
    t0 = time.perf_counter()
    res = _classviz_batches(model, start, torch.full((len(pairs),), k), torch.tensor([p[0] for p in pairs]),
                            torch.tensor([p[1] for p in pairs]), cfg, common)
    seconds = time.perf_counter() - t0
    amp = common["amp_dtype"]
    by_step = {}
    with torch.no_grad(), autocast(model.mean.device, amp):
        for steps, snap in res.snapshots:
            by_step[steps] = model(snap).float().softmax(dim=1)[:, k].cpu()
    entries = [{"learning_rate": lr, "l2_reg": reg,
                "probability_by_iterations": {str(s): float(p[j]) for s, p in by_step.items()}}
               for j, (lr, reg) in enumerate(pairs)]
    run.metrics["sweep"] = {"target": k, "seconds": round(seconds, 3), "results": entries}
    labels = [f"lr={lr:g}, l2={reg:g}" for lr, reg in pairs]
    _draw_snapshots(run, res.snapshots, labels, "sweep.png", probs_by_step=by_step,
                    title=f"{_class_name(k)} ({k}): learning rate x l2_reg (rows) x iterations (columns)")


def _draw_snapshots(run: Run, snapshots, row_labels: list[str], name: str, final_probs=None,
                    probs_by_step=None, title: str | None = None) -> None:
    from ..reporting.figures import plt, to_hwc

    rows, cols = len(row_labels), len(snapshots)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows + 0.4), squeeze=False)
    for c, (steps, imgs) in enumerate(snapshots):
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(to_hwc(imgs[r]))
            ax.set_xticks([])
            ax.set_yticks([])
            text = f"{steps} it"
            if probs_by_step is not None:
                text += f", p={float(probs_by_step[steps][r]):.2f}"
            elif final_probs is not None and c == cols - 1:
                text += f", p={final_probs[r]:.2f}"
            ax.set_title(text, fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r][:28], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if title else None)
    run.save_figure(fig, name)
