"""The trainings of ``vislab transfer`` that read the images themselves: end-to-end fine-tuning of a
backbone, and a small CNN trained from scratch on the same images and budget (the baseline of
question A5). Both run through the one fit loop with a checkpoint each in the run folder
(``checkpoint-<name>.pt``, refused on ``--resume`` with other options), kept until the whole run has
finished so that a resumed run also skips the trainings already done.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..config import resume_identity
from ..data.image_files import ShuffledImageBatches, image_loader
from ..data.scenes import ImageList
from ..methods import trainers
from ..models.backbones import Preprocess
from ..models.small_cnn import SmallCNN
from ..precision import resolve_precision
from ..reporting.figures import transfer as figures
from ..runs import Run
from ..training import Checkpoint, Plan, fit

if TYPE_CHECKING:
    from .transfer import TransferConfig


@dataclasses.dataclass
class ImageTraining:
    curves: dict[str, list[float]]  # per-epoch train_loss, train_accuracy, test_accuracy
    seconds: float  # training + per-epoch evaluation, over every session of a resumed run
    y_true: np.ndarray  # the test labels and the final network's predictions
    y_pred: np.ndarray
    params: int


def variant_name(v: dict) -> str:
    """File-name-safe ``model_layer_resize`` of a feature variant."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join((v["model"], v["layer"], v["resize"]))).strip("-")


def variant_row(v: dict, dim: int) -> dict:
    """The columns every variants row of a feature variant starts with."""
    return {"model": v["model"], "layer": v["layer"], "resize": v["resize"], "dim": dim}


def finetune_variant(cfg: TransferConfig, run: Run, v: dict, images: tuple[ImageList, ImageList],
                     index: int) -> tuple[dict, ImageTraining]:
    """Fine-tune the variant's backbone end to end from its layer: its variants row and training."""
    backbone, name = v["backbone"], variant_name(v)
    torch.manual_seed(cfg.seed)  # the new layer's initial weights
    net = trainers.FineTuneNet(backbone, v["layer"], len(images[0].classes), pool=cfg.pool).to(run.device)
    pre = backbone.preprocess
    trained = train_on_images(cfg, run, net, trainers.finetune_optimizer(net, cfg.finetune_lr, cfg.backbone_lr_mult),
                              images, (v["sets"][0].valid, v["sets"][1].valid), pre.pixel_transform(v["resize"]),
                              pre.input_size, epochs=cfg.finetune_epochs, name=f"finetune-{index}",
                              desc=f"fine-tuning {name}")
    run.metrics.setdefault("finetune", {})[name] = trained.curves
    figures.training_curves(run.path(f"finetune_{name}.png"), **trained.curves,
                            title=f"fine-tuning {v['model']} end to end from {v['layer']}")
    return {**variant_row(v, net.head.in_features), **_row(trained, "finetune", cfg.finetune_epochs)}, trained


def scratch_baseline(cfg: TransferConfig, run: Run, images: tuple[ImageList, ImageList],
                     readable: tuple[np.ndarray, np.ndarray]) -> tuple[dict, ImageTraining]:
    """:class:`SmallCNN` trained from random weights on the same images, batch size and epochs as
    fine-tuning (``--scratch-epochs`` when given): its variants row and training."""
    epochs, size, resize = cfg.scratch_epochs or cfg.finetune_epochs, cfg.scratch_size, cfg.resize[0]
    torch.manual_seed(cfg.seed)  # the initial weights
    net = SmallCNN(len(images[0].classes), width=cfg.scratch_width).to(run.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.scratch_lr, weight_decay=1e-4)
    transform = Preprocess(input_size=size, resize=size * 256 // 224).pixel_transform(resize)
    trained = train_on_images(cfg, run, net, optimizer, images, readable, transform, size, epochs=epochs,
                              name="scratch", desc="CNN from scratch")
    run.metrics["scratch"] = trained.curves
    figures.training_curves(run.path("scratch.png"), **trained.curves,
                            title=f"small CNN trained from scratch ({size} px, {trained.params:,} parameters)")
    row = {"model": "small_cnn", "layer": "pooled", "resize": resize, "dim": net.feature_dim, "input_size": size}
    return {**row, **_row(trained, "scratch", epochs)}, trained


def _row(trained: ImageTraining, head: str, epochs: int) -> dict:
    return {"head": head, "test_accuracy": trained.curves["test_accuracy"][-1],
            "train_accuracy": trained.curves["train_accuracy"][-1], "epochs": epochs,
            "seconds": trained.seconds, "params": trained.params}


def train_on_images(cfg: TransferConfig, run: Run, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    images: tuple[ImageList, ImageList], readable: tuple[np.ndarray, np.ndarray],
                    transform: Callable, size: int, *, epochs: int, name: str, desc: str) -> ImageTraining:
    """Train ``net`` end to end with cross-entropy on the readable training images, in batches of
    ``--finetune-batch-size`` shuffled with ``--seed``; evaluated on the readable test images after
    each epoch."""
    (train, test), (train_ok, test_ok), square = images, readable, (size, size)
    dtype = resolve_precision(cfg.precision, run.device)
    trainer = trainers.EndToEndTrainer(net, optimizer, run.device, dtype, cfg.channels_last)
    data = ShuffledImageBatches([p for p, ok in zip(train.paths, train_ok) if ok], transform, square,
                                train.labels[train_ok], cfg.finetune_batch_size, cfg.workers)
    test_loader = image_loader([p for p, ok in zip(test.paths, test_ok) if ok], transform, square,
                               labels=test.labels[test_ok], batch_size=cfg.batch_size, workers=cfg.workers)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(epoch: int, means: dict, train_seconds: float) -> dict:
        test_accuracy, y_true, y_pred = trainers.evaluate(net, test_loader, run.device, dtype, cfg.channels_last)
        predictions["test"] = (y_true, y_pred)
        return {**trainers.epoch_curves(trainer), "test_accuracy": test_accuracy}

    result = fit(trainer, data, Plan(epochs, data.steps_per_epoch), rngs=_rngs(cfg.seed, run.device),
                 checkpoint=Checkpoint(run.path(f"checkpoint-{name}.pt"), resume_identity(cfg)),
                 resume=cfg.resume, evaluate=evaluate, max_minutes=cfg.max_minutes,
                 stop_after_steps=cfg.stop_after_steps, desc=desc)
    if "test" not in predictions:  # resumed after this training had finished: its final weights came back
        predictions["test"] = trainers.evaluate(net, test_loader, run.device, dtype, cfg.channels_last)[1:]
    return ImageTraining(trainers.as_curves(result.history), round(sum(row["seconds"] for row in result.history), 3),
                         *predictions["test"], params=sum(p.numel() for p in net.parameters()))


def _rngs(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """The data order's generator, and torch's global one: dropout draws from it (and the test loader
    its workers' seeds), so that a resumed training continues the same streams."""
    rngs = {"order": torch.Generator().manual_seed(seed), "global": torch.default_generator}
    if device.type == "cuda":
        rngs["cuda"] = torch.cuda.default_generators[device.index if device.index is not None
                                                     else torch.cuda.current_device()]
    return rngs
