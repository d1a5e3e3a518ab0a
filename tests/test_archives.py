"""Downloads and archive extraction: checksums, and archives built to write outside their folder.

Every malicious archive is extracted below a temporary root whose whole listing (type, size,
mtime, link count, content or link target of every entry) is taken before and after: a refused
archive must leave the root exactly as it was, including an "outside" file that links and
paths aim at.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vislab.data import mnist as mnist_mod
from vislab.data import mnistm as mnistm_mod
from vislab.data import scenes
from vislab.data.download import download, safe_extract
from vislab.errors import UserError

OUTSIDE_MTIME_NS = 1_000_000_000 * 10**9  # 2001-09-09: any write or hard link would change it


def keep_all(root: Path) -> Path:
    return root


def listing(root: Path, folder_mtimes: bool = True) -> dict[str, tuple]:
    """Everything under ``root``, links not followed: a fingerprint of each entry (a folder's
    mtime changes when an entry comes and goes: ``folder_mtimes=False`` leaves it out)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = "link -> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = stat.S_IFMT(st.st_mode)
            mtime = st.st_mtime_ns if folder_mtimes or not stat.S_ISDIR(st.st_mode) else None
            out[path.relative_to(root).as_posix()] = (what, st.st_size, mtime, st.st_nlink)
    return out


@pytest.fixture
def sandbox(tmp_path):
    """root/outside.txt (old mtime), root/archives/, and a destination three levels down, so that
    every ``..`` or absolute path the archives aim at lands inside root, where the listing sees it."""
    root = tmp_path / "root"
    (root / "archives").mkdir(parents=True)
    (root / "a" / "b").mkdir(parents=True)
    outside = root / "outside.txt"
    outside.write_text("precious")
    os.utime(outside, ns=(OUTSIDE_MTIME_NS, OUTSIDE_MTIME_NS))
    return root


def make_tar(path: Path, entries: list[tuple]) -> Path:
    """entries: ("file", name, bytes[, mode]) | ("dir", name) | ("sym"|"hard", name, target)
    | ("chr"|"blk"|"fifo", name)."""
    types = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(rest[0])
                info.mode = rest[1] if len(rest) > 1 else 0o644
                tf.addfile(info, io.BytesIO(rest[0]))
                continue
            info.type = types[kind]
            if kind in ("sym", "hard"):
                info.linkname = rest[0]
            if kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return path


def make_zip(path: Path, entries: list[tuple]) -> Path:
    """entries: ("file", name, bytes) | ("sym", name, target) | ("fifo", name): Unix file types
    recorded in the high bits of external_attr, as Info-ZIP does."""
    with zipfile.ZipFile(path, "w") as zf:
        for kind, name, *rest in entries:
            if kind == "file":
                zf.writestr(name, rest[0])
                continue
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            mode = stat.S_IFLNK | 0o777 if kind == "sym" else stat.S_IFIFO | 0o644
            info.external_attr = mode << 16
            zf.writestr(info, rest[0] if rest else b"")
    return path


def _tar_attacks(root: Path) -> dict[str, tuple[list[tuple], str]]:
    # dest is root/a/b/dest and extraction happens in root/a/b/.dest.<random>.extracting, so from
    # the extraction folder "../../.." is root.
    return {
        "dotdot": ([("file", "../../escaped.txt", b"boom")], "'..'"),
        "absolute": ([("file", str(root / "abs.txt"), b"boom")], "absolute"),
        "symlink-out-then-write-through": (
            [("sym", "pics", str(root)), ("file", "pics/escaped.txt", b"boom")], "symbolic link"),
        "symlink-to-outside-file": ([("sym", "pics/evil.jpg", "../../../../outside.txt")], "symbolic link"),
        "symlink-chain": (  # the example: each link on its own stays inside
            [("sym", "l1", "."), ("sym", "l2", "l1/.."), ("file", "l2/escaped.txt", b"boom")], "symbolic link"),
        "symlink-chain-deep": (
            [("dir", "d"), ("sym", "d/up", ".."), ("sym", "d/l", "up/.."), ("file", "d/l/escaped.txt", b"boom")],
            "symbolic link"),
        "hardlink-wrong-base": (  # resolved against p/q/r/ it stays inside; tar resolves it from the top
            [("hard", "p/q/r/x.jpg", "../../../outside.txt")], "hard link"),
        "hardlink-absolute": ([("hard", "x.jpg", str(root / "outside.txt"))], "hard link"),
        "char-device": ([("chr", "dev/mem")], "device"),
        "block-device": ([("blk", "dev/sda")], "device"),
        "fifo": ([("fifo", "pipe")], "device or fifo"),
        "harmless-inner-symlink": (  # points inside, but the datasets hold no links at all
            [("file", "a.jpg", b"x"), ("sym", "b.jpg", "a.jpg")], "symbolic link"),
    }


