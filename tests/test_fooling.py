"""Fooling images: the step formula (hand-computed), equivalence with the course's normalised-space
algorithm, independent stopping inside a batch, the 8-bit stopping rule, clamping, and
``vislab fool``'s metrics contract."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vislab.cli import main
from vislab.methods.fooling import fool, quantize_uint8
from vislab.models.backbones import PixelModel
from vislab.reporting.findings import findings_for
from vislab.schemas import check_metrics
from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)
D = 3 * 4 * 4


def threshold_model(c: float) -> PixelModel:
    """logit_0 = c, logit_1 = u . x with u the unit vector (1, ..., 1) / sqrt(D); mean 0, std 1,
    so every step of length lr raises logit_1 by exactly lr."""
    lin = nn.Linear(D, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = 1 / math.sqrt(D)
        lin.bias.copy_(torch.tensor([c, 0.0]))
    return PixelModel(nn.Sequential(nn.Flatten(), lin), (0.0,) * 3, (1.0,) * 3).double().eval()


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 16, 5)).double().eval()


def test_one_step_matches_the_hand_formula_in_both_spaces():
    torch.manual_seed(0)
    lin = nn.Linear(D, 3)
    model = PixelModel(nn.Sequential(nn.Flatten(), lin), MEAN, STD).double().eval()
    x = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    with torch.no_grad():
        t = int(model(x).argmin())  # surely not the prediction
    W = lin.weight.detach()[t].view(3, 4, 4)
    std = torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)
    lr = 0.05
    # course: g = d logit_t / d x_norm = W_t; x_norm += lr g/|g|; pixels move by std times that
    res = fool(model, x, t, learning_rate=lr, max_iterations=1, stop_on_uint8=False)
    torch.testing.assert_close(res.images[0], 0.5 + lr * std * W / W.norm())
    assert res.iterations.tolist() == [1]
    # pixel space: g = d logit_t / d x = W_t / std; x += lr g/|g|
    g = W / std
    res = fool(model, x, t, learning_rate=lr, max_iterations=1, step_space="pixel", stop_on_uint8=False)
    torch.testing.assert_close(res.images[0], 0.5 + lr * g / g.norm())


def test_default_trajectory_is_the_course_trajectory_on_normalised_images():
    net = tiny_net()
    model = PixelModel(net, MEAN, STD).double().eval()
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (MEAN, STD))
    x = 0.3 + 0.4 * torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t, lr, steps = 2, 0.02, 4
    xn = (x - mean) / std  # the course's loop, on the normalised image
    for _ in range(steps):
        xn = xn.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xn)[0, t], xn)
        xn = xn + lr * g / g.norm()
    res = fool(model, x, t, learning_rate=lr, max_iterations=steps, stop_on_uint8=False)
    assert res.iterations.item() == steps  # small steps: still not the target
    torch.testing.assert_close(res.images, mean + std * xn.detach(), rtol=0, atol=1e-10)


def test_images_of_a_batch_stop_independently():
    model = threshold_model(c=0.5 * math.sqrt(D))  # target 1 once the mean pixel exceeds 0.5
    a = torch.tensor([0.49, 0.45, 0.60], dtype=torch.float64)
    x = a.view(3, 1, 1, 1).expand(3, 3, 4, 4).clone()
    lr = 0.1  # each step raises u.x by 0.1: 0.49 -> 1 step, 0.45 -> 4 steps (3.118 + 0.4 > 3.464), 0.60 -> 0
    res = fool(model, x, 1, learning_rate=lr, stop_on_uint8=False)
    assert res.iterations.tolist() == [1, 4, 0]
    assert res.success.tolist() == [True, True, True]
    expected = x + lr / math.sqrt(D) * torch.tensor([1.0, 4.0, 0.0], dtype=torch.float64).view(3, 1, 1, 1)
    torch.testing.assert_close(res.images, expected, rtol=0, atol=1e-6)
    assert torch.equal(res.images[2], x[2])  # already the target: untouched
    for i in range(3):  # identical to fooling each image alone
        one = fool(model, x[i:i + 1], 1, learning_rate=lr, stop_on_uint8=False)
        assert one.iterations.item() == res.iterations[i].item()
        torch.testing.assert_close(one.images[0], res.images[i])


def test_unsuccessful_images_stop_at_max_iterations_and_report_failure():
    model = threshold_model(c=0.5 * math.sqrt(D))
    x = torch.full((2, 3, 4, 4), 0.2, dtype=torch.float64)
    x[1] = 0.499
    res = fool(model, x, 1, learning_rate=0.1, max_iterations=3, stop_on_uint8=False)
    assert res.iterations.tolist() == [3, 1] and res.success.tolist() == [False, True]
    assert res.logits.argmax(1).tolist() == [0, 1]


def test_uint8_stop_continues_until_the_rounded_image_fools():
    lr = 0.1
    step = lr / math.sqrt(D)
    a = 100.4 / 255 - step  # one step lands on 100.4/255, which rounds down to 100/255
    c = math.sqrt(D) * (100.2 / 255)  # between the rounded (100) and the float (100.4) mean
    model = threshold_model(c)
    x = torch.full((1, 3, 4, 4), a, dtype=torch.float64)
    naive = fool(model, x, 1, learning_rate=lr, stop_on_uint8=False)
    assert naive.iterations.item() == 1
    with torch.no_grad():
        assert model(quantize_uint8(naive.images)).argmax().item() == 0  # saving undoes it
    safe = fool(model, x, 1, learning_rate=lr)
    assert safe.iterations.item() == 2 and safe.success.item()
    with torch.no_grad():
        assert model(quantize_uint8(safe.images)).argmax().item() == 1


def test_margin_asks_for_a_lead_over_the_runner_up():
    model = threshold_model(c=0.5 * math.sqrt(D))
    x = torch.full((1, 3, 4, 4), 0.49, dtype=torch.float64)
    res = fool(model, x, 1, learning_rate=0.1, margin=0.25, stop_on_uint8=False)
    # u.x starts 0.069 below c; needs to reach c + 0.25: ceil(0.319 / 0.1) = 4 steps
    assert res.iterations.item() == 4


def test_clamping_keeps_pixels_in_unit_range():
    model = PixelModel(tiny_net(1), MEAN, STD).double().eval()
    x = torch.rand(4, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    res = fool(model, x, 3, learning_rate=20.0, max_iterations=3, stop_on_uint8=False)
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert ((res.images == 0) | (res.images == 1)).any()  # the steps did push past the range
    with pytest.raises(ValueError, match="step_space"):
        fool(model, x, 3, step_space="normalised")


def test_cli_fool_metrics_contract(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "run"
    rc = main(["fool", "--images", str(folder), "--model", "efficientnet_lite0", "--no-weights", "--target", "6",
               "--max-iterations", "2", "--out", str(out)])
    assert rc == 0
    m = check_metrics("fool", json.loads((out / "metrics.json").read_text()))
    assert len(m["results"]) == 2 and 0 <= m["success_rate"] <= 1
    for r in m["results"]:
        assert isinstance(r["success"], bool) and isinstance(r["success_after_uint8"], bool)
        assert isinstance(r["iterations"], int) and 0 <= r["iterations"] <= 2
        assert isinstance(r["linf_255"], float) and r["linf_255"] == pytest.approx(r["linf"] * 255)
    assert m["success_rate"] == sum(r["success"] for r in m["results"]) / 2
    assert m["attack"] == "naive" and not m.keys() & {"eps_255", "pgd_steps", "robustness"}  # the default
    assert (out / "fool_00_p0.png").is_file() and (out / "fooled" / "p1.png").is_file()
    assert main(["fool", "--images", str(folder), "--no-weights", "--target", "1000", "--out",
                 str(tmp_path / "bad")]) == 2


def test_cli_budgeted_attacks_respect_eps_and_report_robustness(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):  # 224 x 224 8-bit photos: used as they are, so the saved images differ from them by whole levels
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    common = ["fool", "--images", str(folder), "--no-weights", "--target", "6"]
    pgd_out, fgsm_out = tmp_path / "pgd", tmp_path / "fgsm"
    assert main(common + ["--attack", "pgd", "--eps", "4", "--pgd-steps", "2", "--pgd-alpha", "3",
                          "--check-models", "efficientnet_lite1", "--jpeg-quality", "95", "--resize-scale", "0.5",
                          "--out", str(pgd_out)]) == 0
    m = check_metrics("fool", json.loads((pgd_out / "metrics.json").read_text()))
    assert (m["attack"], m["eps_255"], m["pgd_steps"], m["pgd_alpha_255"]) == ("pgd", 4.0, 2, 3.0)
    for r in m["results"]:  # the budget holds (float rounding aside), also for the saved 8-bit image
        assert r["linf_255"] <= 4 + 1e-3 and r["linf_255_after_uint8"] <= 4 and r["iterations"] == 2
    assert "by PGD within an L-infinity budget of 4/255" in findings_for("fool", m, {})[0]  # the run's summary
    rob = m["robustness"]
    assert rob["fooled_images"] == sum(r["success_after_uint8"] for r in m["results"])
    assert set(rob["transfer"]) == {"efficientnet_lite1"} and (rob["jpeg_quality"], rob["resize_scale"]) == (95, 0.5)
    assert main(common + ["--attack", "fgsm", "--eps", "2", "--out", str(fgsm_out)]) == 0
    m = check_metrics("fool", json.loads((fgsm_out / "metrics.json").read_text()))
    assert m["attack"] == "fgsm" and "pgd_steps" not in m and "robustness" not in m
    for r in m["results"]:  # one step of exactly eps on every pixel with a gradient
        assert r["linf_255"] == pytest.approx(2, abs=1e-3) and r["iterations"] == 1
    # the study's questions read these keys (B5 from one run, B7 comparing the two)
    evidence = Evidence(tmp_path, {"fool": ["fgsm"], "fool_pgd": ["pgd"]})
    for qid in ("B5", "B7"):
        a = Answer(qid, QUESTIONS[qid].text)
        QUESTIONS[qid].answer(evidence, a)
        assert a.sentences and a.numbers, qid
    assert "PGD (L-inf budget 4/255, 2 steps of 3/255)" in a.text and a.tables[0].rows[1][0] == "pgd"
    assert main(common + ["--check-models", "no_such_net", "--out", str(tmp_path / "bad")]) == 2
    assert main(common + ["--jpeg-quality", "100", "--out", str(tmp_path / "bad")]) == 2


class _BrightIsTarget(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0 (or always class 0 with ``never``)."""

    def __init__(self, never: bool = False):
        super().__init__()
        self.never = never

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = torch.full((len(x),), -1.0) if self.never else 40 * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(lead), lead], dim=1)


def test_robustness_record_of_a_brightness_classifier():
    from vislab.experiments.fool import robustness_record

    # JPEG at high quality and a resize keep an image's mean brightness: a brightness classifier keeps its answer;
    # a model that never says the target gives transfer 0; image 2 did not fool the source and is not counted
    saved = torch.stack([torch.full((3, 32, 32), v) for v in (0.8, 0.9, 0.7)])
    saved[:, :, ::2] -= 0.1  # some texture for JPEG to blur
    models = {"bright": _BrightIsTarget(), "never": _BrightIsTarget(never=True)}
    rec = robustness_record(saved, torch.tensor([True, True, False]), 1, models, checked=["never"], jpeg_quality=95,
                            resize_scale=0.5, batch_size=2)
    assert rec == {"fooled_images": 2, "transfer": {"never": 0.0}, "jpeg": 1.0, "jpeg_quality": 95, "resize": 1.0,
                   "resize_scale": 0.5}
    none = robustness_record(saved, torch.zeros(3, dtype=torch.bool), 1, models, checked=["never"], jpeg_quality=0,
                             resize_scale=0, batch_size=2)
    assert none["fooled_images"] == 0 and none["transfer"] == {"never": None} and none["jpeg"] is None
