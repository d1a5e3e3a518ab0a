"""Scaling out on Ray: a study's runs as Ray tasks and the feature cache's chunks as Ray tasks give
what the local executor gives; the messages when Ray is missing or storage is not shared.

One local Ray cluster of 2 CPUs for the module (starting one takes seconds), shut down after."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vislab import feature_cache as FC
from vislab.cli import main
from vislab.cluster import import_ray, storage_problems
from vislab.data import scenes
from vislab.errors import UserError
from vislab.methods.features import FeatureExtractor
from vislab.models.backbones import Backbone, Preprocess

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed: pip install 'vislab[ray]' (the test extra has it)")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# --- messages ---------------------------------------------------------------------------------

def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'vislab\[ray\]'"):
        import_ray()
    assert main(["study", "--executor", "ray", "--questions", "B8", "--out", str(tmp_path / "s")]) == 2
    assert "pip install 'vislab[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before doing anything


def test_storage_message_names_the_node_and_what_it_cannot_see():
    ok = {"node": "a", "marker": True, "missing": []}
    assert storage_problems([ok], Path("/s"), "--out") is None
    message = storage_problems([ok, {"node": "b", "marker": False, "missing": ["/data/mnist"]}], Path("/s"), "--out")
    assert message.startswith("node b cannot see /s (--out), /data/mnist: ") and "node a" not in message
    assert "shared storage" in message and "\n" not in message


def test_an_address_where_nothing_answers_is_refused_at_once():
    import socket

    from vislab.cluster import unreachable

    with socket.socket() as server:  # a port that listens: reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert unreachable(f"127.0.0.1:{port}") is None and unreachable(f"ray://127.0.0.1:{port}") is None
    assert unreachable(f"127.0.0.1:{port}") == "Connection refused"  # closed now
    assert unreachable("auto") is None  # Ray's own forms are left to Ray


@needs_ray
def test_storage_check_on_the_cluster(ray_cluster, tmp_path):
    from vislab.cluster import check_shared_storage

    check_shared_storage(ray_cluster, tmp_path, [str(tmp_path)])  # one node, which sees everything
    assert list(tmp_path.iterdir()) == []  # the marker is removed
    with pytest.raises(UserError, match=f"cannot see {tmp_path / 'nowhere'}: every Ray node"):
        check_shared_storage(ray_cluster, tmp_path, [str(tmp_path / "nowhere")])


# --- a study on Ray ---------------------------------------------------------------------------

def _run_folders(out: Path) -> dict[str, dict]:
    """run folder -> its metrics without the timings."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "second" not in k and "time" not in k}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return {p.parent.name: strip(json.loads(p.read_text())) for p in (out / "runs").glob("*/metrics.json")}