def _zip_attacks(root: Path) -> dict[str, tuple[list[tuple], str]]:
    return {
        "dotdot": ([("file", "../../escaped.txt", b"boom")], "'..'"),
        "dotdot-backslash": ([("file", "..\\..\\escaped.txt", b"boom")], "'..'"),
        "absolute": ([("file", str(root / "abs.txt"), b"boom")], "absolute"),
        "drive-letter": ([("file", "C:escaped.txt", b"boom")], "absolute"),
        "symlink-to-outside": ([("sym", "pics", str(root)), ("file", "pics/escaped.txt", b"boom")],
                               "symbolic link"),
        "symlink-chain": ([("sym", "l1", "."), ("sym", "l2", "l1/.."), ("file", "l2/escaped.txt", b"boom")],
                          "symbolic link"),
        "fifo": ([("fifo", "pipe")], "device, fifo"),
    }


ATTACKS = {"tar": (_tar_attacks, make_tar, "tgz"), "zip": (_zip_attacks, make_zip, "zip")}


@pytest.mark.parametrize("fmt, case", [(fmt, case) for fmt, (attacks, _, _) in ATTACKS.items()
                                       for case in sorted(attacks(Path("/r")))])
def test_attacks_write_nothing_anywhere(sandbox, fmt, case):
    attacks, make, suffix = ATTACKS[fmt]
    entries, why = attacks(sandbox)[case]
    archive = make(sandbox / "archives" / f"{case}.{suffix}", entries)
    before = listing(sandbox)
    with pytest.raises(UserError, match=why) as err:
        safe_extract(archive, sandbox / "a" / "b" / "dest", accept=keep_all)
    assert str(archive) in str(err.value) and "\n" not in str(err.value)
    assert listing(sandbox) == before  # outside.txt: same bytes, mtime and link count; no new entry


def test_plain_archives_extract_and_the_tar_data_filter_strips_special_modes(sandbox):
    files = [("dir", "data"), ("file", "data/train/a.jpg", b"hello", 0o4777), ("file", "./data/b.jpg", b"x")]
    tgz = make_tar(sandbox / "archives" / "ok.tgz", files)
    out = safe_extract(tgz, sandbox / "a" / "b" / "dest", accept=lambda root: root / "data")
    assert out == sandbox / "a" / "b" / "dest"
    assert (out / "train" / "a.jpg").read_bytes() == b"hello" and (out / "b.jpg").read_bytes() == b"x"
    # setuid and group/other write dropped by the 'data' filter: 0o4777 -> 0o755
    assert stat.S_IMODE((out / "train" / "a.jpg").stat().st_mode) == 0o755
    assert sorted(p.name for p in (sandbox / "a" / "b").iterdir()) == ["dest"]  # no temporary left

    zpath = make_zip(sandbox / "archives" / "ok.zip", [("file", "data/train/a.txt", b"hello")])
    out = safe_extract(zpath, sandbox / "z", accept=keep_all)
    assert (out / "data" / "train" / "a.txt").read_text() == "hello"


def test_refused_content_leaves_the_destination_as_it_was(sandbox):
    dest = sandbox / "a" / "b" / "dest"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "kept.jpg").write_bytes(b"previous data")
    archive = make_tar(sandbox / "archives" / "other.tgz", [("file", "x.jpg", b"new")])
    before = listing(sandbox, folder_mtimes=False)  # the temporary folder came and went in a/b

    def reject(root: Path) -> Path:
        assert (root / "x.jpg").read_bytes() == b"new"  # checked in the temporary folder
        raise UserError("content digest differs")

    with pytest.raises(UserError, match="content digest differs"):
        safe_extract(archive, dest, accept=reject)
    assert listing(sandbox, folder_mtimes=False) == before
    with pytest.raises(UserError, match=r"content digest differs; .*other.tgz was deleted: retry"):
        safe_extract(archive, dest, accept=reject, delete_bad_archive=True)
    assert not archive.exists()
    assert (dest / "old" / "kept.jpg").read_bytes() == b"previous data"


