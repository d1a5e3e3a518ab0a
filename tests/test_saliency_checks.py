"""``vislab saliency``'s optional measurements (B1-B3): deletion, SmoothGrad, the randomisation
sanity check and boxes, on tiny hand-built models whose true pixel importance is known, and the
command's metrics contract with every measurement on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vislab.cli import main
from vislab.experiments.saliency_checks import (deletion_check, localization_check, sanity_check,
                                                smoothgrad_check)
from vislab.methods.saliency import saliency_maps
from vislab.schemas import MetricsSchemaError, check_metrics
from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence

CPU = torch.device("cpu")
S = 32


class RegionScore(nn.Module):
    """logit_0 = 0.5 (sum of channel 0 over ``region`` - 24), logit_1 = 0: on a 0/1 checkerboard the
    32 bright pixels of the region give p_0 = sigmoid(4); blurred (about 0.5 each) sigmoid(-4)."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.region).sum(dim=(1, 2))
        return torch.stack([0.5 * (s - 24), torch.zeros_like(s)], dim=1)


def _checkerboard_case():
    board = (torch.arange(S)[:, None] + torch.arange(S)[None, :]) % 2
    x = board.float().expand(1, 3, S, S).clone()
    region = torch.zeros(S, S, dtype=torch.bool)
    region[:8, :8] = True
    region &= board.bool()  # the 32 bright pixels of the top-left 8 x 8
    return x, region


def test_deletion_ranks_a_map_of_the_true_importance_above_random_and_its_inverse_below(tmp_path):
    x, region = _checkerboard_case()
    model, classes = RegionScore(region), torch.tensor([0])
    true_map = region.float()[None]
    good = deletion_check(model, x, true_map, classes, ["board"], steps=10, seed=0, batch_size=8, device=CPU,
                          figure=tmp_path / "deletion.png")
    bad = deletion_check(model, x, 1 - true_map, classes, ["board"], steps=10, seed=0, batch_size=8, device=CPU,
                         figure=tmp_path / "inverse.png")
    assert good["steps"] == 10 and good["per_image"][0]["image"] == "board"
    # the region's 32 pixels (3% of the image) go in the first step: the probability collapses at once
    assert good["saliency_auc"] < 0.1 < 0.5 < bad["saliency_auc"]
    assert good["random_auc"] == bad["random_auc"]  # the same seeded random order
    assert good["faithfulness"] == pytest.approx(good["random_auc"] - good["saliency_auc"])
    assert good["faithfulness"] > 0.2 and bad["faithfulness"] < -0.2
    assert (tmp_path / "deletion.png").stat().st_size > 0


def test_smoothgrad_of_a_linear_model_equals_the_plain_map(tmp_path):
    # the gradient of a linear score is the same at every noisy copy: SmoothGrad changes nothing
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * S * S, 4))
    x = torch.rand(2, 3, S, S)
    plain = saliency_maps(model, x, torch.tensor([1, 2]), space="pixel")
    out = smoothgrad_check(model, x, plain.maps, plain.classes, ["a", "b"], samples=3, sigma=0.2, seed=0,
                           space="pixel", batch_size=1, device=CPU, figure=tmp_path / "smoothgrad.png")
    assert out["samples"] == 3 and out["sigma"] == 0.2
    assert out["tv_smooth"] == pytest.approx(out["tv_vanilla"], rel=1e-5) and out["tv_vanilla"] > 0
    assert (tmp_path / "smoothgrad.png").stat().st_size > 0


