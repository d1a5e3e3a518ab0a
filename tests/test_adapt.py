"""Part C: GRL, schedules, MNIST-M builder, DANN algorithms and ``vislab adapt`` on tiny data."""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vislab.cli import main
from vislab.data import mnistm as mnistm_mod
from vislab.data.domains import DomainBatch, DomainBatches, Domains, channel_stats, domain_norms, to_input
from vislab.data.mnist import DigitSet
from vislab.data.mnistm import blend, build_mnistm, load_mnistm
from vislab.errors import UserError
from vislab.experiments import adapt as adapt_mod
from vislab.experiments.adapt import AdaptConfig, hparams, train_mode
from vislab.io import torch_load, torch_save
from vislab.methods.augment import augment_digits
from vislab.methods.dann import ALGORITHMS, DANN, AdaptHParams, DANNPseudoLabel
from vislab.methods.pseudo_label import PseudoLabeller, round_epochs, select_pseudo_labels
from vislab.methods.grl import dann_lr, grad_reverse, grl_lambda
from vislab.models.dann import DANNNet
from vislab.models.layout import Flatten

# -- GRL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_grl_forward_identity_backward_minus_lambda(lam):
    x = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    y = grad_reverse(x, lam)
    assert torch.equal(y, x)
    g = torch.randn(4, 5, dtype=torch.double)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(gx, -lam * g)


@pytest.mark.parametrize("lam", [0.5, 1.0, 3.0])
def test_grl_gradcheck(lam):
    # gradcheck compares the analytic backward with finite differences of the forward. The GRL is
    # *meant* to disagree (identity forward, -lambda backward), so check f(x) = R(x) - (1 + lam) * x
    # with the second term detached: numerically f = -lam * x, analytically only R contributes.
    # It passes iff R's forward is the identity and its backward is -lam * grad.
    w = torch.randn(3, 6, dtype=torch.double)

    def f(x):
        return (grad_reverse(x, lam) - (1 + lam) * x.detach()) @ w.T

    x = torch.randn(2, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,))
    # and the plain GRL must fail gradcheck: its backward is not the forward's derivative
    assert not torch.autograd.gradcheck(lambda x: grad_reverse(x, lam), (x,), raise_exception=False)


# -- schedules -----------------------------------------------------------------------------


def test_lambda_schedules():
    assert grl_lambda(0.0, "paper") == 0.0
    assert grl_lambda(1.0, "paper") == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_lambda(1.0, "paper") == pytest.approx(0.9999092, abs=1e-7)
    assert grl_lambda(0.5, "course") == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert grl_lambda(0.5, "course") == pytest.approx(0.4621172, abs=1e-7)
    assert grl_lambda(0.1, "paper") == pytest.approx(0.4621172, abs=1e-7)  # gamma p = 1 again
    assert grl_lambda(0.5, "paper", gamma=2.0) == grl_lambda(0.5, "course")
    assert grl_lambda(0.7, "constant", constant=0.3) == 0.3
    assert grl_lambda(0.5, "course", scale=0.5) == pytest.approx(0.5 * 0.4621172, abs=1e-7)
    with pytest.raises(ValueError, match="schedule"):
        grl_lambda(0.5, "linear")
    with pytest.raises(ValueError, match="progress"):
        grl_lambda(1.5, "paper")


def test_lr_schedule():
    assert dann_lr(0.0) == 0.01
    assert dann_lr(1.0) == pytest.approx(0.01 / 11 ** 0.75)
    assert dann_lr(1.0) == pytest.approx(0.0016556, abs=1e-7)
    assert dann_lr(0.5, lr0=0.1, alpha=10, beta=1.0) == pytest.approx(0.1 / 6)
    assert dann_lr(0.9, alpha=0.0) == 0.01


