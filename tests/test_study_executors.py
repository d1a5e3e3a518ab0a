"""A study's runs on worker processes of this machine (``--jobs``): a profile's thread count is part of
each run's identity, runs on 2 workers compute what one after the other computes, a worker that dies
fails its run without stopping the study, and the defaults follow the CPUs and memory."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from vislab.cli import main
from vislab.errors import UserError
from vislab.experiments import study as study_cmd
from vislab.study.executors import ProcessWorkers, _Scheduler
from vislab.study.plan import RunSpec, plan_runs
from vislab.study.runner import run_one


def test_a_fixed_thread_count_is_part_of_the_run_and_of_its_command():
    plain = RunSpec("r", "inspect", {"model": "vgg16"}, 0)
    one, two = (RunSpec("r", "inspect", {"model": "vgg16"}, 0, threads=t) for t in (1, 2))
    assert len({plain.key, one.key, two.key}) == 3
    assert one.command_line("OUT").startswith("OMP_NUM_THREADS=1 vislab inspect ")
    assert plain.command_line("OUT").startswith("vislab inspect ")
    profile = {"threads": 1, "roles": {"r": {"command": "inspect", "options": {"model": "vgg16"}}}}
    specs, _ = plan_runs(["r"], profile, {}, seeds=1)
    assert specs["r"][0].threads == 1
    with pytest.raises(UserError, match=r"threads: 0; give a whole number >= 1"):
        plan_runs(["r"], {**profile, "threads": 0}, {}, seeds=1)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text("threads: 1\nroles:\n"
                      "  classviz: {options: {target: [76], iterations: 4, show_every: 2}}\n"
                      "  classviz_init: {options: {iterations: 4, show_every: 2, image_size: 64}}\n")
    return tmp_path, ["study", "--questions", "B8", "B10", "--config", str(config), "--no-download", "--device", "cpu"]


def _runs(out: Path) -> dict[str, dict]:
    study = json.loads((out / "study.json").read_text())
    return {role: runs[0] for role, runs in study["roles"].items()}


def test_two_workers_compute_what_one_after_the_other_computes(tiny, capsys):
    tmp, args = tiny
    assert main(args + ["--out", str(tmp / "seq"), "--jobs", "1"]) == 0
    assert main(args + ["--out", str(tmp / "par"), "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 runs at once, 1 torch thread(s) each" in err and "started classviz_init" in err
    seq, par = _runs(tmp / "seq"), _runs(tmp / "par")
    assert {r: o["status"] for r, o in par.items()} == {"classviz": "done", "classviz_init": "done"}
    for role in seq:
        assert seq[role]["folder"] == par[role]["folder"]  # the same run ...
        a, b = (json.loads((tmp / s / seq[role]["folder"] / "metrics.json").read_text()) for s in ("seq", "par"))
        assert a["results"] == b["results"]  # ... computes the same numbers on a worker
        manifest = json.loads((tmp / "par" / par[role]["folder"] / "manifest.json").read_text())
        assert manifest["torch_threads"] == 1
    assert "classviz" in (tmp / "par" / "study.log").read_text()  # the workers' output reached the study log
    assert not (tmp / "par" / "study.log.d").exists()


def test_a_run_computes_with_its_threads_and_gives_the_process_its_own_back(tiny):
    tmp, _ = tiny
    before = torch.get_num_threads()
    spec = RunSpec("classviz", "classviz", {"target": [76], "iterations": 2, "show_every": 1, "device": "cpu",
                                            "image_size": 64}, 0, threads=1)
    outcome = run_one(spec, tmp / "s")
    assert outcome.status == "done"
    assert json.loads((tmp / "s" / spec.folder / "manifest.json").read_text())["torch_threads"] == 1
    assert torch.get_num_threads() == before


def _die(*_):  # a task whose worker process dies, as one killed for memory does
    os._exit(9)


class _DyingWorkers(ProcessWorkers):
    task = staticmethod(_die)


def test_a_worker_that_dies_fails_its_run_and_the_study_goes_on(tmp_path, capsys):
    specs = [RunSpec("a", "classviz", {"target": [1]}, 0), RunSpec("b", "classviz", {"target": [2]}, 0)]
    with _DyingWorkers(1, tmp_path, True, 1) as workers:
        outcomes = _Scheduler(workers, specs, tmp_path, tmp_path / "study.log").run()
    assert [o.status for o in outcomes] == ["failed", "failed"]  # the second ran on a fresh pool, and died too
    assert "a worker process of the study died" in outcomes[0].error and "vislab classviz" in outcomes[0].command
    assert "[2/2] b (classviz, seed 0) failed" in capsys.readouterr().err


def test_default_jobs_follow_cpus_and_memory(monkeypatch):
    monkeypatch.setattr(study_cmd, "cpu_count", lambda: 8)
    monkeypatch.setattr(study_cmd, "available_memory", lambda: 9 * 2**30)
    assert study_cmd.default_jobs(None) == 1  # no fixed thread count: one after the other, with all threads
    assert study_cmd.default_jobs(1) == 2  # 8 CPUs, but memory for 2 runs
    assert study_cmd.default_jobs(4) == 2
    monkeypatch.setattr(study_cmd, "available_memory", lambda: 128 * 2**30)
    assert study_cmd.default_jobs(1) == 8 and study_cmd.default_jobs(3) == 2
    monkeypatch.setattr(study_cmd, "available_memory", lambda: 2**20)
    assert study_cmd.default_jobs(1) == 1  # never 0


def test_cpus_per_task_against_the_profiles_thread_count_is_refused(tiny, capsys):
    tmp, args = tiny
    assert main(args + ["--out", str(tmp / "s"), "--cpus-per-task", "2"]) == 2
    err = capsys.readouterr().err
    assert "--cpus-per-task 2: the quick profile computes every run with 1 torch thread(s)" in err
    assert "Traceback" not in err


def test_a_data_folder_named_relative_or_absolute_is_the_same_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "bg").mkdir()
    monkeypatch.chdir(tmp_path)
    plan = []
    for bg in ("bg", str(tmp_path / "bg")):
        assert main(["study", "--questions", "C2", "--backgrounds", bg, "--no-download", "--dry-run",
                     "--out", str(tmp_path / "s")]) == 0
        plan.append([line.split()[3] for line in capsys.readouterr().err.splitlines() if "runs/adapt-" in line])
    assert plan[0] and plan[0] == plan[1]


class _FakeWorkers:
    """Tasks end in the order they started; records starts and ends."""

    def __init__(self, capacity):
        self.capacity, self.events = capacity, []

    def submit(self, spec):
        self.events.append(f"start {spec.role}")
        return spec.role

    def wait_any(self, handles):
        return handles[0]

    def outcome(self, handle, spec):
        from vislab.study.runner import Outcome

        self.events.append(f"end {spec.role}")
        return Outcome(spec.role, spec.key, spec.folder, "done", seconds=1.0)


def test_workers_get_no_more_runs_than_they_run_at_once_and_unblocked_runs_go_next(tmp_path, capsys):
    specs = [RunSpec("viz", "classviz", {"target": [1]}, 0), RunSpec("dann", "adapt", {"mode": ["dann"]}, 0),
             RunSpec("pl", "adapt", {"mode": ["dann+pl"]}, 0), RunSpec("viz2", "classviz", {"target": [2]}, 0)]
    workers = _FakeWorkers(capacity=2)
    outcomes = _Scheduler(workers, specs, tmp_path, tmp_path / "study.log").run()
    # the cache-filling adapt run first; pl waits for it, then goes ahead of viz2
    assert workers.events == ["start dann", "start viz", "end dann", "start pl", "end viz", "start viz2",
                              "end pl", "end viz2"]
    assert [o.role for o in outcomes] == ["viz", "dann", "pl", "viz2"]
    err = capsys.readouterr().err
    assert "vislab study: started pl (adapt, seed 0)" in err and "[4/4] viz2 (classviz, seed 0) done in 1.0 s" in err


def test_a_run_that_fills_a_cache_is_not_queued_behind_the_runs_another_one_unblocked(tmp_path):
    specs = [RunSpec("dann", "adapt", {"mode": ["dann"]}, 0), RunSpec("pl", "adapt", {"mode": ["dann+pl"]}, 0),
             RunSpec("gan", "gan", {"epochs": 1}, 0), RunSpec("gan2", "gan", {"epochs": 2}, 0)]
    workers = _FakeWorkers(capacity=1)
    _Scheduler(workers, specs, tmp_path, tmp_path / "study.log").run()
    # gan fills the FID classifier's cache: it starts before pl, which dann's end unblocked; the runs
    # gan's end unblocks go first in their turn
    assert [e for e in workers.events if e.startswith("start")] == ["start dann", "start gan", "start gan2",
                                                                   "start pl"]
