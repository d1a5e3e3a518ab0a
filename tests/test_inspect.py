"""``vislab inspect``: image modes, the metrics contract, predictions, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest
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