def test_algorithm_schedules_follow_steps_and_presets():
    hp = hparams(AdaptConfig(preset="course"))
    assert hp.lambda_schedule == "course"
    assert hparams(AdaptConfig(preset="vislab")).lambda_schedule == "paper"
    assert hparams(AdaptConfig(lambda_schedule="constant", preset="course")).lambda_schedule == "constant"
    algo = DANN(DANNNet(), hp, total_steps=10)
    algo.step = 5
    assert algo.lr() == pytest.approx(dann_lr(0.5))
    assert algo.grl_lambda() == pytest.approx(grl_lambda(0.5, "course"))
    assert algo.lr(1.0) == pytest.approx(dann_lr(1.0)) and algo.grl_lambda(0.1) == pytest.approx(grl_lambda(0.1, "course"))
    # source-only has no domain classifier: it reports lambda 0 whatever the schedule
    assert ALGORITHMS["source-only"](DANNNet(), hp, total_steps=10).grl_lambda(0.5) == 0.0


# -- pseudo-labels -------------------------------------------------------------------------


def test_select_pseudo_labels():
    probs = torch.tensor([
        [0.9, 0.1, 0.0],   # class 0, conf 0.9
        [0.6, 0.4, 0.0],   # class 0, conf 0.6
        [0.7, 0.3, 0.0],   # class 0, conf 0.7
        [0.2, 0.8, 0.0],   # class 1, conf 0.8
        [0.45, 0.55, 0.0],  # class 1, conf 0.55
        [0.0, 0.0, 1.0],   # class 2, conf 1.0
    ])
    # top 50% per class (rounded up): class 0 keeps 2 of 3 (0.9, 0.7), class 1 one of 2, class 2 its one
    assert select_pseudo_labels(probs, "top", 0.5).tolist() == [0, -1, 0, 1, -1, 2]
    assert select_pseudo_labels(probs, "top", 1.0).tolist() == [0, 0, 0, 1, 1, 2]
    assert select_pseudo_labels(probs, "top", 0.0).tolist() == [-1] * 6
    assert select_pseudo_labels(probs, "threshold", threshold=0.75).tolist() == [0, -1, -1, 1, -1, 2]
    with pytest.raises(ValueError, match="top"):
        select_pseudo_labels(probs, "best")


def test_pseudo_labeller_rounds_fractions_and_state():
    assert round_epochs(8, 4, 20) == [8, 11, 14, 17]
    assert round_epochs(0, 2, 2) == [0, 1]
    assert round_epochs(2, 5, 4) == [2, 3]  # 5 rounds over 2 epochs: two distinct epochs
    with pytest.raises(ValueError, match="start epoch"):
        round_epochs(4, 1, 4)
    labeller = PseudoLabeller(4, 20, start_epoch=8, rounds=4, fraction_start=0.4, fraction_end=0.8)
    assert [labeller.fraction(r) for r in range(4)] == pytest.approx([0.4, 0.4 + 0.4 / 3, 0.4 + 0.8 / 3, 0.8])
    assert labeller.labels.tolist() == [-1] * 4
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    calls = []

    def predict():
        calls.append(1)
        return probs

    assert labeller.before_epoch(7, predict) is None and not calls  # no round: the model is not asked
    info = labeller.before_epoch(8, predict)
    # fraction 0.4 of each predicted class, rounded up: the most confident of class 0 and of class 1
    assert info == {"round": 0, "epoch": 8, "fraction": 0.4, "count": 2}
    assert labeller.labels.tolist() == [0, -1, -1, 1]
    other = PseudoLabeller(4, 20, start_epoch=8, rounds=4)
    other.load_state(labeller.state())
    assert torch.equal(other.labels, labeller.labels)
    threshold = PseudoLabeller(4, 2, select="threshold", threshold=0.75, start_epoch=0, rounds=1)
    assert threshold.before_epoch(0, predict) == {"round": 0, "epoch": 0, "fraction": None, "count": 2}
    assert threshold.labels.tolist() == [0, -1, -1, 1]


