"""Part A transfer learning: image-folder listing, cached feature extraction, classifiers, CLI.

Everything runs on a tiny generated image folder and a tiny random CNN (no network, no
/work/shared data); one test builds VGG16 with random weights to check the relu7 plumbing.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vislab import feature_cache as FC
from vislab.cli import main
from vislab.data import scenes
from vislab.data.download import tree_digest
from vislab.data.image_files import ImageFiles
from vislab.data.images import load_image
from vislab.errors import UserError
from vislab.io import torch_load
from vislab.methods import features as F
from vislab.methods import linear, trainers
from vislab.models.backbones import Backbone, Preprocess
from vislab.models.small_cnn import SmallCNN
from vislab.training import Plan, fit

CLASSES = ["beach", "forest", "kitchen"]
LEVELS = {"beach": 40, "forest": 130, "kitchen": 220}  # class = brightness: separable by any CNN


def _write_folder(root: Path, n_train: int = 4, n_test: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = 30, 40 + 4 * i
                pixels = np.clip(LEVELS[cls] + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
                if i == 1:  # colour PNGs mixed with greyscale JPEGs, as in user folders
                    Image.fromarray(np.stack([pixels] * 3, -1)).save(d / f"img{i}.png")
                else:
                    Image.fromarray(pixels, mode="L").save(d / f"img{i}.jpg", quality=95)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _write_folder(tmp_path / "data")


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.features(x))))


def tiny_backbone(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics, so that folding them is really tested
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    layers = {"conv1": "features.0", "bn1": "features.1", "relu1": "features.2", "conv2": "features.3",
              "relu2": "features.5", "pooled": "flat", "logits": "fc"}
    return Backbone("tiny", net.eval().requires_grad_(False), Preprocess(input_size=32, resize=36), layers,
                    "pooled")


@pytest.fixture
def use_tiny(monkeypatch):
    """vislab transfer builds the tiny CNN whatever --model says (seeded like a random init)."""
    from vislab.experiments import transfer

    monkeypatch.setattr(transfer, "build_backbone", lambda name, weights, device: tiny_backbone(torch.initial_seed()))


# --- listing ---------------------------------------------------------------------------------

def test_list_image_folder_labels_and_order(folder):
    train, test = scenes.load_image_folder(folder)
    assert train.classes == CLASSES and test.classes == CLASSES
    assert len(train) == 12 and len(test) == 9
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [p.name for p in train.paths[:4]] == ["img0.jpg", "img1.png", "img2.jpg", "img3.jpg"]
    assert all(p.parent.name == CLASSES[y] for p, y in zip(test.paths, test.labels))


def test_list_errors_name_the_problem(folder, tmp_path):
    with pytest.raises(UserError, match="train/<class>/"):
        scenes.list_split(tmp_path / "nowhere", "train")
    (folder / "test" / "extra").mkdir()
    (folder / "test" / "extra" / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match=r"unexpected: \['extra'\]"):
        scenes.load_image_folder(folder)
    (folder / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="empty holds no image files"):
        scenes.list_split(folder, "train")


def test_digest_tracks_content_names_and_labels(folder):
    train = scenes.list_split(folder, "train")
    d0 = train.digest()
    assert scenes.list_split(folder, "train").digest() == d0
    img = train.paths[2]
    img.write_bytes(img.read_bytes() + b"\0")  # same name, other bytes
    assert scenes.list_split(folder, "train").digest() != d0
    assert train.subset([0, 1]).digest() != d0


def test_digest_hashes_each_file_once_until_the_list_changes(folder, monkeypatch):
    hashed = []
    real = scenes.sha256_file
    monkeypatch.setattr(scenes, "sha256_file", lambda path: hashed.append(path) or real(path))
    train = scenes.list_split(folder, "train")
    d0 = train.digest()
    assert train.digest() == d0 and len(hashed) == 12  # the second call reads nothing
    train.labels[0] = 2  # relabelled in place: the listing changed, so the digest is computed again
    d1 = train.digest()
    assert d1 != d0 and len(hashed) == 24
    train.paths.pop()
    assert train.digest() not in (d0, d1) and len(hashed) == 35


def test_greyscale_decoded_on_one_channel_equals_rgb_decoding(folder):
    grey = folder / "train" / "beach" / "img0.jpg"
    assert Image.open(grey).mode == "L"
    tf = tiny_backbone().preprocess.pixel_transform("squash")
    x, ok, label = ImageFiles([grey], tf, [7])[0]
    assert ok and label == 7 and x.shape == (3, 32, 32)
    assert torch.equal(x, tf(load_image(grey)))  # resize-then-repeat == repeat-then-resize, bit for bit
    (folder / "bad.png").write_bytes(b"")
    assert ImageFiles([folder / "bad.png"], tf)[0][:2] == (None, False)


# --- fetch -----------------------------------------------------------------------------------

def _zip_of(folder: Path, zpath: Path) -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, "15SceneData/" + p.relative_to(folder).as_posix())
    return zpath


def test_fetch_15scene_checks_content(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    url = _zip_of(folder, tmp_path / "15ScenesData.zip").as_uri()
    want = tree_digest(folder, (".jpg",))
    dest = scenes.fetch_15scene(tmp_path / "scenes", url=url, expected_tree=want)
    assert (dest / "train" / "beach" / "img0.jpg").is_file() and (dest / "test").is_dir()
    assert scenes.load_image_folder(dest)[0].digest() != ""  # a usable image folder
    # Verified data present: no download (the URL is gone), same folder back.
    assert scenes.fetch_15scene(tmp_path / "scenes", url=url + ".gone", expected_tree=want) == dest
    # Another archive's content is refused, and nothing is left at the destination.
    with pytest.raises(UserError, match="tree digest"):
        scenes.fetch_15scene(tmp_path / "other", url=url, expected_tree="0" * 64)
    assert not (tmp_path / "other").exists()
    assert not list((tmp_path / "cache" / "downloads").glob("*.zip"))  # a retry downloads it again
    # A folder with other content is not mistaken for 15-Scene.
    with pytest.raises(UserError, match="not the 15-Scene data"):
        scenes.fetch_15scene(folder, url=url, expected_tree="0" * 64)


def test_fetch_15scene_archive_checksum(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    url = _zip_of(folder, tmp_path / "15ScenesData.zip").as_uri()
    with pytest.raises(UserError, match="SHA-256"):
        scenes.fetch_15scene(tmp_path / "s", url=url, sha256="f" * 64, expected_tree=None)


# --- numerical pieces ------------------------------------------------------------------------

def test_l2_normalize_by_hand():
    out = F.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])


def test_pool_output_modes():
    t = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(F.pool_output(t, "avg")[0], torch.tensor([1.5, 5.5, 9.5]))
    assert torch.equal(F.pool_output(t, "max")[1], torch.tensor([15.0, 19.0, 23.0]))
    assert F.pool_output(t, "flatten").shape == (2, 12)
    assert F.pool_output(torch.ones(2, 5), "avg").shape == (2, 5)


def test_layer_choice_reads_that_layer():
    bb = tiny_backbone()
    x = torch.rand(2, 3, 32, 32)
    ex = F.FeatureExtractor(bb, ["conv1", "pooled", "logits"], precision="fp32", fold_bn=False)
    out = ex(x)
    xn = bb.preprocess.normalize(x)
    torch.testing.assert_close(out["conv1"], bb.net.features[0](xn).mean(dim=(2, 3)))
    torch.testing.assert_close(out["logits"], bb.net(xn))
    assert out["pooled"].shape == (2, 16) and out["conv1"].shape == (2, 8)
    with pytest.raises(UserError, match="not a layer of tiny"):
        F.FeatureExtractor(bb, ["fc9"])


def test_fold_batchnorm_same_features_and_keeps_tapped_convs():
    bb = tiny_backbone()
    x = torch.rand(3, 3, 32, 32)
    plain = F.FeatureExtractor(bb, ["conv2", "pooled"], precision="fp32", fold_bn=False)(x)
    ex = F.FeatureExtractor(bb, ["conv2", "pooled"], precision="fp32", fold_bn=True)
    assert ex.folded_bn == 1  # bn1 folded into conv1; conv2 is tapped, so its BN stays
    folded = ex(x)
    for k in plain:
        torch.testing.assert_close(folded[k], plain[k], rtol=1e-4, atol=1e-5)
    assert isinstance(bb.net.features[1], nn.BatchNorm2d)  # the shared backbone is untouched


def test_inplace_activations_spare_tapped_outputs():
    bb = tiny_backbone()
    x = torch.rand(3, 3, 32, 32)
    for layers in (["conv2", "pooled"], ["bn1", "relu2"]):
        plain = F.FeatureExtractor(bb, layers, precision="fp32", fold_bn=False, inplace=False)(x)
        ex = F.FeatureExtractor(bb, layers, precision="fp32", fold_bn=False, inplace=True)
        fast = ex(x)
        for k in layers:
            torch.testing.assert_close(fast[k], plain[k], rtol=0, atol=0)
        # conv2's BN output feeds relu2, not a tapped tensor: both ReLUs can go in place; with bn1
        # tapped, relu1 (reading bn1's output) must not
        assert ex.inplace_acts == (2 if layers[0] == "conv2" else 1)
    assert not any(getattr(m, "inplace", False) for m in bb.net.modules())


def test_bf16_features_close_to_fp32():
    bb = tiny_backbone()
    x = torch.rand(4, 3, 32, 32)
    a = F.FeatureExtractor(bb, ["pooled"], precision="fp32")(x)["pooled"]
    b = F.FeatureExtractor(bb, ["pooled"], precision="bf16")(x)["pooled"]
    w_ex = F.FeatureExtractor(bb, ["pooled"], precision="bf16", bf16_weights=True)
    w = w_ex(x)["pooled"]
    assert b.dtype == torch.float32 and w.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    assert torch.nn.functional.cosine_similarity(a, w).min() > 0.99
    assert next(bb.net.parameters()).dtype == torch.float32  # the shared backbone stays fp32
    auto = F.FeatureExtractor(bb, ["pooled"], precision="bf16").key_fields("pooled", "squash")
    assert w_ex.key_fields("pooled", "squash") != auto  # cached apart


def test_vgg16_relu7_plumbing_random_weights():
    from vislab.models.backbones import build_backbone

    torch.manual_seed(0)
    bb = build_backbone("vgg16", "none")
    # fp32, no in-place check (tested on the tiny net): bf16 is emulated on most CPUs, and the check runs VGG16 thrice
    ex = F.FeatureExtractor(bb, [bb.default_layer], precision="fp32", inplace=False)
    out = ex(torch.rand(2, 3, 224, 224))["relu7"]
    assert bb.default_layer == "relu7" and out.shape == (2, 4096) and (out >= 0).all()
    assert ex.folded_bn == 0


# --- cache -----------------------------------------------------------------------------------

def _extract(images, bb, tmp_path, layers=("pooled",), **kw):
    opts = {"precision": "fp32", **{k: kw.pop(k) for k in ("precision", "pool") if k in kw}}
    ex = F.FeatureExtractor(bb, list(layers), **opts)
    return FC.extract_features(images, ex, cache_root=tmp_path / "fc", batch_size=kw.pop("batch_size", 4), **kw)


def test_cache_hit_and_miss(folder, tmp_path):
    train = scenes.list_split(folder, "train")
    bb = tiny_backbone()
    sets, stats = _extract(train, bb, tmp_path, layers=("pooled", "conv1"))
    assert not stats.cache_hit and stats.images == 12
    assert sets["pooled"].features.shape == (12, 16) and sets["conv1"].features.shape == (12, 8)
    again, stats2 = _extract(train, bb, tmp_path, layers=("pooled", "conv1"))
    assert stats2.cache_hit and stats2.images == 0 and again["pooled"].cache_hit
    np.testing.assert_array_equal(again["pooled"].features, sets["pooled"].features)
    # One cached layer + one new one: only the new one is computed, in one pass.
    mixed, stats3 = _extract(train, bb, tmp_path, layers=("pooled", "relu1"))
    assert mixed["pooled"].cache_hit and not mixed["relu1"].cache_hit and stats3.images == 12


@pytest.mark.parametrize("change", ["content", "weights", "layer", "resize", "precision", "pool"])
def test_cache_invalidated_by_every_key(folder, tmp_path, change):
    train = scenes.list_split(folder, "train")
    sets, _ = _extract(train, tiny_backbone(), tmp_path, layers=("relu2",))
    bb, layers, kw = tiny_backbone(), ("relu2",), {}
    if change == "content":
        Image.new("L", (40, 30), 7).save(train.paths[0])
        train = scenes.list_split(folder, "train")
    elif change == "weights":
        bb = tiny_backbone(seed=1)
    elif change == "layer":
        layers = ("relu1",)
    elif change == "resize":
        kw["resize"] = "crop"
    elif change == "precision":
        kw["precision"] = "bf16"
    elif change == "pool":
        kw["pool"] = "max"
    other, stats = _extract(train, bb, tmp_path, layers=layers, **kw)
    assert not stats.cache_hit and stats.images == 12
    assert other[layers[0]].key != sets["relu2"].key


def test_interrupted_extraction_resumes(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(FC, "CHUNK_IMAGES", 4)
    train = scenes.list_split(folder, "train")
    full, _ = _extract(train, tiny_backbone(), tmp_path / "ref", batch_size=2)
    calls = {"n": 0}
    real_call = F.FeatureExtractor.__call__

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] == 4:  # dies during the 2nd chunk of 4 images (batches of 2)
            raise KeyboardInterrupt
        return real_call(self, x)

    monkeypatch.setattr(F.FeatureExtractor, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        _extract(train, tiny_backbone(), tmp_path, batch_size=2)
    entry = next((tmp_path / "fc").iterdir())
    assert sorted(p.name for p in entry.glob("part-*")) == ["part-00000.npz"]
    assert list(json.loads((entry / "index.json").read_text())["parts"]) == ["0"]
    calls["n"] = -100
    sets, stats = _extract(train, tiny_backbone(), tmp_path, batch_size=2)
    assert stats.images == 8 and calls["n"] == -100 + 4  # only images 4..11 went through the network
    assert not stats.cache_hit and not sets["pooled"].cache_hit
    np.testing.assert_array_equal(sets["pooled"].features, full["pooled"].features)  # same batches as a clean run
    assert sorted(p.name for p in entry.glob("part-*")) == ["part-00000.npz", "part-00001.npz", "part-00002.npz"]


def _zero_features(part: Path, rows: np.ndarray) -> None:
    """Overwrite a chunk's feature values with zeros, keeping its size (what the old cache served silently)."""
    data = part.read_bytes()
    at = data.index(rows.tobytes())
    part.write_bytes(data[:at] + bytes(rows.nbytes) + data[at + rows.nbytes:])


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "deleted", "index"])
def test_damaged_cache_is_detected_and_extracted_again(folder, tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setattr(FC, "CHUNK_IMAGES", 4)
    train = scenes.list_split(folder, "train")
    clean, _ = _extract(train, tiny_backbone(), tmp_path, layers=("pooled", "conv1"), batch_size=2)
    entry = tmp_path / "fc" / clean["pooled"].key
    part = entry / "part-00001.npz"
    if damage == "zeroed":
        _zero_features(part, np.asarray(clean["pooled"].features[4:8]))
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[:200])
    elif damage == "deleted":
        part.unlink()
    else:
        (entry / "index.json").write_text('{"key": "')
    capsys.readouterr()
    sets, stats = _extract(train, tiny_backbone(), tmp_path, layers=("pooled", "conv1"), batch_size=2)
    err = capsys.readouterr().err
    want = {"zeroed": "part-00001.npz: contents differ from their recorded SHA-256", "truncated": "(truncated)",
            "deleted": "part-00001.npz: missing", "index": "index.json: unreadable"}[damage]
    assert want in err and "extracting" in err
    assert not stats.cache_hit and stats.images == (12 if damage == "index" else 4)  # only what was lost
    assert not sets["pooled"].cache_hit and sets["conv1"].cache_hit  # the other layer's entry was sound
    for layer in ("pooled", "conv1"):
        np.testing.assert_array_equal(sets[layer].features, clean[layer].features)
        np.testing.assert_array_equal(sets[layer].valid, clean[layer].valid)
    again, stats = _extract(train, tiny_backbone(), tmp_path, layers=("pooled", "conv1"), batch_size=2)
    assert stats.cache_hit and stats.images == 0 and capsys.readouterr().err == ""
    np.testing.assert_array_equal(again["pooled"].features, clean["pooled"].features)


