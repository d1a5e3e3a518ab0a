"""Part D: DCGAN / cDCGAN models, GAN losses, metrics and the `vislab gan` commands (tiny data)."""
from __future__ import annotations

import copy
import gzip
import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from torchmetrics.image.kid import KernelInceptionDistance
from torch import nn

from vislab.cli import main
from vislab.io import torch_load
from vislab.methods.gan import (GAN, discriminator_loss, generate, generator_loss, grid_inputs, interpolate_latents,
                                interpolation_inputs, make_optimizers, train_step)
from vislab.methods.gan_metrics import (_Precomputed, conditional_accuracy, extract_features, fid_kid,
                                        fid_kid_from_features, real_baseline, sample_metrics)
from vislab.methods.digit_classifier import ShiftedDigits, train_classifier
from vislab.models.dcgan import (Generator, _HeadConv, _ProjectT,
                                 build_gan, count_parameters)
from vislab.models.mnist_classifier import ClassifierFeatures, MnistClassifier, prepare_digits
from vislab.methods.gan import Digits
from vislab.experiments.gan_compare import comparison_markdown
from vislab.reporting.figures.gan import image_grid, moving_average, training_curves


# ---------------------------------------------------------------------------------------------- models

def _spatial_sizes(seq: nn.Sequential, x: torch.Tensor) -> list[int]:
    sizes = []
    for layer in seq:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            sizes.append(x.shape[-1])
    return sizes


def test_dcgan_shapes_1_4_8_16_32():
    g, d = build_gan("dcgan")
    z = torch.randn(3, 100)
    assert _spatial_sizes(g.net, z.reshape(3, 100, 1, 1)) == [4, 8, 16, 32]
    x = g(z)
    assert x.shape == (3, 1, 32, 32)
    assert x.min() >= -1 and x.max() <= 1  # Tanh
    assert _spatial_sizes(d.net, x) == [16, 8, 4, 1]
    p = d(x)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    torch.testing.assert_close(p, torch.sigmoid(d.logits(x)))


def test_image_size_64_adds_one_block():
    for model in ("dcgan", "cdcgan"):
        g32, d32 = build_gan(model)
        g64, d64 = build_gan(model, image_size=64)
        convs = lambda m: sum(isinstance(x, (nn.Conv2d, nn.ConvTranspose2d)) for x in m.modules())  # noqa: E731
        assert convs(g64) == convs(g32) + 1 and convs(d64) == convs(d32) + 1
    g, d = build_gan("dcgan", image_size=64)
    assert _spatial_sizes(g.net, torch.randn(2, 100, 1, 1)) == [4, 8, 16, 32, 64]
    assert d(g(torch.randn(2, 100))).shape == (2,)
    with pytest.raises(ValueError, match="image_size=48"):
        Generator(image_size=48)


def test_parameter_counts_by_hand():
    k = 4 * 4  # every kernel is 4x4
    bn = lambda c: 2 * c  # noqa: E731  BatchNorm weight + bias
    nz, ngf, ndf = 100, 32, 32
    g_hand = (nz * 4 * ngf * k + bn(4 * ngf)          # ConvT(100->128), no bias
              + 4 * ngf * 2 * ngf * k + bn(2 * ngf)   # ConvT(128->64)
              + 2 * ngf * ngf * k + bn(ngf)           # ConvT(64->32)
              + ngf * 1 * k)                          # ConvT(32->1), no bias
    d_hand = (1 * ndf * k + bn(ndf) + ndf * 2 * ndf * k + bn(2 * ndf) + 2 * ndf * 4 * ndf * k + bn(4 * ndf)
              + 4 * ndf * 1 * k)
    assert (g_hand, d_hand) == (369_600, 166_848)  # the SPEC's numbers
    g, d = build_gan("dcgan")
    assert count_parameters(g) == g_hand
    assert count_parameters(d) == d_hand
    assert count_parameters(Generator(nz=10)) == g_hand - 90 * 128 * k


def test_custom_init_statistics_and_default_init_differs():
    torch.manual_seed(0)
    g, d = build_gan("dcgan", ngf=64, ndf=64)
    w = g.net[3].weight  # ConvT(256->128): 524,288 weights
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    bn = g.net[1]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.bias.abs().max() == 0
    torch.manual_seed(0)
    g2, _ = build_gan("dcgan", ngf=64, ndf=64, init="default")
    assert g2.net[1].weight.eq(1).all()  # PyTorch's BatchNorm default
    assert abs(g2.net[3].weight.std().item() - 0.02) > 0.002
    with pytest.raises(ValueError, match="init 'xavier'"):
        build_gan("dcgan", init="xavier")


