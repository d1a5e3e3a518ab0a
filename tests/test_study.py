"""vislab study: planning (questions -> roles -> runs named by config hash), the runner (reuse,
failures that do not stop the study), answers.json's contract, the report, and a browser check."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from vislab.cli import build_parser, main
from vislab.errors import UserError
from vislab.config import config_from_args
from vislab.study.plan import RunSpec, command, plan_runs, resolve_value, select_questions
from vislab.study.profile import load_profile, merge
from vislab.study.questions import ORDER, QUESTIONS


def test_the_34_questions_in_order():
    assert len(ORDER) == 34 and list(QUESTIONS) == ORDER
    assert ORDER[:2] == ["A1", "A2"] and ORDER[-1] == "D8"
    profile = load_profile("quick")
    for q in QUESTIONS.values():  # every role a question reads exists in both profiles
        assert set(q.roles) <= set(profile["roles"]), q.id
        assert set(q.roles) <= set(load_profile("full")["roles"]), q.id


def test_select_questions_by_id_and_part():
    assert select_questions(["c4", "A1"], ORDER) == ["A1", "C4"]  # report order, case-insensitive
    assert select_questions(["C"], ORDER) == ["C1", "C2", "C3", "C4"]
    assert select_questions(None, ORDER) == ORDER
    with pytest.raises(UserError, match="E9"):
        select_questions(["E9"], ORDER)


def test_user_config_merges_into_the_profile_and_can_drop_a_role():
    base = {"seeds": 1, "roles": {"a": {"command": "inspect", "options": {"model": "vgg16", "top_k": 5}}, "b": {}}}
    out = merge(base, {"seeds": 3, "roles": {"a": {"options": {"top_k": 1}}, "b": None}})
    assert out["seeds"] == 3
    assert out["roles"]["a"]["options"] == {"model": "vgg16", "top_k": 1}
    assert out["roles"]["b"] is None and base["roles"]["a"]["options"]["top_k"] == 5  # base untouched


def test_run_key_is_the_resolved_config():
    a = RunSpec("r", "inspect", {"model": "vgg16", "weights": "none"}, 0)
    same = RunSpec("other role", "inspect", {"weights": "none", "model": "vgg16", "top_k": 5}, 0)  # 5 is the default
    assert a.key == same.key and a.folder == same.folder and a.folder.startswith("runs/inspect-")
    assert RunSpec("r", "inspect", {"model": "vgg16", "weights": "none"}, 1).key != a.key
    assert RunSpec("r", "inspect", {"model": "vgg16", "weights": "none", "top_k": 3}, 0).key != a.key
    assert RunSpec("r", "gan compare", {}, 0).folder.startswith("runs/gan-compare-")  # no space in a folder


def test_the_command_line_of_a_run_parses_to_the_same_config():
    spec = RunSpec("r", "transfer", {"data": "/d", "layers": ["pooled", "logits"], "l2": False, "c": 0.5}, 2)
    args = build_parser().parse_args(shlex.split(spec.command_line("OUT"))[1:])
    cfg = config_from_args(command("transfer")[0], args)
    assert cfg.layers == ["pooled", "logits"] and cfg.l2 is False and cfg.c == 0.5 and cfg.seed == 2
    assert cfg.out == f"OUT/{spec.folder}"


def test_placeholders_expand_and_unset_ones_are_left_to_the_command():
    data = {"ood": ["x.png", "y.png"], "backgrounds": None}
    assert resolve_value(["a.png", "@ood"], data) == ["a.png", "x.png", "y.png"]
    profile = {"roles": {"r": {"command": "inspect", "options": {"images": ["@ood"]}},
                         "bad": {"command": "inspect", "options": {"no_such_option": 1}},
                         "seeded": {"command": "inspect", "options": {"model": "vgg16"}, "seeded": True},
                         "unknown": {"command": "no-such-command"}}}
    specs, problems = plan_runs(["r", "bad", "seeded", "unknown", "missing"], profile, data, seeds=3, device="cpu")
    assert specs["r"][0].options == {"images": ["x.png", "y.png"], "device": "cpu"}
    assert [s.seed for s in specs["seeded"]] == [0, 1, 2]
    assert "no_such_option" in problems["bad"] and "no-such-command" in problems["unknown"]
    assert "no role 'missing'" in problems["missing"]


@pytest.fixture
def study_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    # a tiny class visualisation (a figure for the report) and a role that fails on purpose
    config.write_text("roles:\n"
                      "  classviz: {options: {target: [76], iterations: 4, show_every: 2}}\n"
                      "  classviz_init: {options: {iterations: 4, show_every: 2, image_size: 64}}\n"
                      "  inspect_vgg16: {options: {model: no_such_net}}\n")
    return tmp_path, config


def test_a_failed_run_leaves_its_questions_unanswered_with_the_command(study_env):
    tmp, config = study_env
    out = tmp / "study"
    status = main(["study", "--questions", "A1", "B8", "--config", str(config), "--out", str(out), "--no-download",
                   "--device", "cpu"])
    assert status == 1  # not every question answered
    answers = {a["id"]: a for a in json.loads((out / "answers.json").read_text())}
    assert list(answers) == ["A1", "B8"]
    assert answers["A1"]["status"] == "not answered"
    assert "no_such_net" in answers["A1"]["answer"] and "vislab inspect" in answers["A1"]["commands"][0]
    b8 = answers["B8"]
    assert b8["status"] == "answered" and b8["runs"] and "p_76" in b8["numbers"]
    for run in b8["runs"]:  # every listed run folder holds its metrics, and the numbers trace to them
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert metrics["results"][0]["probability"] == b8["numbers"]["p_76"]
    assert f"{b8['numbers']['p_76']:.2f}" in b8["answer"]


def _outcomes(out: Path) -> dict[str, dict]:
    """role -> its (first) run's outcome, from study.json."""
    return {role: runs[0] for role, runs in json.loads((out / "study.json").read_text())["roles"].items()}