# --- classifiers -----------------------------------------------------------------------------

def _blobs(n_per_class=30, dim=5, seed=0, noise=1.0):
    centers = np.random.default_rng(42).normal(0, 3, (3, dim))  # the same classes in train and test
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + rng.normal(0, noise, (n_per_class, dim)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    return X, y


def test_c_sweep_never_sees_test_data():
    Xtr, ytr = _blobs(seed=0, noise=2.5)
    Xte, yte = _blobs(seed=1, noise=2.5)
    a = linear.c_sweep(Xtr, ytr, Xte, yte, [0.0001, 0.1, 10], folds=3)
    rng = np.random.default_rng(5)
    b = linear.c_sweep(Xtr, ytr, rng.normal(size=Xte.shape), rng.permutation(yte), [0.0001, 0.1, 10], folds=3)
    assert a["best_C"] == b["best_C"] and a["cv_accuracy"] == b["cv_accuracy"]
    assert a["test_accuracy"] != b["test_accuracy"]
    sel = linear.select_c(Xtr, ytr, [10, 0.0001, 0.1], folds=3)
    assert sel.Cs == [0.0001, 0.1, 10] and sel.best_C == a["best_C"]
    assert min(a["cv_accuracy"]) < max(a["cv_accuracy"])  # C matters on these data


def test_per_class_accuracy_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0, 0])
    out = linear.per_class_accuracy(y, p, 4)
    np.testing.assert_allclose(out[:3], [0.5, 2 / 3, 0.0])
    assert np.isnan(out[3])


