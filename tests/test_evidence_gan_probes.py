"""D2/D3: class histogram of generated samples, and the generator's gradient norm under the
non-saturating and the minimax loss (the minimax one vanishes when D(G(z)) -> 0)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vislab.methods.gan_probes import class_histogram, generator_gradient_norms
from vislab.models.dcgan import CondDiscriminator, CondGenerator, Discriminator, Generator


def test_class_histogram_by_hand():
    h = class_histogram(torch.tensor([0, 0, 1, 1]), num_classes=4)
    assert h.counts.tolist() == [2, 2, 0, 0] and h.shares.tolist() == [0.5, 0.5, 0.0, 0.0]
    assert (h.most_share, h.least_share, h.classes_covered) == (0.5, 0.0, 2)
    assert h.entropy == pytest.approx(math.log(2))
    assert h.kl_to_uniform == pytest.approx(math.log(4) - math.log(2))
    uniform = class_histogram(np.arange(20) % 10)
    assert uniform.kl_to_uniform == pytest.approx(0.0, abs=1e-12) and uniform.entropy == pytest.approx(math.log(10))
    logits = torch.tensor([[0.1, 3.0, 0.0], [2.0, 0.0, 0.0], [0.0, 5.0, 1.0]])
    assert class_histogram(logits, num_classes=3).counts.tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        class_histogram(torch.tensor([0, 3]), num_classes=3)


class LinearG(nn.Module):
    """G(z) = W z as a 1x2x2 image; W starts at 0 so that every fake is the black image."""

    def __init__(self, nz: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, nz, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.weight.t()).view(-1, 1, 2, 2)


class SumD(nn.Module):
    """D's logit l = scale * sum(x) + bias: with the black fakes of LinearG, l = bias exactly."""

    def __init__(self, scale: float, bias: float):
        super().__init__()
        self.scale, self.bias = scale, bias

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1).sum(1) + self.bias


@pytest.mark.parametrize("bias", [-10.0, 0.0, 10.0])
def test_gradient_norms_by_hand(bias):
    z = torch.tensor([[1.0, 2.0, -1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    scale = 0.5
    norms = generator_gradient_norms(LinearG(), SumD(scale, bias), z)
    # dL/dl_n = (sigmoid(l) - 1) / N (non-saturating) or -sigmoid(l) / N (minimax), dl_n/dW = scale 1 z_n^T,
    # so grad W = N dL/dl * scale * 1 (mean z)^T and ||grad W|| = N |dL/dl| * scale * ||1_4|| * ||mean z||
    common = scale * 2 * z.mean(0).norm().item()
    s = 1 / (1 + math.exp(-bias))
    tolerance = 1e-7 * common  # the losses, and so dL/dl, are float32
    assert norms.non_saturating == pytest.approx((1 - s) * common, rel=1e-6, abs=tolerance)
    assert norms.minimax == pytest.approx(s * common, rel=1e-6, abs=tolerance)
    assert norms.d_g_z == pytest.approx(s)
    if bias < 0:  # D rejects the fakes: the minimax gradient is e^-10 of the non-saturating one
        assert norms.minimax / norms.non_saturating == pytest.approx(math.exp(bias), rel=1e-5)


def test_gradient_norms_of_dcgans_leave_the_networks_untouched():
    torch.manual_seed(0)
    g, d = Generator(nz=8, ngf=4), Discriminator(ndf=4)
    g.train(), d.train()
    before = {k: v.clone() for k, v in {**g.state_dict(), **{f"d.{k}": v for k, v in d.state_dict().items()}}.items()}
    norms = generator_gradient_norms(g, d, torch.randn(6, 8))
    assert norms.non_saturating > 0 and norms.minimax > 0 and 0 < norms.d_g_z < 1
    after = {**g.state_dict(), **{f"d.{k}": v for k, v in d.state_dict().items()}}
    assert all(torch.equal(v, before[k]) for k, v in after.items())  # BatchNorm statistics included
    assert all(p.grad is None for p in list(g.parameters()) + list(d.parameters()))
    cg, cd = CondGenerator(nz=8, ngf=4), CondDiscriminator(ndf=4)
    cond = generator_gradient_norms(cg, cd, torch.randn(6, 8), torch.arange(6))
    assert cond.non_saturating > 0 and cond.minimax > 0
