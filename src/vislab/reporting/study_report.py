"""The study report: ``report.html``, ``report.md`` and ``answers.json`` from a study's answers.

Organised Part -> Question: the question, the answer (sentences generated from measured values),
its evidence (tables, figures) and the run folders it came from; a contents list and a summary
table of headline numbers beside the published references (SPEC.md). Rendered with Jinja2
templates shipped in the package. Figures stay beside the page: each is shown as a small
thumbnail in ``figures/`` linking to the full-size PNG in its run folder, so the page stays light.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from ..io import write_bytes, write_json, write_text
from .tables import mean_std

PARTS = {
    "A": "Part A: an ImageNet CNN, and transfer learning",
    "B": "Part B: saliency, adversarial examples, class visualisation",
    "C": "Part C: domain adaptation MNIST -> MNIST-M",
    "D": "Part D: GANs on MNIST",
}
THUMB_WIDTH = 720
PNG_MAX_BYTES = 120_000  # a thumbnail larger than this as PNG is written as JPEG

# Headline numbers of the summary table: (measure, question(s), number recorded by its answer, reference);
# with several questions, the first whose answer recorded the number (C4 states DANN's too, for a
# study without C1).
SUMMARY = (
    ("VGG16 parameters", "A1", "params_total", "138,357,544 (89.4% in the FC layers)"),
    ("transfer: features + LinearSVC, test accuracy", "A9", "accuracy",
     "15-Scene, VGG16 relu7: 0.90-0.91; SIFT bag-of-words: 0.81"),
    ("transfer: random weights, test accuracy", "A6", "random", "-"),
    ("fooling success rate", "B5", "success_rate", "SqueezeNet: hay/quail -> stingray in ~10 iterations"),
    ("source-only target accuracy (MNIST-M)", "C1", "source_only_target", "0.52-0.57"),
    ("DANN target accuracy", "C1 C4", "dann_target", "paper 0.7666; course > 0.73; reimplementations 0.72-0.87"),
    ("DANN + pseudo-labels target accuracy", "C4", "pl_target", "trained on target labels: ~0.96"),
    ("DCGAN FID (MNIST-classifier features)", "D2", "fid", "real-vs-real floor measured alongside"),
    ("cDCGAN conditional accuracy", "D6", "conditional_accuracy", "-"),
)




def summary_rows(answers: list) -> list[dict[str, str]]:
    """The summary table: each headline number an answer recorded, beside its published reference."""
    by_id = {a.id: a for a in answers}
    rows = []
    for measure, qids, key, reference in SUMMARY:
        a = next((by_id[q] for q in qids.split() if q in by_id and key in by_id[q].numbers), None)
        if a is None:
            continue
        qid = a.id
        v = a.numbers[key]
        if f"{key}_std" in a.numbers:  # a mean over seeds
            value = mean_std(v, a.numbers[f"{key}_std"], a.numbers[f"{key}_seeds"])
        else:
            value = f"{v:,}" if isinstance(v, int) else f"{v:.3f}"
        rows.append({"measure": measure, "question": qid, "reference": reference, "value": value,
                     # a substitute's number is not comparable with the reference beside it: say so on its row
                     "data": f"substitute (see {qid})" if a.substituted else "as in SPEC.md"})
    return rows


def answers_json(answers: list[Any]) -> list[dict[str, Any]]:
    """The contract of answers.json: one object per question, in order."""
    return [{"id": a.id, "status": a.status, "answer": a.text, "explanation": " ".join(a.explanations),
             "runs": a.runs, "numbers": a.numbers, "notes": a.notes, "commands": a.commands} for a in answers]


def thumbnail(study_dir: Path, rel: str) -> str:
    """A small copy of figure ``rel`` in ``figures/`` (made once; named by the source's content)."""
    from PIL import Image

    src = study_dir / rel
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    stem = study_dir / "figures" / f"{Path(rel).stem[:40]}-{digest}"
    made = [p for p in (stem.with_suffix(".png"), stem.with_suffix(".jpg")) if p.is_file()]
    if made:
        return str(made[0].relative_to(study_dir))
    with Image.open(src) as im:
        im = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
    if im.width > THUMB_WIDTH:
        im = im.resize((THUMB_WIDTH, round(im.height * THUMB_WIDTH / im.width)), Image.LANCZOS)
    png = io.BytesIO()
    im.save(png, format="PNG", optimize=True)
    # plots compress well as PNG; photo-like figures (noisy saliency maps, images) do not: JPEG for those
    if png.tell() <= PNG_MAX_BYTES:
        out, data = stem.with_suffix(".png"), png.getvalue()
    else:
        jpg = io.BytesIO()
        im.save(jpg, format="JPEG", quality=85, optimize=True)
        out, data = stem.with_suffix(".jpg"), jpg.getvalue()
    write_bytes(out, data)
    return str(out.relative_to(study_dir))


def fmt(value: Any) -> str:
    """A table cell: floats with 4 significant digits, the rest as text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("vislab.reporting", "templates"),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    return env


def write_study_report(study_dir: Path, answers: list[Any], summary: list[dict[str, Any]],
                       context: dict[str, Any]) -> dict[str, Path]:
    """Write answers.json, report.md and report.html into ``study_dir``; return their paths."""
    parts = []
    for letter, title in PARTS.items():
        items = [a for a in answers if a.id.startswith(letter)]
        if items:
            parts.append({"letter": letter, "title": title, "answers": items})
    thumbs = {f.path: thumbnail(study_dir, f.path) for a in answers for f in a.figures}
    env = _environment()
    values = {"parts": parts, "summary": summary, "thumbs": thumbs, "answered": sum(a.status == "answered" for a in answers),
              "total": len(answers), **context}
    paths = {
        "answers": write_json(study_dir / "answers.json", answers_json(answers)),
        "markdown": write_text(study_dir / "report.md", env.get_template("study.md.j2").render(**values)),
        "html": write_text(study_dir / "report.html", env.get_template("study.html.j2").render(**values)),
    }
    return paths