def test_pca_svm_and_linear_head():
    Xtr, ytr = _blobs(seed=0)
    Xte, yte = _blobs(seed=1)
    res = linear.pca_svm(Xtr, ytr, Xte, yte, n_components=50, C=1.0)
    assert res["n_components"] == 5 and res["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert res["test_accuracy"] > 0.9
    head, hist = trainers.train_linear_head(Xtr, ytr, Xte, yte, 3, epochs=30, lr=0.05)
    _, hist2 = trainers.train_linear_head(Xtr, ytr, Xte, yte, 3, epochs=30, lr=0.05)
    assert hist == hist2  # seeded
    assert head.weight.shape == (3, 5) and hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist["test_accuracy"][-1] > 0.9


def test_linear_head_curves_by_hand():
    # one epoch of one full batch: the recorded train loss and accuracy are those of the initial
    # weights (drawn from the seeded generator), and the returned layer took exactly one Adam step
    X, y = _blobs(seed=0)
    layer, hist = trainers.train_linear_head(X, y, X[:0], y[:0], 3, epochs=1, batch_size=len(X), lr=0.1,
                                           weight_decay=0.0, seed=5)
    g = torch.Generator().manual_seed(5)
    w = torch.empty(3, X.shape[1]).uniform_(-X.shape[1] ** -0.5, X.shape[1] ** -0.5, generator=g)
    b = torch.empty(3).uniform_(-X.shape[1] ** -0.5, X.shape[1] ** -0.5, generator=g)
    logits = torch.as_tensor(X, dtype=torch.float32) @ w.T + b
    assert hist["train_loss"] == [pytest.approx(nn.functional.cross_entropy(logits, torch.as_tensor(y)).item())]
    assert hist["train_accuracy"] == [pytest.approx(float((logits.argmax(1) == torch.as_tensor(y)).float().mean()))]
    assert np.isnan(hist["test_accuracy"][0])
    # Adam's first step moves every weight by lr (times the sign of its gradient) whatever its scale
    step = (layer.weight.detach() - w).abs()
    assert torch.allclose(step[step > 1e-6], torch.full_like(step[step > 1e-6], 0.1), rtol=1e-3)


def test_confusion_pairs_by_hand():
    classes = ["a", "b", "c", "d"]
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    p = np.array([1, 1, 2, 0, 0, 1, 0, 1, 2, 3])
    pairs = linear.confusion_pairs(y, p, classes, top=3)
    # a->b twice (2 of 4 a's); then single mistakes: b->a has rate 1/2, c->a and c->b 1/3, a->c 1/4
    assert pairs == [{"true": "a", "predicted": "b", "count": 2, "rate": 0.5},
                     {"true": "b", "predicted": "a", "count": 1, "rate": 0.5},
                     {"true": "c", "predicted": "a", "count": 1, "rate": pytest.approx(1 / 3)}]
    assert len(linear.confusion_pairs(y, p, classes)) == 5  # c->b and a->c follow; d is never confused
    assert linear.confusion_pairs(y, y, classes) == []


def _stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: horizontal stripes, class 1: vertical ones, at random phases, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    phase = torch.randint(0, 4, (n, 1, 1), generator=g)
    rows = ((torch.arange(32).view(1, 32, 1) + phase) // 2 % 2).expand(n, 32, 32).float()
    x = torch.where(y.view(n, 1, 1) == 0, rows, rows.transpose(1, 2))
    x = (0.2 + 0.6 * x + 0.1 * torch.randn(n, 32, 32, generator=g)).clamp(0, 1)
    return x.unsqueeze(1).expand(n, 3, 32, 32).contiguous(), y


class _DecodedBatches(trainers.FeatureBatches):
    """In-memory images as the (x, ok, y) batches of decoded files, every image readable."""

    def batch(self, order, i, rngs):
        x, y = super().batch(order, i, rngs)
        return x, torch.ones(len(y), dtype=torch.bool), y


def test_scratch_cnn_learns_stripes_through_the_fit_loop():
    w, k = 4, 2
    torch.manual_seed(0)
    net = SmallCNN(k, width=w)
    convs = 9 * (3 * w + w * 2 * w + 2 * w * 4 * w + 4 * w * 8 * w)  # no conv bias
    assert sum(p.numel() for p in net.parameters()) == convs + 2 * 15 * w + 8 * w * k + k
    assert net(torch.rand(2, 3, 96, 96)).shape == (2, k) and net.feature_dim == 8 * w
    (Xtr, ytr), (Xte, yte) = _stripes(48, seed=0), _stripes(32, seed=1)
    trainer = trainers.EndToEndTrainer(net, torch.optim.Adam(net.parameters(), lr=0.01), torch.device("cpu"))
    data = _DecodedBatches(Xtr, ytr, 16)
    test = [(Xte, torch.ones(len(yte), dtype=torch.bool), yte)]
    result = fit(trainer, data, Plan(5, data.steps_per_epoch), rngs={"order": torch.Generator().manual_seed(0)},
                 evaluate=lambda e, means, s: {**trainer.curves.take(),
                                               "test_accuracy": trainers.evaluate(net, test, torch.device("cpu"))[0]})
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"] / 2
    assert last["test_accuracy"] >= 0.95


def test_finetune_trains_a_copy_of_the_backbone():
    bb = tiny_backbone()
    before = {k: v.clone() for k, v in bb.net.state_dict().items()}
    torch.manual_seed(0)
    net = trainers.FineTuneNet(bb, "pooled", 3)
    trainer = trainers.EndToEndTrainer(net, trainers.finetune_optimizer(net, lr=0.5, backbone_lr_mult=1.0),
                                     torch.device("cpu"))
    trainer.update((torch.rand(4, 3, 32, 32), torch.ones(4, dtype=torch.bool), torch.tensor([0, 1, 2, 0])))
    assert all(torch.equal(v, bb.net.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(net.body.net.features[0].weight, bb.net.features[0].weight)
    assert all(not p.requires_grad for p in bb.net.parameters())


def test_channels_last_training_takes_the_same_steps():
    """The layout is a speed choice only: same losses and weights (up to rounding) after a few steps,
    the optimizer still holding the network's own parameters."""
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = SmallCNN(3, width=4)
        trainer = trainers.EndToEndTrainer(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.device("cpu"),
                                           channels_last=channels_last)
        conv = net.features[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last or conv.shape[1] == 1
        assert trainer.opt.param_groups[0]["params"][0] is conv
        for _ in range(3):
            trainer.update((x, torch.ones(6, dtype=torch.bool), y))
        accuracy = trainers.evaluate(net, [(x, torch.ones(6, dtype=torch.bool), y)], torch.device("cpu"),
                                     channels_last=channels_last)[0]
        results.append(({k: v.clone() for k, v in net.state_dict().items()}, trainer.curves.take(), accuracy))
    (w0, c0, a0), (w1, c1, a1) = results
    assert all(torch.allclose(w0[k].float(), w1[k].float(), atol=1e-5) for k in w0)
    assert c0["train_loss"] == pytest.approx(c1["train_loss"], abs=1e-5) and a0 == a1


# --- the command -----------------------------------------------------------------------------

def _run(args: list[str]) -> dict:
    assert main(["transfer", *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "metrics.json").read_text())


def test_transfer_command_end_to_end(folder, tmp_path, use_tiny, capsys):
    base = ["--data", str(folder), "--cache", str(tmp_path / "fc"), "--model", "efficientnet_lite0"]
    m = _run(base + ["--out", str(tmp_path / "r1")])
    assert isinstance(m["test_accuracy"], float) and m["cache_hit"] is False and m["extracted_images"] == 21
    assert m["n_train"] == 12 and m["n_test"] == 9 and set(m["per_class_accuracy"]) == set(CLASSES)
    assert (tmp_path / "r1" / "confusion_efficientnet_lite0_pooled_squash.png").is_file()
    m2 = _run(base + ["--out", str(tmp_path / "r2")])
    assert m2["cache_hit"] is True and m2["extracted_images"] == 0 and m2["test_accuracy"] == m["test_accuracy"]
    (test_entry,) = [d for d in (tmp_path / "fc").iterdir() if json.loads((d / "index.json").read_text())["n"] == 9]
    with np.load(test_entry / "part-00000.npz") as part:
        _zero_features(test_entry / "part-00000.npz", part["features"])
    capsys.readouterr()
    m2b = _run(base + ["--out", str(tmp_path / "r2b")])  # the zeroed features are not served
    assert "differ from their recorded SHA-256" in capsys.readouterr().err
    assert m2b["cache_hit"] is False and m2b["extracted_images"] == 9 and m2b["test_accuracy"] == m["test_accuracy"]
    assert _run(base + ["--out", str(tmp_path / "r2c")])["cache_hit"] is True
    m3 = _run(base + ["--out", str(tmp_path / "r3"), "--layers", "pooled", "relu1", "--c-grid", "0.1", "1", "10",
                      "--cv-folds", "2", "--pca", "4", "--head", "svm", "linear", "--head-epochs", "3"])
    heads = [(v["layer"], v["head"]) for v in m3["variants"]]
    assert heads == [("pooled", "svm"), ("pooled", "svm (C by CV)"), ("pooled", "pca4+svm"), ("pooled", "linear"),
                     ("relu1", "svm"), ("relu1", "svm (C by CV)"), ("relu1", "pca4+svm"), ("relu1", "linear")]
    assert m3["test_accuracy"] == m["test_accuracy"]  # first variant = the configured C on the default layer
    assert m3["variants"][4]["dim"] == 8 and m3["c_sweep"]["efficientnet_lite0_pooled_squash"]["C"] == [0.1, 1.0, 10.0]
    for name in ("c_sweep_efficientnet_lite0_relu1_squash.png", "linear_head_efficientnet_lite0_pooled_squash.png",
                 "comparison.png", "variants.txt"):
        assert (tmp_path / "r3" / name).is_file()


def test_transfer_bad_images(folder, tmp_path, use_tiny, capsys):
    (folder / "train" / "beach" / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "test" / "forest" / "empty.png").write_bytes(b"")
    base = ["--data", str(folder), "--cache", str(tmp_path / "fc")]
    assert main(["transfer", *base, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "2 image file(s) cannot be read" in err and "broken.jpg" in err and "empty.png" in err
    assert "--skip-bad" in err and not (tmp_path / "bad").exists()
    m = _run(base + ["--out", str(tmp_path / "ok"), "--skip-bad"])
    assert m["bad_images"] == 2 and m["cache_hit"] is True  # the failed run's features were cached
    assert m["n_train"] == 13 and any(f.endswith("broken.jpg") for f in m["bad_files"])


def test_transfer_finetune_and_scratch_rows(folder, tmp_path, use_tiny):
    m = _run(["--data", str(folder), "--cache", str(tmp_path / "fc"), "--out", str(tmp_path / "ft"),
              "--head", "svm", "finetune", "scratch", "--finetune-epochs", "2", "--finetune-batch-size", "4",
              "--scratch-size", "32", "--scratch-width", "4"])
    svm, finetune, scratch = m["variants"]
    assert finetune["head"] == "finetune" and finetune["epochs"] == 2 and finetune["params"] > 16 * 3
    assert scratch["head"] == "scratch" and scratch["epochs"] == 2 and scratch["input_size"] == 32
    assert scratch["params"] == 9 * (3 * 4 + 4 * 8 + 8 * 16 + 16 * 32) + 2 * 60 + 32 * 3 + 3
    assert all(r["seconds"] >= 0 for r in m["variants"]) and {"train_accuracy", "test_accuracy"} <= set(scratch)
    hist, curves = m["finetune"]["efficientnet_lite0_pooled_squash"], m["scratch"]
    assert len(hist["train_loss"]) == 2 and len(hist["test_accuracy"]) == 2 and len(curves["train_loss"]) == 2
    assert scratch["test_accuracy"] == curves["test_accuracy"][-1]
    # the most confused pairs are the first variant's (the SVM's) mistakes, each counted on its true class
    assert sum(p["count"] for p in m["confusion_pairs"]) <= round((1 - svm["test_accuracy"]) * m["n_test"])
    for p in m["confusion_pairs"]:
        assert p["true"] != p["predicted"] and p["rate"] == pytest.approx(p["count"] / 3)
    for name in ("finetune_efficientnet_lite0_pooled_squash.png", "scratch.png"):
        assert (tmp_path / "ft" / name).is_file()
    assert not list((tmp_path / "ft").glob("checkpoint*"))


def test_transfer_paused_in_the_second_training_resumes_to_the_same_numbers(folder, tmp_path, use_tiny):
    base = ["--data", str(folder), "--cache", str(tmp_path / "fc"), "--head", "finetune", "scratch",
            "--finetune-epochs", "2", "--scratch-epochs", "3", "--finetune-batch-size", "4", "--scratch-size", "32",
            "--scratch-width", "4"]
    whole = _run(base + ["--out", str(tmp_path / "whole")])
    out = ["--out", str(tmp_path / "paused")]
    # 3 steps per epoch: fine-tuning (6 steps) finishes, the scratch CNN stops in its third epoch
    assert main(["transfer", *base, *out, "--stop-after-steps", "7"]) == 3
    partial = tmp_path / "paused.partial"
    assert {p.name for p in partial.glob("checkpoint*")} == {"checkpoint-finetune-0.pt", "checkpoint-scratch.pt"}
    identity = torch_load(partial / "checkpoint-scratch.pt")["identity"]  # the options a resume must share
    assert identity["finetune_lr"] == 0.01 and identity["scratch_epochs"] == 3 and "stop_after_steps" not in identity
    resumed = _run(base + [*out, "--resume"])  # the finished fine-tuning is not trained again
    assert resumed["finetune"] == whole["finetune"] and resumed["scratch"] == whole["scratch"]
    assert [r["test_accuracy"] for r in resumed["variants"]] == [r["test_accuracy"] for r in whole["variants"]]
    assert resumed["confusion_pairs"] == whole["confusion_pairs"]


def test_finetuning_each_layer_starts_from_the_pretrained_weights(folder, tmp_path, use_tiny):
    base = ["--data", str(folder), "--cache", str(tmp_path / "fc"), "--head", "finetune", "--finetune-epochs", "1",
            "--finetune-batch-size", "4"]
    both = _run(base + ["--out", str(tmp_path / "both"), "--layers", "pooled", "relu1"])
    alone = _run(base + ["--out", str(tmp_path / "alone"), "--layers", "relu1"])
    key = "efficientnet_lite0_relu1_squash"
    assert both["finetune"][key] == alone["finetune"][key]


def test_finetune_resume_equals_uninterrupted(folder, tmp_path, use_tiny, monkeypatch, capsys):
    args = ["--data", str(folder), "--cache", str(tmp_path / "fc"), "--head", "finetune", "--finetune-epochs", "3",
            "--finetune-batch-size", "5"]
    full = _run(args + ["--out", str(tmp_path / "full")])["finetune"]
    real_evaluate, calls = trainers.evaluate, {"n": 0}

    def interrupting_evaluate(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # in epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(trainers, "evaluate", interrupting_evaluate)
    assert main(["transfer", *args, "--out", str(tmp_path / "cut")]) == 130
    assert list((tmp_path / "cut.partial").glob("checkpoint-finetune-*.pt"))
    monkeypatch.setattr(trainers, "evaluate", real_evaluate)
    capsys.readouterr()
    assert main(["transfer", *args, "--out", str(tmp_path / "cut"), "--resume", "--finetune-lr", "0.1"]) == 2
    assert "--finetune-lr" in capsys.readouterr().err  # another result: refused
    assert _run(args + ["--out", str(tmp_path / "cut"), "--resume"])["finetune"] == full
    assert "resuming at epoch 2/3, step 0" in capsys.readouterr().err  # continued, not started over


def test_shuffled_image_batches_follow_the_order_and_resume_mid_epoch(folder):
    train, _ = scenes.load_image_folder(folder)
    from vislab.data.image_files import ShuffledImageBatches

    data = ShuffledImageBatches(train.paths, lambda im: torch.zeros(3, 4, 4), (4, 4), train.labels, batch_size=5)
    assert data.steps_per_epoch == 3  # 12 images: 5 + 5 + 2
    order = data.order({"order": torch.Generator().manual_seed(0)})
    assert sorted(torch.cat(order).tolist()) == list(range(12))
    labels = [data.batch(order, i, {})[2] for i in range(3)]
    assert [lab.tolist() for lab in labels] == [train.labels[b].tolist() for b in order]
    again = ShuffledImageBatches(train.paths, lambda im: torch.zeros(3, 4, 4), (4, 4), train.labels, batch_size=5)
    assert torch.equal(again.batch(order, 2, {})[2], labels[2])  # a resumed epoch starts at its batch


def test_finetune_only_trains_with_lower_backbone_lr():
    bb = tiny_backbone()
    net = trainers.FineTuneNet(bb, "pooled", 3)
    opt = trainers.finetune_optimizer(net, lr=0.1, backbone_lr_mult=0.1)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.01), 0.1]
    net.train()
    assert not net.body.net.features[1].training and net.head.training  # BN statistics frozen


def test_transfer_rejects_bad_options(tmp_path, capsys):
    assert main(["transfer", "--out", str(tmp_path / "x")]) == 2
    assert "--data DIR is required" in capsys.readouterr().err
    assert main(["transfer", "--data", str(tmp_path), "--c", "0", "--out", str(tmp_path / "y")]) == 2
    assert "--c 0.0: out of range" in capsys.readouterr().err


def test_finetune_layers_selects_which_layers_are_fine_tuned(folder, tmp_path, use_tiny, capsys):
    base = ["--data", str(folder), "--cache", str(tmp_path / "fc"), "--head", "svm", "finetune", "--finetune-epochs",
            "1", "--finetune-batch-size", "4", "--layers", "pooled", "relu1"]
    every = _run(base + ["--out", str(tmp_path / "every")])
    one = _run(base + ["--out", str(tmp_path / "one"), "--finetune-layers", "relu1"])
    key = "efficientnet_lite0_relu1_squash"
    assert [r["head"] for r in one["variants"]] == ["svm", "svm", "finetune"] and list(one["finetune"]) == [key]
    assert len([r for r in every["variants"] if r["head"] == "finetune"]) == 2
    assert one["finetune"][key] == every["finetune"][key]  # the same training, just not the other layer's
    assert main(["transfer", *base, "--out", str(tmp_path / "bad"), "--finetune-layers", "relu9"]) == 2
    err = capsys.readouterr().err
    assert "--finetune-layers relu9: not among the extracted layers (pooled relu1)" in err
    assert not (tmp_path / "bad").exists()
