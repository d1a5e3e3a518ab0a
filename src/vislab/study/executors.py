"""The parallel executors of a study: each run is one task, on worker processes of this machine
(``--jobs N``) or on a Ray cluster (``--executor ray``); one scheduler drives both.

Runs are independent (each command trains what it needs, e.g. ``adapt --mode dann+pl`` its own
DANN), but some runs share vislab's caches, filled by the first run that needs them
(:data:`CACHE_FAMILIES`). Those caches are written atomically (a unique temporary file renamed over
the target), so two runs filling the same file at once would only waste work, never corrupt it;
still, until a family has one finished run, its first run goes alone and the others wait for it.
Everything else starts at once, as the workers allow. On Ray, the study folder (and the data) must
be on storage every node sees: checked before anything runs.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol, Sequence

from ..cluster import check_shared_storage, ray_session, task_options
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
    root = Path(study_dir)
    return run_one(spec, root, root / RUN_LOGS / f"{Path(spec.folder).name}.log", resume, threads)


class _Workers(Protocol):
    """Where the scheduler's tasks run: start one, wait for any, and its outcome (a worker lost = a failed run)."""

    capacity: int | None  # tasks that run at once (None: no limit, the workers queue them)

    def submit(self, spec: RunSpec) -> Any: ...

    def wait_any(self, handles: list[Any]) -> Any: ...

    def outcome(self, handle: Any, spec: RunSpec) -> Outcome: ...


def run_all_on_ray(specs: Sequence[RunSpec], study_dir: Path, *, log: Path, resume: bool = True,
                   cpus_per_task: int = 1, address: str | None = None, inputs: Sequence[str] = ()) -> list[Outcome]:
    """Run ``specs`` as Ray tasks on the cluster at ``address`` (None: ``$RAY_ADDRESS`` or a local
    one); ``inputs``: the data paths the runs read, which every node must see too."""
    with ray_session(address) as ray:
        check_shared_storage(ray, study_dir, inputs, option="--out")
        return _Scheduler(RayWorkers(ray, specs, study_dir, resume, cpus_per_task), list(specs), study_dir, log).run()


def run_all_in_processes(specs: Sequence[RunSpec], study_dir: Path, *, log: Path, jobs: int, threads: int,
                         resume: bool = True) -> list[Outcome]:
    """Run ``specs`` on ``jobs`` worker processes of this machine, each run with ``threads`` torch
    threads unless its spec fixes its own."""
    with ProcessWorkers(jobs, study_dir, resume, threads) as workers:
        return _Scheduler(workers, list(specs), study_dir, log).run()


class RayWorkers:
    capacity = None  # Ray queues tasks until the cluster has their resources

    def __init__(self, ray: Any, specs: Sequence[RunSpec], root: Path, resume: bool, cpus: int):
        self.ray, self.root, self.resume, self.cpus = ray, root, resume, cpus
        self.task = ray.remote(_run_task)
        self.options: dict[tuple[str, int], dict[str, Any]] = {}  # (device, CPUs) -> task options, asked once
        for s in specs:  # a task too large for every node: refused now, before any starts
            key = (s.options.get("device", "auto"), s.threads or cpus)
            if key not in self.options:
                self.options[key] = task_options(ray, key[1], key[0])

    def submit(self, spec: RunSpec) -> Any:
        cpus = spec.threads or self.cpus
        options = self.options[(spec.options.get("device", "auto"), cpus)]
        return self.task.options(**options).remote(spec, str(self.root), self.resume, cpus)

    def wait_any(self, handles: list[Any]) -> Any:
        return self.ray.wait(handles, num_returns=1)[0][0]

    def outcome(self, handle: Any, spec: RunSpec) -> Outcome:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayError as e:  # the worker died (killed for memory, node lost, ...)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return _lost(spec, self.root, f"the Ray task failed: {reason}")


