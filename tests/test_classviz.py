"""Class visualisation: jitter undone exactly, the blur is a sigma-0.5 Gaussian, clamping,
equivalence with the course's normalised-space loop, batched sweeps, and ``vislab classviz``."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vislab.cli import main
from vislab.methods.classviz import ascent_step, blur, class_visualization, jitter
from vislab.models.backbones import PixelModel
from vislab.schemas import check_metrics

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)
HW = 8


def linear_model(seed: int = 0) -> PixelModel:
    torch.manual_seed(seed)
    return PixelModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * HW * HW, 4)), MEAN, STD).double().eval()


def conv_model(seed: int = 0) -> PixelModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 4))
    return PixelModel(net, MEAN, STD).double().eval()


def _std():
    return torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)


def _mean():
    return torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)


def _rand(n=1, seed=0):
    return 0.25 + 0.5 * torch.rand(n, 3, HW, HW, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_jitter_is_undone_exactly():
    x = _rand(2)
    for ox, oy in [(3, 5), (0, 7), (16, 1)]:
        assert torch.equal(jitter(jitter(x, ox, oy), -ox, -oy), x)
        assert not torch.equal(jitter(x, ox, oy), x)
    model = conv_model()
    zero = torch.zeros(2, dtype=torch.float64)
    assert torch.equal(ascent_step(model, x, torch.tensor([0, 1]), 5, 3, zero, zero, blur_now=False), x)


def test_step_is_taken_on_the_jittered_image_and_rolled_back():
    model = linear_model()
    W = model.net[1].weight.detach()[2].view(1, 3, HW, HW)
    x, lr, ox, oy = _rand(), torch.tensor([0.01], dtype=torch.float64), 3, 2
    out = ascent_step(model, x, torch.tensor([2]), ox, oy, lr, torch.zeros(1, dtype=torch.float64), blur_now=False)
    # gradient on the rolled image = W / std; pixel step lr * std^2 * W / std; then rolled back by -o
    expected = x + lr * _std() * jitter(W, -ox, -oy)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)  # std buffers are float32


def test_blur_is_a_gaussian_with_sigma_half():
    delta = torch.zeros(1, 3, 11, 11, dtype=torch.float64)
    delta[..., 5, 5] = 1.0
    out = blur(delta)
    k = torch.tensor([math.exp(-(i * i) / (2 * 0.5 ** 2)) for i in range(-2, 3)], dtype=torch.float64)
    k = k / k.sum()
    expected = torch.zeros(11, 11, dtype=torch.float64)
    expected[3:8, 3:8] = torch.outer(k, k)
    for c in range(3):
        torch.testing.assert_close(out[0, c], expected, rtol=1e-6, atol=1e-9)
    # neighbour / centre = exp(-1 / (2 sigma^2)) = exp(-2) pins sigma = 0.5; mass is preserved
    assert abs(out[0, 0, 5, 6] / out[0, 0, 5, 5] - math.exp(-2)) < 1e-9
    torch.testing.assert_close(out.sum(dim=(2, 3)), torch.ones(1, 3, dtype=torch.float64))


def test_clamping_keeps_unit_range():
    model = conv_model()
    lr = torch.tensor([1e4], dtype=torch.float64)
    out = ascent_step(model, _rand(), torch.tensor([1]), 0, 0, lr, torch.zeros(1, dtype=torch.float64), blur_now=False)
    assert out.min() >= 0 and out.max() <= 1 and ((out == 0) | (out == 1)).any()


def test_pixel_space_loop_equals_course_loop_on_normalised_images():
    model = conv_model(1)
    net, mean, std = model.net, _mean(), _std()
    x, lr, reg, target = _rand(seed=3), 0.5, 1e-2, 2
    lo, hi = -mean / std, (1 - mean) / std
    xn = (x - mean) / std
    offsets = [(3, 1), (0, 5), (7, 7)]
    for t, (ox, oy) in enumerate(offsets):  # the course's loop, blur every 2 steps
        xn = jitter(xn, ox, oy).requires_grad_(True)
        obj = net(xn)[0, target] - reg * xn.norm() ** 2
        (g,) = torch.autograd.grad(obj, xn)
        xn = jitter(xn.detach() + lr * g, -ox, -oy)
        xn = torch.max(torch.min(xn, hi), lo)
        if t % 2 == 0:
            xn = blur(xn)
        x = ascent_step(model, x, torch.tensor([target]), ox, oy, torch.tensor([lr], dtype=torch.float64),
                        torch.tensor([reg], dtype=torch.float64), blur_now=t % 2 == 0)
    torch.testing.assert_close(x, mean + std * xn, rtol=0, atol=1e-8)  # std buffers are float32


def test_class_visualization_is_reproducible_batched_and_raises_the_score():
    model = conv_model()
    kw = dict(image_size=HW, iterations=6, show_every=2, blur_every=3, max_jitter=2)
    a = class_visualization(model, 1, generator=torch.Generator().manual_seed(0), **kw)
    b = class_visualization(model, 1, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a.images, b.images)
    assert [s for s, _ in a.snapshots] == [2, 4, 6] and a.images.shape == (1, 3, HW, HW)
    assert 0 <= a.images.min() and a.images.max() <= 1
    init = torch.full((1, 3, HW, HW), 0.5, dtype=torch.float64)
    with torch.no_grad():
        before = model(init)[0, 1]
    grown = class_visualization(model, 1, init=init, learning_rate=50.0, l2_reg=0.0, image_size=HW, iterations=5,
                                generator=torch.Generator().manual_seed(0))
    assert grown.logits[0, 1] > before
    # a sweep: each image its own (lr, l2_reg), same as running it alone with the same jitter
    sweep = class_visualization(model, 1, init=init.expand(2, -1, -1, -1), learning_rate=torch.tensor([1.0, 20.0]),
                                l2_reg=torch.tensor([1e-3, 1e-1], dtype=torch.float64), image_size=HW, iterations=4,
                                generator=torch.Generator().manual_seed(7))
    alone = class_visualization(model, 1, init=init, learning_rate=20.0, l2_reg=1e-1, image_size=HW, iterations=4,
                                generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(sweep.images[1], alone.images[0], rtol=0, atol=1e-12)


def test_cli_classviz_with_sweep(tmp_path):
    out = tmp_path / "run"
    rc = main(["classviz", "--model", "efficientnet_lite0", "--no-weights", "--target", "76", "113",
               "--iterations", "2", "--show-every", "1", "--image-size", "64", "--sweep",
               "--sweep-learning-rates", "5", "--sweep-l2-regs", "0.001", "0.01", "--out", str(out)])
    assert rc == 0
    m = check_metrics("classviz", json.loads((out / "metrics.json").read_text()))
    assert [r["target"] for r in m["results"]] == [76, 113] and m["init"] == "noise" and m["image_size"] == 64
    assert all(0 <= r["probability"] <= 1 for r in m["results"])
    assert len(m["sweep"]["results"]) == 2 and set(m["sweep"]["results"][0]["probability_by_iterations"]) == {"1", "2"}
    for r in m["results"]:  # the last snapshot is the final image
        assert set(r["probability_by_iterations"]) == {"1", "2"}
        assert r["probability_by_iterations"]["2"] == pytest.approx(r["probability"], rel=1e-6)
    # the sweep's first setting is the run's own (lr 5, L2 1e-3, target 76): the same ascent, the same trajectory
    assert m["results"][0]["probability_by_iterations"] == pytest.approx(
        m["sweep"]["results"][0]["probability_by_iterations"], rel=1e-4)
    for name in ("snapshots.png", "sweep.png", "classviz_76.png", "classviz_113.png"):
        assert (out / name).is_file()


def test_cli_batching_does_not_change_the_images():
    from vislab.experiments.classviz import ClassVizConfig, _classviz_batches

    model = conv_model(2)
    f64 = dict(dtype=torch.float64)
    args = (model, _rand(seed=5), torch.tensor([0, 1, 2]), torch.tensor([1.0, 5.0, 20.0], **f64),
            torch.tensor([1e-3, 1e-2, 1e-3], **f64))
    common = dict(blur_every=2, max_jitter=2, show_every=2, iterations=4)
    one = _classviz_batches(*args, ClassVizConfig(batch_size=1, **common))
    three = _classviz_batches(*args, ClassVizConfig(batch_size=3, **common))
    torch.testing.assert_close(one.images, three.images, rtol=0, atol=1e-12)
    assert [s for s, _ in one.snapshots] == [2, 4] and one.snapshots[0][1].shape == (3, 3, HW, HW)
