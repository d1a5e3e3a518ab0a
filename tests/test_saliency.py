"""Saliency maps (logit gradients checked against finite differences and hand-computed values),
the labelled sample sets (foolbox folder, CS231n .npz, files), and ``vislab saliency``."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vislab.cli import main
from vislab.data.samples import foolbox_data_dir, load_foolbox_samples, load_npz, load_samples, to_batch
from vislab.errors import UserError
from vislab.methods.saliency import saliency_maps
from vislab.models.backbones import PixelModel, Preprocess
from vislab.schemas import check_metrics

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)


def conv_model(k: int = 5, seed: int = 0) -> PixelModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, k))
    return PixelModel(net, MEAN, STD).double().eval()


def linear_model(k: int = 4, hw: int = 5, seed: int = 0) -> PixelModel:
    torch.manual_seed(seed)
    return PixelModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * hw * hw, k)), MEAN, STD).double().eval()


def test_saliency_equals_finite_differences_of_the_logit():
    model = conv_model()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([3, 1])
    eps = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for n in range(2):
            for idx in np.ndindex(3, 6, 6):
                xp, xm = x.clone(), x.clone()
                xp[(n,) + idx] += eps
                xm[(n,) + idx] -= eps
                fd[(n,) + idx] = (model(xp)[n, classes[n]] - model(xm)[n, classes[n]]) / (2 * eps)
    pixel = saliency_maps(model, x, classes, space="pixel")
    torch.testing.assert_close(pixel.maps, fd.abs().amax(dim=1).float(), rtol=1e-5, atol=1e-7)
    # the course differentiates w.r.t. x_norm = (x - mean) / std: d/dx_norm = std * d/dx
    norm = saliency_maps(model, x, classes)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(norm.maps, (fd * std).abs().amax(dim=1).float(), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(norm.maps, pixel.maps)


def test_saliency_uses_the_raw_logit_not_softmax_or_loss():
    model = linear_model()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = 2
    W = model.net[1].weight.detach()
    # logit_y = W[y] . ((x - mean) / std) + b  =>  d logit_y / dx = W[y] / std (hand-computed)
    expected = (W[y].view(3, 5, 5) / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)).abs().amax(0)
    got = saliency_maps(model, x, torch.tensor([y]), space="pixel").maps[0]
    torch.testing.assert_close(got, expected.float())

    def grad_map(fn):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(model(xx)), xx)
        return g.abs().amax(dim=1)[0].float()

    softmax_map = grad_map(lambda z: z.softmax(1)[0, y])
    loss_map = grad_map(lambda z: nn.functional.cross_entropy(z, torch.tensor([y])))
    assert not torch.allclose(got, softmax_map, rtol=1e-2)
    assert not torch.allclose(got, loss_map, rtol=1e-2)


def test_saliency_batch_matches_single_images_and_defaults_to_prediction():
    model = conv_model()
    x = torch.rand(3, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    batch = saliency_maps(model, x, torch.tensor([0, -1, 4]))
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert batch.classes.tolist() == [0, int(pred[1]), 4]
    for i, c in enumerate(batch.classes):
        single = saliency_maps(model, x[i:i + 1], c.view(1))
        torch.testing.assert_close(batch.maps[i], single.maps[0])
    assert saliency_maps(model, x).classes.tolist() == pred.tolist()
    with pytest.raises(ValueError, match="classes must lie"):
        saliency_maps(model, x, torch.tensor([0, 1, 9]))


# --- sample sets ------------------------------------------------------------------------------

def _photo(size, value, path):
    Image.new("RGB", (size, size), value).save(path)
    return path


def test_foolbox_folder_is_found_without_running_its_init(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "foolbox"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('foolbox must not be imported')\n")
    for name, v in [("imagenet_10_7.jpg", 10), ("imagenet_02_3.jpg", 20), ("imagenet_00_243.jpg", 30),
                    ("cifar10_00_3.png", 40)]:
        _photo(8, (v, v, v), pkg / "data" / name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "foolbox", raising=False)
    assert foolbox_data_dir() == pkg / "data"
    s = load_foolbox_samples()
    assert s.names == ["imagenet_00_243", "imagenet_02_3", "imagenet_10_7"]  # numeric NN order
    assert s.labels == [243, 3, 7]
    assert "foolbox" not in sys.modules


def test_npz_loads_without_unpickling(tmp_path):
    X = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    path = tmp_path / "val.npz"
    np.savez(path, X=X, y=np.array([6, 76]), label_map=np.array({6: "stingray"}, dtype=object))
    s = load_npz(path)
    assert s.labels == [6, 76] and s.names == ["val_00", "val_01"]
    np.testing.assert_array_equal(np.asarray(s.images[1]), X[1])
    np.savez(tmp_path / "bad.npz", X=X[..., 0])
    with pytest.raises(UserError, match="NHWC"):
        load_npz(tmp_path / "bad.npz")


def test_load_samples_mixes_files_folders_npz_and_keeps_exact_pixels(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _photo(8, (255, 0, 0), folder / "a.png")
    _photo(12, (0, 128, 0), folder / "b.png")
    np.savez(tmp_path / "s.npz", X=np.full((1, 8, 8, 3), 7, np.uint8), y=np.array([5]))
    s = load_samples([str(tmp_path / "s.npz"), str(folder)])
    assert s.names == ["s_00", "a", "b"] and s.labels == [5, None, None]
    x = to_batch(s.images, Preprocess(input_size=8, resize=10))
    assert x.shape == (3, 3, 8, 8)
    torch.testing.assert_close(x[0], torch.full((3, 8, 8), 7 / 255))  # already 8x8: not resampled
    assert load_samples([str(folder)], limit=1).names == ["a"]
    with pytest.raises(UserError, match="--samples foolbox"):
        load_samples()


def test_cli_saliency_writes_maps_and_metrics(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "run"
    rc = main(["saliency", "--images", str(folder), "--model", "efficientnet_lite0", "--no-weights",
               "--target", "6", "--out", str(out)])
    assert rc == 0
    m = check_metrics("saliency", json.loads((out / "metrics.json").read_text()))
    assert [r["class"] for r in m["results"]] == [6, 6] and m["num_images"] == 2
    assert [r["class_source"] for r in m["results"]] == ["target", "target"] and m["top1_accuracy"] is None
    assert (out / "saliency.png").stat().st_size > 0
    # the optional measurements (tests/test_saliency_checks.py) are off by default
    assert not m.keys() & {"deletion", "smoothgrad", "sanity", "localization"} and not (out / "deletion.png").exists()
    maps = torch.load(out / "saliency_maps.pt", weights_only=True)["maps"]
    assert maps.shape == (2, 224, 224) and (maps >= 0).all()
