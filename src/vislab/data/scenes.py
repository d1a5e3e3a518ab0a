"""15-Scene (Lazebnik et al. 2006, as distributed with the course) and any ``train/<class>/``,
``test/<class>/`` image folder.

The listing keeps paths and labels only (no pixels in memory): images are decoded batch by batch
(:mod:`vislab.data.image_files`), which is also where unreadable files are found and reported.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .download import cache_dir, download, safe_extract, sha256_file, tree_digest
from .images import IMAGE_SUFFIXES

SCENE_URL = "https://github.com/cdancette/deep-learning-polytech-tp6-7/raw/master/tp8/15ScenesData.zip"
# The course mirror publishes no digest of its zip (none found in public code either), and it
# could not be downloaded where this was written, so the archive bytes are not pinned. The check is
# on the extracted *content*, done in the temporary extraction folder before anything is moved into
# place: ``tree_digest`` over the relative paths and SHA-256 of every .jpg under the folder holding
# train/ and test/, pinned from the course copy of the data (4,485 JPEGs). A mirror that repacks the
# zip (other compression, dates) still passes; a changed image does not. Pass ``sha256=`` to check
# the archive bytes as well, before extraction.
SCENE_TREE_DIGEST = "b7a698115b70e35843ed0620e92091da912c89971ce1f5448c106930253ed92e"
SCENE_SPLITS = ("train", "test")
_VERIFIED_MARKER = ".vislab-tree-digest"


def fetch_15scene(dest: str | Path | None = None, *, url: str = SCENE_URL, sha256: str | None = None,
                  expected_tree: str | None = SCENE_TREE_DIGEST) -> Path:
    """Download and unpack 15-Scene; return the folder that holds ``train/`` and ``test/``.

    ``dest`` defaults to ``<vislab cache>/datasets/15scene``. The archive goes through
    :func:`download` (checked against ``sha256`` when given) and :func:`safe_extract`; the result
    is moved to ``dest`` only if its JPEG tree digest equals ``expected_tree`` (``None`` skips that
    check). A folder that already holds the verified data is returned without downloading.
    """
    dest = Path(dest) if dest is not None else cache_dir("datasets") / "15scene"
    if (dest / "train").is_dir() and (dest / "test").is_dir():
        if expected_tree is None or _verified(dest, expected_tree):
            return dest
        raise UserError(f"{dest} holds train/ and test/ folders whose content is not the 15-Scene data "
                        f"(tree digest differs from {expected_tree}); delete it or choose another --dest")
    archive = download(url, cache_dir("downloads") / Path(url).name, sha256)

    def accept(extracted: Path) -> Path:
        inner = _split_root(extracted)
        if inner is None:
            raise UserError(f"{url}: the archive has no train/ and test/ folders")
        if expected_tree is not None:
            got = tree_digest(inner, (".jpg",))
            if got != expected_tree:
                raise UserError(f"{url}: extracted images have tree digest {got}, expected {expected_tree} "
                                f"(corrupt or different archive)")
            (inner / _VERIFIED_MARKER).write_text(expected_tree)
        return inner

    return safe_extract(archive, dest, accept=accept, delete_bad_archive=True)


def _verified(root: Path, expected: str) -> bool:
    marker = root / _VERIFIED_MARKER
    if marker.is_file() and marker.read_text().strip() == expected:
        return True
    if tree_digest(root, (".jpg",)) == expected:
        marker.write_text(expected)
        return True
    return False


def _split_root(folder: Path) -> Path | None:
    """The folder at or below ``folder`` that holds train/ and test/ (the course zip nests them)."""
    candidates = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir() and not p.name.startswith(("_", ".")))
    for cand in candidates:
        if all((cand / s).is_dir() for s in SCENE_SPLITS):
            return cand
    return None


@dataclasses.dataclass
class ImageList:
    """The files of one split of an image-folder dataset: paths, integer labels, class names."""

    root: Path
    split: str
    paths: list[Path]
    labels: np.ndarray  # int64 (N,), index into classes
    classes: list[str]
    _digest: tuple[tuple, str] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """Content key of the split: relative path, class and SHA-256 of every file, in order.

        Any added, removed, renamed, relabelled or edited image changes it (a feature cache keyed
        by it can never serve features of other images). Hashing reads every file, so the result
        is kept until the list itself (split, classes, paths, labels) changes; an edit to a file's
        bytes after the first call is seen by a new listing, not by this object."""
        listing = (self.root, self.split, tuple(self.classes), tuple(self.paths), self.labels.tobytes())
        if self._digest is None or self._digest[0] != listing:
            h = hashlib.sha256(f"{self.split}\0{','.join(self.classes)}\n".encode())
            for path, label in zip(self.paths, self.labels.tolist()):
                rel = path.relative_to(self.root).as_posix()
                h.update(f"{rel}\0{label}\0{sha256_file(path)}\n".encode())
            self._digest = listing, h.hexdigest()
        return self._digest[1]

    def subset(self, indices) -> "ImageList":
        idx = list(indices)
        return ImageList(self.root, self.split, [self.paths[i] for i in idx], self.labels[idx], self.classes)


def list_split(root: str | Path, split: str, classes: list[str] | None = None) -> ImageList:
    """List ``root/split/<class>/*`` image files (sorted); ``classes`` fixes the label order."""
    root = Path(root)
    base = root / split
    if not base.is_dir():
        raise UserError(f"{base} does not exist: --data must be a folder with train/<class>/ and test/<class>/ "
                        f"sub-folders (get 15-Scene with `vislab data fetch 15scene`)")
    found = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise UserError(f"{base} has no class sub-folders; expected {split}/<class>/<image files>")
    if classes is None:
        classes = found
    elif found != list(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise UserError(f"{base}: class folders differ from the training set's "
                        f"(missing: {missing or 'none'}, unexpected: {extra or 'none'})")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (base / name).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise UserError(f"{base / name} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths.extend(files)
        labels.extend([label] * len(files))
    return ImageList(root, split, paths, np.asarray(labels, dtype=np.int64), list(classes))


def load_image_folder(root: str | Path) -> tuple[ImageList, ImageList]:
    """The train and test splits of ``root``; test uses the training set's class order."""
    train = list_split(root, "train")
    return train, list_split(root, "test", train.classes)