def test_matmul_shortcuts_equal_convolutions():
    torch.manual_seed(0)
    a = _ProjectT(10, 8, 4, 1, 0, bias=False)
    b = nn.ConvTranspose2d(10, 8, 4, 1, 0, bias=False)
    b.weight.data.copy_(a.weight.data)
    z = torch.randn(5, 10, 1, 1, requires_grad=True)
    torch.testing.assert_close(a(z), b(z))
    ga = torch.autograd.grad(a(z).square().sum(), [z, a.weight])
    gb = torch.autograd.grad(b(z).square().sum(), [z, b.weight])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)
    h = _HeadConv(6, 1, 4, 1, 0, bias=False)
    c = nn.Conv2d(6, 1, 4, 1, 0, bias=False)
    c.weight.data.copy_(h.weight.data)
    x = torch.randn(3, 6, 4, 4).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(h(x), c(x))


def test_matmul_shortcuts_keep_the_channels_last_layout():
    # a layer whose output or input gradient switches layout makes the next kernels slow
    torch.manual_seed(0)
    a = _ProjectT(10, 8, 4, 1, 0, bias=False).to(memory_format=torch.channels_last)
    out = a(torch.randn(5, 10, 1, 1))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert _ProjectT(10, 8, 4, 1, 0, bias=False)(torch.randn(5, 10, 1, 1)).is_contiguous()
    h = _HeadConv(6, 1, 4, 1, 0, bias=False)
    c = nn.Conv2d(6, 1, 4, 1, 0, bias=False)
    c.weight.data.copy_(h.weight.data)
    x = torch.randn(3, 6, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    (gh,) = torch.autograd.grad(h(x).square().sum(), x)
    (gc,) = torch.autograd.grad(c(x).square().sum(), x)
    torch.testing.assert_close(gh, gc)
    assert gh.is_contiguous(memory_format=torch.channels_last) and not gh.is_contiguous()


def test_cdcgan_spec_widths_and_label_changes_output():
    g, d = build_gan("cdcgan")
    assert [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)] == [256, 256, 256, 128, 1]
    assert [m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)] == [64, 64, 256, 512, 1]
    assert [m.in_channels for m in d.modules() if isinstance(m, nn.Conv2d)] == [1, 10, 128, 256, 512]
    g.eval(), d.eval()
    z = torch.randn(4, 100)
    x3 = g(z, torch.full((4,), 3))
    x7 = g(z, torch.full((4,), 7))
    assert x3.shape == (4, 1, 32, 32)
    assert (x3 - x7).abs().mean() > 0.05 * x3.abs().mean()  # outputs are small at init; compare relatively
    torch.testing.assert_close(g(z, torch.full((4,), 3)), x3)  # deterministic in eval mode
    assert not torch.allclose(d(x3, torch.full((4,), 3)), d(x3, torch.full((4,), 7)))
    with pytest.raises(ValueError, match="integer class indices"):
        g(z, torch.rand(4))


# ---------------------------------------------------------------------------------------------- losses

