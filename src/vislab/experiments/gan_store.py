"""What the ``vislab gan`` commands keep on disk, in one place (not a command itself).

* ``generator.pt`` of a training run: the generator's weights and the options that rebuild it,
  read by ``vislab gan sample`` / ``interpolate``.
* The evaluation's caches under ``cache_dir("gan")``: the MNIST classifier whose features FID / KID
  use (keyed by a digest of its training images, its architecture version and its settings, so
  every GAN run measures with the same network), and per evaluation setting the reference features
  with the real-vs-real baseline (a third of an evaluation's time, independent of the GAN).

Every file is written atomically and read with ``weights_only``.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data.download import cache_dir
from ..errors import UserError
from ..io import torch_load, torch_save
from ..precision import resolve_precision
from ..runs import PARTIAL_SUFFIX

GENERATOR_FILE = "generator.pt"


def save_generator(path: str | Path, g: nn.Module, *, model: str, nz: int, ngf: int, ndf: int,
                   image_size: int) -> Path:
    """``g``'s weights with what :func:`load_generator` needs to rebuild it."""
    return torch_save({"model": model, "nz": nz, "ngf": ngf, "ndf": ndf, "image_size": image_size,
                       "state_dict": g.state_dict()}, path)


def load_generator(path: str | Path | None, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The generator saved by a training run (its folder or its ``generator.pt``), in eval mode on
    ``device``, and the saved record (``model``, ``nz``, ...)."""
    from ..models.dcgan import build_gan

    if not path:
        raise UserError("give the training run to use with --run DIR (a folder written by `vislab gan`)")
    p = Path(path)
    if p.is_dir():
        p = p / GENERATOR_FILE
    if not p.is_file():
        hint = " (the run has not finished; finish it with `vislab gan ... --resume`)" \
            if Path(str(path) + PARTIAL_SUFFIX).exists() else ""
        raise UserError(f"--run {path}: no {GENERATOR_FILE} there{hint}; pass a folder written by `vislab gan`")
    blob = torch_load(p)
    g, _ = build_gan(blob["model"], nz=blob["nz"], ngf=blob["ngf"], ndf=blob["ndf"], image_size=blob["image_size"])
    g.load_state_dict(blob["state_dict"])
    return g.to(device).eval(), blob


def _classifier_key(images: torch.Tensor, labels: torch.Tensor, settings: dict[str, Any]) -> str:
    from ..models.mnist_classifier import ARCH_VERSION

    h = hashlib.sha256()
    h.update(ARCH_VERSION.encode())
    h.update(repr(sorted(settings.items())).encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


# Steps the measuring classifier trains for at least. Its 3 epochs are 1,407 steps on MNIST, but 48 on
# 2,000 digits, which gave a classifier 49% right on the test digits, useless for FID/KID and for
# judging a cGAN's digits; on the 4,000 training digits of the offline subset 300 steps gave 98.8%.
MIN_CLASSIFIER_STEPS = 300


def classifier_epochs(n_images: int, epochs: int, min_steps: int = MIN_CLASSIFIER_STEPS) -> int:
    """``epochs``, or more where a small training set would give fewer than ``min_steps`` steps (in
    :func:`~vislab.methods.digit_classifier.train_classifier`'s batches)."""
    from ..methods.digit_classifier import BATCH_SIZE

    return max(epochs, math.ceil(min_steps / math.ceil(n_images / BATCH_SIZE)))


def cached_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                      test_labels: torch.Tensor, *, epochs: int = 3, seed: int = 0, min_steps: int = MIN_CLASSIFIER_STEPS,
                      cache: str | Path | None = None) -> tuple[nn.Module, float, str]:
    """The cached MNIST classifier for this training set (trained on first use, for at least
    ``min_steps`` steps), its test accuracy and its cache key (a digest that also keys anything
    derived from the classifier).

    Images are uint8 ``(N, 28, 28)`` as :func:`vislab.data.mnist.load_mnist` gives them; the file
    is ``<cache>/mnist-classifier-<digest>.pt`` (``cache`` defaults to ``cache_dir("gan")``)."""
    from ..methods.digit_classifier import train_classifier
    from ..models.mnist_classifier import MnistClassifier, predict, prepare_digits

    # bf16 where the CPU runs it natively (as the recorded FID/KID were measured), else fp32: emulated
    # bf16 took 140 s for this small network; fp32 weights are a different classifier, so another key
    dtype = resolve_precision("auto", torch.device("cpu"))
    epochs = classifier_epochs(len(train_images), epochs, min_steps=min_steps)
    settings = {"epochs": epochs, "seed": seed} | ({} if dtype == torch.bfloat16 else {"precision": "fp32"})
    key = _classifier_key(train_images, train_labels, settings)
    path = Path(cache or cache_dir("gan")) / f"mnist-classifier-{key}.pt"
    if path.is_file():
        blob = torch_load(path)
        net = MnistClassifier()
        net.load_state_dict(blob["state_dict"])
        return net.eval(), float(blob["test_accuracy"]), key
    net = train_classifier(prepare_digits(train_images), train_labels, epochs=epochs, seed=seed, dtype=dtype)
    acc = (predict(net, prepare_digits(test_images)) == test_labels).float().mean().item()
    torch_save({"state_dict": net.state_dict(), "test_accuracy": acc}, path)
    return net, acc, key


def cached_reference(name: str, compute: Callable[[], tuple[torch.Tensor, dict[str, float]]]
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """The reference features and real-vs-real baseline kept as ``cache_dir("gan")/<name>.pt``
    (``compute()`` makes them on first use; ``name`` must say everything they depend on)."""
    path = cache_dir("gan") / f"{name}.pt"
    if path.is_file():
        cached = torch_load(path)
        return cached["f_test"], cached["baseline"]
    f_test, baseline = compute()
    torch_save({"f_test": f_test, "baseline": baseline}, path)
    return f_test, baseline
