"""A5: the from-scratch baseline's budget is stated, and the comparison with transfer is chosen by its value."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence


def a5_text(tmp_path: Path, svm: float, scratch_train: float, scratch_test: float) -> str:
    for role, metrics in {
        "inspect_vgg16": {"params_total": 138_357_544},
        "transfer": {"n_train": 500, "variants": [
            {"head": "svm", "test_accuracy": svm},
            {"head": "scratch", "test_accuracy": scratch_test, "train_accuracy": scratch_train, "epochs": 8,
             "input_size": 64, "params": 390_000}]},
    }.items():
        (tmp_path / role).mkdir()
        (tmp_path / role / "metrics.json").write_text(json.dumps(metrics))
    a = Answer("A5", QUESTIONS["A5"].text)
    QUESTIONS["A5"].answer(Evidence(tmp_path, {"transfer": ["transfer"], "inspect_vgg16": ["inspect_vgg16"]}), a)
    return a.text


def test_a5_states_the_budget_and_transfer_s_lead(tmp_path):
    text = a5_text(tmp_path, svm=0.93, scratch_train=0.60, scratch_test=0.51)
    assert "276,715 per image" in text  # 138,357,544 // 500
    assert "(390,000 parameters)" in text and "for 8 epoch(s) at 64 px" in text
    assert "does not even fit its training images" in text
    assert "Transfer is 42.0 points ahead" in text and "matches" not in text


@pytest.mark.parametrize("scratch_test, points", [(0.92, "-1.0"), (0.95, "+2.0")])
def test_a5_says_when_the_scratch_network_matches_transfer(tmp_path, scratch_test, points):
    text = a5_text(tmp_path, svm=0.93, scratch_train=0.99, scratch_test=scratch_test)
    assert "generalises about as well as it fits" in text
    assert f"matches transfer ({points} points)" in text and "ahead" not in text
    assert "355 times fewer parameters than VGG16" in text  # 138,357,544 / 390,000 = 354.8
