"""One progress-bar helper for everything that takes more than a few seconds."""
from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = False, **kwargs) -> "tqdm[T]":
    """A tqdm bar on stderr, hidden when stderr is not a terminal (logs, CI) -- ``disable=None``."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=None, dynamic_ncols=True, **kwargs)
