"""Run a study's planned runs: reuse finished ones, resume interrupted ones, never stop on a failure.

Each run is what ``vislab COMMAND --options --out STUDY/runs/<command>-<hash>`` does, called in
this process. A failed run is recorded (its error and the command that would redo it) and the
study goes on: the questions it feeds say "not answered" and why.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import traceback
from pathlib import Path
from typing import Iterable

from ..errors import UserError
from ..progress import bars_to
from ..runs import PARTIAL_SUFFIX
from ..training import Paused
from .plan import RunSpec, command


@dataclasses.dataclass
class Outcome:
    role: str
    key: str
    folder: str  # relative to the study folder
    status: str  # "done" | "reused" | "failed" | "paused"
    seconds: float = 0.0
    error: str | None = None
    command: str = ""


def is_finished(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() and (folder / "metrics.json").is_file()


def run_one(spec: RunSpec, study_dir: Path, log: Path | None = None, resume: bool = True,
            threads: int | None = None) -> Outcome:
    """Make one run (or find it finished). Output of the run goes to ``log`` when given. An
    interrupted run is continued from its checkpoint (``resume``) or started over. It computes with
    ``spec.threads`` torch threads, else ``threads``, else this process's; the count is restored after."""
    folder = study_dir / spec.folder
    out = Outcome(spec.role, spec.key, spec.folder, "reused", command=spec.command_line(str(study_dir)))
    if is_finished(folder):
        return out
    cfg_cls, run_fn = command(spec.command)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    values = {**spec.options, "seed": spec.seed, "out": str(folder)}
    partial = folder.with_name(folder.name + PARTIAL_SUFFIX)
    if partial.exists():
        if resume and "resume" in fields:
            values["resume"] = True
        else:
            values["overwrite"] = True
    from ..config import build_config

    t0 = time.perf_counter()
    try:
        with _redirect(log), _torch_threads(spec.threads or threads):
            status = run_fn(build_config(cfg_cls, values))
        out.status = "done" if is_finished(folder) else "failed"
        if status:  # finished with problems (e.g. some unreadable inputs) or not at all
            out.error = f"the command exited with status {status}" + (
                "" if out.status == "done" else " without finishing its run folder")
    except Paused as e:
        out.status, out.error = "paused", str(e)
    except UserError as e:
        out.status, out.error = "failed", str(e)
    except Exception as e:  # a bug: keep the traceback in the log, the study goes on
        out.status, out.error = "failed", f"{type(e).__name__}: {e} (traceback in {log or 'stderr'})"
        _write_traceback(log)
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


def run_all(specs: Iterable[RunSpec], study_dir: Path, log: Path | None = None,
            resume: bool = True) -> list[Outcome]:
    """Run ``specs`` one after the other in this process (the local executor with one job)."""
    specs = list(specs)
    outcomes = []
    for i, spec in enumerate(specs, 1):
        done = is_finished(study_dir / spec.folder)
        print(f"vislab study: [{i}/{len(specs)}] {spec.role} ({spec.command}, seed {spec.seed})"
              + (" -- finished earlier, reused" if done else " ..."), file=sys.stderr, flush=True)
        outcome = run_one(spec, study_dir, log, resume)
        if outcome.status != "reused":
            print(f"vislab study:        {outcome.status} in {outcome.seconds:.1f} s"
                  + (f": {outcome.error}" if outcome.error else ""), file=sys.stderr, flush=True)
        outcomes.append(outcome)
    return outcomes


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """torch's CPU threads for one run; a command that sets its own (``adapt --threads``) would
    otherwise leave its count to every later run of the study."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def _redirect(log: Path | None):
    """Send a run's own stdout/stderr to the study log, line by line (``tail -f`` follows a long run);
    its progress bars stay on the terminal."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stderr
    with open(log, "a", encoding="utf-8", buffering=1) as fh, bars_to(terminal), \
            contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        yield


def _write_traceback(log: Path | None) -> None:
    text = traceback.format_exc()
    if log is None:
        print(text, file=sys.stderr)
        return
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(text)