# -- MNIST-M -------------------------------------------------------------------------------


def test_blend_formula_by_hand():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 3, 4] = 1      # any non-zero pixel counts as stroke (binarised to 255)
    digits[1, 10, 10] = 200
    yy, xx = np.mgrid[0:40, 0:50]
    photo0 = np.stack([(yy + 2 * xx) % 256, np.full_like(yy, 30), np.full_like(yy, 250)], -1).astype(np.uint8)
    photo1 = np.full((30, 30, 3), 7, np.uint8)
    out = blend(digits, [photo0, photo1], np.array([0, 1]), np.array([5, 2]), np.array([9, 1]))
    assert out.shape == (2, 3, 28, 28) and out.dtype == np.uint8
    # background pixel of image 0 at (i, j) = photo0[5 + i, 9 + j]
    assert out[0, 0, 0, 0] == (5 + 2 * 9) % 256
    assert out[0, 0, 20, 7] == (25 + 2 * 16) % 256
    assert out[0, 1, 0, 0] == 30 and out[0, 2, 0, 0] == 250
    # stroke pixel: |photo - 255|
    assert out[0, 0, 3, 4] == 255 - (8 + 2 * 13) % 256
    assert out[0, 1, 3, 4] == 225 and out[0, 2, 3, 4] == 5
    assert (out[1, :, 10, 10] == 248).all()
    assert (out[1, :, 0, 0] == 7).all()


def _tiny_digits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 28, 28, generator=g) > 0.8).to(torch.uint8) * torch.randint(0, 256, (n, 28, 28), generator=g).to(torch.uint8)
    return DigitSet(images, torch.randint(0, 10, (n,), generator=g))


