"""``vislab transfer``: transfer learning on 15-Scene (or any train/<class>/, test/<class>/ folder)
with features of a frozen ImageNet CNN (SPEC Part A; Chatfield et al. 2014).

Every combination of ``--models`` x ``--layers`` x ``--resize`` is a feature variant; every
variant gets the LinearSVC at ``--c`` and, when asked, a C sweep chosen by cross-validation on
the training set, PCA variants, a linear head on the cached features and end-to-end fine-tuning.
One comparison table (stdout, ``variants.txt``, ``metrics.json["variants"]``) holds them all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

import torch

from ..config import RunConfig, add_command, option
from ..data.download import cache_dir
from ..data.image_files import bad_image_error
from ..data.scenes import ImageList, load_image_folder
from ..errors import UserError
from ..feature_cache import extract_features
from ..io import write_text
from ..methods import linear, trainers
from ..methods.features import FeatureExtractor
from ..models.backbones import build_backbone
from ..reporting import tables
from ..reporting.figures import transfer as figures
from ..runs import Run
from .options import BackboneOptions, ExecutorOptions
from .transfer_training import finetune_variant, scratch_baseline, variant_name, variant_row


@dataclasses.dataclass
class TransferConfig(ExecutorOptions, BackboneOptions, RunConfig):
    data: str | None = option(None, "folder with train/<class>/ and test/<class>/ image sub-folders "
                                    "(15-Scene: `vislab data fetch 15scene` prints where it is)")
    models: list[str] = option([], "several backbones compared in one run (replaces --model)")
    layer: str | None = option(None, "layer whose output is the feature: a friendly name (relu6, relu7, logits, "
                                     "pool5, pooled, block5, ...) or a module path; default: the backbone's "
                                     "(relu7 for VGG, pooled for EfficientNet/ResNet)")
    layers: list[str] = option([], "several layers compared in one run (one forward pass per backbone)")
    resize: list[Literal["squash", "crop"]] = option(
        ["squash"], "squash: resize to the input size, e.g. 224x224 (the course recipe); crop: resize the "
                    "shorter side then centre-crop (ImageNet evaluation); give both to compare")
    pool: Literal["avg", "max", "flatten"] = option(
        "avg", "how a convolutional layer's (C, h, w) output becomes a vector: global avg/max pooling or flatten")
    l2: bool = option(True, "L2-normalise every feature vector before the classifier")
    head: list[Literal["svm", "linear", "finetune", "scratch"]] = option(
        ["svm"], "classifiers: svm (LinearSVC on features), linear (new Linear layer trained on cached "
                 "features, backbone frozen), finetune (backbone + new layer trained end to end), scratch (a "
                 "small CNN trained from random weights on the same images and budget); several allowed")
    c: float = option(1.0, "LinearSVC regularisation C (test_accuracy is reported for this C)", min=0, min_exclusive=True)
    c_grid: list[float] = option([], "C values to sweep: C chosen by cross-validation on the training set "
                                     "only, test accuracy reported for every C (e.g. --c-grid 0.01 0.1 1 10 100)",
                                 min=0, min_exclusive=True)
    cv_folds: int = option(5, "cross-validation folds of the C sweep (stratified, shuffled with --seed)", min=2)
    pca: list[int] = option([], "PCA dimensions to try before the SVM (fit on train), e.g. --pca 64 256", min=1)
    head_epochs: int = option(100, "epochs of the linear head on cached features", min=1)
    head_lr: float = option(0.01, "Adam learning rate of the linear head", min=0, min_exclusive=True)
    head_weight_decay: float = option(1e-4, "weight decay of the linear head", min=0)
    finetune_layers: list[str] = option([], "layers whose head is fine-tuned end to end (each a separate "
                                            "training; default: every layer of --layers)")
    finetune_epochs: int = option(3, "epochs of end-to-end fine-tuning", min=1)
    finetune_lr: float = option(0.01, "SGD learning rate of the new layer when fine-tuning", min=0, min_exclusive=True)
    backbone_lr_mult: float = option(0.1, "backbone learning rate = finetune-lr x this when fine-tuning "
                                          "(0 freezes the backbone)", min=0)
    finetune_batch_size: int = option(16, "images per fine-tuning step (and per step of the CNN trained from scratch)",
                                      min=1)
    scratch_epochs: int | None = option(None, "epochs of the CNN trained from scratch (default: --finetune-epochs, "
                                              "the same budget)", min=1)
    scratch_lr: float = option(1e-3, "Adam learning rate of the CNN trained from scratch (weight decay 1e-4)",
                               min=0, min_exclusive=True)
    scratch_size: int = option(128, "input size in pixels (square) of the CNN trained from scratch", min=16, max=1024)
    scratch_width: int = option(32, "channels of the first of the 4 blocks of the CNN trained from scratch "
                                    "(doubling at each block)", min=1, max=512)
    precision: Literal["auto", "bf16", "fp32"] = option(
        "auto", "inference precision: bf16 autocast (fast on CPUs with AMX/AVX512-BF16 and on GPUs), fp32, "
                "or auto (bf16 where the hardware has it)")
    batch_size: int = option(16, "images per forward pass during extraction and evaluation", min=1,
                             resume_safe=True)
    workers: int = option(0, "image-decoding worker processes; 0 decodes in the main process, best on few cores "
                             "where workers compete with the network's threads; raise it on larger machines",
                          min=0, resume_safe=True)
    channels_last: bool = option(True, "run convolutions on channels_last tensors (faster with oneDNN/cuDNN)")
    bf16_weights: bool = option(False, "with bf16: keep the weights in bf16 instead of autocasting them on every "
                                       "batch (faster for VGG's large fully-connected layers)")
    fold_bn: bool = option(True, "fold BatchNorm into the preceding convolution for extraction (faster, same "
                                 "features up to rounding)")
    skip_bad: bool = option(False, "leave unreadable images out (counted in metrics.json) instead of failing")
    cache: str | None = option(None, "feature cache folder (default: <vislab cache>/features); "
                                     "keyed by image content, backbone, weights, layer and preprocessing; "
                                     "checked on every load", resume_safe=True)
    resume: bool = option(False, "continue an interrupted run: each fine-tuning / scratch training from its checkpoint "
                                 "(feature extraction always resumes from its cache)", resume_safe=True)
    max_minutes: float = option(0.0, "pause each fine-tuning / scratch training after this many minutes, keeping a "
                                     "checkpoint for --resume (0: no limit)", min=0, resume_safe=True)
    stop_after_steps: int = option(0, "pause each fine-tuning / scratch training after this many steps in all "
                                      "(counted over sessions), keeping a checkpoint for --resume (0: no limit)",
                                   min=0, resume_safe=True)


TABLE_COLUMNS = {"model": "model", "layer": "layer", "resize": "resize", "dim": "dim", "head": "classifier",
                 "C": "C", "test_accuracy": "test acc", "seconds": "seconds"}


def register(subparsers) -> None:
    add_command(subparsers, "transfer", TransferConfig, transfer,
                help="15-Scene transfer learning: CNN features of any layer + LinearSVC, C sweep, PCA, "
                     "linear head, fine-tuning, a CNN from scratch; cached, bf16 extraction",
                description="Extract features of a frozen ImageNet CNN (cached on disk), classify them with "
                            "LinearSVC and the other classifiers asked for, and compare every variant.")


def _check(cfg: TransferConfig) -> None:
    # the numeric options' ranges are checked when the config is built
    if not cfg.data:
        raise UserError("--data DIR is required: a folder with train/<class>/ and test/<class>/ images "
                        "(get 15-Scene with `vislab data fetch 15scene`)")
    if cfg.layers or cfg.layer:  # else the backbone's default layer: checked once it is known
        _finetuned(cfg, [{"layer": layer} for layer in cfg.layers or [cfg.layer]])
    if cfg.executor == "ray":
        from ..cluster import import_ray

        import_ray()  # before the run folder exists: without Ray, say how to install it


def _finetuned(cfg: TransferConfig, variants: list[dict]) -> list[tuple[int, dict]]:
    """(index, variant) of the variants ``--finetune-layers`` selects (all when it is empty)."""
    layers = [v["layer"] for v in variants]
    unknown = [layer for layer in cfg.finetune_layers if layer not in layers]
    if unknown:
        raise UserError(f"--finetune-layers {' '.join(unknown)}: not among the extracted layers "
                        f"({' '.join(dict.fromkeys(layers))}); choose from those or add them to --layers")
    return [(i, v) for i, v in enumerate(variants) if not cfg.finetune_layers or v["layer"] in cfg.finetune_layers]


def transfer(cfg: TransferConfig) -> int:
    _check(cfg)
    with Run("transfer", cfg, resume=cfg.resume) as run:
        train, test = load_image_folder(cfg.data)
        cache_root = Path(cfg.cache) if cfg.cache else cache_dir("features")
        with _chunk_source(cfg) as chunk_source:
            variants, extraction = _extract_all(cfg, run, train, test, cache_root, chunk_source)
        bad = sorted({str(p) for v in variants for fs in v["sets"] for p in fs.bad_paths})
        if bad and not cfg.skip_bad:
            raise bad_image_error(bad)
        m = run.metrics
        m.update(data=str(cfg.data), classes=train.classes, n_train=len(train), n_test=len(test),
                 bad_images=len(bad), bad_files=bad, C=cfg.c, l2=cfg.l2, pool=cfg.pool,
                 cache_hit=all(e["cache_hit"] for e in extraction),
                 extracted_images=sum(e["images"] for e in extraction), extraction=extraction)
        # (variants row, (test labels, predictions) or None) for every classifier, in table order
        results = [r for i, v in enumerate(variants) for r in _classify(cfg, run, v, train.classes, primary=i == 0)]
        if "finetune" in cfg.head:
            for i, v in _finetuned(cfg, variants):
                row, trained = finetune_variant(cfg, run, v, (train, test), index=i)
                results.append((row, (trained.y_true, trained.y_pred)))
        if "scratch" in cfg.head:
            row, trained = scratch_baseline(cfg, run, (train, test), tuple(fs.valid for fs in variants[0]["sets"]))
            results.append((row, (trained.y_true, trained.y_pred)))
        for checkpoint in run.dir.glob("checkpoint-*.pt"):  # every training finished: none is resumed any more
            checkpoint.unlink()
        _summarise(run, [row for row, _ in results], results[0][1], train.classes)
    return 0


def _summarise(run: Run, rows: list[dict], first_predictions: tuple, classes: list[str]) -> None:
    m = run.metrics
    m["variants"] = rows
    m["test_accuracy"] = rows[0]["test_accuracy"]
    m["best_variant"] = max(rows, key=lambda r: r["test_accuracy"])
    m["confusion_pairs"] = linear.confusion_pairs(*first_predictions, classes)
    table = tables.markdown_table(rows, TABLE_COLUMNS, {"C": "g", "test_accuracy": ".4f", "seconds": ".2f"})
    print(table)
    write_text(run.path("variants.txt"), table + "\n")
    if len(rows) > 1:
        figures.variant_comparison(run.path("comparison.png"),
                                   [f"{r['model']}/{r['layer']}/{r['resize']}\n{r['head']}" for r in rows],
                                   [r["test_accuracy"] for r in rows])


def _chunk_source(cfg: TransferConfig):
    """Who extracts the feature cache's missing chunks: this process, or Ray tasks (``--executor ray``)."""
    if cfg.executor == "local":
        return contextlib.nullcontext(None)
    from ..feature_shards import RayChunks

    return RayChunks(cfg.address, cfg.task_cpus(), inputs=[str(Path(cfg.data).absolute())])


