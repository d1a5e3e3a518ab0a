"""What a question is: an id, the roles (runs) it reads, and a function metrics -> answer.

Like a pytorch-grad-cam method on its base class, each question is one small function on top of
:class:`Evidence` (the runs it may read) and returns an :class:`Answer`: sentences whose numbers
come from the runs (chosen by the measured values where the outcome decides the wording), the
evidence (tables, figures) and the numbers themselves, so that every number can be traced.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclasses.dataclass
class Figure:
    title: str
    path: str  # relative to the study folder


@dataclasses.dataclass
class Answer:
    id: str
    question: str
    status: str = "answered"  # or "not answered"
    sentences: list[str] = dataclasses.field(default_factory=list)
    explanations: list[str] = dataclasses.field(default_factory=list)  # background, not measured here
    tables: list[Table] = dataclasses.field(default_factory=list)
    figures: list[Figure] = dataclasses.field(default_factory=list)
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)  # name -> measured value used above
    runs: list[str] = dataclasses.field(default_factory=list)  # run folders relative to the study folder
    notes: list[str] = dataclasses.field(default_factory=list)  # substitutions and caveats
    substituted: bool = False  # whether a run it used had substitute data (the notes say which)
    commands: list[str] = dataclasses.field(default_factory=list)  # what would answer it, when not answered

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def say(self, sentence: str, **numbers: Any) -> None:
        """Add a sentence and record the measured values it states."""
        self.sentences.append(sentence)
        self.numbers.update(numbers)

    def explain(self, sentence: str) -> None:
        """Add a sentence of background (the textbook reason) that this study does not measure; the
        report prints it apart from the measured answer, so it never reads as a result."""
        self.explanations.append(sentence)

    def show(self, title: str, path: str | None) -> None:
        """Add figure ``path`` (from :meth:`Evidence.figure`) when the run has it."""
        if path:
            self.figures.append(Figure(title, path))

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.tables.append(Table(title, columns, rows))


class Unanswerable(Exception):
    """Raised by a question when its runs lack what it needs (the message says what)."""


class Evidence:
    """Read access to the runs of a study, by role; records which runs a question used."""

    def __init__(self, study_dir: Path, folders: dict[str, list[str]], notes: dict[str, list[str]] | None = None):
        self.study_dir, self.folders, self.used = study_dir, folders, []
        self.role_notes = notes or {}

    def _folders(self, role: str) -> list[str]:
        folders = self.folders.get(role)
        if not folders:
            raise Unanswerable(f"run {role!r} is missing")
        for f in folders:
            if f not in self.used:
                self.used.append(f)
        return folders

    def has(self, role: str) -> bool:
        return bool(self.folders.get(role))

    def metrics(self, role: str) -> dict[str, Any]:
        """metrics.json of the role's first run (seed 0)."""
        return self.all_metrics(role)[0]

    def seeds(self, role: str) -> int:
        """How many seeds' runs the role has."""
        return len(self._folders(role))

    def all_metrics(self, role: str) -> list[dict[str, Any]]:
        """metrics.json of every seed's run of the role."""
        return [json.loads((self.study_dir / f / "metrics.json").read_text()) for f in self._folders(role)]

    def config(self, role: str) -> dict[str, Any]:
        return json.loads((self.study_dir / self._folders(role)[0] / "config.json").read_text())

    def figure(self, role: str, name: str) -> str | None:
        """Path (relative to the study folder) of figure ``name`` in the role's first run, if it exists."""
        rel = f"{self._folders(role)[0]}/{name}"
        return rel if (self.study_dir / rel).is_file() else None

    def figures(self, role: str, pattern: str) -> list[str]:
        root = self.study_dir / self._folders(role)[0]
        return [str(p.relative_to(self.study_dir)) for p in sorted(root.glob(pattern))]

    def notes(self, role: str) -> list[str]:
        return self.role_notes.get(role, [])


@dataclasses.dataclass
class Question:
    id: str
    text: str
    roles: tuple[str, ...]
    answer: Callable[[Evidence, Answer], None]


QUESTIONS: dict[str, Question] = {}


def question(qid: str, text: str, roles: tuple[str, ...]):
    """Register the function that answers question ``qid`` from the runs of ``roles``."""
    def add(fn: Callable[[Evidence, Answer], None]) -> Callable[[Evidence, Answer], None]:
        QUESTIONS[qid] = Question(qid, text, roles, fn)
        return fn
    return add


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"