def _write_photos(folder, n=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40 + 5 * i, 36, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_mnistm_deterministic_cached_and_formula(tmp_path):
    digits = _tiny_digits()
    photos = _write_photos(tmp_path / "bg")
    a = load_mnistm("train", backgrounds=photos, seed=3, cache=tmp_path / "c1", digits=digits)
    b = load_mnistm("train", backgrounds=photos, seed=3, cache=tmp_path / "c2", digits=digits)
    assert torch.equal(a.images, b.images) and a.content_sha256 == b.content_sha256
    assert torch.equal(a.labels, digits.labels)
    assert a.images.shape == (40, 3, 28, 28)
    cached = list((tmp_path / "c1").glob("*.pt"))
    assert len(cached) == 1
    manifest = json.loads(cached[0].with_suffix(".json").read_text())
    assert manifest["content_sha256"] == a.content_sha256 and "folder" in manifest["backgrounds"]
    again = load_mnistm("train", backgrounds=photos, seed=3, cache=tmp_path / "c1", digits=digits)
    assert torch.equal(again.images, a.images)
    other = load_mnistm("train", backgrounds=photos, seed=4, cache=tmp_path / "c1", digits=digits)
    assert not torch.equal(other.images, a.images)
    test_split = load_mnistm("test", backgrounds=photos, seed=3, cache=tmp_path / "c1", digits=digits)
    assert not torch.equal(test_split.images, a.images)
    # the build is the recipe applied to crops drawn from a seeded generator
    from vislab.data.mnistm import sample_crops
    photos_arr = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.png"))]
    split_seed = int(np.random.SeedSequence([3, 0]).generate_state(1)[0])
    idx, ys, xs = sample_crops(len(digits), photos_arr, np.random.default_rng(split_seed))
    assert np.array_equal(a.images.numpy(), blend(digits.images.numpy(), photos_arr, idx, ys, xs))


def test_mnistm_bundled_fallback_and_errors(tmp_path):
    digits = _tiny_digits(8)
    m = load_mnistm("train", seed=0, cache=tmp_path, digits=digits, allow_download=False)
    assert "sklearn:china.jpg" in m.backgrounds
    with pytest.raises(UserError, match="--backgrounds"):
        load_mnistm("train", backgrounds=tmp_path / "missing", cache=tmp_path, digits=digits)
    with pytest.raises(UserError, match="at least 28x28"):
        build_mnistm(digits, [np.zeros((20, 50, 3), np.uint8)], 0)


def test_fetch_bsds500_rejects_unexpected_photos(tmp_path, monkeypatch):
    src = tmp_path / "src" / mnistm_mod.BSDS500_TRAIN_IN_ARCHIVE
    src.mkdir(parents=True)
    for i in range(mnistm_mod.BSDS500_TRAIN_COUNT):
        (src / f"{i}.jpg").write_bytes(b"not the real photo %d" % i)
    archive = tmp_path / "BSR.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "BSR", arcname="BSR")
    monkeypatch.setattr(mnistm_mod, "download", lambda url, dest, sha256=None: archive)
    with pytest.raises(UserError, match="digest"):
        mnistm_mod.fetch_bsds500(tmp_path / "dest")
    assert not (tmp_path / "dest" / "train").exists()


# -- training on tiny domains --------------------------------------------------------------


def _tiny_domains(n_train=192, n_test=64):
    src_tr, src_te = _tiny_digits(n_train, 1), _tiny_digits(n_test, 2)
    g = torch.Generator().manual_seed(5)
    tgt = [DigitSet(torch.randint(0, 256, (n, 3, 28, 28), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g)) for n in (n_train, n_test)]
    return Domains(src_tr, src_te, tgt[0], tgt[1])


def _norms(domains, cfg):
    return domain_norms(domains, cfg.mean, cfg.std, target_own=cfg.target_norm == "own")


def _tiny_cfg(**kw):
    base = dict(epochs=2, batch_size=32, source_only_batch=32, tsne=False, eval_batch=50, pl_start_epoch=1,
                pl_rounds=1, pl_fraction_start=0.5, precision="fp32")
    base.update(kw)
    return AdaptConfig(**base)


@pytest.mark.parametrize("mode", ["dann", "dann+pl", "source-only"])
def test_poisoned_target_labels_change_nothing(mode, tmp_path):
    cfg = _tiny_cfg()
    clean = _tiny_domains()
    poisoned = _tiny_domains()
    poisoned.target_train.labels = torch.randint(0, 10, (len(poisoned.target_train),),
                                                 generator=torch.Generator().manual_seed(99))
    poisoned.target_train.labels[:5] = -12345  # would crash any loss that read them
    a = train_mode(mode, cfg, clean, _norms(clean, cfg), tmp_path / "a", resume=False)
    b = train_mode(mode, cfg, poisoned, _norms(poisoned, cfg), tmp_path / "b", resume=False)
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["algorithm"]["net"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["algorithm"]["net"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["target_accuracy"] == b["target_accuracy"]
    ha = [{k: v for k, v in h.items() if "second" not in k} for h in a["history"]]
    hb = [{k: v for k, v in h.items() if "second" not in k} for h in b["history"]]
    assert ha == hb
    if mode == "dann+pl":
        # same pseudo-labels (count), only their *reported* accuracy depends on the true labels
        assert [r["count"] for r in a["pseudo_label_rounds"]] == [r["count"] for r in b["pseudo_label_rounds"]]
        assert a["pseudo_label_rounds"][0]["count"] > 0


def test_oracle_reads_target_labels(tmp_path):
    cfg = _tiny_cfg(epochs=1)
    clean, poisoned = _tiny_domains(), _tiny_domains()
    poisoned.target_train.labels = (poisoned.target_train.labels + 1) % 10
    a = train_mode("target-oracle", cfg, clean, _norms(clean, cfg), tmp_path / "a", resume=False)
    b = train_mode("target-oracle", cfg, poisoned, _norms(poisoned, cfg), tmp_path / "b", resume=False)
    assert a["upper_bound_uses_target_labels"] is True
    assert a["history"][0]["train_loss_class"] != b["history"][0]["train_loss_class"]


def test_batches_carry_what_is_asked_for():
    domains = _tiny_domains(n_train=40)
    norms = domain_norms(domains, 0.5, 0.25, target_own=False)
    rngs = {"order": torch.Generator().manual_seed(0), "augment": torch.Generator().manual_seed(1)}
    plain = DomainBatches(domains, norms, 8, target_images=False)
    order = plain.order(rngs)
    assert plain.steps_per_epoch == 5 and sorted(order[0].tolist()) == list(range(40))
    b = plain.batch(order, 1, rngs)
    si = order[0][8:16]
    assert torch.equal(b.ys, domains.source_train.labels[si])
    assert torch.equal(b.xs, to_input(domains.source_train.images[si], 0.5, 0.25))
    assert b.xt is None and b.yt is None and b.pseudo is None and b.xt_aug is None
    pseudo = torch.arange(40) % 3 - 1
    full = DomainBatches(domains, norms, 8, target_labels=True, pseudo_labels=lambda: pseudo,
                         augment=lambda x, g: 1 - x)
    b = full.batch(order, 1, rngs)
    ti = order[1][8:16]
    assert torch.equal(b.yt, domains.target_train.labels[ti]) and torch.equal(b.pseudo, pseudo[ti])
    torch.testing.assert_close(b.xt_aug, to_input(255 - domains.target_train.images[ti], 0.5, 0.25))


def test_dann_update_moves_features_against_domain_classifier():
    # one step with lambda = 1 (constant): the feature gradient of the domain loss is reversed, so
    # compared with --no-grl the feature extractor's update differs while the heads' do not
    torch.manual_seed(0)
    batch = DomainBatch(torch.randn(8, 3, 28, 28), torch.randint(0, 10, (8,)), torch.randn(8, 3, 28, 28))
    out = {}
    for grl in (True, False):
        torch.manual_seed(1)
        hp = AdaptHParams(lambda_schedule="constant", grl=grl, precision="fp32", channels_last=False, momentum=0.0)
        algo = DANN(DANNNet(), hp, total_steps=1)
        before = {k: v.clone() for k, v in algo.net.state_dict().items()}
        stats = algo.update(batch)
        out[grl] = {k: v - before[k] for k, v in algo.net.state_dict().items()}
        assert 0.0 <= stats["domain_acc"] <= 1.0 and algo.grl_lambda() == 1.0
    assert torch.allclose(out[True]["domain.0.weight"], out[False]["domain.0.weight"])
    assert torch.allclose(out[True]["classifier.0.weight"], out[False]["classifier.0.weight"])
    assert not torch.allclose(out[True]["features.0.weight"], out[False]["features.0.weight"])


@pytest.mark.parametrize("channels_last", [True, False])
def test_flatten_matches_nn_flatten_and_keeps_the_gradient_layout(channels_last):
    x = torch.randn(3, 4, 5, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = Flatten()(a), nn.Flatten()(b)
    assert ya.shape == (3, 120) and torch.equal(ya, yb)  # C, H, W order whatever the layout
    g = torch.randn(3, 120)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad)
    assert a.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_to_input_normalises_and_repeats_grey():
    x = to_input(torch.tensor([[[0, 255]]], dtype=torch.uint8), 0.5, 0.25)
    assert x.shape == (1, 3, 1, 2)
    assert torch.allclose(x[0, :, 0, 0], torch.full((3,), -2.0)) and torch.allclose(x[0, :, 0, 1], torch.full((3,), 2.0))


# -- command line: resume equals an uninterrupted run ----------------------------------------


def _write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.tobytes())


def _write_mnist(root, n_train=160, n_test=60):
    root.mkdir(parents=True)
    for stem, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        d = _tiny_digits(n, seed)
        _write_idx(root / f"{stem}-images-idx3-ubyte.gz", d.images.numpy())
        _write_idx(root / f"{stem}-labels-idx1-ubyte.gz", d.labels.numpy())
    return root


def _strip(metrics):
    def clean(h):
        return {k: v for k, v in h.items() if "second" not in k}
    return {"target_accuracy": metrics["target_accuracy"], "source_accuracy": metrics["source_accuracy"],
            "history": [clean(h) for h in metrics["history"]], "rounds": metrics.get("pseudo_label_rounds")}


def test_cli_resume_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    data = _write_mnist(tmp_path / "mnist")
    bg = _write_photos(tmp_path / "bg")
    common = ["adapt", "--mode", "dann+pl", "--data-root", str(data), "--backgrounds", str(bg), "--epochs", "3",
              "--batch-size", "32", "--pl-start-epoch", "1", "--pl-rounds", "2", "--no-tsne", "--seed", "2",
              "--precision", "fp32"]
    assert main(common + ["--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert len(full["history"]) == 3 and len(full["pseudo_label_rounds"]) == 2
    assert (tmp_path / "full" / "curves.png").is_file()
    assert not (tmp_path / "full" / "checkpoint.pt").exists()

    calls = {"n": 0}
    real_evaluate = adapt_mod.evaluate

    def interrupting_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during epoch 3, after the checkpoints of epochs 1 and 2
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(adapt_mod, "evaluate", interrupting_evaluate)
    assert main(common + ["--out", str(tmp_path / "cut")]) == 130
    assert (tmp_path / "cut.partial" / "checkpoint.pt").is_file()
    monkeypatch.setattr(adapt_mod, "evaluate", real_evaluate)
    # an option that changes the result cannot change on --resume: refused, naming it, checkpoint kept
    assert main(common + ["--out", str(tmp_path / "cut"), "--resume", "--pl-rounds", "3"]) == 2
    assert "--pl-rounds" in capsys.readouterr().err
    assert (tmp_path / "cut.partial" / "checkpoint.pt").is_file()
    # options marked resume_safe may change
    assert main(common + ["--out", str(tmp_path / "cut"), "--resume", "--eval-batch", "7"]) == 0
    assert "adapt dann+pl: resuming at epoch 3/3, step 0" in capsys.readouterr().err
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["resumed"] is True
    assert _strip(resumed) == _strip(full)


def test_cli_several_modes_table_and_tsne(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    data = _write_mnist(tmp_path / "mnist")
    bg = _write_photos(tmp_path / "bg")
    out = tmp_path / "run"
    assert main(["adapt", "--mode", "source-only", "dann", "--data-root", str(data), "--backgrounds", str(bg),
                 "--epochs", "1", "--batch-size", "32", "--source-only-batch", "32", "--tsne-points", "25",
                 "--tsne-iter", "250", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["modes"]) == {"source-only", "dann"}
    table = (out / "comparison.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table.splitlines()[2:]}
    assert set(rows) == {"source-only", "dann"}
    assert float(rows["dann"][2]) == pytest.approx(metrics["modes"]["dann"]["target_accuracy"], abs=5e-5)
    for f in ("tsne_modes.png", "source-only/tsne.png", "dann/curves.png"):
        assert (out / f).is_file(), f
    assert metrics["target_accuracy"] == metrics["modes"]["dann"]["target_accuracy"]
    # adapt-summary: mean +- std per mode over run folders (the same run twice: std 0)
    assert main(["adapt-summary", "--runs", str(out), str(out), "--out", str(tmp_path / "sum")]) == 0
    summary = json.loads((tmp_path / "sum" / "metrics.json").read_text())["modes"]
    assert summary["dann"]["n"] == 2 and summary["dann"]["target_std"] == 0.0
    assert summary["dann"]["target_mean"] == pytest.approx(metrics["modes"]["dann"]["target_accuracy"])
    assert "| 2 (0, 0) " in (tmp_path / "sum" / "comparison.md").read_text()
    assert main(["adapt-summary", "--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "s2")]) == 2


def test_cli_bad_backgrounds_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    data = _write_mnist(tmp_path / "mnist")
    assert main(["adapt", "--data-root", str(data), "--backgrounds", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--backgrounds" in capsys.readouterr().err


def test_config_is_dataclass_with_hparams_once():
    names = [f.name for f in dataclasses.fields(AdaptConfig)]
    assert len(names) == len(set(names))
    assert {f.name for f in dataclasses.fields(AdaptHParams)} <= set(names)


def test_ema_weights_average_the_trajectory():
    torch.manual_seed(0)
    batch = DomainBatch(torch.randn(4, 3, 28, 28), torch.randint(0, 10, (4,)), torch.randn(4, 3, 28, 28))
    hp = AdaptHParams(lambda_schedule="paper", ema_decay=0.9, precision="fp32", channels_last=False)
    algo = DANN(DANNNet(), hp, total_steps=3)
    algo.update(batch)
    w1 = algo.net.features[0].weight.detach().clone()
    assert torch.equal(algo.eval_net.features[0].weight, w1)  # first average = the weights themselves
    algo.update(batch)
    w2 = algo.net.features[0].weight.detach()
    d = 2 / 11  # warm-up: min(0.9, (1 + n) / (10 + n)) with n = 1 update averaged so far
    assert torch.allclose(algo.eval_net.features[0].weight, d * w1 + (1 - d) * w2, atol=1e-6)
    assert not torch.equal(algo.eval_net.features[0].weight, w2)
    # later the decay is the one asked for
    from vislab.methods.dann import ema_with_warmup

    ema, cur = [torch.zeros(3)], [torch.ones(3)]
    ema_with_warmup(0.9)(ema, cur, torch.tensor(500))
    assert torch.allclose(ema[0], torch.full((3,), 0.1))
    assert hparams(AdaptConfig(preset="vislab")).ema_decay == 0.999
    assert hparams(AdaptConfig(preset="course")).ema_decay is None


def test_target_own_normalisation():
    x = torch.tensor([[[[0, 255]], [[51, 51]], [[0, 0]]]], dtype=torch.uint8)  # (1, 3, 1, 2)
    mean, std = channel_stats(x, chunk=1)
    assert torch.allclose(mean, torch.tensor([0.5, 0.2, 0.0])) and torch.allclose(std[:2], torch.tensor([0.5, 0.0]), atol=1e-5)
    y = to_input(x[:, :1].expand(-1, 3, -1, -1), mean, std)
    assert torch.allclose(y[0, 0, 0], torch.tensor([-1.0, 1.0]))
    domains = _tiny_domains()
    own = domain_norms(domains, 0.1, 0.3, target_own=True)
    assert torch.allclose(to_input(domains.target_train.images, *own["target"]).mean(dim=(0, 2, 3)), torch.zeros(3),
                          atol=1e-4)
    assert own["source"] == (0.1, 0.3)
    assert domain_norms(domains, 0.1, 0.3, target_own=False) == {"source": (0.1, 0.3), "target": (0.1, 0.3)}


# -- pseudo-label augmentation ---------------------------------------------------------------


def test_augment_identity_when_every_transform_is_off():
    x = torch.rand(5, 3, 28, 28)
    g = torch.Generator().manual_seed(0)
    out = augment_digits(x, g, rotate=0, scale=0, shift=0, permute_channels=False, invert=0)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)  # the identity grid samples pixel centres


def test_augment_inversion_and_channel_permutation_exactly():
    x = torch.rand(6, 3, 28, 28)
    off = dict(rotate=0, scale=0, shift=0)
    inv = augment_digits(x, torch.Generator().manual_seed(0), permute_channels=False, invert=1.0, **off)
    torch.testing.assert_close(inv, 1 - x, rtol=0, atol=1e-6)
    perm = augment_digits(x, torch.Generator().manual_seed(0), permute_channels=True, invert=0, **off)
    for a, b in zip(x, perm):  # each image's channels, reordered, nothing else
        assert sorted(float(c.sum()) for c in a) == pytest.approx(sorted(float(c.sum()) for c in b), abs=1e-4)
    # with 6 images, at least one permutation is not the identity (probability 1 - 6^-6)
    assert not torch.allclose(perm, x)


def test_augment_shift_moves_a_dot_by_at_most_shift_pixels():
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = augment_digits(x, torch.Generator().manual_seed(1), rotate=0, scale=0, shift=2.0,
                         permute_channels=False, invert=0)
    assert out.min() >= 0 and out.max() <= 1
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = out.sum(dim=(1, 2, 3))
    cy = (out[:, 0] * ys).sum(dim=(1, 2)) / mass
    cx = (out[:, 0] * xs).sum(dim=(1, 2)) / mass
    assert torch.allclose(mass, torch.ones(200), atol=1e-4)  # bilinear shifts conserve the dot
    assert (cy - 14).abs().max() <= 2.0 + 1e-4 and (cx - 14).abs().max() <= 2.0 + 1e-4
    assert (cy - 14).abs().max() > 1.5  # the whole range is used


def test_augment_is_seeded_and_keeps_pixel_range():
    x = torch.rand(8, 3, 28, 28)
    a = augment_digits(x, torch.Generator().manual_seed(3))
    b = augment_digits(x, torch.Generator().manual_seed(3))
    c = augment_digits(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_pseudo_label_loss_reads_the_augmented_copies():
    torch.manual_seed(0)
    xs, xt = torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28)
    batch = DomainBatch(xs, torch.randint(0, 10, (8,)), xt, pseudo=torch.tensor([3, -1, 5, -1, 0, 0, -1, 9]))
    hp = AdaptHParams(precision="fp32", channels_last=False, lambda_schedule="paper")
    after = []
    for aug in (None, xt, torch.randn(8, 3, 28, 28)):
        torch.manual_seed(1)
        algo = DANNPseudoLabel(DANNNet(), hp, total_steps=10)
        algo.update(dataclasses.replace(batch, xt_aug=aug))
        after.append(torch.cat([p.detach().flatten() for p in algo.net.classifier.parameters()]))
    torch.testing.assert_close(after[1], after[0])  # copies equal to xt: the same step
    assert (after[2] - after[0]).abs().max() > 1e-5  # other copies: another step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dann_pl_trains_and_resumes_on_cuda(tmp_path):
    cfg = _tiny_cfg(precision="bf16", epochs=2)
    domains = _tiny_domains().to(torch.device("cuda"))
    norms = _norms(domains, cfg)
    # one epoch, then --resume: the checkpoint (saved from CUDA, loaded to the CPU) goes back on the GPU
    train_mode("dann+pl", cfg, domains, norms, tmp_path, resume=False)
    ckpt = tmp_path / "checkpoint.pt"
    state = torch_load(ckpt)
    state["loop"]["epoch"], state["loop"]["history"] = 1, state["loop"]["history"][:1]
    torch_save(state, ckpt)
    m = train_mode("dann+pl", cfg, domains, norms, tmp_path, resume=True)
    assert len(m["history"]) == 2 and 0 <= m["target_accuracy"] <= 1
    assert m["pseudo_label_rounds"][0]["count"] > 0


def test_first_keeps_the_pairing_and_the_sizes():
    domains = _tiny_domains(n_train=40, n_test=20)
    cut = domains.first(train_size=16, test_size=8)
    assert [len(getattr(cut, n)) for n in ("source_train", "target_train", "source_test", "target_test")] == [16, 16, 8, 8]
    assert torch.equal(cut.target_train.images, domains.target_train.images[:16])
    assert torch.equal(cut.source_test.labels, domains.source_test.labels[:8])
    assert domains.first() is not cut and len(domains.first().source_train) == 40  # 0 = all