def test_losses_against_hand_computation():
    l_real = torch.tensor([2.0, -1.0])
    l_fake = torch.tensor([0.5, -3.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    d_hand = (-(math.log(sig(2.0)) + math.log(sig(-1.0))) / 2
              - (math.log(1 - sig(0.5)) + math.log(1 - sig(-3.0))) / 2)
    assert discriminator_loss(l_real, l_fake).item() == pytest.approx(d_hand, rel=1e-6)
    ns_hand = -(math.log(sig(0.5)) + math.log(sig(-3.0))) / 2
    mm_hand = (math.log(1 - sig(0.5)) + math.log(1 - sig(-3.0))) / 2
    assert generator_loss(l_fake, "non-saturating").item() == pytest.approx(ns_hand, rel=1e-6)
    assert generator_loss(l_fake, "minimax").item() == pytest.approx(mm_hand, rel=1e-6)
    # bf16 logits give float32 losses, finite even for a very confident D
    big = torch.tensor([80.0, -80.0], dtype=torch.bfloat16)
    assert discriminator_loss(big, -big).dtype == torch.float32
    assert torch.isfinite(discriminator_loss(big, -big)) and torch.isfinite(generator_loss(-big, "minimax"))
    with pytest.raises(ValueError, match="'wasserstein'"):
        generator_loss(l_fake, "wasserstein")


def test_minimax_gradient_saturates_where_non_saturating_does_not():
    # When D confidently rejects fakes (logit -6), d/dl of log(1 - D) is -sigmoid(l) ~ -0.0025,
    # while d/dl of -log D is sigmoid(l) - 1 ~ -0.9975: the reason for the non-saturating loss.
    l = torch.tensor([-6.0], requires_grad=True)
    (g_mm,) = torch.autograd.grad(generator_loss(l, "minimax"), l)
    (g_ns,) = torch.autograd.grad(generator_loss(l, "non-saturating"), l)
    assert g_mm.item() == pytest.approx(-torch.sigmoid(torch.tensor(-6.0)).item(), rel=1e-5)
    assert g_ns.item() == pytest.approx(torch.sigmoid(torch.tensor(-6.0)).item() - 1, rel=1e-5)


def test_train_step_updates_both_networks_and_reports_d_outputs():
    torch.manual_seed(0)
    g, d = build_gan("dcgan", ngf=8, ndf=8)
    opt_g, opt_d = make_optimizers(g, d)
    assert opt_g.param_groups[0]["lr"] == 5e-4 and opt_d.param_groups[0]["lr"] == 2e-4
    assert opt_g.param_groups[0]["betas"] == (0.5, 0.999)
    g0 = [p.clone() for p in g.parameters()]
    d0 = [p.clone() for p in d.parameters()]
    stats = train_step(g, d, opt_g, opt_d, torch.rand(16, 1, 32, 32) * 2 - 1, torch.randn(16, 100))
    assert set(stats) == {"loss_d", "loss_g", "d_x", "d_g_z", "d_g_z_after", "g_grad_norm"}
    assert stats["g_grad_norm"] > 0
    assert all(0 < stats[k] < 1 for k in ("d_x", "d_g_z", "d_g_z_after"))
    assert all(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))
    assert all(p.requires_grad for p in d.parameters())  # D is frozen only during G's backward


def test_interpolation_endpoints():
    z1, z2 = torch.randn(5), torch.randn(5)
    zs = interpolate_latents(z1, z2, 4)
    assert zs.shape == (4, 5)
    torch.testing.assert_close(zs[0], z1)
    torch.testing.assert_close(zs[-1], z2)
    torch.testing.assert_close(zs[1], 2 / 3 * z1 + 1 / 3 * z2)


def test_class_grid_one_row_per_class_one_column_per_z():
    z = torch.arange(3.0)[:, None].expand(3, 2)
    zz, yy, nrow = grid_inputs(z, conditional=True)
    assert zz.shape == (30, 2) and yy.tolist()[:6] == [0, 0, 0, 1, 1, 1] and nrow == 3
    assert zz[:, 0].tolist()[:6] == [0, 1, 2, 0, 1, 2]
    z64, none, nrow = grid_inputs(torch.randn(64, 5), conditional=False)
    assert z64.shape == (64, 5) and none is None and nrow == 8
    assert grid_inputs(torch.randn(10, 5), conditional=False)[2] == 3


def test_interpolation_inputs_strips_and_labels():
    gen = torch.Generator().manual_seed(0)
    z, y = interpolation_inputs(4, 3, 5, gen, conditional=True)
    ref = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 4, generator=ref), torch.randn(3, 4, generator=ref)
    assert z.shape == (15, 4)
    torch.testing.assert_close(z[5], z1[1])  # strip 1 starts at its z1 ...
    torch.testing.assert_close(z[9], z2[1])  # ... and ends at its z2
    assert y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert interpolation_inputs(4, 2, 3, gen, conditional=True, label=7)[1].tolist() == [7] * 6
    assert interpolation_inputs(4, 2, 3, gen, conditional=False)[1] is None


