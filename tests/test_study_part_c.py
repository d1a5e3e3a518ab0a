"""Part C's answers over several seeds: means with their spread, in the sentences and the summary table."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from vislab.reporting.study_report import summary_rows
from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence


def adapt_run(root: Path, folder: str, target: float, source: float, history_source: list[float]) -> None:
    (root / folder).mkdir()
    rounds = [{"round": 0, "epoch": 4, "count": 24004, "accuracy": 0.975},
              {"round": 3, "epoch": 16, "count": 48003, "accuracy": 0.994}]
    (root / folder / "metrics.json").write_text(json.dumps(
        {"target_accuracy": target, "source_accuracy": source, "pseudo_label_rounds": rounds,
         "history": [{"source_accuracy": s} for s in history_source]}))


@pytest.fixture
def three_seeds(tmp_path):
    folders = {}
    for role, targets, sources in (("adapt_source_only", (0.52, 0.55, 0.58), (0.991, 0.990, 0.992)),
                                   ("adapt_dann", (0.80, 0.78, 0.82), (0.989, 0.985, 0.987)),
                                   ("adapt_pl", (0.96, 0.95, 0.97), (0.992, 0.992, 0.992))):
        folders[role] = [f"{role}-{seed}" for seed in range(3)]
        for seed, (t, s) in enumerate(zip(targets, sources)):
            adapt_run(tmp_path, folders[role][seed], t, s, [s - 0.01 * seed, s])
    return Evidence(tmp_path, folders)


def answer(qid: str, ev: Evidence) -> Answer:
    a = Answer(qid, QUESTIONS[qid].text)
    QUESTIONS[qid].answer(ev, a)
    return a


def test_c4_states_means_with_their_spread_and_the_summary_shows_it(three_seeds):
    c4 = answer("C4", three_seeds)
    std = statistics.stdev([0.80, 0.78, 0.82])  # 0.02
    assert c4.numbers["dann_target"] == pytest.approx(0.80) and c4.numbers["dann_target_std"] == pytest.approx(std)
    assert c4.numbers["pl_target_seeds"] == 3 and c4.numbers["pl_target_std"] == pytest.approx(0.01)
    assert "from 0.800 +- 0.020 (3 seeds) (DANN) to 0.960 +- 0.010 (3 seeds)" in c4.text
    assert "+16.0 points" in c4.text and "4 rounds" not in c4.text and "2 rounds (seed 0)" in c4.text
    rows = {r["measure"]: r["value"] for r in summary_rows([c4])}
    assert rows["DANN + pseudo-labels target accuracy"] == "0.960 +- 0.010 (3 seeds)"
    assert rows["DANN target accuracy"] == "0.800 +- 0.020 (3 seeds)"


def test_c2_compares_source_accuracy_averaged_over_seeds(three_seeds):
    c2 = answer("C2", three_seeds)
    # source-only 0.991 on average, DANN 0.987: 0.4 points lower; the worst epoch of any seed is seed 2's first, 0.987 - 0.02
    assert c2.numbers["source_drop"] == pytest.approx(0.004)
    assert c2.text.startswith("DANN ends 0.4 points below source-only on the source test set (0.987 +- 0.002 "
                              "(3 seeds) vs 0.991 +- 0.001 (3 seeds))")
    assert "of any seed is 0.9670" in c2.text
    assert c2.tables[0].title.endswith("(seed 0)")


def test_one_seed_gives_no_spread(tmp_path):
    for role in ("adapt_dann", "adapt_pl"):
        adapt_run(tmp_path, role, 0.8 if role == "adapt_dann" else 0.9, 0.99, [0.99])
    c4 = answer("C4", Evidence(tmp_path, {"adapt_dann": ["adapt_dann"], "adapt_pl": ["adapt_pl"]}))
    assert "dann_target_std" not in c4.numbers and "seeds" not in c4.text and "(seed 0)" not in c4.text
    assert {r["measure"]: r["value"] for r in summary_rows([c4])}["DANN target accuracy"] == "0.800"
