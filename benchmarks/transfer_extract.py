"""Feature extraction speed: vislab vs the straightforward loop, same run, same images.

Reference loop (what a course notebook does): torchvision ``ImageFolder`` + PIL transforms
(resize to 224x224, ToTensor, Normalize), ``DataLoader(batch_size=8, num_workers=2)``, the fp32
network under ``torch.no_grad``, ``.numpy()`` per batch, features kept in a list.

vislab: :func:`vislab.feature_cache.extract_features` (bf16 autocast where native -- or bf16 weights with
``--bf16-weights``, the faster choice for VGG16 -- channels_last, folded BatchNorm, in-place
activations, inference_mode, streaming to a fresh on-disk cache: the cache write is timed).

Each side runs in its own spawned process (``isolated.py``), the vislab one with
``vislab.allocator.retain_freed_memory`` as in the ``vislab`` command, and the reference both
without and with it. Each gets a warm-up batch, then ``--repeats`` timed passes, the processes
taking turns (ref, ref, vislab, ref, ...); the table shows median images/s and the ratio.
``--accuracy`` also extracts the whole train and test splits with vislab in fp32 and in bf16 and
compares LinearSVC(C=1) test accuracy.

    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/transfer_extract.py DATA_DIR \\
        --model vgg16 --no-weights --limit 200 [--bf16-weights]
    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/transfer_extract.py DATA_DIR \\
        --model efficientnet_lite0 --limit 600 --accuracy
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from isolated import Loop, time_loops


def reference_extractor(backbone, layer: str) -> nn.Module:
    """The network cut at ``layer`` the way one writes it by hand (no hooks)."""
    net = backbone.net
    path = backbone.module_path(layer)
    if backbone.name.startswith(("vgg", "alexnet")) and path.startswith("classifier."):
        idx = int(path.split(".")[1])
        return nn.Sequential(net.features, net.avgpool, nn.Flatten(1), *net.classifier[:idx + 1]).eval()
    if backbone.name.startswith("efficientnet_lite") and layer == "pooled":
        class Pooled(nn.Module):
            def forward(self, x):
                return net.forward_head(net.forward_features(x), pre_logits=True)
        return Pooled().eval()
    raise SystemExit(f"no hand-written reference for {backbone.name} {layer}; use vgg16 relu7 or efficientnet_lite* pooled")


def run_reference(data: Path, indices: list[int], backbone, layer: str, batch_size: int, workers: int) -> tuple[np.ndarray, float]:
    from torchvision import datasets, transforms as T

    pre = backbone.preprocess
    tf = T.Compose([T.Resize((pre.input_size, pre.input_size)), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    ds = torch.utils.data.Subset(datasets.ImageFolder(str(data / "train"), transform=tf), indices)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    model = reference_extractor(backbone, layer)
    feats = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            feats.append(model(x).numpy())
    return np.concatenate(feats), time.perf_counter() - t0


def run_vislab(images, extractor, batch_size: int, workers: int) -> tuple[np.ndarray, float]:
    from vislab.feature_cache import extract_features

    with tempfile.TemporaryDirectory() as cache:  # a fresh cache: every image goes through the network
        t0 = time.perf_counter()
        sets, _ = extract_features(images, extractor, cache_root=cache, resize="squash", batch_size=batch_size,
                                   workers=workers, desc="vislab")
        elapsed = time.perf_counter() - t0
        return np.array(sets[extractor.layers[0]].features), elapsed


def svm_accuracy(data: Path, backbone, layer: str, precision: str, cache: str, batch_size: int, workers: int,
                 bf16_weights: bool = False) -> float:
    from vislab.data.scenes import load_image_folder
    from vislab.feature_cache import extract_features
    from vislab.methods.features import FeatureExtractor
    from vislab.methods.linear import accuracy, fit_svm

    extractor = FeatureExtractor(backbone, [layer], precision=precision, bf16_weights=bf16_weights)
    train, test = load_image_folder(data)
    out = []
    for split in (train, test):
        sets, stats = extract_features(split, extractor, cache_root=cache, resize="squash", batch_size=batch_size,
                                       workers=workers, desc=f"{precision} {split.split}")
        out.append(sets[layer].arrays(l2=True))
    (Xtr, ytr), (Xte, yte) = out
    clf, _ = fit_svm(Xtr, ytr, 1.0)
    return accuracy(yte, clf.predict(Xte))


def build_reference_pass(data: Path, indices: list[int], model: str, weights: str, layer: str):
    from vislab.models.backbones import build_backbone

    torch.manual_seed(0)  # random weights (--no-weights) equal on both sides
    backbone = build_backbone(model, weights)
    size = backbone.preprocess.input_size
    with torch.no_grad():  # warm-up: oneDNN picks and packs kernels on first use
        reference_extractor(backbone, layer)(torch.rand(8, 3, size, size))
    return lambda: run_reference(data, indices, backbone, layer, batch_size=8, workers=2)[0]


def build_vislab_pass(data: Path, indices: list[int], model: str, weights: str, layer: str, precision: str,
                      bf16_weights: bool, batch_size: int, workers: int):
    from vislab.data.scenes import list_split
    from vislab.methods.features import FeatureExtractor
    from vislab.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(model, weights)
    extractor = FeatureExtractor(backbone, [layer], precision=precision, bf16_weights=bf16_weights)
    size = backbone.preprocess.input_size
    extractor(torch.rand(batch_size, 3, size, size))
    images = list_split(data, "train").subset(indices)
    return lambda: run_vislab(images, extractor, batch_size, workers)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="folder with train/<class>/ and test/<class>/ (e.g. 15-Scene)")
    p.add_argument("--model", default="efficientnet_lite0", help="backbone (default: efficientnet_lite0)")
    p.add_argument("--layer", default=None, help="feature layer (default: the backbone's, relu7 for VGG16)")
    p.add_argument("--no-weights", action="store_true", help="random weights (timing only; VGG16 offline)")
    p.add_argument("--limit", type=int, default=200, help="timed images, spread over the classes of train/ (default 200)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per side; medians are reported (default 3)")
    p.add_argument("--batch-size", type=int, default=16, help="vislab batch size (default 16; the reference uses 8)")
    p.add_argument("--workers", type=int, default=0, help="vislab decoding workers (default 0; the reference uses 2)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="vislab precision (default auto, as in vislab transfer: bf16 where the CPU runs it natively)")
    p.add_argument("--bf16-weights", action="store_true",
                   help="vislab keeps the weights in bf16 instead of autocasting them on every batch")
    p.add_argument("--accuracy", action="store_true",
                   help="also compare LinearSVC(C=1) test accuracy on full-data fp32 vs bf16 vislab features")
    p.add_argument("--cache", default=None, help="feature cache for --accuracy (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="where to write the results (default: benchmarks/results/)")
    args = p.parse_args(argv)

    from vislab.data.scenes import list_split
    from vislab.methods.features import FeatureExtractor
    from vislab.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(args.model, "none" if args.no_weights else "imagenet")
    layer = args.layer or backbone.default_layer
    train = list_split(args.data, "train")
    step = max(1, len(train) // args.limit)
    indices = list(range(0, len(train), step))[:args.limit]
    images = train.subset(indices)
    from torchvision import datasets

    ref_paths = [Path(datasets.ImageFolder(str(args.data / "train")).samples[i][0]) for i in indices]
    if ref_paths != images.paths:
        raise SystemExit("ImageFolder and vislab list the images in different orders; cannot compare")
    extractor = FeatureExtractor(backbone, [layer], precision=args.precision, bf16_weights=args.bf16_weights)
    weights = "none" if args.no_weights else "imagenet"
    prec = extractor.precision + (" weights" if extractor.bf16_weights else "")
    ref_name, ref_retain_name = "reference (fp32, batch 8, 2 workers)", "reference with vislab's allocator policy"
    vis_name = f"vislab ({prec}, batch {args.batch_size}, {args.workers} workers)"
    ref_args = (args.data, indices, args.model, weights, layer)
    loops = {ref_name: Loop(build_reference_pass, ref_args, vislab_allocator=False),
             ref_retain_name: Loop(build_reference_pass, ref_args),
             vis_name: Loop(build_vislab_pass, ref_args + (args.precision, args.bf16_weights, args.batch_size,
                                                           args.workers))}
    timings = time_loops(loops, steps=1, repeats=args.repeats, warmup=0,
                         report=lambda m: print(m, file=sys.stderr, flush=True))
    ref_feats, vis_feats = timings[ref_name].last, timings[vis_name].last
    cos = float(np.mean(np.sum(ref_feats * vis_feats, 1) /
                        (np.linalg.norm(ref_feats, axis=1) * np.linalg.norm(vis_feats, axis=1) + 1e-12)))
    n = len(indices)
    ref_ips, ref_retain_ips, vis_ips = (n * statistics.median(t.rates) for t in timings.values())
    result = {
        "model": args.model, "layer": layer, "weights": weights, "images": n, "repeats": args.repeats,
        "torch_threads": timings[vis_name].torch_threads, "process_per_side": True,
        "reference": {"images_per_s": ref_ips, "seconds": [1 / r for r in timings[ref_name].rates], "batch_size": 8,
                      "workers": 2, "precision": "fp32"},
        "reference_vislab_allocator": {"images_per_s": ref_retain_ips,
                                       "seconds": [1 / r for r in timings[ref_retain_name].rates]},
        "vislab": {"images_per_s": vis_ips, "seconds": [1 / r for r in timings[vis_name].rates],
                   "batch_size": args.batch_size, "workers": args.workers,
                   "precision": extractor.precision, "bf16_weights": extractor.bf16_weights, "channels_last": True,
                   "folded_bn": extractor.folded_bn},
        "speedup": vis_ips / ref_ips, "speedup_same_allocator": vis_ips / ref_retain_ips,
        "mean_cosine_reference_vs_vislab": cos,
    }
    print(f"\n{args.model} {layer}, {n} images of {args.data / 'train'}, median of {args.repeats}")
    print(f"{'pipeline':<44} {'images/s':>9}")
    for name, ips in ((ref_name, ref_ips), (ref_retain_name, ref_retain_ips), (vis_name, vis_ips)):
        print(f"{name:<44} {ips:>9.1f}")
    print(f"{'speed-up':<44} {vis_ips / ref_ips:>8.2f}x ({vis_ips / ref_retain_ips:.2f}x against the reference "
          f"with the same allocator policy)")
    print(f"mean cosine similarity of the features (reference fp32 vs vislab): {cos:.4f}")

    if args.accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            cache = args.cache or tmp
            acc = {prec: svm_accuracy(args.data, backbone, layer, prec, cache, args.batch_size, args.workers,
                                      args.bf16_weights)
                   for prec in ("fp32", "bf16")}
        result["svm_test_accuracy"] = acc
        result["bf16_minus_fp32_points"] = 100 * (acc["bf16"] - acc["fp32"])
        print(f"LinearSVC(C=1) test accuracy: fp32 {acc['fp32']:.4f}, bf16 {acc['bf16']:.4f} "
              f"({result['bf16_minus_fp32_points']:+.2f} points)")

    out = args.json or Path(__file__).parent / "results" / f"transfer_extract_{args.model}.json"
    from vislab.io import write_json

    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
