"""The Ray executor of a study: each run is one Ray task (``run_one`` on a worker), in parallel.

Runs are independent (each command trains what it needs, e.g. ``adapt --mode dann+pl`` its own
DANN), but some runs share vislab's caches, filled by the first run that needs them
(:data:`CACHE_FAMILIES`). Those caches are written atomically (a unique temporary file renamed over
the target), so two runs filling the same file at once would only waste work, never corrupt it;
still, until a family has one finished run, its first run goes alone and the others wait for it.
Everything else starts at once, as the cluster's resources allow. The study folder (and the data)
must be on storage every node sees: checked before anything runs.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Sequence

from ..cluster import check_shared_storage, ray_session, task_options, use_threads
from .plan import RunSpec
from .runner import Outcome, is_finished, run_one

RUN_LOGS = "study.log.d"  # one log per running task, appended to study.log when it ends


# command -> the caches its runs fill on first use and share (the other commands write none)
CACHE_FAMILIES = {"adapt": "MNIST-M", "gan": "the FID/KID classifier and reference features",
                  "gan compare": "the FID/KID classifier and reference features", "transfer": "CNN features"}


def cache_family(spec: RunSpec) -> str | None:
    """Runs that may fill the same cache files (``gan compare`` with ``gan``); None: no shared cache."""
    return spec.command.split()[0] if spec.command in CACHE_FAMILIES else None


def _run_task(spec: RunSpec, study_dir: str, resume: bool, threads: int) -> Outcome:
    use_threads(threads)
    root = Path(study_dir)
    return run_one(spec, root, root / RUN_LOGS / f"{Path(spec.folder).name}.log", resume)


def run_all_on_ray(specs: Sequence[RunSpec], study_dir: Path, *, log: Path, resume: bool = True,
                   cpus_per_task: int = 1, address: str | None = None, inputs: Sequence[str] = ()) -> list[Outcome]:
    """Run ``specs`` as Ray tasks on the cluster at ``address`` (None: ``$RAY_ADDRESS`` or a local
    one); ``inputs``: the data paths the runs read, which every node must see too."""
    with ray_session(address) as ray:
        check_shared_storage(ray, study_dir, inputs, option="--out")
        return _Scheduler(ray, list(specs), study_dir, log, resume, cpus_per_task).run()


class _Scheduler:
    def __init__(self, ray: Any, specs: list[RunSpec], root: Path, log: Path, resume: bool, cpus: int):
        self.ray, self.specs, self.root, self.log, self.resume, self.cpus = ray, specs, root, log, resume, cpus
        self.task = ray.remote(_run_task)
        self.outcomes: dict[str, Outcome] = {}
        self.running: dict[Any, RunSpec] = {}
        self.waiting: dict[str, list[RunSpec]] = {}
        self.options: dict[str, dict[str, Any]] = {}  # device -> task options, asked of the cluster once
        for device in dict.fromkeys(s.options.get("device", "auto") for s in specs):  # a task too large: refused now
            self.options[device] = task_options(ray, cpus, device)

    def run(self) -> list[Outcome]:
        warm = {cache_family(s) for s in self.specs if is_finished(self.root / s.folder)}
        started: set[str] = set()
        for spec in self.specs:
            family = cache_family(spec)
            if is_finished(self.root / spec.folder):
                self._finish(spec, run_one(spec, self.root))  # reused: nothing to run
            elif family is None or family in warm or family not in started:
                started.add(family)
                self._submit(spec)
            else:
                self.waiting.setdefault(family, []).append(spec)
        while self.running:
            [ref], _ = self.ray.wait(list(self.running), num_returns=1)
            spec = self.running.pop(ref)
            self._finish(spec, self._result(ref, spec))
            for waiting in self.waiting.pop(cache_family(spec), []):
                self._submit(waiting)
        with contextlib.suppress(OSError):
            (self.root / RUN_LOGS).rmdir()
        return [self.outcomes[s.key] for s in self.specs]

    def _submit(self, spec: RunSpec) -> None:
        options = self.options[spec.options.get("device", "auto")]
        self.running[self.task.options(**options).remote(spec, str(self.root), self.resume, self.cpus)] = spec

    def _result(self, ref: Any, spec: RunSpec) -> Outcome:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker died (killed for memory, node lost, ...)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return Outcome(spec.role, spec.key, spec.folder, "failed", error=f"the Ray task failed: {reason}",
                           command=spec.command_line(str(self.root)))
        finally:
            self._collect_log(spec)

    def _collect_log(self, spec: RunSpec) -> None:
        part = self.root / RUN_LOGS / f"{Path(spec.folder).name}.log"
        if part.is_file():
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(part.read_text(encoding="utf-8", errors="replace"))
            part.unlink()

    def _finish(self, spec: RunSpec, outcome: Outcome) -> None:
        self.outcomes[spec.key] = outcome
        state = "finished earlier, reused" if outcome.status == "reused" else f"{outcome.status} in {outcome.seconds:.1f} s"
        print(f"vislab study: [{len(self.outcomes)}/{len(self.specs)}] {spec.role} ({spec.command}, seed {spec.seed}) "
              f"{state}" + (f": {outcome.error}" if outcome.error else ""), file=sys.stderr, flush=True)
