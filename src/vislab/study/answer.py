"""Answer the chosen questions from a study's runs: each question's function, or why it cannot be."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

from .questions import QUESTIONS
from .questions.base import Answer, Evidence, Unanswerable
from .runner import Outcome


def answer_questions(ids: list[str], study_dir: Path, outcomes: dict[str, list[Outcome]],
                     problems: dict[str, str], role_notes: dict[str, list[str]],
                     commands: dict[str, list[str]]) -> list[Answer]:
    """One :class:`Answer` per id. ``outcomes``: role -> its runs' outcomes; ``problems``: role ->
    why it was not run; ``commands``: role -> the commands that make its runs."""
    ready = {role: [o.folder for o in outs if o.status in ("done", "reused")] for role, outs in outcomes.items()}
    answers = []
    for qid in ids:
        q = QUESTIONS[qid]
        answer = Answer(qid, q.text)
        missing = [r for r in q.roles if not ready.get(r) or len(ready[r]) < len(outcomes.get(r, []))]
        if missing:
            _not_answered(answer, [_why(r, outcomes, problems) for r in missing],
                          [c for r in missing for c in commands.get(r, [])])
        else:
            evidence = Evidence(study_dir, {r: ready[r] for r in q.roles}, role_notes)
            try:
                q.answer(evidence, answer)
                # each role of a question states its substitutions: the same sentence once per answer
                substitutions = list(dict.fromkeys(n for r in q.roles for n in role_notes.get(r, [])))
                answer.notes += [n for n in substitutions if n not in answer.notes]
                answer.substituted = bool(substitutions)
            except Unanswerable as e:
                _not_answered(answer, [str(e)], [c for r in q.roles for c in commands.get(r, [])])
            except Exception as e:  # a bug in a question: say so in the report, keep the traceback in the log
                traceback.print_exc(file=sys.stderr)
                _not_answered(answer, [f"internal error in question {qid}: {type(e).__name__}: {e}"], [])
            answer.runs = evidence.used
        answers.append(answer)
    return answers


def _why(role: str, outcomes: dict[str, list[Outcome]], problems: dict[str, str]) -> str:
    if role in problems:
        return f"run {role!r} could not be planned: {problems[role]}"
    failed = [o for o in outcomes.get(role, []) if o.status not in ("done", "reused")]
    if failed:
        return f"run {role!r} {failed[0].status}: {failed[0].error}"
    return f"run {role!r} was not run"


def _not_answered(answer: Answer, reasons: list[str], commands: list[str]) -> None:
    answer.status = "not answered"
    answer.sentences = reasons
    answer.tables, answer.figures, answer.numbers, answer.explanations = [], [], {}, []
    answer.commands = list(dict.fromkeys(commands))