def test_gan_state_round_trip_continues_identically():
    torch.manual_seed(0)
    make = lambda: GAN(*build_gan("cdcgan", nz=6, ngf=4, ndf=4))  # noqa: E731
    a = make()
    real, z, y = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, 6), torch.arange(8) % 10
    a.update((real, z, y))
    b = make()
    b.load_state(copy.deepcopy(a.state()))  # as through a checkpoint file (optimisers would share state)
    sa, sb = a.update((real, z, y)), b.update((real, z, y))
    assert sa == sb
    for p, q in zip(a.g.parameters(), b.g.parameters()):
        assert torch.equal(p, q)
    # under bf16 autocast the losses stay float32 and finite
    c = GAN(*build_gan("cdcgan", nz=6, ngf=4, ndf=4), dtype=torch.bfloat16)
    assert all(math.isfinite(v) for v in c.update((real, z, y)).values())
    assert c.predict(z, y).dtype == torch.float32
    # predict generates in eval mode and leaves G in training mode
    out = a.predict(z, y)
    assert out.shape == (8, 1, 32, 32) and a.g.training
    torch.testing.assert_close(out, generate(a.g, z, y))


def test_digits_batches_follow_the_order_and_draw_noise():
    x = torch.arange(5.0)[:, None, None, None].expand(5, 1, 2, 2).contiguous()
    data = Digits(x, torch.arange(5), batch_size=2, nz=3)
    rngs = {"data": torch.Generator().manual_seed(0)}
    order = data.order(rngs)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]
    real, z, y = data.batch(order, 2, rngs)  # the last, short batch
    assert real.shape == (1, 1, 2, 2) and z.shape == (1, 3) and y.tolist() == order[4:].tolist()
    assert real[0, 0, 0, 0].item() == order[4].item()


# ---------------------------------------------------------------------------------------------- metrics

def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
    torch.manual_seed(0)
    feature = ClassifierFeatures(MnistClassifier())
    assert feature.num_features == 128
    x = torch.rand(300, 1, 32, 32) * 2 - 1
    same = fid_kid(x, x.clone(), feature, kid_subset_size=100, kid_subsets=10)
    assert abs(same["fid"]) < 1e-2
    assert abs(same["kid"]) < 1e-3
    other = fid_kid(x, (torch.rand(300, 1, 32, 32) * 0.2 - 1), feature, kid_subset_size=100, kid_subsets=10)
    assert other["fid"] > 100 * max(abs(same["fid"]), 1e-3)


