"""B6: do fooled images stay fooling under transfer, JPEG and resizing? Tiny models with known answers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vislab.methods.robustness import classified_as, jpeg_roundtrip, resize_roundtrip, robustness_check

SIZE, AMPLITUDE = 32, 16 / 255
PATTERN = torch.randint(0, 2, (SIZE, SIZE), generator=torch.Generator().manual_seed(0)).float() * 2 - 1


class PatternDetector(nn.Module):
    """Class 0 when the image carries the pixel-level +-1 pattern at more than half its amplitude:
    a network fooled by a fine high-frequency perturbation, as adversarial ones are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strength = ((x.mean(1) - 0.5) * PATTERN).flatten(1).mean(1) / AMPLITUDE
        return torch.stack([strength - 0.5, 0.5 - strength], dim=1)


class Brightness(nn.Module):
    """Class 0 when the mean pixel exceeds 0.45: only the image's coarse content matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        return torch.stack([m - 0.45, 0.45 - m], dim=1)


class AlwaysOne(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 1.0]).expand(len(x), 2)


def fooled_images() -> torch.Tensor:
    """Image 0 carries the pattern (fools the detector), image 1 its negative (does not)."""
    signs = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    return (0.5 + signs * AMPLITUDE * PATTERN).expand(2, 3, SIZE, SIZE).clone()


def test_fine_perturbations_die_under_strong_jpeg_and_resizing_coarse_content_survives():
    models = {"detector": PatternDetector(), "brightness": Brightness(), "always_one": AlwaysOne()}
    result = robustness_check(fooled_images(), 0, models, jpeg_qualities=(95, 10), resize_factors=(0.5,))
    assert result.conditions == ["as_is", "jpeg_q95", "jpeg_q10", "resize_0.5"]
    hits = result.hits["detector"]
    assert hits["as_is"].tolist() == [True, False]
    assert hits["jpeg_q95"].tolist() == [True, False]   # quantisation steps of ~1/255 keep the pattern
    assert hits["jpeg_q10"].tolist() == [False, False]  # coarse steps remove it
    assert hits["resize_0.5"].tolist() == [False, False]  # averaging 2x2 blocks removes it
    rates = result.rates()
    assert rates["detector"] == {"as_is": 0.5, "jpeg_q95": 0.5, "jpeg_q10": 0.0, "resize_0.5": 0.0}
    assert rates["brightness"] == {c: 1.0 for c in result.conditions}  # "transfers" and survives everything
    assert rates["always_one"] == {c: 0.0 for c in result.conditions}  # never fooled


def test_roundtrips_keep_a_flat_image_and_check_their_arguments():
    flat = torch.full((2, 3, 16, 16), 0.6)
    assert (jpeg_roundtrip(flat, 75) - flat).abs().max() <= 1 / 255
    torch.testing.assert_close(resize_roundtrip(flat, 0.25), flat)
    grey = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    out = jpeg_roundtrip(grey, 95)
    assert out.shape == grey.shape and (out - grey).abs().mean() < 0.02
    assert resize_roundtrip(grey, 1.0).sub(grey).abs().max() < 1e-6  # factor 1: nothing happens
    with pytest.raises(ValueError, match="quality"):
        jpeg_roundtrip(grey, 0)
    with pytest.raises(ValueError, match="factor"):
        resize_roundtrip(grey, 1.5)


def test_classified_as_per_image_targets_and_batches():
    x = torch.stack([torch.full((3, 4, 4), v) for v in (0.2, 0.9, 0.7)])
    assert classified_as(Brightness(), x, torch.tensor([1, 0, 1]), batch_size=2).tolist() == [True, True, False]
    assert classified_as(Brightness(), x, 0).tolist() == [False, True, True]
