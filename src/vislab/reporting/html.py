"""``vislab report``: one self-contained HTML page from run folders.

Each run folder becomes a section: the experiment's findings (sentences built from its measured
numbers, see :mod:`vislab.reporting.findings`), its scalar metrics, its config and manifest, and
its figures inlined as PNG data so the page can be mailed or archived as one file.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import sys
from pathlib import Path
from typing import Any

from ..config import add_command, option
from ..errors import MalformedRunError, UserError
from ..io import write_text
from ..runs import read_run_json
from .findings import findings_for


@dataclasses.dataclass
class ReportConfig:
    runs: list[str] = option([], "run folders to include (folders holding metrics.json; a folder of run folders "
                                 "is searched recursively)")
    output: str = option("report.html", "HTML file to write")
    max_figures: int = option(12, "at most this many figures per run", min=0)


def register(subparsers) -> None:
    add_command(subparsers, "report", ReportConfig, write_report,
                help="write one self-contained HTML page from finished run folders")


def find_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p} does not exist")
        candidates = [p] if (p / "metrics.json").is_file() else sorted(m.parent for m in p.rglob("metrics.json"))
        runs.extend(c for c in candidates if not c.name.endswith(".partial") and (c / "manifest.json").is_file())
    if not runs:
        raise UserError(f"no finished run folders (with metrics.json and manifest.json) under {', '.join(paths)}")
    return runs


def _scalars(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for k, v in metrics.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            rows.append((prefix + k, v))
        elif isinstance(v, dict) and len(v) <= 20:
            rows.extend(_scalars(v, prefix + k + "."))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return html.escape(str(v))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_run(run_dir: Path, max_figures: int = 12) -> str:
    metrics = read_run_json(run_dir / "metrics.json")
    manifest = read_run_json(run_dir / "manifest.json")
    config = read_run_json(run_dir / "config.json", required=False)
    experiment = str(manifest.get("experiment", run_dir.parent.name))
    parts = [f"<section><h2>{html.escape(experiment)} &mdash; <code>{html.escape(str(run_dir))}</code></h2>"]
    try:
        notes = findings_for(experiment, metrics, config)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        # metrics of an older shape, or nulls where a number was not finite: the page still shows
        # the run's numbers and figures, and the warning names the file and the error
        print(f"vislab report: {run_dir / 'metrics.json'}: no findings ({type(e).__name__}: {e})", file=sys.stderr)
        notes = []
    if notes:
        parts.append("<h3>Findings</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h3>Metrics</h3>" + _table(_scalars(metrics)))
    for png in sorted(run_dir.rglob("*.png"))[:max_figures]:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(png.name)}">'
                     f"<figcaption>{html.escape(png.relative_to(run_dir).as_posix())}</figcaption></figure>")
    run_info = [("seed", manifest.get("seed")), ("device", manifest.get("device")),
                ("precision", manifest.get("precision")), ("wall seconds", manifest.get("wall_seconds")),
                ("git commit", manifest.get("git_commit")), ("command", " ".join(manifest.get("command", [])))]
    run_info += [(f"version {k}", v) for k, v in manifest.get("versions", {}).items()]
    parts.append("<details><summary>config and manifest</summary>" + _table(_scalars(config)) +
                 _table(run_info) + "</details></section>")
    return "\n".join(parts)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td{border:1px solid #ddd;padding:2px 8px;font-size:13px}
figure{display:inline-block;margin:.5em;vertical-align:top}img{max-width:520px}figcaption{font-size:12px;color:#555}
section{border-top:2px solid #444;margin-top:2em}code{font-size:13px}"""


def write_report(cfg: ReportConfig) -> int:
    """Write the page from every readable run; a run with a malformed file is skipped with a
    warning naming the file. Fails (exit 2) only when no run is readable."""
    from ..study.report import is_study, report_study

    studies = [Path(p) for p in cfg.runs if is_study(Path(p))]
    if studies:  # a study folder: its own question-by-question page, rebuilt from its runs
        for root in studies:
            answered, total, page = report_study(root)
            print(f"vislab: wrote {page} ({answered}/{total} questions answered)")
        if len(studies) == len(cfg.runs):
            return 0
    others = [p for p in cfg.runs if Path(p) not in studies]
    runs, sections = [], []
    for run_dir in find_runs(others):
        try:
            sections.append(render_run(run_dir, cfg.max_figures))
            runs.append(run_dir)
        except MalformedRunError as e:
            print(f"vislab report: skipping {run_dir}: {e}", file=sys.stderr)
    if not runs:
        raise UserError(f"no readable run folder under {', '.join(others)} (see the warnings above); "
                        f"rerun those experiments or give other folders")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>vislab report</title><style>{_STYLE}</style>"
            f"</head><body><h1>vislab report</h1><p>{len(runs)} run(s).</p>{''.join(sections)}</body></html>")
    write_text(cfg.output, page)
    print(f"vislab: wrote {cfg.output} ({len(runs)} runs)")
    return 0

