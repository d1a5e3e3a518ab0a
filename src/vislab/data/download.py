"""Downloads with a SHA-256 check, safe archive extraction, and the local cache folder."""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import UserError
from ..io import atomic_path
from ..progress import progress


def cache_dir(*parts: str) -> Path:
    """vislab's cache folder: ``$VISLAB_CACHE``, else ``~/.cache/vislab`` (created)."""
    root = Path(os.environ.get("VISLAB_CACHE", Path.home() / ".cache" / "vislab"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
                    raise UserError(f"{url}: SHA-256 {got} does not match the expected {sha256}; "
                                    f"the file was not kept")
    except OSError as e:
        raise UserError(f"cannot download {url}: {e}") from e
    return dest


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip or tar archive into ``dest``, refusing members that would land outside it
    (absolute paths, ``..``, links pointing out). Extracts into a temporary folder, then renames."""
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(dest.name + ".extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    root = tmp.resolve()

    def check(name: str) -> None:
        target = (root / name).resolve()
        if name.startswith(("/", "\\")) or not target.is_relative_to(root):
            raise UserError(f"{archive}: member {name!r} would be written outside {dest}; refusing to extract")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    check(name)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    check(m.name)
                    if m.issym() or m.islnk():
                        check(os.path.join(os.path.dirname(m.name), m.linkname))
                    if m.isdev():
                        raise UserError(f"{archive}: member {m.name!r} is a device file; refusing to extract")
                tf.extractall(tmp, members=members)
        else:
            raise UserError(f"{archive} is neither a zip nor a tar archive")
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def replace_dir(src: Path, dest: Path) -> Path:
    """Put the finished folder ``src`` at ``dest``, replacing whatever was there (same filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(src, dest)
    return dest