def _extract_all(cfg: TransferConfig, run: Run, train: ImageList, test: ImageList, cache_root: Path,
                 chunk_source=None):
    variants, extraction = [], []
    for model in cfg.models or [cfg.model]:
        torch.manual_seed(cfg.seed)  # random init (--no-weights) depends on the seed only, not on order
        backbone = build_backbone(model, cfg.weights, run.device)
        layers = cfg.layers or [cfg.layer or backbone.default_layer]
        extractor = FeatureExtractor(backbone, layers, precision=cfg.precision, pool=cfg.pool,
                                     channels_last=cfg.channels_last, fold_bn=cfg.fold_bn,
                                     bf16_weights=cfg.bf16_weights, device=run.device)
        for resize in cfg.resize:
            sets = {}
            for split in (train, test):
                feats, stats = extract_features(split, extractor, cache_root=cache_root, resize=resize,
                                                batch_size=cfg.batch_size, workers=cfg.workers,
                                                desc=f"{model} {split.split}", chunk_source=chunk_source)
                sets[split.split] = feats
                extraction.append({"model": model, "resize": resize, "split": split.split, "layers": layers,
                                   "images": stats.images, "seconds": round(stats.seconds, 3),
                                   "images_per_s": stats.images_per_s and round(stats.images_per_s, 2),
                                   "cache_hit": stats.cache_hit, "precision": extractor.precision})
                print(f"{model} {split.split} ({resize}): "
                      + (f"cache hit, {stats.seconds:.1f} s" if stats.cache_hit else
                         f"extracted {stats.images} images in {stats.seconds:.1f} s "
                         f"({stats.images_per_s:.1f} images/s, {extractor.precision})"), file=sys.stderr)
            # one pass reads every layer: each layer's variant is charged an equal share of its time
            share = sum(e["seconds"] for e in extraction[-2:]) / len(layers)
            for layer in layers:
                variants.append({"model": model, "layer": layer, "resize": resize, "backbone": backbone,
                                 "sets": (sets["train"][layer], sets["test"][layer]), "extraction_seconds": share})
    return variants, extraction