def test_sanity_check_a_smooth_learnt_map_is_uncorrelated_with_the_randomised_one(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * S * S, 2))
    with torch.no_grad():  # class 0's weights: a smooth ramp from left to right, the map the network "learnt"
        model[1].weight[0] = torch.linspace(0, 1, S).expand(3, S, S).reshape(-1)
    x = torch.rand(3, 3, S, S)
    plain = saliency_maps(model, x, torch.zeros(3, dtype=torch.long), space="pixel")
    out = sanity_check(model, x, plain.maps, plain.classes, ["a", "b", "c"], seed=0, space="pixel", batch_size=2,
                       device=CPU, figure=tmp_path / "sanity.png")
    assert out["randomized"] == "all layers" and len(out["spearman_per_image"]) == 3
    assert abs(out["spearman_mean"]) < 0.15  # re-initialised weights: no trace of the ramp left
    assert out["spearman_mean"] == pytest.approx(np.mean(out["spearman_per_image"]))
    assert (tmp_path / "sanity.png").stat().st_size > 0
    # nothing to re-initialise (the weights are a buffer): the maps stay the same, correlation 1
    frozen = RegionScore(torch.rand(S, S) > 0.5)
    kept = saliency_maps(frozen, x, torch.zeros(3, dtype=torch.long), space="pixel")
    same = sanity_check(frozen, x, kept.maps, kept.classes, ["a", "b", "c"], seed=0, space="pixel", batch_size=2,
                        device=CPU, figure=tmp_path / "same.png")
    assert same["spearman_per_image"] == pytest.approx([1.0, 1.0, 1.0])


def test_localization_boxes_the_bright_rectangle_of_a_map(tmp_path):
    maps = torch.zeros(2, S, S)
    maps[0, 4:10, 6:20] = 1.0           # rows 4-9, columns 6-19
    maps[1, 20:30, 1:5] = 0.6           # above 0.5 x max ...
    maps[1, 0:2, 0:2] = 1.0             # ... as is the tiny peak, but the larger region wins
    out = localization_check(torch.rand(2, 3, S, S), maps, ["a", "b"], threshold=0.5, smooth_sigma=0.0,
                             figure=tmp_path / "boxes.png")
    assert [b["box"] for b in out["boxes"]] == [[6, 4, 20, 10], [1, 20, 5, 30]]
    assert out["boxes"][0]["area_fraction"] == pytest.approx(14 * 6 / S**2)
    assert out["box_area_fraction_mean"] == pytest.approx((14 * 6 + 4 * 10) / 2 / S**2)
    assert out["iou_mean"] is None and out["threshold"] == 0.5
    assert (tmp_path / "boxes.png").stat().st_size > 0


def test_cli_saliency_measurements_follow_the_schema(tmp_path):
    image = tmp_path / "p0.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "run"
    assert main(["saliency", "--images", str(image), "--no-weights", "--target", "6", "--deletion-steps", "2",
                 "--smoothgrad-samples", "2", "--sanity-check", "--localize-threshold", "0.5", "--out", str(out)]) == 0
    m = check_metrics("saliency", json.loads((out / "metrics.json").read_text()))
    assert m["deletion"]["steps"] == 2 and [r["image"] for r in m["deletion"]["per_image"]] == ["p0"]
    assert m["smoothgrad"]["samples"] == 2 and len(m["sanity"]["spearman_per_image"]) == 1
    assert 0 < m["localization"]["boxes"][0]["area_fraction"] <= 1 and m["localization"]["smooth_sigma"] == 4.0
    for name in ("saliency", "deletion", "smoothgrad", "sanity", "boxes"):
        assert (out / f"{name}.png").stat().st_size > 0
    # the study's questions read these keys: B1-B3 from this run, B4 with the run as its own "other network"
    evidence = Evidence(tmp_path, {"saliency": ["run"], "saliency_other": ["run"]})
    answers = {qid: Answer(qid, QUESTIONS[qid].text) for qid in ("B1", "B2", "B3", "B4")}
    for qid, a in answers.items():
        QUESTIONS[qid].answer(evidence, a)
        assert a.sentences and a.figures, qid
    assert answers["B4"].numbers["spearman_mean"] == pytest.approx(1.0)  # the same maps rank the pixels the same
    assert f"{m['deletion']['saliency_auc']:.3f}" in answers["B1"].text
    assert answers["B3"].numbers["box_area_fraction"] == m["localization"]["box_area_fraction_mean"]
    broken = dict(m, deletion={k: v for k, v in m["deletion"].items() if k != "faithfulness"})
    with pytest.raises(MetricsSchemaError, match="faithfulness"):
        check_metrics("saliency", broken)
    assert main(["saliency", "--images", str(image), "--no-weights", "--localize-threshold", "1.5",
                 "--out", str(tmp_path / "bad")]) == 2
