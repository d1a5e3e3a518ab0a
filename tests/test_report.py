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