def test_a_rerun_reuses_finished_runs_and_a_wider_study_adds_only_the_missing(study_env):
    tmp, config = study_env
    out = tmp / "study"
    args = ["study", "--config", str(config), "--out", str(out), "--no-download", "--device", "cpu"]
    assert main(args + ["--questions", "B8"]) == 0
    first = _outcomes(out)
    assert {r: o["status"] for r, o in first.items()} == {"classviz": "done"}
    assert main(args + ["--questions", "B8", "B10"]) == 0
    assert {r: o["status"] for r, o in _outcomes(out).items()} == {"classviz": "reused", "classviz_init": "done"}
    # an interrupted run (a .partial folder, no finished folder) is made again, not taken as finished
    folder = out / first["classviz"]["folder"]
    shutil.move(folder, folder.with_name(folder.name + ".partial"))
    assert main(args + ["--questions", "B8"]) == 0
    assert _outcomes(out)["classviz"]["status"] == "done" and (folder / "manifest.json").is_file()


def test_report_is_light_and_organised_by_question(study_env):
    tmp, config = study_env
    out = tmp / "study"
    main(["study", "--questions", "A1", "B8", "--config", str(config), "--out", str(out), "--no-download",
          "--device", "cpu"])
    (out / "report.html").unlink()
    assert main(["report", "--runs", str(out)]) == 0  # `vislab report` rebuilds a study's page from its folder
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for qid in ("A1", "B8"):
        assert f'id="{qid}"' in html and f"### {qid}." in md
    assert "data:image" not in html  # figures are files beside the page, not inlined
    thumbs = [p for p in (out / "figures").iterdir() if p.suffix in (".png", ".jpg")]
    assert thumbs and all(t.stat().st_size < 400_000 for t in thumbs)
    assert sum(p.stat().st_size for p in out.glob("report.*")) < 200_000


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_report_in_a_headless_browser(study_env, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp, config = study_env
    out = tmp / "study"
    main(["study", "--questions", "A1", "B8", "B10", "--config", str(config), "--out", str(out), "--no-download",
          "--device", "cpu"])
    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_window_size(1200, 2000)
        driver.get((out / "report.html").as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        broken = driver.execute_script(
            "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert broken == [] and driver.execute_script("return document.images.length") >= 2
        for qid in ("A1", "B8", "B10"):
            text = driver.find_element("id", qid).text
            assert any(ch.isdigit() for ch in text.split("\n", 1)[1]), qid  # a measured number in the answer
        # the two-column contents: entries side by side without overlapping, and no list marker drawn
        # outside an entry's box (the markers of the second column sat over the first column's text)
        boxes = driver.execute_script(
            "return [...document.querySelectorAll('nav li')].map(li => {const r = li.getBoundingClientRect();"
            " const s = getComputedStyle(li); return [r.left, r.top, r.right, r.bottom,"
            " s.listStyleType === 'none' || s.listStylePosition === 'inside'];})")
        assert len(boxes) == 3 and all(box[4] for box in boxes)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        artefacts = Path(os.environ.get("VISLAB_TEST_ARTIFACTS", tmp_path))
        artefacts.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(artefacts / "study_report.png"))
    finally:
        driver.quit()


def test_background_sentences_are_kept_apart_from_the_measured_answer(tmp_path):
    from vislab.reporting.study_report import write_study_report
    from vislab.study.questions.base import Answer

    a = Answer("C2", "Why can source accuracy drop?")
    a.say("DANN ends 0.4 points below source-only.", source_drop=0.004)
    a.explain("The features must also be domain-invariant.")
    context = {"title": "t", "profile": "quick", "seeds": 1, "version": "0", "substitutions": []}
    write_study_report(tmp_path, [a], [], context)
    record = json.loads((tmp_path / "answers.json").read_text())[0]
    assert record["answer"] == "DANN ends 0.4 points below source-only."  # the measured sentences only
    assert record["explanation"] == "The features must also be domain-invariant."
    md = (tmp_path / "report.md").read_text()
    assert "*Background (not measured in this study):* The features must also be domain-invariant." in md
    html = (tmp_path / "report.html").read_text()
    assert html.index("DANN ends 0.4") < html.index("Background (not measured") < html.index("domain-invariant")


def test_a_run_inside_the_study_logs_line_by_line_and_draws_its_bars_on_the_terminal(tmp_path, monkeypatch):
    import io

    from vislab.progress import progress
    from vislab.study import runner

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    log = tmp_path / "study.log"
    with runner._redirect(log):
        print("epoch 1/3: source 0.9")  # a run's own output: in the log at once, before the run ends
        assert log.read_text() == "epoch 1/3: source 0.9\n"
        for _ in progress(range(3), desc="epoch 2/3"):
            pass
    assert "epoch 2/3" in terminal.getvalue() and "epoch 2/3" not in log.read_text()
    assert sys.stderr is terminal  # restored


def test_the_substitute_transfer_task_is_made_in_a_fresh_cache(tmp_path, monkeypatch):
    import types

    import torch

    from vislab.study.data import _digit_folder

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "fresh"))
    labels = torch.arange(60) % 10  # 6 images of each digit
    images = (torch.arange(60, dtype=torch.uint8)[:, None, None] * 4).expand(60, 28, 28).contiguous()
    split = types.SimpleNamespace(images=images, labels=labels)
    folder = _digit_folder(types.SimpleNamespace(train=split, test=split), (4, 2))
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train"]
    assert [len(list((folder / "train" / str(c)).glob("*.png"))) for c in range(10)] == [4] * 10
    assert [len(list((folder / "test" / str(c)).glob("*.png"))) for c in range(10)] == [2] * 10
    assert _digit_folder(None, (4, 2)) == folder  # made once: a second study reuses it


def test_thumbnails_are_png_for_plots_and_jpeg_for_noisy_images(tmp_path):
    import numpy as np
    from PIL import Image

    from vislab.reporting.study_report import PNG_MAX_BYTES, THUMB_WIDTH, thumbnail

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    flat = np.full((600, 1500, 3), 255, np.uint8)
    flat[290:310] = 0  # a plot-like figure: a few flat colours
    noise = np.random.default_rng(0).integers(0, 256, (600, 1500, 3), dtype=np.uint8)
    Image.fromarray(flat).save(run / "plot.png")
    Image.fromarray(noise).save(run / "maps.png")
    plot, maps = thumbnail(tmp_path, "runs/r/plot.png"), thumbnail(tmp_path, "runs/r/maps.png")
    assert plot.endswith(".png") and maps.endswith(".jpg")
    assert (tmp_path / maps).stat().st_size < (tmp_path / "runs/r/maps.png").stat().st_size
    for thumb in (plot, maps):
        with Image.open(tmp_path / thumb) as im:
            assert im.size == (THUMB_WIDTH, 288)
    assert (tmp_path / plot).stat().st_size <= PNG_MAX_BYTES
    assert thumbnail(tmp_path, "runs/r/maps.png") == maps  # made once