def _classify(cfg: TransferConfig, run: Run, v: dict, classes: list[str],
              primary: bool) -> list[tuple[dict, tuple | None]]:
    """The classifiers on the variant's cached features: (variants row, (test labels, predictions) or None).
    A row's seconds: the variant's extraction share + its classifier's fit and prediction (figures left out)."""
    tr, te = v["sets"]
    Xtr, ytr = tr.arrays(cfg.l2)
    Xte, yte = te.arrays(cfg.l2)
    name, base = variant_name(v), variant_row(v, Xtr.shape[1])
    title = f"{v['model']} {v['layer']} ({v['resize']})"

    def seconds_since(t0: float) -> float:
        return round(v["extraction_seconds"] + time.perf_counter() - t0, 3)

    results: list[tuple[dict, tuple | None]] = []
    if "svm" in cfg.head or cfg.c_grid or cfg.pca:
        t0 = time.perf_counter()
        clf, fit_s = linear.fit_svm(Xtr, ytr, cfg.c, cfg.seed)
        pred = clf.predict(Xte)
        acc = linear.accuracy(yte, pred)
        results.append(({**base, "head": "svm", "C": cfg.c, "test_accuracy": acc, "fit_seconds": round(fit_s, 3),
                         "seconds": seconds_since(t0)}, (yte, pred)))
        per_class = linear.per_class_accuracy(yte, pred, len(classes))
        if primary:
            run.metrics["per_class_accuracy"] = dict(zip(classes, per_class.tolist()))
        figures.confusion(run.path(f"confusion_{name}.png"), yte, pred, classes, per_class,
                          f"{title} + LinearSVC(C={cfg.c:g}): {acc:.3f}")
    if cfg.c_grid:
        t0 = time.perf_counter()
        sweep = linear.c_sweep(Xtr, ytr, Xte, yte, cfg.c_grid, cfg.cv_folds, cfg.seed)
        run.metrics.setdefault("c_sweep", {})[name] = sweep
        results.append(({**base, "head": "svm (C by CV)", "C": sweep["best_C"],
                         "test_accuracy": sweep["test_accuracy_at_best_C"], "cv_accuracy": max(sweep["cv_accuracy"]),
                         "seconds": seconds_since(t0)}, None))
        figures.c_sweep(run.path(f"c_sweep_{name}.png"), sweep["C"], sweep["cv_accuracy"], sweep["cv_std"],
                        sweep["test_accuracy"], sweep["best_C"], sweep["folds"], title)
    for k in cfg.pca:
        t0 = time.perf_counter()
        res = linear.pca_svm(Xtr, ytr, Xte, yte, k, cfg.c, cfg.seed)
        results.append(({**base, "head": f"pca{res['n_components']}+svm", "C": cfg.c,
                         "test_accuracy": res["test_accuracy"], "fit_seconds": round(res["fit_seconds"], 3),
                         "explained_variance": round(res["explained_variance"], 4),
                         "seconds": seconds_since(t0)}, None))
    if "linear" in cfg.head:
        t0 = time.perf_counter()
        head, hist = trainers.train_linear_head(Xtr, ytr, Xte, yte, len(classes), epochs=cfg.head_epochs,
                                              lr=cfg.head_lr, weight_decay=cfg.head_weight_decay, seed=cfg.seed)
        with torch.no_grad():
            pred = head(torch.as_tensor(Xte, dtype=torch.float32)).argmax(1).numpy()
        results.append(({**base, "head": "linear", "test_accuracy": hist["test_accuracy"][-1],
                         "train_accuracy": hist["train_accuracy"][-1], "epochs": cfg.head_epochs,
                         "seconds": seconds_since(t0)}, (yte, pred)))
        run.metrics.setdefault("linear_head", {})[name] = hist
        figures.training_curves(run.path(f"linear_head_{name}.png"), **hist,
                                title=f"linear head on {v['layer']} features (backbone frozen)")
    return results
