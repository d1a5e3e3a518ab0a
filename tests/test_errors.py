"""Bad input never gives a finished run with wrong numbers, never loses work, and never a traceback.

Issue 15, classes 2-4: every option is checked (finite, in range) when the config is built; JSON is
strict; ``--resume`` refuses changed options by name; checkpoints are kept unless ``--overwrite``;
``--overwrite`` replaces only vislab's folders; a user error is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import gzip
import importlib
import json
import os
import struct
import subprocess
import sys
import typing
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vislab import io as vio
from vislab.cli import COMMAND_MODULES, main
from vislab.config import (RunConfig, build_config, check_same_options, config_from_args, config_to_dict, option,
                           resume_identity)
from vislab.data.image_files import ImageFiles
from vislab.data.images import load_image
from vislab.errors import CorruptFileError, ImageReadError, OutputError, UserError
from vislab.experiments.adapt import AdaptConfig
from vislab.experiments.transfer import TransferConfig
from vislab.io import NON_FINITE_KEY, load_checkpoint, torch_load, torch_save, write_json
from vislab.runs import PARTIAL_SUFFIX, Run

SRC = str(Path(__file__).resolve().parents[1] / "src")


@dataclasses.dataclass
class ToyConfig(RunConfig):
    lr: float = option(0.01, "learning rate", min=0, min_exclusive=True)
    epochs: int = option(3, "epochs", min=1)
    fraction: float = option(0.5, "a fraction", min=0, max=1)
    grid: list[float] = option([1.0], "values", min=0, min_exclusive=True)
    eval_batch: int = option(100, "evaluation batch", min=1, resume_safe=True)
    resume: bool = option(False, "continue")


def _cli(argv, capsys):
    """(exit status, stderr) of ``vislab ARGV`` run in this process."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def _subprocess(argv, cwd):
    """(exit status, stderr) of ``python -m vislab ARGV`` in a fresh process: what a user sees."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "vislab", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


def _one_line_error(err: str, *needles: str) -> str:
    """The single error line of ``err`` (no traceback), checked to contain every needle."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# === class 2: runs that exit 0 with wrong numbers ================================================

