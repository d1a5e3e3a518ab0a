"""``vislab demo``: the offline tour writes one run folder per experiment and a report."""
from __future__ import annotations

import json

from vislab.cli import main


def test_demo_runs_offline_and_reports(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--classviz-iterations", "3"]) == 0
    for name in ("inspect", "saliency", "fool", "classviz"):
        assert (out / name / "manifest.json").is_file(), name
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"inspect", "saliency", "fool", "classviz"}
    page = (out / "report.html").read_text()
    assert "4 run(s)" in page and "palace" in page
    fool = json.loads((out / "fool" / "metrics.json").read_text())
    assert fool["target"] == 6 and 0 <= fool["success_rate"] <= 1
    assert main(["demo", "--out", str(out)]) == 2  # never overwrites a finished demo silently
