"""The 34 questions of the practical (QUESTIONS.md), one function each, in the report's order."""
from __future__ import annotations

from . import part_a, part_b, part_c, part_d  # noqa: F401 -- each registers its questions
from .base import QUESTIONS as _REGISTERED

ORDER = ([f"A{i}" for i in range(1, 12)] + [f"B{i}" for i in range(1, 12)] + [f"C{i}" for i in range(1, 5)]
         + [f"D{i}" for i in range(1, 9)])
QUESTIONS = {qid: _REGISTERED[qid] for qid in ORDER}
