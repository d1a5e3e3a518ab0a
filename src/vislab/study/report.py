"""(Re)write a study's report from its folder: ``study.json`` (what was planned and how each run
ended) + the runs' metrics -> answers -> ``report.html``, ``report.md``, ``answers.json``.

``vislab study`` calls it after running; ``vislab report STUDY_FOLDER`` calls it alone, so the page
can be rebuilt (e.g. after a question's wording changed) without running anything.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..reporting.study_report import summary_rows, write_study_report
from .answer import answer_questions
from .runner import Outcome


def is_study(folder: Path) -> bool:
    return (folder / "study.json").is_file()


def report_study(root: Path) -> tuple[int, int, Path]:
    """(questions answered, questions, path of report.html)."""
    try:
        record = json.loads((root / "study.json").read_text())
        outcomes = {role: [Outcome(**o) for o in outs] for role, outs in record["roles"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{root / 'study.json'} is unreadable ({type(e).__name__}: {e}); rerun the study "
                        f"(`vislab study --out {root}`) to rewrite it") from None
    answers = answer_questions(record["questions"], root, outcomes, record["problems"], record["notes"],
                               record["commands"])
    context = {"title": f"{len(answers)} question(s), profile {record['profile']}", "profile": record["profile"],
               "seeds": record["seeds"], "version": record["version"],
               "substitutions": list(record["substitutions"].values())}
    paths = write_study_report(root, answers, summary_rows(answers), context)
    return sum(a.status == "answered" for a in answers), len(answers), paths["html"]