def test_fid_from_features_matches_closed_form_for_shifted_gaussians():
    # Same covariance, means differing by delta: FID = |delta|^2 exactly (the trace term vanishes).
    torch.manual_seed(0)
    a = torch.randn(4000, 3, dtype=torch.float64)
    b = a + torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    out = fid_kid_from_features(a.float(), b.float(), kid_subset_size=500, kid_subsets=5)
    assert out["fid"] == pytest.approx(5.0, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        fid_kid_from_features(a[:1], b)


def test_kid_subsets_are_at_most_half_the_sets_so_their_std_measures_something():
    torch.manual_seed(0)
    a, b = torch.randn(200, 8), torch.randn(200, 8) + 0.3
    # asked for subsets of 1,000 from 200 images: subsets of 100, which differ, so the std is real
    out = fid_kid_from_features(a, b, kid_subset_size=1000, kid_subsets=20)
    assert out["kid_std"] > 1e-3 * abs(out["kid"])
    assert out == fid_kid_from_features(a, b, kid_subset_size=100, kid_subsets=20)
    # subsets of the whole set would all be the same estimate: no spread but rounding
    whole = KernelInceptionDistance(feature=_Precomputed(8), subsets=20, subset_size=200)
    whole.update(a, real=True)
    whole.update(b, real=False)
    assert float(whole.compute()[1]) < 1e-6


def test_extract_features_requires_num_features_and_conditional_accuracy():
    with pytest.raises(ValueError, match="num_features"):
        extract_features(nn.Flatten(), torch.zeros(2, 1, 32, 32))

    class Oracle(nn.Module):  # predicts the class stored in the first pixel
        def forward(self, x):
            return nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float()

    imgs = torch.zeros(4, 1, 32, 32)
    imgs[:, 0, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert conditional_accuracy(Oracle(), imgs, torch.tensor([1, 2, 0, 4])) == 0.75


def test_baseline_and_sample_metrics_are_the_two_halves_of_fid_kid():
    torch.manual_seed(0)
    feature = ClassifierFeatures(MnistClassifier())
    test, train, fake = (torch.rand(60, 1, 32, 32) * 2 - 1 for _ in range(3))
    f_test, base = real_baseline(feature, test, train, seed=1)
    assert base == fid_kid(test, train, feature, seed=1)
    m = sample_metrics(feature, feature.classifier, f_test, base, fake, torch.arange(60) % 10, seed=1)
    direct = fid_kid(test, fake, feature, seed=1)
    assert (m["fid"], m["kid"], m["kid_std"]) == (direct["fid"], direct["kid"], direct["kid_std"])
    assert (m["fid_real_baseline"], m["kid_real_baseline"]) == (base["fid"], base["kid"])
    assert m["conditional_accuracy"] == conditional_accuracy(feature.classifier, fake, torch.arange(60) % 10)
    assert "conditional_accuracy" not in sample_metrics(feature, feature.classifier, f_test, base, fake, seed=1)


def test_shifted_digits_crop_within_the_padding():
    images = torch.arange(2 * 16.0).reshape(2, 1, 4, 4)
    data = ShiftedDigits(images, torch.tensor([0, 1]), batch_size=2)
    rngs = {"data": torch.Generator().manual_seed(3)}
    x, y = data.batch(torch.tensor([1, 0]), 0, rngs)
    dx, dy = torch.randint(0, 5, (2,), generator=torch.Generator().manual_seed(3)).tolist()
    assert x.shape == (2, 1, 4, 4) and y.tolist() == [1, 0]
    torch.testing.assert_close(x[0], torch.nn.functional.pad(images[1], (2, 2, 2, 2), value=-1.0)[:, dy:dy + 4, dx:dx + 4])


def test_train_classifier_is_deterministic_and_leaves_the_global_rng_alone():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(20) % 10
    images = torch.rand(20, 1, 32, 32, generator=gen) * 2 - 1
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = train_classifier(images, labels, epochs=1, batch_size=8, seed=2, dtype=None)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_classifier(images, labels, epochs=1, batch_size=8, seed=2, dtype=None)
    assert not a.training
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    c = train_classifier(images, labels, epochs=1, batch_size=8, seed=3, dtype=None)
    assert not torch.equal(a.head[1].weight, c.head[1].weight)


def test_figures_write_pngs_of_the_expected_size(tmp_path):
    from PIL import Image

    path = image_grid(torch.zeros(6, 1, 32, 32) - 1, tmp_path / "g.png", nrow=3)
    img = Image.open(path)
    assert img.size == (2 + 3 * 34, 2 + 2 * 34)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((3, 3)) == (0, 0, 0)  # padding, then -1
    assert moving_average([1.0, 2.0, 3.0, 4.0], k=2) == [1.5, 2.5, 3.5]
    assert moving_average([1.0, 2.0], k=3) == [1.0, 2.0]
    hist = {k: [0.5] * 30 for k in ("loss_d", "loss_g", "d_x", "d_g_z")}
    assert Image.open(training_curves(hist, "t", tmp_path / "c.png")).size[0] > 500


def test_prepare_digits_range_and_size():
    imgs = torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8).expand(3, 2, 2).contiguous()
    x = prepare_digits(imgs, 4)
    assert x.shape == (3, 1, 4, 4) and x.min() >= -1 and x.max() <= 1
    full = prepare_digits(torch.full((1, 28, 28), 255, dtype=torch.uint8), 32)
    torch.testing.assert_close(full, torch.ones(1, 1, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        prepare_digits(torch.zeros(1, 28, 28))


# ---------------------------------------------------------------------------------------------- commands

def _write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.numpy().astype("uint8").tobytes())


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> Path:
    """96 train / 40 test 'digits': a bright bar whose position encodes the class."""
    root = tmp_path_factory.mktemp("mnist")
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 96), ("t10k", 40)):
        labels = torch.arange(n) % 10
        imgs = (torch.rand(n, 28, 28, generator=gen) * 40).to(torch.uint8)
        for i, c in enumerate(labels.tolist()):
            imgs[i, 2 + 2 * c: 5 + 2 * c, 4:24] = 255
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", imgs)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# fp32: bf16 is emulated (slowly) on CPUs without AVX512-BF16; the bf16 step has its own test
TINY = ["--batch-size", "16", "--ngf", "4", "--ndf", "4", "--eval-samples", "40", "--classifier-epochs", "1",
        "--grid-every", "3", "--precision", "fp32"]