@needs_ray
def test_a_study_on_ray_answers_like_the_local_executor(ray_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text("roles:\n"
                      "  classviz: {options: {target: [76], iterations: 4, show_every: 2}}\n"
                      "  classviz_init: {options: {iterations: 4, show_every: 2, image_size: 64}}\n")
    args = ["study", "--questions", "B8", "B10", "--config", str(config), "--no-download", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fits the 2-CPU test cluster on any machine; Ray tasks default to the same threads
    try:
        assert main(args + ["--out", str(tmp_path / "local")]) == 0
        capsys.readouterr()
        assert main(args + ["--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    finally:
        torch.set_num_threads(threads)
    finished = [line for line in capsys.readouterr().err.splitlines() if " done in " in line]
    assert len(finished) == 2 and {"[1/2]", "[2/2]"} == {line.split()[2] for line in finished}
    local, on_ray = (json.loads((tmp_path / d / "answers.json").read_text()) for d in ("local", "ray"))
    assert [a["status"] for a in on_ray] == ["answered", "answered"]
    assert on_ray == local
    assert _run_folders(tmp_path / "ray") == _run_folders(tmp_path / "local") and len(_run_folders(tmp_path / "ray")) == 2
    assert not (tmp_path / "ray" / "study.log.d").exists() and (tmp_path / "ray" / "study.log").is_file()


# --- sharded feature extraction ---------------------------------------------------------------

def _tiny_backbone() -> Backbone:
    """A small CNN made of torch's own modules (a Ray worker unpickles it without this test file)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 10))
    return Backbone("tiny", net.eval().requires_grad_(False), Preprocess(input_size=32, resize=36),
                    {"conv1": "0", "pooled": "5", "logits": "6"}, "pooled")


def _images(root: Path, n: int = 10) -> scenes.ImageList:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return scenes.list_split(root, "train")


@needs_ray
def test_sharded_extraction_equals_local_and_fills_the_same_cache(ray_cluster, tmp_path, monkeypatch):
    from vislab.feature_shards import RayChunks

    monkeypatch.setattr(FC, "CHUNK_IMAGES", 4)  # 10 images: chunks of 4, 4 and 2 = 3 Ray tasks
    images = _images(tmp_path / "data")
    extractor = FeatureExtractor(_tiny_backbone(), ["pooled", "conv1"], precision="fp32")
    local, _ = FC.extract_features(images, extractor, cache_root=tmp_path / "local", batch_size=2, workers=0)
    with RayChunks(None, inputs=[str(tmp_path / "data")]) as source:
        sharded, stats = FC.extract_features(images, extractor, cache_root=tmp_path / "ray", batch_size=2,
                                             workers=0, chunk_source=source)
    assert stats.images == 10 and not stats.cache_hit
    for layer in ("pooled", "conv1"):
        assert np.array_equal(sharded[layer].features, local[layer].features)  # bit for bit
        assert sharded[layer].features.shape == (10, 16 if layer == "pooled" else 8)
        assert np.array_equal(sharded[layer].valid, local[layer].valid)
    again, stats = FC.extract_features(images, extractor, cache_root=tmp_path / "ray", batch_size=2, workers=0)
    assert stats.cache_hit and stats.images == 0  # a later local run reads the cache the Ray tasks filled
    assert np.array_equal(again["pooled"].features, local["pooled"].features)


# --- the scheduler's order, on a stand-in for Ray -------------------------------------------

class _Ref:  # a stand-in for an ObjectRef (hashable by identity)
    def __init__(self, spec):
        self.spec = spec


class _FakeRay:
    """Just what the scheduler calls: tasks end in submission order; ``fail`` names roles whose
    worker dies."""

    class exceptions:
        RayError = RuntimeError

    def __init__(self, fail=()):
        self.events, self.fail = [], set(fail)

    def remote(self, _fn):
        fake = self

        class Task:
            def options(self, **_):
                return self

            def remote(self, spec, *_):
                fake.events.append(f"start {spec.role}")
                return _Ref(spec)

        return Task()

    def cluster_resources(self):
        return {"CPU": 2.0}

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        from vislab.study.runner import Outcome

        spec = ref.spec
        self.events.append(f"end {spec.role}")
        if spec.role in self.fail:
            raise RuntimeError("worker died (killed for memory)\nmore lines")
        return Outcome(spec.role, spec.key, spec.folder, "done", seconds=1.0)


def test_runs_sharing_a_cache_wait_for_the_first_of_their_command(tmp_path, capsys):
    from vislab.study.executors import RayWorkers, _Scheduler
    from vislab.study.plan import RunSpec

    specs = [RunSpec("viz", "classviz", {"target": [1]}, 0), RunSpec("dann", "adapt", {"mode": ["dann"]}, 0),
             RunSpec("pl", "adapt", {"mode": ["dann+pl"]}, 0), RunSpec("viz2", "classviz", {"target": [2]}, 0)]
    ray = _FakeRay(fail={"pl"})
    outcomes = _Scheduler(RayWorkers(ray, specs, tmp_path, True, 1), specs, tmp_path, tmp_path / "study.log").run()
    # the run that fills a cache goes first (others of its command wait for it); classviz fills none:
    # both its runs start at once; the second adapt run waits for the first
    assert ray.events[:3] == ["start dann", "start viz", "start viz2"]
    assert ray.events.index("start pl") > ray.events.index("end dann")
    assert [o.role for o in outcomes] == ["viz", "dann", "pl", "viz2"]  # in the plan's order
    assert outcomes[2].status == "failed" and outcomes[2].error == "the Ray task failed: worker died (killed for memory)"
    assert "vislab adapt" in outcomes[2].command
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vislab study: [")]
    assert len(lines) == 4 and lines[-1].startswith("vislab study: [4/4] pl (adapt, seed 0) failed")


def test_a_task_larger_than_every_node_is_refused_not_left_waiting():
    from vislab.cluster import task_options

    assert task_options(_FakeRay(), 2, "cpu")["num_cpus"] == 2
    with pytest.raises(UserError, match=r"--cpus-per-task 4: no node of the Ray cluster has that many CPUs "
                                        r"\(largest: 2\); give --cpus-per-task 2 or fewer"):
        task_options(_FakeRay(), 4, "cpu")


def test_the_scheduler_refuses_a_task_too_large_before_starting_any(tmp_path):
    from vislab.study.executors import RayWorkers
    from vislab.study.plan import RunSpec

    ray = _FakeRay()
    specs = [RunSpec("viz", "classviz", {"target": [1]}, 0)]
    with pytest.raises(UserError, match=r"--cpus-per-task 3: no node"):
        RayWorkers(ray, specs, tmp_path, True, 3)
    assert ray.events == []  # nothing was started
