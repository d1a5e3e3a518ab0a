"""One progress-bar helper for everything that takes more than a few seconds."""
from __future__ import annotations

import contextlib
import sys
from typing import IO, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_bar_stream: IO[str] | None = None  # where bars go instead of sys.stderr (see bars_to)


@contextlib.contextmanager
def bars_to(stream: IO[str]) -> Iterator[None]:
    """Draw progress bars on ``stream`` (e.g. the terminal) while stderr is redirected (e.g. to a study's
    log), so a long run inside ``vislab study`` still shows its progress."""
    global _bar_stream
    previous, _bar_stream = _bar_stream, stream
    try:
        yield
    finally:
        _bar_stream = previous


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = False, **kwargs) -> "tqdm[T]":
    """A tqdm bar on stderr (or the stream of :func:`bars_to`), hidden when that is not a terminal (logs,
    CI) -- ``disable=None`` -- and on all but the first of several processes (torchrun)."""
    from .distributed import is_main

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=None if is_main() else True,
                dynamic_ncols=True, file=_bar_stream or sys.stderr, **kwargs)
