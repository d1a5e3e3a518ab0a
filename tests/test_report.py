"""``vislab report``: an HTML page from finished run folders, with findings from the numbers."""
from __future__ import annotations

import os
import stat

from vislab.cli import main
from vislab.config import RunConfig
from vislab.reporting.figures import plt
from vislab.runs import Run


def _fake_inspect_run(folder, total, linear):
    with Run("inspect", RunConfig(out=str(folder))) as run:
        run.metrics.update(params_total=total, params_linear=linear, params_by_type={"Linear": linear},
                           output_size=1000, predictions=[{"image": "a.jpg", "top": [
                               {"index": 6, "class": "stingray", "prob": 0.75}]}])
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        run.save_figure(fig, "curve.png")


def test_report_includes_findings_metrics_and_figures(tmp_path):
    _fake_inspect_run(tmp_path / "runs" / "a", 1000, 900)
    (tmp_path / "runs" / "b.partial").mkdir()  # an unfinished run is not reported
    out = tmp_path / "report.html"
    assert main(["report", "--runs", str(tmp_path / "runs"), "--output", str(out)]) == 0
    page = out.read_text()
    assert "1 run(s)" in page
    assert "(Linear) layers hold 90.0% of all parameters" in page  # 900 / 1000, computed from the metrics
    assert "a.jpg: stingray (p = 0.750)" in page
    assert page.count("data:image/png;base64,") == 1
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_report_without_runs_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path), "--output", str(tmp_path / "r.html")]) == 2
    assert "no finished run folders" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_findings_of_every_part_come_from_the_numbers():
    from vislab.reporting.findings import findings_for

    adapt = findings_for("adapt", {"mode": "dann+pl", "target_accuracy": 0.8125, "source_accuracy": 0.99,
                                   "pseudo_label_rounds": [{"round": 1, "epoch": 5, "count": 24000,
                                                            "accuracy": 0.96}]}, {})
    assert adapt[0].startswith("dann+pl: target (MNIST-M) accuracy 0.8125")
    assert "24,000 target images labelled, 96.0% of them correctly" in adapt[1]
    history = [{"target_accuracy": a} for a in (0.60, 0.70, 0.75, 0.76, 0.7700, 0.85)]
    pl = findings_for("adapt", {"mode": "dann+pl", "target_accuracy": 0.85, "source_accuracy": 0.99,
                                "history": history, "pseudo_label_rounds": [{"round": 0, "epoch": 5, "count": 10,
                                                                             "accuracy": 0.9}]}, {"pl_augment": False})
    assert "from 0.7700 with DANN alone (epoch 5) to 0.8500 (+8.0 points)" in pl[2]
    assert "on the images as labelled" in pl[2]
    gan = findings_for("gan", {"fid": 12.5, "kid": 3.0, "eval_samples": 10000, "fid_real_baseline": 1.5,
                               "conditional_accuracy": 0.975}, {})
    assert "FID 12.50" in gan[0] and "baseline" in gan[0] and "97.5%" in gan[1]
    transfer = findings_for("transfer", {"n_train": 1500, "n_test": 2985, "test_accuracy": 0.93, "C": 1.0,
                                         "l2": True, "per_class_accuracy": {"a": 0.5, "b": 0.9}}, {})
    assert "test accuracy 0.9300" in transfer[0] and "a 0.50" in transfer[1]
    fool = findings_for("fool", {"success_rate": 0.5, "num_images": 4, "target_name": "stingray", "target": 6,
                                 "success_after_uint8_rate": 0.25, "max_iterations": 100}, {})
    assert fool[0].startswith("50% of 4 images") and "25% still fool" in fool[0]
    assert findings_for("unknown-experiment", {}, {}) == []