class ProcessWorkers:
    """A pool of ``jobs`` worker processes (spawned: no fork of a process that runs torch threads)."""

    task = staticmethod(_run_task)  # what a worker does with a spec (a test swaps in a worker that dies)

    def __init__(self, jobs: int, root: Path, resume: bool, threads: int):
        self.jobs, self.root, self.resume, self.threads = jobs, root, resume, threads
        self.capacity = jobs  # a run is handed over when a worker is free: "started" means started
        self.pool: cf.ProcessPoolExecutor | None = None
        self.pool_of: dict[Any, cf.ProcessPoolExecutor] = {}  # task -> the pool it went to

    def __enter__(self) -> "ProcessWorkers":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.pool is None:
            return
        if exc_type is not None:  # Ctrl-C or an error: stop the runs now (they resume on the next study)
            _terminate_workers(self.pool)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, spec: RunSpec) -> Any:
        if self.pool is None:  # first use, or the pool broke when a worker died: a fresh one
            self.pool = cf.ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_worker_init, initargs=(os.getpid(),))
        handle = self.pool.submit(self.task, spec, str(self.root), self.resume, self.threads)
        self.pool_of[handle] = self.pool
        return handle

    def wait_any(self, handles: list[Any]) -> Any:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return next(h for h in handles if h in done)  # the earliest submitted of those done

    def outcome(self, handle: Any, spec: RunSpec) -> Outcome:
        pool = self.pool_of.pop(handle)
        try:
            return handle.result()
        except BrokenProcessPool:  # a worker was killed (for memory?): every run the pool held is lost
            if pool is self.pool:
                self.pool = None
            return _lost(spec, self.root, "a worker process of the study died (killed for memory?) during this "
                                          "run; rerun the study to continue it")


def _terminate_workers(pool: cf.ProcessPoolExecutor) -> None:
    # shutdown() waits for the running tasks (minutes of training) and cannot stop them; Python 3.14
    # adds terminate_workers(), before it the pool's own process table is the only handle.
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(OSError, ValueError):
            process.terminate()


def _worker_init(study_pid: int) -> None:
    # The runs' own output goes to their logs; their progress bars, from several processes at once,
    # would overwrite each other on one terminal line: the study prints one line per run instead.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 -- the worker's stderr for its whole life
    if sys.platform.startswith("linux"):
        # When the study is killed, its workers must not go on writing into run folders that a rerun
        # will resume: ask Linux to stop each worker when its parent dies (prctl PR_SET_PDEATHSIG).
        # Neither multiprocessing nor concurrent.futures offers this.
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
    if os.getppid() != study_pid:  # the study died while this worker was starting
        os._exit(1)


def _lost(spec: RunSpec, root: Path, why: str) -> Outcome:
    return Outcome(spec.role, spec.key, spec.folder, "failed", error=why, command=spec.command_line(str(root)))


class _Scheduler:
    def __init__(self, workers: _Workers, specs: list[RunSpec], root: Path, log: Path):
        self.workers, self.specs, self.root, self.log = workers, specs, root, log
        self.outcomes: dict[str, Outcome] = {}
        self.running: dict[Any, RunSpec] = {}
        self.waiting: dict[str, list[RunSpec]] = {}

    def run(self) -> list[Outcome]:
        warm = {cache_family(s) for s in self.specs if is_finished(self.root / s.folder)}
        first: dict[str, RunSpec] = {}  # per cold family, the run that fills its cache
        for spec in self.specs:
            if is_finished(self.root / spec.folder):
                self._finish(spec, run_one(spec, self.root))  # reused: nothing to run
            elif cache_family(spec) not in (None, *warm, *first):
                first[cache_family(spec)] = spec
        ready = list(first.values())  # first in the queue: the runs of their family wait for them
        for spec in self.specs:
            family = cache_family(spec)
            if spec.key in self.outcomes or spec is first.get(family):
                continue
            (self.waiting.setdefault(family, []) if family in first else ready).append(spec)
        self._start(ready)
        while self.running:
            handle = self.workers.wait_any(list(self.running))
            spec = self.running.pop(handle)
            try:
                outcome = self.workers.outcome(handle, spec)
            finally:
                self._collect_log(spec)
            self._finish(spec, outcome)
            # unblocked runs go next, after the cache-filling runs still queued (each unblocks more)
            heads = sum(1 for s in ready if s is first.get(cache_family(s)))
            ready[heads:heads] = self.waiting.pop(cache_family(spec), [])
            self._start(ready)
        with contextlib.suppress(OSError):
            (self.root / RUN_LOGS).rmdir()
        return [self.outcomes[s.key] for s in self.specs]

    def _start(self, ready: list[RunSpec]) -> None:
        """Hand ``ready`` runs to the workers, in order, as many as they take at once (Ray: all, it queues)."""
        while ready and (self.workers.capacity is None or len(self.running) < self.workers.capacity):
            spec = ready.pop(0)
            self.running[self.workers.submit(spec)] = spec
            verb = "submitted" if self.workers.capacity is None else "started"
            print(f"vislab study: {verb} {spec.role} ({spec.command}, seed {spec.seed})", file=sys.stderr, flush=True)

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
