"""``vislab inspect``: image modes, the metrics contract, predictions, bad files."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.cli import main
from vislab.data.images import find_images, load_image
from vislab.errors import ImageReadError
from vislab.schemas import check_metrics


def _save(tmp_path, name, img):
    path = tmp_path / name
    img.save(path)
    return path


@pytest.mark.parametrize("mode,value,expected", [
    ("L", 100, (100, 100, 100)),
    ("RGB", (10, 20, 30), (10, 20, 30)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("I;16", 65535, (255, 255, 255)),
    ("I;16", 32896, (128, 128, 128)),  # 32896 / 65535 * 255 = 128.0
])
def test_image_modes_to_rgb(tmp_path, mode, value, expected):
    img = Image.new(mode, (4, 3), value)
    path = _save(tmp_path, f"x_{mode.replace(';', '')}.{'tif' if mode == 'CMYK' else 'png'}", img)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (4, 3)
    assert rgb.getpixel((1, 1)) == expected


def test_alpha_is_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    rgb = load_image(_save(tmp_path, "a.png", rgba))
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 0)) == (255, 0, 0)
    la = Image.new("LA", (1, 1), (0, 128))  # black at half opacity over white
    assert load_image(_save(tmp_path, "la.png", la)).getpixel((0, 0)) == (127, 127, 127)
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # index 0 (blue) is transparent
    path = tmp_path / "p.png"
    pal.save(path, transparency=0)
    rgb = load_image(path)
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 0)) == (0, 255, 0)


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        load_image(bad)
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        load_image(tmp_path / "missing.png")


def test_find_images_expands_folders_in_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.png", "d/a.jpg", "d/sub/c.png", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_images([tmp_path / "x.gif", tmp_path / "d"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["x.gif", "d/a.jpg", "d/b.png", "d/sub/c.png"]


def test_inspect_vgg16_parameter_contract(tmp_path):
    out = tmp_path / "run"
    assert main(["inspect", "--model", "vgg16", "--no-weights", "--out", str(out)]) == 0
    metrics = check_metrics("inspect", json.loads((out / "metrics.json").read_text()))
    assert metrics["params_total"] == 138_357_544 and isinstance(metrics["params_total"], int)
    assert "predictions" not in metrics  # written only with --images
    assert metrics["params_linear"] == 123_642_856
    assert metrics["params_conv"] == 14_714_688
    assert metrics["output_size"] == 1000
    layers = json.loads((out / "layers.json").read_text())
    assert sum(r["params"] for r in layers) == 138_357_544
    assert [r["name"] for r in layers][:2] == ["conv1_1", "relu1_1"]
    assert (out / "layers.txt").read_text().count("Conv2d") == 13


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from sklearn.datasets import load_sample_image

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("china.jpg", "flower.jpg"):
        Image.fromarray(load_sample_image(name)).save(folder / name)
        paths.append(folder / name)
    return paths


def test_inspect_predicts_offline_with_efficientnet_lite0(tmp_path, photos, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    gray = tmp_path / "gray.png"
    Image.fromarray(np.asarray(Image.open(photos[0]).convert("L"))).save(gray)
    out = tmp_path / "run"
    status = main(["inspect", "--images", str(photos[0]), str(bad), str(photos[1]), str(gray), "-k", "3",
                   "--out", str(out)])
    assert status == 1  # one unreadable file: non-zero exit, the others still processed
    metrics = check_metrics("inspect", json.loads((out / "metrics.json").read_text()))
    preds = metrics["predictions"]
    assert [p["image"] for p in preds] == [str(photos[0]), str(photos[1]), str(gray)]
    assert preds[0]["top"][0]["class"] == "palace"
    assert preds[1]["top"][0]["class"] == "daisy"
    for p in preds:
        probs = [t["prob"] for t in p["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert all(isinstance(t["index"], int) for t in p["top"])
    assert metrics["errors"][0]["image"] == str(bad) and metrics["images_failed"] == 1
    assert "broken.png" in capsys.readouterr().err
    assert (out / "predictions.png").is_file() and len(list(out.glob("first_conv_*.png"))) == 3
    assert metrics["params_total"] == 4_652_008


def test_inspect_rejects_bad_options(tmp_path, capsys):
    assert main(["inspect", "--top-k", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--top-k 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _fake_foolbox(root, photos, labels, monkeypatch):
    """A stand-in for the foolbox package's data folder (``imagenet_NN_<label>.jpg``), found first on sys.path."""
    data = root / "site" / "foolbox" / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("raise RuntimeError('foolbox must not be imported')\n")
    for n, (photo, label) in enumerate(zip(photos, labels)):
        shutil.copy(photo, data / f"imagenet_{n:02d}_{label}.jpg")  # the same bytes as the --images file
    monkeypatch.syspath_prepend(str(root / "site"))
    monkeypatch.delitem(sys.modules, "foolbox", raising=False)


