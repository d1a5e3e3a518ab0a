"""B7: FGSM and PGD against hand computations on a linear model, the L-inf constraint, PGD's one
step = FGSM, and (when torchattacks is importable) agreement with torchattacks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vislab.methods.attacks import fgsm, pgd

W = torch.tensor([1.0, -1.0, 2.0, 0.0], dtype=torch.float64)  # pixel weights of logit 1; logit 0 is 0


def linear_model(bias: float = 0.0) -> nn.Module:
    """Logits (0, w . x + bias) on a 1-channel 2x2 image: the loss gradient's sign is +-sign(w)."""
    layer = nn.Linear(4, 2).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[1] = W
        layer.bias.zero_()
        layer.bias[1] = bias
    return nn.Sequential(nn.Flatten(), layer).eval()


def conv_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).double().eval()


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fgsm_on_a_linear_model_moves_each_pixel_by_eps_sign_w():
    model, eps = linear_model(bias=-0.25), 0.1
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    expected = eps * torch.sign(W).view(1, 1, 2, 2)  # the zero-weight pixel does not move
    away = fgsm(model, x, 0, eps=eps)                  # away from class 0 = towards class 1
    towards = fgsm(model, x, 1, eps=eps, targeted=True)
    for result in (away, towards):
        torch.testing.assert_close(result.images - x, expected, rtol=0, atol=1e-15)
        assert result.linf.item() == pytest.approx(eps)
        assert result.l2.item() == pytest.approx(eps * 3 ** 0.5)  # three pixels moved by eps
        assert result.iterations.tolist() == [1]
        # logit 1 = 0.5 * (1 - 1 + 2) - 0.25 + eps * |w|_1 = 0.75 + 0.4 > 0: the prediction is class 1
        assert result.logits[0, 1].item() == pytest.approx(0.75 + 0.4)
        assert result.success.tolist() == [True]
    torch.testing.assert_close(fgsm(model, x, 0, eps=eps, targeted=True).images - x, -expected, rtol=0, atol=1e-15)
    bright = torch.full((1, 1, 2, 2), 0.95, dtype=torch.float64)
    clipped = fgsm(model, bright, 0, eps=eps)
    assert clipped.images.max().item() == 1.0 and clipped.linf.item() == pytest.approx(eps)


def test_pgd_on_a_linear_model_by_hand_with_and_without_early_stop():
    # logit 1 starts at 0.5 * 2 - 1.25 = -0.25 and gains alpha |w|_1 = 0.16 per step: class 1 after 2 steps
    model, eps, alpha = linear_model(bias=-1.25), 0.1, 0.04
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    sign = torch.sign(W).view(1, 1, 2, 2)
    full = pgd(model, x, 0, eps=eps, alpha=alpha, steps=3, random_start=False)
    torch.testing.assert_close(full.images - x, eps * sign, rtol=0, atol=1e-15)  # 3 * 0.04 projected to 0.1
    assert full.iterations.tolist() == [3] and full.success.tolist() == [True]
    early = pgd(model, x, 0, eps=eps, alpha=alpha, steps=3, random_start=False, early_stop=True)
    torch.testing.assert_close(early.images - x, 2 * alpha * sign, rtol=0, atol=1e-15)
    assert early.iterations.tolist() == [2] and early.success.tolist() == [True]
    short = pgd(model, x, 0, eps=eps, alpha=alpha, steps=1, random_start=False)
    assert short.success.tolist() == [False]  # -0.25 + 0.16 < 0: still class 0


def test_pgd_stays_in_the_eps_ball_and_the_pixel_range():
    model, x, eps = conv_model(), images(), 8 / 255
    labels = model(x).argmax(dim=1)
    for targeted, goal in ((False, labels), (True, (labels + 1) % 5)):
        result = pgd(model, x, goal, eps=eps, alpha=3 / 255, steps=20, random_start=True, targeted=targeted, seed=3)
        assert (result.images - x).abs().max() <= eps + 1e-12
        assert result.images.min() >= 0 and result.images.max() <= 1
        torch.testing.assert_close(result.linf, (result.images - x).flatten(1).abs().amax(dim=1))
        torch.testing.assert_close(result.l2, (result.images - x).flatten(1).norm(dim=1))
        predicted = result.logits.argmax(dim=1)
        assert torch.equal(result.success, predicted == goal if targeted else predicted != goal)
        again = pgd(model, x, goal, eps=eps, alpha=3 / 255, steps=20, random_start=True, targeted=targeted, seed=3)
        assert torch.equal(again.images, result.images)  # the seed fixes the random start


def test_pgd_with_one_step_of_eps_is_fgsm_bit_for_bit():
    model, x = conv_model(), images()
    labels = torch.tensor([0, 1, 2, 3])
    for targeted in (False, True):
        one_step = pgd(model, x, labels, eps=0.03, alpha=0.03, steps=1, random_start=False, targeted=targeted)
        single = fgsm(model, x, labels, eps=0.03, targeted=targeted)
        assert torch.equal(one_step.images, single.images)
        assert torch.equal(one_step.success, single.success)


def test_attacks_check_their_arguments():
    model, x = conv_model(), images(2)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, 0, eps=-0.1)
    with pytest.raises(ValueError, match="images must be float"):
        pgd(model, (x * 255).to(torch.uint8), 0, eps=0.1, alpha=0.01)


def test_agrees_with_torchattacks():
    torchattacks = pytest.importorskip("torchattacks")
    model, x = conv_model(), images()
    labels = model(x).argmax(dim=1)
    targets = (labels + 2) % 5
    ours = pgd(model, x, labels, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False)
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False)(x, labels)
    torch.testing.assert_close(ours.images, theirs, rtol=0, atol=1e-12)  # same formula, other rounding order
    attack = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False)
    attack.set_mode_targeted_by_label(quiet=True)
    ours = pgd(model, x, targets, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False, targeted=True)
    torch.testing.assert_close(ours.images, attack(x, targets), rtol=0, atol=1e-12)
    torch.testing.assert_close(fgsm(model, x, labels, eps=8 / 255).images,
                               torchattacks.FGSM(model, eps=8 / 255)(x, labels), rtol=0, atol=1e-12)
