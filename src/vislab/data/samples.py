"""Labelled image sets for the part-B experiments (saliency, fooling, class visualisation).

Three sources, one result (:class:`SampleSet`: PIL images, ImageNet labels or None, names):

- ``foolbox``: the 20 ImageNet photos (224x224 JPEG) that the PyPI package ``foolbox==3.3.4``
  carries as ``foolbox/data/imagenet_NN_<label>.jpg``. They are read from the installed package
  folder, located with ``importlib.util.find_spec`` -- which finds a top-level package without
  running its ``__init__`` (importing foolbox would pull in eagerpy and friends for nothing).
- a CS231n-style ``.npz``: ``X`` uint8 (N, H, W, 3) and ``y`` int (N,) ImageNet class indices.
  Any other array (CS231n's ``label_map`` is a pickled dict) is ignored: the file is opened with
  ``allow_pickle=False``, since pickles can run code, and class names come from ImageNet's list.
- image files and folders (:func:`vislab.data.images.find_images`), without labels.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .images import find_images, load_image

FOOLBOX_NAME = re.compile(r"^imagenet_(\d+)_(\d+)\.(jpg|jpeg|png)$")
SAMPLE_SETS = ("foolbox",)


@dataclasses.dataclass
class SampleSet:
    images: list[Image.Image]
    labels: list[int | None]
    names: list[str]
    source: str


def foolbox_data_dir() -> Path:
    """Folder of foolbox's sample images, found without importing foolbox."""
    spec = importlib.util.find_spec("foolbox")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        data = Path(loc) / "data"
        if data.is_dir():
            return data
    raise UserError("the 'foolbox' sample photos come from the PyPI package foolbox==3.3.4 "
                    "(only its data folder is read): pip install foolbox==3.3.4, or give --images PATH")


def load_foolbox_samples(data_dir: str | Path | None = None) -> SampleSet:
    """The labelled ImageNet photos ``imagenet_NN_<label>.jpg`` of foolbox, in NN order."""
    data_dir = Path(data_dir) if data_dir is not None else foolbox_data_dir()
    found = []
    for p in data_dir.iterdir():
        m = FOOLBOX_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), p))
    if not found:
        raise UserError(f"{data_dir}: no imagenet_NN_<label>.jpg photos found (is foolbox 3.3.4 installed?)")
    found.sort()
    return SampleSet(images=[load_image(p) for _, _, p in found], labels=[lab for _, lab, _ in found],
                     names=[p.stem for _, _, p in found], source=str(data_dir))


def load_npz(path: str | Path) -> SampleSet:
    """A CS231n-style ``.npz``: ``X`` uint8 (N, H, W, 3) and optional ``y`` (N,); other arrays are ignored."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read as .npz ({e})") from e
    with data:
        if "X" not in data.files:
            raise UserError(f"{path}: no array 'X' (expected X uint8 of shape (N, H, W, 3) and y)")
        X = data["X"]
        y = data["y"] if "y" in data.files else None
    if X.ndim != 4 or X.shape[-1] != 3:
        raise UserError(f"{path}: X has shape {X.shape}; expected (N, H, W, 3) (NHWC, RGB)")
    if X.dtype != np.uint8:
        if np.issubdtype(X.dtype, np.floating) and X.size and X.min() >= 0 and X.max() <= 1:
            X = np.round(X * 255).astype(np.uint8)
        else:
            raise UserError(f"{path}: X has dtype {X.dtype}; expected uint8 pixels (or floats in [0, 1])")
    if y is not None and len(y) != len(X):
        raise UserError(f"{path}: {len(y)} labels in y for {len(X)} images in X")
    labels = [int(v) for v in y] if y is not None else [None] * len(X)
    return SampleSet(images=[Image.fromarray(img, "RGB") for img in X], labels=labels,
                     names=[f"{path.stem}_{i:02d}" for i in range(len(X))], source=str(path))


def load_paths(paths: Sequence[str | Path]) -> SampleSet:
    """Image files, folders and ``.npz`` files, in the order given (labels only from .npz)."""
    images, labels, names = [], [], []
    plain: list[Path] = []

    def flush() -> None:
        for p in find_images(plain):
            images.append(load_image(p))
            labels.append(None)
            names.append(p.stem)
        plain.clear()

    for p in map(Path, paths):
        if p.suffix.lower() == ".npz":
            flush()
            part = load_npz(p)
            images += part.images
            labels += part.labels
            names += part.names
        else:
            plain.append(p)
    flush()
    return SampleSet(images=images, labels=labels, names=names, source=", ".join(map(str, paths)))


def load_samples(images: Sequence[str | Path] = (), samples: str | None = None,
                 limit: int | None = None) -> SampleSet:
    """The images of ``images`` (files, folders, .npz) and/or of the sample set ``samples``
    (sample set first), the first ``limit`` of them when given."""
    if not images and not samples:
        raise UserError("no input images: give --images PATH [PATH ...] (files, folders, .npz) "
                        "or --samples foolbox")
    sets = []
    if samples == "foolbox":
        sets.append(load_foolbox_samples())
    elif samples is not None:
        raise UserError(f"--samples {samples!r}: choose one of {', '.join(SAMPLE_SETS)}")
    if images:
        sets.append(load_paths(images))
    out = SampleSet([], [], [], " + ".join(s.source for s in sets))
    for s in sets:
        out.images += s.images
        out.labels += s.labels
        out.names += s.names
    if limit is not None:
        out = SampleSet(out.images[:limit], out.labels[:limit], out.names[:limit], out.source)
    if not out.images:
        raise UserError(f"no images found in {out.source}")
    return out


def to_batch(images: Sequence[Image.Image], preprocess, mode: str = "crop") -> torch.Tensor:
    """PIL images -> (N, 3, S, S) float pixels in [0, 1] at the model's input size S.

    An image that already is S x S is only converted (no resampling): the sample photos and
    CS231n arrays are stored at 224, and a fooling perturbation must be measured against the
    real photo, not against a resampled copy of it.
    """
    from torchvision.transforms.functional import to_tensor

    size = preprocess.input_size
    transform = preprocess.pixel_transform(mode)
    return torch.stack([to_tensor(im) if im.size == (size, size) else transform(im) for im in images])