def test_members_outside_the_selection_are_neither_extracted_nor_judged(sandbox):
    archive = make_tar(sandbox / "archives" / "mixed.tgz", [
        ("sym", "docs/link", "/etc/passwd"), ("file", "docs/readme.txt", b"r"),
        ("file", "imgs/1.jpg", b"1"), ("file", "imgs/2.jpg", b"2")])
    out = safe_extract(archive, sandbox / "dest", include=lambda name: name.startswith("imgs/"),
                       accept=lambda root: root / "imgs")
    assert sorted(p.name for p in out.iterdir()) == ["1.jpg", "2.jpg"]
    # ... but a link among the selected members is refused
    bad = make_tar(sandbox / "archives" / "bad.tgz",
                   [("file", "imgs/1.jpg", b"1"), ("hard", "imgs/2.jpg", "imgs/1.jpg")])
    with pytest.raises(UserError, match="'imgs/2.jpg' is a hard link"):
        safe_extract(bad, sandbox / "dest2", include=lambda name: name.startswith("imgs/"), accept=keep_all)


def test_tar_needs_the_data_filter_zip_does_not(sandbox, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter")
    tgz = make_tar(sandbox / "archives" / "ok.tgz", [("file", "a.jpg", b"a")])
    before = listing(sandbox)
    with pytest.raises(UserError, match=r"lacks the 'data' extraction filter; use Python 3\.10\.12, 3\.11\.4, 3\.12"):
        safe_extract(tgz, sandbox / "dest", accept=keep_all, delete_bad_archive=True)
    assert listing(sandbox) == before  # the archive is not to blame: kept
    zpath = make_zip(sandbox / "archives" / "ok.zip", [("file", "a.jpg", b"a")])
    assert (safe_extract(zpath, sandbox / "dest", accept=keep_all) / "a.jpg").read_bytes() == b"a"


def test_damaged_archives_are_user_errors(sandbox):
    tgz = make_tar(sandbox / "archives" / "ok.tgz", [("file", "a.jpg", os.urandom(4096))])
    cut = sandbox / "archives" / "cut.tgz"
    cut.write_bytes(tgz.read_bytes()[:-600])
    with pytest.raises(UserError, match="cannot extract .*cut.tgz"):
        safe_extract(cut, sandbox / "dest", accept=keep_all)
    junk = sandbox / "archives" / "junk.bin"
    junk.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="neither a zip nor a tar"):
        safe_extract(junk, sandbox / "dest", accept=keep_all)
    assert sorted(p.name for p in sandbox.iterdir()) == ["a", "archives", "outside.txt"]


# --- the fetchers: one mechanism, content checked before anything is moved into place -------

def test_fetch_15scene_refuses_a_zip_with_a_link_and_deletes_it(sandbox, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(sandbox / "cache"))
    zpath = make_zip(sandbox / "archives" / "15ScenesData.zip", [
        ("file", "15SceneData/train/coast/a.jpg", b"a"), ("file", "15SceneData/test/coast/b.jpg", b"b"),
        ("sym", "15SceneData/train/coast/c.jpg", "../../../../outside.txt")])
    with pytest.raises(UserError, match="symbolic link.*was deleted: retry"):
        scenes.fetch_15scene(sandbox / "scenes", url=zpath.as_uri(), expected_tree=None)
    assert not (sandbox / "scenes").exists()
    assert not list((sandbox / "cache" / "downloads").iterdir())
    assert (sandbox / "outside.txt").stat().st_mtime_ns == OUTSIDE_MTIME_NS


def _bsds_archive(path: Path, extra: list[tuple]) -> Path:
    photos = [("file", f"{mnistm_mod.BSDS500_TRAIN_IN_ARCHIVE}/{i}.jpg", b"photo %d" % i)
              for i in range(mnistm_mod.BSDS500_TRAIN_COUNT)]
    return make_tar(path, photos + extra)


