"""A4: first-conv maps matched to oriented-edge and colour-opponent references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.methods.filter_match import LUMA, REFERENCES, match_filters, pearson_rows, reference_responses


def smooth_image(size: int = 32, seed: int = 0) -> torch.Tensor:
    """A (3, size, size) image in [0, 1] with structure at several scales and independent channels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 4, size // 4, generator=g)
    fine = torch.rand(1, 3, size, size, generator=g)
    up = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (0.8 * up + 0.2 * fine).clamp(0, 1)[0]


def detector_conv(stride: int = 1) -> nn.Conv2d:
    """Map 0: Sobel x of the luminance; 1: R - G; 2: -(B - (R + G) / 2); 3: Sobel y; 4: constant;
    5: the luminance."""
    conv = nn.Conv2d(3, 6, 3, stride=stride, padding=1, padding_mode="reflect")
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        luma = torch.tensor(LUMA).view(3, 1, 1)
        conv.weight[0] = luma * torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
        conv.weight[1, :, 1, 1] = torch.tensor([1.0, -1.0, 0.0])
        conv.weight[2, :, 1, 1] = torch.tensor([0.5, 0.5, -1.0])
        conv.weight[3] = luma * torch.tensor([[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]])
        conv.bias[4] = 0.7
        conv.weight[5, :, 1, 1] = torch.tensor(LUMA)
    return conv


def test_references_of_a_vertical_step_edge_by_hand():
    image = torch.zeros(3, 6, 6)
    image[:, :, 3:] = 1.0  # grey step from column 2 to column 3
    refs = dict(zip(REFERENCES, reference_responses(image)))
    expected_x = torch.zeros(6, 6)
    expected_x[:, 2:4] = 4.0  # (1 + 2 + 1) * (1 - 0) on both sides of the step
    torch.testing.assert_close(refs["sobel_x"], expected_x)
    torch.testing.assert_close(refs["sobel_y"], torch.zeros(6, 6))
    torch.testing.assert_close(refs["gradient_magnitude"], expected_x)
    # the diagonal kernels weigh the bright column by 2 + 1 + 0 = 3 (and -3 for the other diagonal)
    torch.testing.assert_close(refs["diagonal_45"], expected_x * 0.75)
    torch.testing.assert_close(refs["diagonal_135"], expected_x * 0.75)
    torch.testing.assert_close(refs["red_green"], torch.zeros(6, 6))
    torch.testing.assert_close(refs["luminance"], image[0] * sum(LUMA))


def test_synthetic_detectors_match_their_reference_exactly():
    image = smooth_image()
    with torch.no_grad():
        maps = detector_conv()(image[None])[0]
    match = match_filters(image, maps)
    names = [row["best"] for row in match.rows()]
    assert names[:4] == ["sobel_x", "red_green", "blue_yellow", "sobel_y"] and names[5] == "luminance"
    r = match.best_r
    torch.testing.assert_close(r[[0, 1, 2, 3, 5]], torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0]), atol=1e-5, rtol=0)
    assert match.correlations[4].abs().max() == 0  # a constant map correlates with nothing
    assert match.kinds() == ["edge", "colour", "colour", "edge", "other", "luminance"]
    # the Sobel x map is not a colour detector, and the R - G map is not an edge detector
    sobel_x_row = dict(zip(REFERENCES, match.correlations[0].tolist()))
    assert abs(sobel_x_row["red_green"]) < 0.5 and abs(sobel_x_row["luminance"]) < 0.5


def test_stride_two_maps_are_matched_after_resizing_the_references():
    image = smooth_image(size=64, seed=1)
    with torch.no_grad():
        maps = detector_conv(stride=2)(image[None])[0]
    assert maps.shape[-2:] == (32, 32)
    match = match_filters(image, maps)
    assert [row["best"] for row in match.rows()][:4] == ["sobel_x", "red_green", "blue_yellow", "sobel_y"]
    assert (match.best_r[:4].abs() > 0.9).all()


def test_pearson_rows_agrees_with_numpy_and_handles_constant_rows():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 50, generator=g), torch.randn(4, 50, generator=g)
    b[0] = 2 * a[1] + 5
    r = pearson_rows(a, b)
    expected = np.corrcoef(np.vstack([a.numpy(), b.numpy()]))[:3, 3:]
    np.testing.assert_allclose(r.numpy(), expected, atol=1e-6)
    assert r[1, 0] == pytest.approx(1.0, abs=1e-6)
    assert pearson_rows(torch.ones(1, 50), b).abs().max() == 0


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        reference_responses(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"\(C, H', W'\)"):
        match_filters(torch.rand(3, 8, 8), torch.rand(1, 2, 8, 8))