def test_train_writes_contract_metrics_and_resume_equals_uninterrupted(tiny_mnist, tmp_path):
    common = ["gan", "--data-root", str(tiny_mnist), "--epochs", "2", *TINY]
    full = tmp_path / "full"
    assert main([*common, "--out", str(full)]) == 0
    m = json.loads((full / "metrics.json").read_text())
    assert {"fid", "kid", "fid_real_baseline"} <= set(m) and "conditional_accuracy" not in m
    assert m["batches"] == 12 and m["eval_samples"] == 40 and m["nonfinite_losses"] == 0
    for name in ("curves.png", "samples.png", "interpolation.png", "generator.pt", "grids/step_000003.png",
                 "grids/epoch_02.png", "history.json"):
        assert (full / name).is_file(), name
    assert not (full / "checkpoint.pt").exists()
    hist = json.loads((full / "history.json").read_text())
    assert len(hist["loss_d"]) == 12 and len(hist["d_g_z"]) == 12
    assert m["last_epoch_mean"]["loss_g"] == pytest.approx(sum(hist["loss_g"][6:]) / 6, rel=1e-12)

    part = tmp_path / "part"
    assert main([*common, "--out", str(part), "--stop-after-batches", "8"]) == 3
    assert (tmp_path / "part.partial" / "checkpoint.pt").is_file() and not part.exists()
    assert main([*common, "--out", str(part), "--resume"]) == 0
    a, b = torch_load(full / "generator.pt"), torch_load(part / "generator.pt")
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0, msg=k)
    assert json.loads((part / "history.json").read_text()) == hist
    mp = json.loads((part / "metrics.json").read_text())
    assert mp["fid"] == m["fid"]
    assert mp["fid_real_baseline"] == m["fid_real_baseline"]  # the second run read it from the cache
    assert list(Path(os.environ["VISLAB_CACHE"], "gan").glob("baseline-*.pt"))

    # a resume with other training options is refused, naming the problem
    other = tmp_path / "other"
    assert main([*common, "--out", str(other), "--stop-after-batches", "2"]) == 3
    assert main([*common, "--out", str(other), "--resume", "--nz", "12"]) == 2