def test_inspect_labelled_samples_with_files(tmp_path, photos, monkeypatch):
    from vislab.models.backbones import imagenet_classes

    classes = imagenet_classes()
    palace, bell_cote, daisy = (classes.index(c) for c in ("palace", "bell cote", "daisy"))
    # china is a palace (top-1), a bell cote (its 2nd class: top-5 only) and a daisy (not in its top 5)
    labels = [palace, bell_cote, daisy, daisy]
    _fake_foolbox(tmp_path, [photos[0], photos[0], photos[0], photos[1]], labels, monkeypatch)
    out = tmp_path / "run"
    assert main(["inspect", "--samples", "foolbox", "--images", str(photos[0]), "-k", "2", "--out", str(out)]) == 0
    m = check_metrics("inspect", json.loads((out / "metrics.json").read_text()))
    preds = m["predictions"]
    assert [p["image"] for p in preds] == [f"imagenet_{n:02d}_{lab}" for n, lab in enumerate(labels)] + [str(photos[0])]
    assert [p["label"] for p in preds] == labels + [None]
    assert [p["top1_correct"] for p in preds] == [True, False, False, True, None]
    assert [p["top5_correct"] for p in preds] == [True, True, False, True, None]  # top-5 even with -k 2
    assert m["labelled_images"] == 4 and m["top1_accuracy"] == 2 / 4 and m["top5_accuracy"] == 3 / 4
    for p in preds:
        assert p["prob_sum"] == pytest.approx(1.0, abs=1e-5) and len(p["top"]) == 2
    # the labelled copy and the file: same pixels, same answer
    assert [t["index"] for t in preds[0]["top"]] == [t["index"] for t in preds[-1]["top"]]
    assert [t["prob"] for t in preds[0]["top"]] == pytest.approx([t["prob"] for t in preds[-1]["top"]], abs=1e-6)
    assert [x["image"] for x in m["first_conv_match"]] == [p["image"] for p in preds]
    assert len(list(out.glob("first_conv_*.png"))) == 5


def test_inspect_unlabelled_files_have_no_accuracy(tmp_path, photos):
    out = tmp_path / "run"
    assert main(["inspect", "--images", str(photos[1]), "--out", str(out)]) == 0
    m = check_metrics("inspect", json.loads((out / "metrics.json").read_text()))
    assert m["labelled_images"] == 0 and m["top1_accuracy"] is None and m["top5_accuracy"] is None
    p = m["predictions"][0]
    assert p["label"] is None and p["top1_correct"] is None and p["top5_correct"] is None
    match = m["first_conv_match"][0]
    assert [x["map"] for x in match["maps"]] == list(range(32))  # efficientnet_lite0's stem has 32 channels
    for i in match["edge_maps"] + match["colour_maps"]:
        assert abs(match["maps"][i]["r"]) >= 0.5
    assert {match["maps"][i]["reference"] for i in match["colour_maps"]} <= {"red_green", "blue_yellow"}
    assert not set(match["edge_maps"]) & set(match["colour_maps"])


def test_first_conv_match_names_edge_and_colour_maps():
    """Hand-made maps of a known image, red stepping up along x (a vertical edge) and green along y:
    the edge band, R - G, and a constant map."""
    from vislab.experiments.inspection import _first_conv_match

    image = torch.zeros(3, 8, 8)
    image[0, :, 4:] = 1.0  # red on the right half
    image[1, 4:, :] = 1.0  # green on the bottom half
    vertical_edge = torch.zeros(8, 8)
    vertical_edge[:, 3:5] = 1.0  # where a horizontal Sobel derivative of the luminance is non-zero
    maps = torch.stack([vertical_edge, image[0] - image[1], torch.full((8, 8), 0.3)])
    match = _first_conv_match("x", image, maps)
    assert match["edge_maps"] == [0] and match["colour_maps"] == [1]
    assert [x["reference"] for x in match["maps"][:2]] == ["sobel_x", "red_green"]
    assert match["maps"][0]["r"] == pytest.approx(1.0) and match["maps"][1]["r"] == pytest.approx(1.0)
    assert match["maps"][2]["r"] == 0.0  # a constant map correlates with nothing
