"""Downloads with a SHA-256 check, safe archive extraction, and the local cache folder."""
from __future__ import annotations

import hashlib
import os
import platform
import re
import secrets
import shutil
import stat
import tarfile
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from ..errors import DownloadError, UserError
from ..io import atomic_path, ensure_dir
from ..progress import progress


def cache_dir(*parts: str) -> Path:
    """vislab's cache folder: ``$VISLAB_CACHE``, else ``~/.cache/vislab`` (created)."""
    root = Path(os.environ.get("VISLAB_CACHE", Path.home() / ".cache" / "vislab"))
    return ensure_dir(root.joinpath(*parts), where="$VISLAB_CACHE")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_digest(root: str | Path, suffixes: tuple[str, ...] = ()) -> str:
    """SHA-256 over the relative paths and contents of the files under ``root`` (sorted), optionally
    only those with one of ``suffixes``: a content key for a dataset folder."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and (not suffixes or p.suffix.lower() in suffixes))
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically, with a progress bar; check ``sha256`` if given.

    An existing ``dest`` with the right checksum is reused.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, progress(desc=f"download {dest.name}", total=total, unit="B",
                                                  unit_scale=True) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
            if sha256 is not None:
                got = sha256_file(tmp)
                if got != sha256:
                    raise DownloadError(f"{url}: SHA-256 {got} does not match the expected {sha256}; "
                                        f"the file was not kept", reason="the file's SHA-256 did not match")
    except OSError as e:
        # a URLError's reason is the cause without the URL ("[Errno -2] Name or service not known")
        raise DownloadError(f"cannot download {url}: {e}", reason=str(getattr(e, "reason", e))) from e
    return dest


def failure_phrase(e: UserError) -> str:
    """A fetch's failure in a few words: a download's cause once (not every URL tried), else the message."""
    return f"the download failed ({e.reason})" if isinstance(e, DownloadError) else str(e)


# tarfile's extraction filters came in these releases (PEP 706); older ones cannot extract safely.
_DATA_FILTER_VERSIONS = "3.10.12, 3.11.4, 3.12 or newer"


def safe_extract(archive: str | Path, dest: str | Path, *, accept: Callable[[Path], Path],
                 include: Callable[[str], bool] | None = None, delete_bad_archive: bool = False) -> Path:
    """Extract the zip or tar ``archive`` and put the part ``accept`` approves at ``dest``.

    Only members whose name passes ``include`` (all by default) are extracted, into a fresh folder
    next to ``dest``. Each must be a regular file or a folder with a relative name free of ``..``:
    links, devices and fifos are refused, whatever they point at, before anything is written (the
    datasets are trees of plain files, so a link can only mean a doctored archive, and judging
    where a link leads is how chains of links and hard links got through before). Tar members then
    go through the standard library's ``data`` extraction filter as well. ``accept``
    receives the extracted folder, checks its content (raising :class:`UserError`) and returns the
    folder inside it to keep; only that is moved to ``dest`` (replacing what was there). On any
    error nothing is left behind and ``dest`` is untouched; with ``delete_bad_archive`` the archive
    is deleted too, so that a retry downloads it again.
    """
    archive, dest = Path(archive), Path(dest)
    is_zip = zipfile.is_zipfile(archive)
    if not is_zip and tarfile.is_tarfile(archive) and not hasattr(tarfile, "data_filter"):
        raise UserError(f"cannot extract {archive} safely with Python {platform.python_version()}: its tarfile "
                        f"lacks the 'data' extraction filter; use Python {_DATA_FILTER_VERSIONS}")
    tmp = None
    try:
        try:
            if is_zip:
                with zipfile.ZipFile(archive) as zf:
                    members = _checked_zip_members(archive, zf, include)
                    tmp = _fresh_folder_beside(dest)
                    zf.extractall(tmp, members=members)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tf:
                    members = _checked_tar_members(archive, tf, include)
                    tmp = _fresh_folder_beside(dest)
                    tf.extractall(tmp, members=members, filter="data")
            else:
                raise UserError(f"{archive} is neither a zip nor a tar archive")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            raise UserError(f"cannot extract {archive} ({e})") from e
        replace_dir(accept(tmp), dest)
    except UserError as e:
        if not delete_bad_archive:
            raise
        archive.unlink(missing_ok=True)
        raise UserError(f"{e}; {archive} was deleted: retry to download it again") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _fresh_folder_beside(dest: Path) -> Path:
    """A new, empty folder next to ``dest`` (same filesystem, so the final move is a rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.extracting"
    tmp.mkdir()  # fails rather than reuse anything: nothing in it a member could be written through
    return tmp


def _refuse(archive: Path, name: str, why: str) -> UserError:
    return UserError(f"{archive}: member {name!r} {why}; refusing to extract any of it")


def _check_name(archive: Path, name: str) -> None:
    # Zip names may use either slash and a drive letter, whatever system extracts them.
    parts = re.split(r"[/\\]", name)
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, name, "has an absolute path")
    if ".." in parts:
        raise _refuse(archive, name, "has a '..' component that would lead outside the destination")


def _checked_tar_members(archive: Path, tf: tarfile.TarFile, include: Callable[[str], bool] | None):
    members = [m for m in tf.getmembers() if include is None or include(m.name)]
    for m in members:
        _check_name(archive, m.name)
        if not (m.isreg() or m.isdir()):
            kind = ("a symbolic link" if m.issym() else "a hard link" if m.islnk()
                    else "a device or fifo" if m.isdev() else f"of tar type {m.type!r}")
            raise _refuse(archive, m.name, f"is {kind}, not a plain file or folder")
    return members


def _checked_zip_members(archive: Path, zf: zipfile.ZipFile, include: Callable[[str], bool] | None):
    members = [i for i in zf.infolist() if include is None or include(i.filename)]
    for info in members:
        _check_name(archive, info.filename)
        # Unix zips keep the file type in the high 16 bits; 0 means none was recorded (plain).
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if kind == stat.S_IFLNK else "a device, fifo or socket"
            raise _refuse(archive, info.filename, f"is {what}, not a plain file or folder")
    return members


def replace_dir(src: Path, dest: Path) -> Path:
    """Put the finished folder ``src`` at ``dest``, replacing whatever was there (same filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(src, dest)
    return dest
