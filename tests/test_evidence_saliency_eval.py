"""B1-B4: deletion faithfulness, the randomisation sanity check, SmoothGrad and map noise,
weakly supervised localisation -- on tiny models whose saliency is known by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vislab.methods.saliency import saliency_maps
from vislab.methods.saliency_eval import (box_iou, deletion_baseline, deletion_curves, localise, map_total_variation,
                                          mask_iou, randomized_copy, rank_correlation, weight_layers)
from vislab.methods.smoothgrad import smoothgrad_maps

WEIGHTS = torch.tensor([[4.0, 1.0], [3.0, 2.0]])  # class 0's weights over a 1-channel 2x2 image


def linear_model() -> nn.Module:
    """Logit 0 = sum(w * x), logit 1 = 0: its saliency for class 0 is |w| wherever x is."""
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0] = WEIGHTS.flatten()
    return nn.Sequential(nn.Flatten(), layer).eval()


class SinModel(nn.Module):
    """Logit 0 = sum sin(40 x), logit 1 = its negative: a gradient 40 cos(40 x) that flips between
    neighbouring pixels of a random image -- the kind of noise SmoothGrad averages out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sin(40 * x).flatten(1).sum(1)
        return torch.stack([s, -s], dim=1)


def test_deletion_curve_of_a_linear_model_by_hand():
    model, x = linear_model(), torch.ones(1, 1, 2, 2)
    maps = saliency_maps(model, x, torch.tensor([0]), space="pixel").maps
    torch.testing.assert_close(maps[0], WEIGHTS)
    result = deletion_curves(model, x, maps, torch.tensor([0]), steps=4, baseline="zero", score="logit")
    torch.testing.assert_close(result.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    # remove 4, then 3, then 2, then 1 from the score 10
    torch.testing.assert_close(result.saliency_curve[0], torch.tensor([10.0, 6.0, 3.0, 1.0, 0.0]))
    # trapezoid: 0.25 * ((10+6) + (6+3) + (3+1) + (1+0)) / 2 = 3.75
    assert result.saliency_auc.item() == pytest.approx(3.75)
    random = result.random_curve[0]
    assert random[0] == 10 and random[-1] == 0
    # the random order removes each pixel once, and never faster than the most-salient-first order
    assert sorted((random[:-1] - random[1:]).tolist()) == [1.0, 2.0, 3.0, 4.0]
    assert (random >= result.saliency_curve[0]).all()
    assert result.faithfulness.item() == pytest.approx(result.random_auc.item() - 3.75)
    again = deletion_curves(model, x, maps, torch.tensor([0]), steps=4, baseline="zero", score="logit")
    assert torch.equal(again.random_curve, result.random_curve)


def test_deletion_uneven_steps_probability_and_baselines():
    model = linear_model()
    x = torch.full((2, 1, 2, 2), 0.5)
    maps = WEIGHTS.expand(2, 2, 2)
    result = deletion_curves(model, x, maps, torch.tensor([0, 1]), steps=3, baseline="zero")
    torch.testing.assert_close(result.fractions, torch.tensor([0.0, 0.25, 0.75, 1.0]))  # round(4k/3) pixels
    # softmax of (sum w x, 0): class 0 at step 0 is sigmoid(5), class 1 is sigmoid(-5); all removed: 0.5
    torch.testing.assert_close(result.saliency_curve[:, 0], torch.sigmoid(torch.tensor([5.0, -5.0])))
    torch.testing.assert_close(result.saliency_curve[:, -1], torch.tensor([0.5, 0.5]))
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(deletion_baseline(images, "mean")[:, :, 3, 5], images.mean(dim=(2, 3)))
    flat = torch.full((1, 3, 50, 50), 0.3)
    torch.testing.assert_close(deletion_baseline(flat, "blur"), flat)  # blurring a constant image
    blurred = deletion_baseline(images, "blur")
    assert blurred.shape == images.shape and blurred.std() < images.std()
    with pytest.raises(ValueError, match="baseline"):
        deletion_baseline(images, "noise")


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def test_randomized_copy_cascades_from_the_top_and_leaves_the_original_alone():
    model = conv_net()
    with torch.no_grad():  # give BatchNorm non-default statistics, which must survive
        model[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert weight_layers(model) == ["0", "3", "6"]  # the BatchNorm is not a weight layer
    top1 = randomized_copy(model, top_layers=1, seed=1)
    changed = {k for k, v in top1.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"6.weight", "6.bias"}
    every = randomized_copy(model, seed=1)
    changed = {k for k, v in every.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(randomized_copy(model, seed=1).state_dict()["3.weight"], every.state_dict()["3.weight"])
    assert not torch.equal(randomized_copy(model, seed=2).state_dict()["3.weight"], every.state_dict()["3.weight"])
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    randomized_copy(model, seed=1)
    assert torch.equal(torch.rand(3), expected)  # the global RNG is left as it was
    with pytest.raises(ValueError, match="3 weight layers"):
        randomized_copy(model, top_layers=4)


def test_rank_correlation_by_hand():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    b = torch.tensor([[[1.0, 3.0], [2.0, 4.0]]])
    # Spearman: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert rank_correlation(a, b)[0] == pytest.approx(0.8)
    assert rank_correlation(a, a ** 3)[0] == pytest.approx(1.0)  # ranks ignore monotone transforms
    assert rank_correlation(a, -a)[0] == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(a, torch.ones(1, 2, 2))[0])
    smooth = torch.linspace(0, 1, 16).view(1, 4, 4) + torch.linspace(0, 2, 16).view(1, 4, 4).transpose(1, 2)
    big = torch.nn.functional.interpolate(smooth[:, None], size=(8, 8), mode="bilinear")[:, 0]
    assert rank_correlation(smooth, big)[0] > 0.95  # maps of two input sizes (two backbones)


def test_total_variation_by_hand():
    checker = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert map_total_variation(checker).item() == pytest.approx(1.0)  # 4 unit differences / 4 pixels
    ramp = torch.tensor([[[0.0, 1.0, 2.0]]])
    assert map_total_variation(ramp).item() == pytest.approx(1 / 3)  # (0.5 + 0.5) / 3 after scaling to max 1
    assert map_total_variation(5 * ramp).item() == pytest.approx(1 / 3)
    assert map_total_variation(torch.zeros(1, 3, 3)).item() == 0


def test_smoothgrad_equals_vanilla_without_noise_or_on_a_linear_model():
    model, x = linear_model(), torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    vanilla = saliency_maps(model, x, space="pixel")
    for noise in (0.0, 0.3):
        smooth = smoothgrad_maps(model, x, samples=5, noise=noise, space="pixel")
        torch.testing.assert_close(smooth.maps, vanilla.maps)
        assert torch.equal(smooth.classes, vanilla.classes)


def test_smoothgrad_removes_the_noise_of_a_rapidly_varying_gradient():
    model = SinModel()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([0, 0])
    vanilla = saliency_maps(model, x, classes, space="pixel").maps
    torch.testing.assert_close(vanilla, 40 * torch.cos(40 * x[:, 0]).abs())
    smooth = smoothgrad_maps(model, x, classes, samples=50, noise=0.15, seed=0, space="pixel").maps
    # sigma * 40 = 6 radians: E|40 cos| ~ 40 * 2 / pi whatever x is
    assert (map_total_variation(smooth) < 0.3 * map_total_variation(vanilla)).all()
    assert smooth.mean().item() == pytest.approx(40 * 2 / np.pi, rel=0.1)
    assert torch.equal(smooth, smoothgrad_maps(model, x, classes, samples=50, noise=0.15, seed=0, space="pixel").maps)


def square_map() -> torch.Tensor:
    m = torch.full((12, 12), 0.05)
    m[3:7, 4:9] = 1.0      # the object: rows 3-6, columns 4-8 (20 pixels)
    m[10:12, 10:12] = 0.9  # a smaller bright blob elsewhere
    return m


def test_localise_a_bright_square():
    loc = localise(square_map(), threshold=0.5)
    assert loc.box == (4, 3, 9, 7)
    assert box_iou(loc.box, (4, 3, 9, 7)) == 1.0
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[3:7, 4:9] = True
    assert torch.equal(loc.mask, expected) and mask_iou(loc.mask, expected) == 1.0
    top = localise(square_map(), top_fraction=20 / 144)
    assert torch.equal(top.mask, expected)
    smoothed = localise(square_map(), threshold=0.5, smooth_sigma=0.5)
    assert box_iou(smoothed.box, loc.box) > 0.5


def test_localise_connectivity_and_iou_by_hand():
    m = torch.zeros(5, 5)
    m[0, 0] = m[1, 1] = m[2, 2] = 1.0  # a diagonal line: one component with 8-connectivity only
    m[4, 3] = m[4, 4] = 1.0
    assert localise(m, threshold=0.5).box == (0, 0, 3, 3)
    assert localise(m, threshold=0.5, connectivity=4).box == (3, 4, 5, 5)
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([False, True, True, False])
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="threshold"):
        localise(m, threshold=2.0)
