"""Reading image files of any mode into RGB, and finding image files under paths."""
from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    PIL's plain ``convert("RGB")`` is wrong for some modes, hence the cases:
    - transparency (RGBA, LA, PA, P with a transparent index): composite over ``background``
      instead of dropping alpha (which reveals arbitrary colour under transparent pixels);
    - 16/32-bit integer and float greyscale (I;16, I, F): rescale the value range to 0-255
      instead of clipping everything above 255 to white.
    """
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        else:
            top = float(arr.max()) if arr.size and arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


# What PIL raises on a file it cannot decode: not an image, truncated, corrupt (its plugins raise
# any of these), or a "decompression bomb" whose declared size exceeds Image.MAX_IMAGE_PIXELS twice.
DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
                 EOFError, struct.error, zlib.error)


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Run a block that decodes the image file ``path``: any decoding failure becomes an
    :class:`ImageReadError` naming the file, so a caller can report it and go on with the others."""
    try:
        yield
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: no such file") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused, too many pixels for an image ({e})") from e
    except DECODE_ERRORS as e:
        raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def load_image(path: str | Path, keep_grayscale: bool = False) -> Image.Image:
    """Open ``path`` and return an RGB image (8-bit greyscale stays "L" with ``keep_grayscale``: a
    caller that resizes can repeat the channel afterwards, at a third of the cost); raise
    :class:`ImageReadError` naming the file."""
    path = Path(path)
    with reading(path), Image.open(path) as img:
        img.load()
        if keep_grayscale and img.mode == "L":
            return ImageOps.exif_transpose(img)
        return to_rgb(img)


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into a list of image files, in order.

    Files named explicitly are kept whatever their suffix (a bad one fails later with its name);
    folders contribute files with a known image suffix.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()))
        else:
            found.append(p)
    return found
