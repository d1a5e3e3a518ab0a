"""Foundation: configs, run folders, atomic writes, backbones, preprocessing, weights loading."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.config import RunConfig, add_command, build_config, option
from vislab.errors import UserError, WeightsUnavailableError
from vislab.io import write_json
from vislab.models.backbones import Preprocess, build_backbone, imagenet_classes
from vislab.models.taps import LayerTap
from vislab.runs import PARTIAL_SUFFIX, Run


# --- configs ---------------------------------------------------------------------------------

@dataclasses.dataclass
class ToyConfig(RunConfig):
    lr: float = option(0.01, "learning rate")
    layers: list[str] = option(["relu7"], "layers")
    mode: Literal["a", "b"] = option("a", "mode")
    fast: bool = option(False, "go fast")
    weights: str = option("imagenet", "weights", consts={"--no-weights": "none"})


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_command(sub, "toy", ToyConfig, lambda cfg: cfg, help="toy")
    args = parser.parse_args(["toy", *argv])
    return args.handler(args)


def test_config_precedence_defaults_file_cli(tmp_path):
    assert _parse([]) == ToyConfig()
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\nmode: b\nlayers: [relu6, relu7]\n")
    cfg = _parse(["--config", str(f), "--lr", "0.25", "--fast", "--no-weights"])
    assert (cfg.lr, cfg.mode, cfg.layers, cfg.fast, cfg.weights) == (0.25, "b", ["relu6", "relu7"], True, "none")
    t = tmp_path / "c.toml"
    t.write_text('lr = 2\nseed = 7\n')
    cfg = _parse(["--config", str(t)])
    assert cfg.lr == 2.0 and isinstance(cfg.lr, float) and cfg.seed == 7


def test_config_rejects_unknown_and_bad_values(tmp_path):
    with pytest.raises(UserError, match="unknown option.*colour"):
        build_config(ToyConfig, {"colour": 1})
    with pytest.raises(UserError, match="--mode 'c': choose one of a, b"):
        build_config(ToyConfig, {"mode": "c"})
    with pytest.raises(SystemExit):
        _parse(["--mode", "c"])


def test_every_cli_option_has_help():
    from vislab.cli import build_parser

    parser = build_parser()

    def walk(p, path):
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{path} {action.option_strings} has no help"
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(parser, "vislab")


# --- atomic writes and run folders -----------------------------------------------------------

def test_write_json_is_atomic_on_failure(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp files left


def test_run_folder_contents_and_manifest(tmp_path):
    cfg = ToyConfig(out=str(tmp_path / "r"), seed=3)
    with Run("toy", cfg) as run:
        assert run.dir.name == "r" + PARTIAL_SUFFIX
        run.metrics["x"] = torch.tensor(1.5)
    out = tmp_path / "r"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", "metrics.json"]
    assert json.loads((out / "metrics.json").read_text()) == {"x": 1.5}
    assert json.loads((out / "config.json").read_text())["lr"] == 0.01
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["device"] == "cpu"
    assert manifest["versions"]["torch"] == importlib.metadata.version("torch")
    assert {"python", "torch", "torchvision", "timm"} <= set(manifest["versions"])
    assert "command" in manifest and "git_commit" in manifest and manifest["precision"] == "fp32"


@dataclasses.dataclass
class AutoPrecisionConfig(RunConfig):
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "precision")


@pytest.mark.parametrize("native, option, recorded", [(True, "auto", "bf16"), (False, "auto", "fp32"),
                                                      (False, "bf16", "bf16"), (True, "fp32", "fp32")])
def test_manifest_records_the_precision_computed_in_not_auto(tmp_path, monkeypatch, native, option, recorded):
    import vislab.precision

    monkeypatch.setattr(vislab.precision, "bf16_is_native", lambda device: native)
    with Run("toy", AutoPrecisionConfig(out=str(tmp_path / "r"), precision=option)):
        pass
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["precision"] == recorded
    assert json.loads((tmp_path / "r" / "config.json").read_text())["precision"] == option  # the option as given


def test_interrupted_run_never_looks_complete(tmp_path):
    cfg = ToyConfig(out=str(tmp_path / "r"))
    with pytest.raises(RuntimeError):
        with Run("toy", cfg) as run:
            run.metrics["x"] = 1
            raise RuntimeError("boom")
    assert not (tmp_path / "r").exists()
    assert not (tmp_path / ("r" + PARTIAL_SUFFIX)).exists()  # nothing to resume: nothing left behind


def test_interrupted_training_keeps_its_checkpoint_for_resume(tmp_path):
    cfg = ToyConfig(out=str(tmp_path / "r"))
    with pytest.raises(KeyboardInterrupt):
        with Run("toy", cfg) as run:
            run.path("checkpoint.pt").write_bytes(b"state")
            raise KeyboardInterrupt
    partial = tmp_path / ("r" + PARTIAL_SUFFIX)
    assert not (tmp_path / "r").exists() and not (partial / "manifest.json").exists()
    with Run("toy", cfg, resume=True) as run:
        assert run.resumed and run.path("checkpoint.pt").read_bytes() == b"state"
    assert (tmp_path / "r" / "checkpoint.pt").is_file() and not partial.exists()


def test_existing_run_folder_is_not_overwritten_silently(tmp_path):
    out = tmp_path / "r"
    with Run("toy", ToyConfig(out=str(out))) as run:
        run.metrics["v"] = 1
    with pytest.raises(UserError, match="--overwrite"):
        with Run("toy", ToyConfig(out=str(out))):
            pass
    with Run("toy", ToyConfig(out=str(out), overwrite=True)) as run:
        run.metrics["v"] = 2
    assert json.loads((out / "metrics.json").read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_same_seed_same_numbers(tmp_path):
    def draw(seed, name):
        with Run("toy", ToyConfig(out=str(tmp_path / name), seed=seed)) as run:
            net = build_backbone("squeezenet1_1", "none")
            run.metrics["w"] = net.net.features[0].weight.flatten()[:5].tolist()
        return json.loads((tmp_path / name / "metrics.json").read_text())["w"]

    assert draw(0, "a") == draw(0, "b")
    assert draw(0, "c") != draw(1, "d")


# --- backbones -------------------------------------------------------------------------------

def test_vgg16_parameter_counts_and_layer_names():
    b = build_backbone("vgg16", "none")
    assert b.num_parameters == 138_357_544
    linear = sum(p.numel() for m in b.net.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())
    assert linear == 123_642_856
    convs = [n for n in b.layers if n.startswith("conv")]
    assert convs == [f"conv{blk}_{i}" for blk, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]
    assert (b.layers["conv1_1"], b.layers["pool5"], b.layers["relu6"], b.layers["relu7"], b.layers["logits"]) == (
        "features.0", "features.30", "classifier.1", "classifier.4", "classifier.6")
    assert b.default_layer == "relu7"


@pytest.mark.parametrize("name,count", [("vgg19", 143_667_240), ("alexnet", 61_100_840), ("resnet18", 11_689_512),
                                        ("resnet50", 25_557_032), ("squeezenet1_1", 1_235_496),
                                        ("efficientnet_lite0", 4_652_008)])
def test_other_backbone_parameter_counts(name, count):
    assert build_backbone(name, "none").num_parameters == count


def test_layer_tap_shapes_and_early_stop():
    b = build_backbone("vgg16", "none")
    model = b.pixel_model()
    calls = []
    b.net.classifier[6].register_forward_hook(lambda *a: calls.append("fc8"))
    out = LayerTap(model, [b.module_path("relu7"), b.module_path("pool5"), b.module_path("conv1_1")],
                   root=b.net)(torch.rand(1, 3, 224, 224))
    assert [tuple(v.shape) for v in out.values()] == [(1, 4096), (1, 512, 7, 7), (1, 64, 224, 224)]
    assert calls == []  # stopped after relu7: fc8 never ran
    assert (out["classifier.4"] >= 0).all() and (out["features.0"] < 0).any()  # conv output is pre-ReLU


def test_unknown_layer_and_model_errors_list_choices():
    from vislab.errors import UserError

    b = build_backbone("squeezenet1_1", "none")
    with pytest.raises(UserError, match="fire9"):
        b.module_path("relu99")
    with pytest.raises(UserError, match="vgg16"):
        build_backbone("vgg17", "none")


def test_preprocessing_equals_hand_computation():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(256, 300, 3), dtype=np.uint8)  # shorter side already 256
    pre = Preprocess()
    x = pre.pixel_transform("crop")(Image.fromarray(arr))
    top, left = (256 - 224) // 2, (300 - 224) // 2
    hand = arr[top:top + 224, left:left + 224].astype(np.float32) / 255.0
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), hand, atol=1e-6)
    # normalisation inside the pixel-space model: (x - mean) / std per channel
    from vislab.models.backbones import PixelModel

    seen = PixelModel(torch.nn.Identity(), pre.mean, pre.std)(x[None])[0]
    hand_norm = (hand - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(seen.permute(1, 2, 0).numpy(), hand_norm, atol=1e-5)


def test_state_dict_round_trip_and_pickle_refused(tmp_path):
    src = build_backbone("vgg16", "none")
    f = tmp_path / "vgg16.pth"
    torch.save(src.net.state_dict(), f)
    loaded = build_backbone("vgg16", str(f))
    for (k, a), b in zip(src.net.state_dict().items(), loaded.net.state_dict().values()):
        assert torch.equal(a, b), k
    evil = tmp_path / "evil.pth"
    torch.save({"weights": Path("/etc/passwd")}, evil)  # an arbitrary object, not a tensor
    with pytest.raises(WeightsUnavailableError, match="weights_only"):
        build_backbone("vgg16", str(evil))
    wrong = tmp_path / "squeeze.pth"
    torch.save(build_backbone("squeezenet1_1", "none").net.state_dict(), wrong)
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        build_backbone("vgg16", str(wrong))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_backbone("vgg16", str(tmp_path / "missing.pth"))


def test_download_failure_names_the_way_out(monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="--weights FILE.*--no-weights.*efficientnet_lite0"):
        build_backbone("squeezenet1_1", "imagenet")


def test_imagenet_class_names_offline():
    names = imagenet_classes()
    assert len(names) == 1000
    assert (names[6], names[76], names[113], names[967]) == ("stingray", "tarantula", "snail", "espresso")


_ALLOCATION_PROBE = """
import resource, sys, torch
from vislab.allocator import retain_freed_memory
print(retain_freed_memory())
faults = []
for _ in range(8):  # a training step's pattern: the same multi-megabyte tensors made and freed
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts = [torch.empty(3 * 2**20, dtype=torch.float16).fill_(1) for _ in range(6)]
    del ts
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(max(faults[4:]))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_freed_memory_stops_page_faults_on_reused_tensors():
    def probe(**env):
        out = subprocess.run([sys.executable, "-c", _ALLOCATION_PROBE], capture_output=True, text=True, check=True,
                             env={**os.environ, **env}).stdout.split()
        return out[0] == "True", int(out[1])

    on, faults = probe()
    assert on and faults < 100  # 36 MiB touched per round: 9,216 pages if they came fresh from the kernel
    on, _ = probe(VISLAB_SYSTEM_MALLOC="1")
    assert not on
