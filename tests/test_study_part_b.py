"""The study's saliency and fooling questions (B1-B7): their roles plan with the experiments'
options, and their sentences are chosen by the measured values."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from vislab.cli import build_parser
from vislab.config import config_from_args, config_to_dict
from vislab.study.plan import command, plan_runs
from vislab.study.profile import load_profile
from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence, Unanswerable

ROLES = ["saliency", "saliency_other", "fool", "fool_pgd"]


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_saliency_and_fool_roles_plan(profile):
    specs, problems = plan_runs(ROLES, load_profile(profile), {}, seeds=1, device="cpu")
    assert problems == {} and list(specs) == ROLES
    saliency = specs["saliency"][0].config
    assert saliency["deletion_steps"] > 0 and saliency["smoothgrad_samples"] > 0 and saliency["sanity_check"]
    assert 0 < saliency["localize_threshold"] <= 1
    pgd, naive = specs["fool_pgd"][0], specs["fool"][0]
    assert (pgd.config["attack"], pgd.config["eps"]) == ("pgd", 4) and naive.config["attack"] == "naive"
    # the command a report prints for the run parses back to the same config
    for spec in (pgd, specs["saliency"][0]):
        words = shlex.split(spec.command_line("OUT"))
        assert words[0] == f"OMP_NUM_THREADS={spec.threads}" if spec.threads else words[0] == "vislab"
        args = build_parser().parse_args(words[words.index("vislab") + 1:])
        cfg = config_from_args(command(spec.command)[0], args)
        assert {k: v for k, v in config_to_dict(cfg).items() if k in spec.config} == spec.config


def answer(qid: str, tmp_path: Path, metrics: dict[str, dict]) -> Answer:
    folders = {}
    for role, m in metrics.items():
        (tmp_path / role).mkdir(exist_ok=True)
        (tmp_path / role / "metrics.json").write_text(json.dumps(m))
        folders[role] = [role]
    a = Answer(qid, QUESTIONS[qid].text)
    QUESTIONS[qid].answer(Evidence(tmp_path, folders), a)
    return a


def test_b1_b2_words_follow_the_measurements(tmp_path):
    def saliency(faithfulness: float, tv_smooth: float, rho: float) -> dict:
        per_image = [{"image": "a", "saliency_auc": 0.2, "random_auc": 0.2 + faithfulness}]
        return {"num_images": 1, "deletion": {"steps": 10, "saliency_auc": 0.2, "random_auc": 0.2 + faithfulness,
                                              "faithfulness": faithfulness, "per_image": per_image},
                "smoothgrad": {"samples": 8, "sigma": 0.15, "tv_vanilla": 0.1, "tv_smooth": tv_smooth},
                "sanity": {"randomized": "all layers", "spearman_mean": rho, "spearman_per_image": [rho]}}

    good = answer("B1", tmp_path, {"saliency": saliency(0.3, 0.05, 0.1)})
    assert "maps are faithful" in good.text and "not faithful" not in good.text
    assert "hardly better than a random order" in answer("B1", tmp_path, {"saliency": saliency(0.01, 0.05, 0.1)}).text
    assert "better than random for 1 of 1" in good.text and good.numbers["faithfulness"] == 0.3
    assert "not faithful" in answer("B1", tmp_path, {"saliency": saliency(-0.1, 0.05, 0.1)}).text
    b2 = answer("B2", tmp_path, {"saliency": saliency(0.3, 0.05, 0.1)})
    assert "lowers their total variation 2.0-fold" in b2.text and "depend on what the network learnt" in b2.text
    b2 = answer("B2", tmp_path, {"saliency": saliency(0.3, 0.2, 0.8)})
    assert "does not lower" in b2.text and "survives without the learnt weights" in b2.text
    with pytest.raises(Unanswerable, match="--localize-threshold"):
        answer("B3", tmp_path, {"saliency": saliency(0.3, 0.2, 0.8)})


def test_b6_says_what_survived_and_needs_a_fooled_image(tmp_path):
    fool = {"model": "net_a", "attack": "naive",
            "robustness": {"fooled_images": 10, "transfer": {"net_b": 0.1}, "jpeg": 0.2, "jpeg_quality": 75,
                           "resize": None, "resize_scale": 0}}
    a = answer("B6", tmp_path, {"fool": fool})
    assert "10.0% also fool net_b" in a.text and "transfers poorly" in a.text and "20.0% still fool" in a.text
    assert "undoes most" in a.text and "resize" not in a.text and a.numbers["jpeg"] == 0.2
    fool["robustness"]["jpeg"] = 0.9
    assert "leaves many of these perturbations working" in answer("B6", tmp_path, {"fool": fool}).text
    fool["robustness"]["fooled_images"] = 0
    with pytest.raises(Unanswerable, match="no saved image fooled"):
        answer("B6", tmp_path, {"fool": fool})