@pytest.mark.parametrize("argv,needles", [
    (["adapt", "--lr", "nan"], ["--lr nan", "finite"]),
    (["adapt", "--lambda-max", "inf"], ["--lambda-max inf", "finite"]),
    (["transfer", "--c-grid", "0.1", "nan", "--data", "x"], ["--c-grid nan", "finite"]),  # inside a list
    (["fool", "--learning-rate=-inf"], ["--learning-rate -inf", "finite"]),
    (["transfer", "--head-epochs", "0", "--data", "x"], ["--head-epochs 0", ">= 1"]),
    (["adapt", "--batch-size", "0"], ["--batch-size 0", ">= 1"]),
    (["adapt", "--eval-batch", "0"], ["--eval-batch 0", ">= 1"]),
    (["gan", "--beta1", "1"], ["--beta1 1.0", "< 1"]),  # exclusive bound
    (["inspect", "--top-k", "1001"], ["--top-k 1001", "from 1 to 1000"]),
    (["classviz", "--target", "3", "-5"], ["--target -5", ">= 0"]),
    (["saliency", "--target", "-1"], ["--target -1", ">= 0"]),
    (["adapt", "--pl-fraction-end", "1.5"], ["--pl-fraction-end 1.5", "from 0 to 1"]),
])
def test_bad_numbers_are_refused_before_anything_runs(argv, needles, tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli([*argv, "--out", out], capsys)
    assert status == 2
    _one_line_error(err, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing deleted


def test_config_file_values_are_checked_like_options(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: .nan\n")
    with pytest.raises(UserError, match=r"config file .*c\.yaml: --lr nan: must be a finite number"):
        config_from_args(ToyConfig, argparse.Namespace(config=str(f)))
    with pytest.raises(UserError, match=r"--fraction 2\.0: out of range; use a value from 0 to 1"):
        build_config(ToyConfig, {"fraction": 2})
    with pytest.raises(UserError, match=r"--lr 0\.0: out of range; use a value > 0"):
        build_config(ToyConfig, {"lr": "0"})
    with pytest.raises(UserError, match=r"--epochs 2\.5: expected a whole number"):
        build_config(ToyConfig, {"epochs": 2.5})
    cfg = build_config(ToyConfig, {"lr": "1e-3", "epochs": "2", "grid": [0.5, 2]})
    assert (cfg.lr, cfg.epochs, cfg.grid) == (1e-3, 2, [0.5, 2.0])


def test_every_numeric_option_of_every_command_is_bounded_or_deliberately_free():
    """A new numeric option without min/max is a decision: list it here with the reason. Every
    default passes its own option's check."""
    free = {"mean": "normalisation mean (vislab adapt): any finite value"}
    unbounded = []
    seen = set()
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        for cls in vars(mod).values():
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or cls in seen:
                continue
            seen.add(cls)
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                tp = str(hints[f.name])
                numeric = "help" in f.metadata and any(t in tp for t in ("int", "float")) and "Literal" not in tp
                if numeric and f.metadata.get("min") is None and f.metadata.get("max") is None \
                        and f.name not in free:
                    unbounded.append(f"{cls.__name__}.{f.name}")
                if not numeric or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                    continue
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                if default is not None:
                    build_config(cls, {f.name: default})  # a default outside its range is a bug
    assert unbounded == []


def test_strict_json_writes_null_and_lists_non_finite_values(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"fid": float("nan"), "ok": 1.5, "history": {"loss": [0.5, float("inf"), -float("inf")]},
                      "per_class": np.array([0.25, np.nan]), "t": torch.tensor(float("nan"))})
    data = _strict_loads(path.read_text())  # valid JSON: no bare NaN / Infinity
    assert data["fid"] is None and data["ok"] == 1.5 and data["history"]["loss"] == [0.5, None, None]
    assert data["per_class"] == [0.25, None] and data["t"] is None
    assert data[NON_FINITE_KEY]["values"] == {"fid": "nan", "history.loss[1]": "inf", "history.loss[2]": "-inf",
                                             "per_class[1]": "nan", "t": "nan"}
    assert "null" in data[NON_FINITE_KEY]["reason"]
    write_json(path, {"a": [1, 2.5]})  # finite data: written as is, no extra key
    assert _strict_loads(path.read_text()) == {"a": [1, 2.5]}
    with pytest.raises(ValueError, match=r"\[1\]"):  # vislab never writes NaN in a top-level list: a bug
        write_json(path, [1.0, float("nan")])
    assert _strict_loads(path.read_text()) == {"a": [1, 2.5]}  # the old content is intact


def test_report_reads_strict_and_legacy_non_finite_metrics(tmp_path, capsys):
    for name, text in (("strict", None), ("legacy", '{"params_total": NaN, "x": Infinity}')):
        with Run("toy", RunConfig(out=str(tmp_path / "runs" / name))) as run:  # no metrics schema
            run.metrics.update(params_total=float("nan"), output_size=1000)
        if text:
            (tmp_path / "runs" / name / "metrics.json").write_text(text)
    out = tmp_path / "r.html"
    status, _ = _cli(["report", "--runs", tmp_path / "runs", "--output", out], capsys)
    assert status == 0 and "2 run(s)" in out.read_text()


def test_resume_identity_leaves_out_bookkeeping_and_resume_safe_options():
    cfg = ToyConfig(out="a", seed=1, device="cpu", overwrite=True, resume=True, eval_batch=7)
    ident = resume_identity(cfg)
    assert ident == {"seed": 1, "lr": 0.01, "epochs": 3, "fraction": 0.5, "grid": [1.0]}
    check_same_options(config_to_dict(cfg), resume_identity(dataclasses.replace(cfg, out="b", eval_batch=9)), "x")
    with pytest.raises(UserError, match=r"--resume: x was made with --epochs 3, not 4; rerun with the same "
                                        r"options, or start over with --overwrite"):
        check_same_options(ident, resume_identity(dataclasses.replace(cfg, epochs=4)), "x")
    with pytest.raises(UserError, match=r"--grid \(not recorded\)"):
        check_same_options({k: v for k, v in ident.items() if k != "grid"}, ident, "x")


def _interrupted(out: Path, cfg) -> Path:
    """An interrupted run of ``cfg`` in OUT.partial with a checkpoint, as a training command leaves it."""
    with pytest.raises(KeyboardInterrupt):
        with Run("toy", cfg) as run:
            torch_save({"epoch": 1}, run.path("checkpoint.pt"))
            raise KeyboardInterrupt
    return Path(str(out) + PARTIAL_SUFFIX)


def test_resume_with_a_changed_option_is_refused_by_name_and_touches_nothing(tmp_path):
    out = tmp_path / "r"
    partial = _interrupted(out, ToyConfig(out=str(out), lr=0.1))
    before = {p.name: p.read_bytes() for p in partial.iterdir()}
    with pytest.raises(UserError, match=r"made with --lr 0\.1, not 0\.2.*--overwrite"):
        with Run("toy", ToyConfig(out=str(out), lr=0.2), resume=True):
            pytest.fail("must not start")
    assert {p.name: p.read_bytes() for p in partial.iterdir()} == before
    # a resume-safe option may change; the config then records it
    with Run("toy", ToyConfig(out=str(out), lr=0.1, eval_batch=5), resume=True) as run:
        assert run.resumed and load_checkpoint(run.path("checkpoint.pt")) == {"epoch": 1}
    assert json.loads((out / "config.json").read_text())["eval_batch"] == 5


def test_cli_adapt_and_transfer_resume_refuse_changed_options(tmp_path, capsys):
    """Every resumable command goes through the same check, before loading any data."""
    for command, cls, same, changed, needle in (
            ("adapt", AdaptConfig, {"epochs": 2}, ["--epochs", "2", "--lr", "0.02"], "--lr 0.01, not 0.02"),
            ("transfer", TransferConfig, {"data": "d"}, ["--data", "d", "--c", "3"], "--c 1.0, not 3.0")):
        out = tmp_path / command
        partial = _interrupted(out, build_config(cls, {"out": str(out), **same}))
        status, err = _cli([command, "--out", out, "--resume", *changed], capsys)
        assert status == 2
        _one_line_error(err, needle, "start over with --overwrite")
        assert (partial / "checkpoint.pt").is_file()


def test_saliency_class_source_says_which_class_was_used(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(imgs / f"p{i}.png")
    common = ["saliency", "--images", imgs, "--model", "squeezenet1_1", "--no-weights"]
    assert _cli([*common, "--out", tmp_path / "pred"], capsys)[0] == 0
    results = json.loads((tmp_path / "pred" / "metrics.json").read_text())["results"]
    assert [(r["class_source"], r["class"]) for r in results] == [("predicted", r["predicted"]) for r in results]
    assert _cli([*common, "--target", "7", "--out", tmp_path / "t"], capsys)[0] == 0
    results = json.loads((tmp_path / "t" / "metrics.json").read_text())["results"]
    assert [(r["class_source"], r["class"]) for r in results] == [("target", 7)] * 2
    status, err = _cli([*common, "--target", "1000", "--out", tmp_path / "big"], capsys)
    assert status == 2 and not (tmp_path / "big").exists()
    _one_line_error(err, "--target 1000", "0 to 999")


# === class 3: work lost ===========================================================================

def test_rerun_without_resume_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    out = tmp_path / "r"
    partial = _interrupted(out, ToyConfig(out=str(out)))
    assert "--resume" in capsys.readouterr().err  # the interruption says how to continue
    with pytest.raises(UserError, match=r"checkpoint of an interrupted run: continue it with --resume .*"
                                        r"discard it with --overwrite"):
        with Run("toy", ToyConfig(out=str(out))):
            pytest.fail("must not start")
    assert load_checkpoint(partial / "checkpoint.pt") == {"epoch": 1}
    # the CLI validates its options first: a bad one changes nothing either
    cfg = build_config(AdaptConfig, {"out": str(tmp_path / "a"), "epochs": 2})
    apartial = _interrupted(tmp_path / "a", cfg)
    for extra in (["--batch-size", "0"], []):
        status, err = _cli(["adapt", "--out", tmp_path / "a", "--epochs", "2", *extra], capsys)
        assert status == 2 and (apartial / "checkpoint.pt").is_file()
    _one_line_error(err, str(apartial), "--resume", "--overwrite")
    # --overwrite is the explicit way to discard it
    with Run("toy", ToyConfig(out=str(out), overwrite=True)) as run:
        assert not run.resumed and not run.path("checkpoint.pt").exists()
    assert not partial.exists() and (out / "manifest.json").is_file()


def test_resume_and_overwrite_starts_over_when_the_options_changed(tmp_path):
    out = tmp_path / "r"
    _interrupted(out, ToyConfig(out=str(out), epochs=2))
    with Run("toy", ToyConfig(out=str(out), epochs=5, overwrite=True), resume=True) as run:
        assert not run.resumed and not run.path("checkpoint.pt").exists()
    _interrupted(tmp_path / "s", ToyConfig(out=str(tmp_path / "s"), epochs=2))
    with Run("toy", ToyConfig(out=str(tmp_path / "s"), epochs=2, overwrite=True), resume=True) as run:
        assert run.resumed and run.path("checkpoint.pt").is_file()  # same options: continued


def test_overwrite_refuses_a_folder_that_is_not_a_vislab_run(tmp_path, capsys):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    status, err = _cli(["inspect", "--model", "vgg16", "--no-weights", "--out", mine, "--overwrite"], capsys)
    assert status == 2
    _one_line_error(err, str(mine), "not a vislab run folder", "no manifest.json")
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"]
    # nor a foreign OUT.partial, even with --overwrite; an empty folder is fine
    foreign = tmp_path / ("x" + PARTIAL_SUFFIX)
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not an incomplete vislab run"):
        with Run("toy", ToyConfig(out=str(tmp_path / "x"), overwrite=True)):
            pass
    assert (foreign / "notes.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    with Run("toy", ToyConfig(out=str(tmp_path / "empty"), overwrite=True)):
        pass
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_truncated_checkpoint_says_start_over_not_resume(tmp_path, capsys):
    out = tmp_path / "r"
    partial = _interrupted(out, ToyConfig(out=str(out)))
    capsys.readouterr()
    ckpt = partial / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"checkpoint\.pt is truncated or corrupt .* cannot be resumed: "
                                               r"start the run over with --overwrite"):
        with Run("toy", ToyConfig(out=str(out)), resume=True) as run:
            load_checkpoint(run.path("checkpoint.pt"))
    assert "--resume" not in capsys.readouterr().err  # no advice that would fail the same way
    assert ckpt.is_file()  # kept: discarding it is the user's call (--overwrite)
    empty = tmp_path / "cache.pt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"cache\.pt is truncated or corrupt .* delete it"):
        torch_load(empty)


def test_cli_adapt_resume_of_a_truncated_checkpoint_then_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    data = _write_mnist(tmp_path / "mnist")
    bg = tmp_path / "bg"
    bg.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(bg / f"p{i}.png")
    argv = ["adapt", "--mode", "source-only", "--data-root", data, "--backgrounds", bg, "--epochs", "1",
            "--source-only-batch", "32", "--no-tsne", "--out", tmp_path / "r"]
    cfg = build_config(AdaptConfig, {"mode": ["source-only"], "data_root": str(data), "backgrounds": str(bg),
                                     "epochs": 1, "source_only_batch": 32, "tsne": False, "out": str(tmp_path / "r")})
    partial = _interrupted(tmp_path / "r", cfg)
    (partial / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    status, err = _cli([*argv, "--resume"], capsys)
    assert status == 2
    _one_line_error(err, str(partial / "checkpoint.pt"), "cannot be resumed", "--overwrite")
    assert "continue it" not in err and (partial / "checkpoint.pt").is_file()
    assert _cli([*argv, "--overwrite"], capsys)[0] == 0
    assert not partial.exists() and (tmp_path / "r" / "metrics.json").is_file()


def _write_mnist(root: Path, n_train: int = 64, n_test: int = 32) -> Path:
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        for name, arr in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            with gzip.open(root / f"{stem}-{name}-ubyte.gz", "wb") as fh:
                fh.write(header + arr.numpy().tobytes())
    return root


# === class 4: one line, exit 2, for what the user can fix =========================================

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path):
    status, err = _subprocess(["inspect", "--model", "vgg16", "--no-weights", "--device", "cuda", "--out", "r"],
                              tmp_path)
    assert status == 2
    _one_line_error(err, "--device cuda", "--device cpu")
    assert list(tmp_path.iterdir()) == []


def test_malformed_config_files_are_one_line_naming_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("top_k: 3\nimages: [a.jpg\n")
    status, err = _subprocess(["inspect", "--config", "bad.yaml"], tmp_path)
    assert status == 2
    _one_line_error(err, "bad.yaml is not valid YAML at line 3", "fix the file")
    (tmp_path / "bad.toml").write_text("top_k = 3\nmodel = \n")
    status, err = _subprocess(["inspect", "--config", "bad.toml"], tmp_path)
    assert status == 2
    _one_line_error(err, "bad.toml is not valid TOML", "line 2")


def test_config_file_problems_in_process(tmp_path, capsys):
    (tmp_path / "unknown.yaml").write_text("colour: red\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "c.ini").write_text("x=1\n")
    for name, needles in (("unknown.yaml", ["unknown.yaml", "unknown option(s) colour", "--top-k"]),
                          ("list.yaml", ["list.yaml must hold a mapping"]),
                          ("c.ini", ["use a .yaml, .yml, .toml or .json file"]),
                          ("missing.yaml", ["missing.yaml: no such file"])):
        status, err = _cli(["inspect", "--config", tmp_path / name], capsys)
        assert status == 2
        _one_line_error(err, *needles)


def test_out_under_a_file_or_a_file_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    status, err = _subprocess(["inspect", "--model", "vgg16", "--no-weights", "--out", "notes.txt/run"], tmp_path)
    assert status == 2
    _one_line_error(err, "notes.txt/run.partial", "is a file, not a folder")
    with pytest.raises(OutputError, match=r"notes\.txt/r\.html: a part of the path is a file"):
        vio.write_text(tmp_path / "notes.txt" / "r.html", "page")  # e.g. vislab report --output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_unwritable_output_is_one_line_naming_the_folder(code, needle, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    real_mkdir = Path.mkdir

    def failing_mkdir(self, *args, **kwargs):
        if self.name == "r" + PARTIAL_SUFFIX:
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", failing_mkdir)
    status, err = _cli(["inspect", "--model", "vgg16", "--no-weights", "--out", out], capsys)
    assert status == 2
    _one_line_error(err, str(out) + PARTIAL_SUFFIX, needle)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_removes_the_partial_run(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(vio.os, "fsync", full)
    status, err = _cli(["inspect", "--model", "squeezenet1_1", "--no-weights", "--out", tmp_path / "r"], capsys)
    assert status == 2
    _one_line_error(err, "cannot write", "disk is full")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="m.json: the disk is full"):
        write_json(tmp_path / "m.json", {"a": 1})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        status, err = _cli(["inspect", "--model", "vgg16", "--no-weights", "--out", ro / "r"], capsys)
    finally:
        ro.chmod(0o755)
    assert status == 2
    _one_line_error(err, "permission denied")


def _bomb_png(path: Path, side: int = 30000) -> Path:
    """A PNG header declaring side x side RGB pixels (2.7 G values) and no data: PIL refuses it on open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_reported_by_name_and_the_others_processed(tmp_path, capsys):
    bomb = _bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match="bomb.png: refused, too many pixels"):
        load_image(bomb)
    assert ImageFiles([bomb], lambda img: torch.zeros(3, 2, 2))[0][1] is False  # transfer marks it unreadable
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    status, err = _cli(["inspect", "--model", "squeezenet1_1", "--no-weights", "--images", bomb, good, truncated,
                        "-k", "2", "--out", tmp_path / "r"], capsys)
    assert status == 1  # like any unreadable image: named, the others processed, exit 1
    assert "Traceback" not in err and "bomb.png" in err and "cut.png" in err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [p["image"] for p in m["predictions"]] == [str(good)]
    assert [e["image"] for e in m["errors"]] == [str(bomb), str(truncated)]


def test_inspect_on_an_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    status, err = _cli(["inspect", "--model", "vgg16", "--no-weights", "--images", tmp_path / "empty",
                        "--out", tmp_path / "r"], capsys)
    assert status == 2
    _one_line_error(err, "--images", "no image files found")
    assert not (tmp_path / "r").exists()


def test_report_skips_malformed_runs_naming_the_file(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("good", "bad_metrics", "bad_manifest", "list_metrics"):
        with Run("toy", RunConfig(out=str(runs / name))) as run:  # no metrics schema
            run.metrics.update(params_total=10, params_linear=9, output_size=1000)
    (runs / "bad_metrics" / "metrics.json").write_text('{"params_total": 10,')
    (runs / "bad_manifest" / "manifest.json").write_bytes(b"\xff\xfe not text")
    (runs / "list_metrics" / "metrics.json").write_text("[1, 2]")
    out = tmp_path / "report.html"
    status, err = _cli(["report", "--runs", runs, "--output", out], capsys)
    assert status == 0 and "Traceback" not in err
    assert "1 run(s)" in out.read_text()
    for bad in ("bad_metrics/metrics.json", "bad_manifest/manifest.json", "list_metrics/metrics.json"):
        assert f"skipping {runs / bad.split('/')[0]}: {runs / bad}" in err
    (runs / "good" / "metrics.json").write_text("")
    status, err = _cli(["report", "--runs", runs, "--output", tmp_path / "none.html"], capsys)
    assert status == 2 and not (tmp_path / "none.html").exists()
    _one_line_error(err, "no readable run folder")


def test_bugs_keep_their_traceback(tmp_path, monkeypatch):
    """Only UserError is turned into one line: a bare ValueError is a bug and must show where it came from."""
    import vislab.experiments.inspection as inspect_mod

    def broken(cfg):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(inspect_mod, "inspect", broken)
    with pytest.raises(ValueError, match="internal mistake"):
        main(["inspect", "--out", str(tmp_path / "r")])