def test_fetch_bsds500_extracts_only_the_checked_training_photos(sandbox, monkeypatch):
    archive = _bsds_archive(sandbox / "archives" / "BSR.tgz", [
        ("file", "BSR/BSDS500/data/groundTruth/train/0.mat", b"m"), ("sym", "BSR/documentation/x", "/etc")])
    expected = tree_of(mnistm_mod.BSDS500_TRAIN_COUNT)
    monkeypatch.setattr(mnistm_mod, "download", lambda url, dest, sha256=None: archive)
    monkeypatch.setattr(mnistm_mod, "BSDS500_TRAIN_DIGEST", expected)
    train = mnistm_mod.fetch_bsds500(sandbox / "bsds")
    assert train == sandbox / "bsds" / "train"
    assert sorted(p.name for p in train.iterdir()) == sorted(f"{i}.jpg" for i in range(200))
    assert sorted(p.name for p in (sandbox / "bsds").iterdir()) == ["train"]  # no other member, no temporary


def test_fetch_bsds500_refuses_a_link_among_the_photos(sandbox, monkeypatch):
    archive = _bsds_archive(sandbox / "archives" / "BSR.tgz", [
        ("hard", f"{mnistm_mod.BSDS500_TRAIN_IN_ARCHIVE}/evil.jpg", "../../../../../../outside.txt")])
    monkeypatch.setattr(mnistm_mod, "download", lambda url, dest, sha256=None: archive)
    with pytest.raises(UserError, match="evil.jpg' is a hard link.*was deleted"):
        mnistm_mod.fetch_bsds500(sandbox / "bsds")
    assert not (sandbox / "bsds").exists() or not any((sandbox / "bsds").iterdir())
    assert (sandbox / "outside.txt").stat().st_mtime_ns == OUTSIDE_MTIME_NS
    assert (sandbox / "outside.txt").stat().st_nlink == 1


def tree_of(n: int) -> str:
    """vislab's tree_digest of the files {i}.jpg = b'photo i', written out by hand."""
    h = hashlib.sha256()
    for name in sorted(f"{i}.jpg" for i in range(n)):
        body = hashlib.sha256(b"photo %d" % int(name.split(".")[0])).hexdigest()
        h.update(f"{name}\0{body}\n".encode())
    return h.hexdigest()


# --- downloads ------------------------------------------------------------------------------

def test_download_checks_sha256_and_keeps_nothing_on_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    got = download(src.as_uri(), tmp_path / "dl" / "a.bin", sha256=good)
    assert got.read_bytes() == b"payload"
    with pytest.raises(UserError, match="does not match"):
        download(src.as_uri(), tmp_path / "dl" / "b.bin", sha256="0" * 64)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["a.bin"]


def _idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def test_fetch_mnist_checks_each_file_and_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    blobs = {"train-images-idx3-ubyte.gz": _idx_gz(rng.integers(0, 256, (3, 28, 28))),
             "train-labels-idx1-ubyte.gz": _idx_gz(np.array([7, 1, 0])),
             "t10k-images-idx3-ubyte.gz": _idx_gz(rng.integers(0, 256, (2, 28, 28))),
             "t10k-labels-idx1-ubyte.gz": _idx_gz(np.array([4, 2]))}
    tampered, good = tmp_path / "tampered", tmp_path / "good"
    for folder in (tampered, good):
        folder.mkdir()
    for name, blob in blobs.items():
        (good / name).write_bytes(blob)
    (tampered / "train-images-idx3-ubyte.gz").write_bytes(blobs["train-images-idx3-ubyte.gz"] + b"\0")
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()})
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", (tampered.as_uri() + "/", good.as_uri() + "/"))
    root = mnist_mod.fetch_mnist(tmp_path / "mnist")
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(blobs)  # the tampered copy was not kept
    assert mnist_mod.load_mnist("train", root).labels.tolist() == [7, 1, 0]

    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", (tampered.as_uri() + "/",))
    with pytest.raises(UserError, match="cannot download MNIST's train-images-idx3-ubyte.gz from any mirror"):
        mnist_mod.fetch_mnist(tmp_path / "other")
    other_raw = tmp_path / "other" / "MNIST" / "raw"
    assert not other_raw.exists() or not any(other_raw.iterdir())
