"""``vislab demo`` is the quick study (same plan, its own folder)."""
from __future__ import annotations

import json

from vislab.cli import main
from vislab.schemas import check_metrics


def test_demo_plans_the_quick_study_for_all_34_questions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--dry-run", "--no-download", "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "34 question(s) need" in err and "inspect_vgg16" in err and "gan_cdcgan" in err
    assert not (tmp_path / "demo").exists()  # a dry run writes no study


def test_demo_writes_the_contract_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("roles:\n  classviz: {options: {target: [76], iterations: 3, show_every: 3}}\n")
    out = tmp_path / "demo"
    assert main(["demo", "--questions", "B8", "--config", str(tiny), "--no-download", "--out", str(out)]) == 0
    answers = json.loads((out / "answers.json").read_text())
    assert [a["id"] for a in answers] == ["B8"] and answers[0]["status"] == "answered"
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert all((out / r / "metrics.json").is_file() for r in answers[0]["runs"])
    for r in answers[0]["runs"]:  # the metrics of every run it made match their experiment's schema
        experiment = json.loads((out / r / "manifest.json").read_text())["experiment"]
        check_metrics(experiment, json.loads((out / r / "metrics.json").read_text()))