def test_cdcgan_run_sample_and_interpolate(tiny_mnist, tmp_path):
    from PIL import Image

    run = tmp_path / "c"
    assert main(["gan", "--model", "cdcgan", "--data-root", str(tiny_mnist), "--epochs", "1", "--out", str(run),
                 *TINY]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert 0 <= m["conditional_accuracy"] <= 1 and "fid_real_baseline" in m
    s = tmp_path / "s"
    assert main(["gan", "sample", "--run", str(run), "--columns", "6", "--out", str(s)]) == 0
    w, h = Image.open(s / "samples.png").size
    assert (w, h) == (2 + 6 * 34, 2 + 10 * 34)  # 6 columns (z), 10 rows (classes), 32 px + 2 px padding
    i = tmp_path / "i"
    assert main(["gan", "interpolate", "--run", str(run), "--pairs", "3", "--steps", "5", "--out", str(i)]) == 0
    assert Image.open(i / "interpolation.png").size == (2 + 5 * 34, 2 + 3 * 34)
    assert main(["gan", "sample", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["gan", "--epochs", "3", "sample", "--run", str(run), "--out", str(tmp_path / "y")]) == 2


def test_compare_trains_missing_variants_and_tabulates(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["gan", "compare", "--data-root", str(tiny_mnist), "--epochs", "1", "--eval-samples", "40",
            "--precision", "fp32", "--out", str(out)]
    assert main([*args, "--variants", "default", "nz10"]) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["variant"] for r in rows] == ["default", "nz10"] and [r["nz"] for r in rows] == [100, 10]
    table = (out / "comparison.md").read_text()
    assert [c.strip() for c in table.splitlines()[0].split("|")[1:4]] == ["variant", "g_loss", "nz"]
    assert {"config.json", "manifest.json"} <= {p.name for p in out.iterdir()}  # a run folder like any other
    assert [r["variant"] for r in json.loads((out / "metrics.json").read_text())["variants"]] == ["default", "nz10"]
    first = (out / "nz10" / "metrics.json").read_text()
    assert main([*args, "--variants", "nz10"]) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    assert (out / "nz10" / "metrics.json").read_text() == first and (out / "default" / "generator.pt").is_file()
    assert not (out / "checkpoint.json").exists() and not Path(str(out) + ".partial").exists()
    assert main([*args, "--variants", "bogus"]) == 2
    # other training options would mix budgets in one table: refused, nothing moved
    assert main([*args[:5], "2", *args[6:], "--variants", "minimax"]) == 2
    assert (out / "manifest.json").is_file() and not Path(str(out) + ".partial").exists()
    foreign = tmp_path / "foreign"
    (foreign / "photos").mkdir(parents=True)
    assert main(["gan", "compare", "--data-root", str(tiny_mnist), "--out", str(foreign)]) == 2
    assert (foreign / "photos").is_dir()


def test_comparison_markdown_formats_rows():
    md = comparison_markdown([{"variant": "a", "fid": 12.345, "kid": 0.01234, "conditional_accuracy": None}])
    assert md.splitlines() == ["| variant |   fid |    kid |", "|---------|------:|-------:|", "| a       | 12.35 | 0.0123 |"]


# ---------------------------------------------------------------------------------------------- study options

@pytest.mark.parametrize("train_only", ["d", "g"])
def test_train_only_leaves_the_other_network_at_its_init(train_only):
    torch.manual_seed(0)
    g, d = build_gan("dcgan", ngf=8, ndf=8)
    gan = GAN(g, d, train_only=train_only)
    g0, d0 = copy.deepcopy(g.state_dict()), copy.deepcopy(d.state_dict())
    stats = gan.update((torch.rand(16, 1, 32, 32) * 2 - 1, torch.randn(16, 100), None))
    assert all(0 < stats[k] < 1 for k in ("d_x", "d_g_z", "d_g_z_after")) and stats["loss_d"] > 0
    frozen, trained = (g, g0) if train_only == "d" else (d, d0), (d, d0) if train_only == "d" else (g, g0)
    assert all(torch.equal(p, frozen[1][n]) for n, p in frozen[0].named_parameters())
    assert all(not torch.equal(p, trained[1][n]) for n, p in trained[0].named_parameters())
    assert (stats["g_grad_norm"] == 0) == (train_only == "d") and stats["g_grad_norm"] >= 0


def test_g_grad_norm_is_the_total_norm_of_gs_gradient():
    torch.manual_seed(0)
    g, d = build_gan("dcgan", ngf=8, ndf=8)
    opt_g, opt_d = make_optimizers(g, d)
    real, z = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, 100)
    opt_g.step = lambda: None  # keep G's gradient to compare with
    stats = train_step(g, d, opt_g, opt_d, real, z)
    by_hand = math.sqrt(sum(float(p.grad.double().square().sum()) for p in g.parameters()))
    assert stats["g_grad_norm"] == pytest.approx(by_hand, rel=1e-5)


def test_cdcgan_whose_d_does_not_see_the_label(tiny_mnist, tmp_path):
    common = ["gan", "--model", "cdcgan", "--data-root", str(tiny_mnist), "--epochs", "1", *TINY]
    run = tmp_path / "nolabel"
    assert main([*common, "--no-d-sees-label", "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert 0 <= m["conditional_accuracy"] <= 1
    assert main(["gan", "--data-root", str(tiny_mnist), "--no-d-sees-label", "--out", str(tmp_path / "x"),
                 *TINY]) == 2
    g, d = build_gan("cdcgan", ngf=4, ndf=4)
    gan = GAN(g, build_gan("dcgan", ngf=4, ndf=4)[1], d_sees_label=False)
    stats = gan.update((torch.rand(4, 1, 32, 32) * 2 - 1, torch.randn(4, 100), torch.arange(4)))
    assert 0 < stats["d_x"] < 1 and stats["g_grad_norm"] > 0


def test_run_metrics_class_histogram_grad_norms_and_fid_curve(tiny_mnist, tmp_path):
    run = tmp_path / "d"
    # 96 images / 16 = 6 batches: FID points at batches 2, 4, 6
    assert main(["gan", "--data-root", str(tiny_mnist), "--epochs", "1", "--out", str(run), *TINY,
                 "--fid-every", "2", "--curve-samples", "30", "--train-only", "d"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    h = m["class_histogram"]
    assert len(h["counts"]) == 10 and sum(h["counts"]) == m["eval_samples"] == 40
    assert h["max_share"] == max(h["counts"]) / 40 and h["min_share"] == min(h["counts"]) / 40
    assert h["kl_to_uniform"] >= 0
    assert [p["batch"] for p in m["fid_curve"]] == [2, 4, 6] and all(p["fid"] >= 0 for p in m["fid_curve"])
    history = json.loads((run / "history.json").read_text())
    assert history["g_grad_norm"] == [0.0] * 6 and m["g_grad_norm_first_100_mean"] == 0


def test_fid_curve_of_a_resumed_run_equals_the_uninterrupted_one(tiny_mnist, tmp_path):
    common = ["gan", "--data-root", str(tiny_mnist), "--epochs", "1", *TINY, "--fid-every", "2",
              "--curve-samples", "20"]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0
    assert main([*common, "--out", str(tmp_path / "part"), "--stop-after-batches", "3"]) == 3
    assert main([*common, "--out", str(tmp_path / "part"), "--resume"]) == 0
    full, part = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("full", "part"))
    assert full["fid_curve"] == part["fid_curve"] and [p["batch"] for p in full["fid_curve"]] == [2, 4, 6]
    assert full["g_grad_norm_first_100_mean"] == part["g_grad_norm_first_100_mean"] > 0


def test_cached_classifier_trains_in_the_cpus_native_precision_and_keys_by_it(tmp_path, monkeypatch):
    from vislab.experiments import gan_store

    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (48, 28, 28), dtype=torch.uint8, generator=g), torch.arange(48) % 10
    args = (images, labels, images[:10], labels[:10])
    monkeypatch.setattr(gan_store, "resolve_precision", lambda p, d: None)  # a CPU without native bf16
    net, _, key_fp32 = gan_store.cached_classifier(*args, epochs=1, min_steps=0, cache=tmp_path)
    plain = train_classifier(prepare_digits(images), labels, epochs=1, seed=0, dtype=None)
    for a, b in zip(net.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)  # trained in fp32, not emulated bf16
    monkeypatch.setattr(gan_store, "resolve_precision", lambda p, d: torch.bfloat16)
    key_bf16 = gan_store._classifier_key(images, labels, {"epochs": 1, "seed": 0})  # the key bf16 CPUs always had
    _, _, key = gan_store.cached_classifier(*args, epochs=1, min_steps=0, cache=tmp_path)
    assert key == key_bf16 != key_fp32
    assert {p.name for p in tmp_path.glob("*.pt")} == {f"mnist-classifier-{k}.pt" for k in (key_fp32, key_bf16)}


def test_the_measuring_classifier_trains_at_least_min_steps_on_a_small_set(tmp_path, monkeypatch):
    from vislab.experiments import gan_store

    # MNIST keeps its 3 epochs (1,407 steps); the offline subset's 4,000 digits get 10 (320 steps), 2,000 get 19
    assert gan_store.classifier_epochs(60000, 3) == 3
    assert gan_store.classifier_epochs(4000, 3) == 10 and gan_store.classifier_epochs(2000, 3) == 19
    assert gan_store.classifier_epochs(48, 1, min_steps=4) == 4 and gan_store.classifier_epochs(48, 6, min_steps=4) == 6
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randint(0, 256, (48, 28, 28), dtype=torch.uint8, generator=g), torch.arange(48) % 10
    monkeypatch.setattr(gan_store, "resolve_precision", lambda p, d: None)
    net, _, key = gan_store.cached_classifier(images, labels, images[:10], labels[:10], epochs=1, min_steps=4,
                                              cache=tmp_path)
    four = train_classifier(prepare_digits(images), labels, epochs=4, seed=0, dtype=None)
    for a, b in zip(net.state_dict().values(), four.state_dict().values()):
        assert torch.equal(a, b)  # 1 step per epoch: 4 epochs
    assert key == gan_store._classifier_key(images, labels, {"epochs": 4, "seed": 0, "precision": "fp32"})


def test_the_classifier_learns_from_every_training_digit_not_the_gans_train_size(tiny_mnist):
    from vislab.experiments.gan import GanConfig, _load_digits
    from vislab.config import build_config

    train, all_train, test = _load_digits(build_config(GanConfig, {"data_root": str(tiny_mnist), "train_size": 30}))
    assert (len(train.images), len(all_train.images), len(test.images)) == (30, 96, 40)
    assert torch.equal(train.images, all_train.images[:30])
