"""Training under torchrun (vislab.distributed): 2 processes on the CPU (gloo) against one.

What is compared, and the tolerance: with the same global batch, 2 ranks compute each step's loss
and gradient as the share-weighted sum of two half-batch means instead of one mean over the batch,
so they differ from a single process only in float32 summation order (measured: 2e-7 relative on
the losses after 8 steps, 1e-8 on the weights); the tests allow 1e-5 relative / 1e-6 absolute.
That holds for DANN (no BatchNorm) and for the DCGAN with its BatchNorm layers in eval mode. In
training mode each rank normalises its own half-batch with that half's statistics, which changes
the numbers by percents: the test checks that it does (so the equality above is not vacuous);
``vislab gan --sync-bn`` (CUDA only) removes that difference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_worker
import vislab
from vislab.errors import UserError
from test_adapt import _write_mnist, _write_photos
from test_gan import _write_idx
from vislab.cli import main
from vislab.data.domains import DomainBatch
from vislab.distributed import DataParallel, Replicas, _slice, all_sum, on_main, replicas

TESTS = Path(__file__).resolve().parent
RTOL, ATOL = 1e-5, 1e-6


def torchrun(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` with this checkout's vislab and the tests on the path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(vislab.__file__).parents[1]), str(TESTS),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# -- one process: the identity; slicing a batch -------------------------------------------------
def test_a_single_process_is_not_distributed():
    assert type(replicas(object())) is Replicas
    assert all_sum({"n": 3, "loss": 1.5}) == {"n": 3, "loss": 1.5}
    assert on_main(lambda: 7) == 7
    batch = (torch.arange(5),)
    assert Replicas().local(batch) is batch


def test_each_rank_takes_its_rows_of_every_field():
    batch = DomainBatch(xs=torch.arange(10).view(5, 2), ys=torch.arange(5), xt=torch.arange(5) + 10)
    parts = [_slice(batch, r, 2) for r in range(2)]
    assert parts[0].ys.tolist() == [0, 2, 4] and parts[1].ys.tolist() == [1, 3]
    assert parts[1].xs.tolist() == [[2, 3], [6, 7]] and parts[1].xt.tolist() == [11, 13]
    assert parts[0].pseudo is None
    # the parts together are the batch, each row once
    assert sorted(torch.cat([p.ys for p in parts]).tolist()) == list(range(5))
    real, z, y = _slice((torch.zeros(4, 1), torch.ones(4, 3), None), 1, 2)
    assert real.shape == (2, 1) and z.shape == (2, 3) and y is None


def test_a_batch_smaller_than_the_world_is_refused(monkeypatch):
    ranks = DataParallel.__new__(DataParallel)  # no process group needed for the check
    ranks.world_size, ranks.rank = 2, 0
    with pytest.raises(UserError, match="batch of 1 row"):
        ranks.local((torch.zeros(1, 3),))


# -- two processes against one ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """The worker's results on rank 0 and 1 of a torchrun with 2 processes, and in one process."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(TESTS / "distributed_worker.py"), str(out), cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    single = out / "single"
    single.mkdir()
    distributed_worker.main(single)
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    return load(out / "rank0.pt"), load(out / "rank1.pt"), load(single / "rank0.pt")


def _assert_same_training(a: dict, b: dict) -> None:
    assert len(a["steps"]) == len(b["steps"]) == 8
    for i, (sa, sb) in enumerate(zip(a["steps"], b["steps"])):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k] == pytest.approx(sb[k], rel=RTOL, abs=ATOL), (i, k)
    torch.testing.assert_close(a["params"], b["params"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("training", ["dann", "dcgan_bn_eval"])
def test_two_processes_train_what_one_does_with_the_same_global_batch(two_and_one, training):
    rank0, rank1, single = two_and_one
    assert rank0["world_size"] == 2 and single["world_size"] == 1
    _assert_same_training(rank0[training], single[training])
    # the replicas stay identical: the same averaged gradients, the same steps
    assert torch.equal(rank0[training]["params"], rank1[training]["params"])
    assert rank0[training]["steps"] == rank1[training]["steps"]  # statistics combined over the ranks


def test_batchnorm_in_training_mode_normalises_each_ranks_slice(two_and_one):
    rank0, _, single = two_and_one
    losses = [(a["loss_d"], b["loss_d"]) for a, b in zip(rank0["dcgan_bn_train"]["steps"],
                                                           single["dcgan_bn_train"]["steps"])]
    assert losses[0][0] != pytest.approx(losses[0][1], rel=1e-3)  # per-half statistics from the first step
    assert not torch.allclose(rank0["dcgan_bn_train"]["params"], single["dcgan_bn_train"]["params"], atol=1e-4)


def test_a_refusal_on_rank_0_is_raised_on_every_rank(two_and_one):
    rank0, rank1, single = two_and_one
    assert rank0["refusal"] == rank1["refusal"] == single["refusal"] == "refused on rank 0"


def test_a_paused_run_resumes_under_torchrun_as_if_uninterrupted(two_and_one):
    rank0, rank1, _ = two_and_one
    assert rank0["checkpoint_written"] and not rank1["checkpoint_written"]  # rank 0 writes, and sends it
    for r in (rank0, rank1):
        assert torch.equal(r["dann_resumed"]["params"], r["dann"]["params"])
        assert r["dann_resumed"]["steps"] == r["dann"]["steps"][3:]


# -- the commands under torchrun ------------------------------------------------------------------
ADAPT = ["--mode", "dann", "--epochs", "1", "--train-size", "64", "--test-size", "32", "--batch-size", "16",
         "--no-tsne", "--precision", "fp32", "--seed", "3"]


def test_adapt_under_torchrun_writes_one_run_with_the_world_size(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    data = ["--data-root", str(_write_mnist(tmp_path / "mnist")), "--backgrounds", str(_write_photos(tmp_path / "bg"))]
    assert main(["adapt", *ADAPT, *data, "--out", str(tmp_path / "one")]) == 0
    runs = tmp_path / "runs"
    done = torchrun("-m", "vislab", "adapt", *ADAPT, *data, "--out", str(runs / "two"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in runs.iterdir()] == ["two"]  # one folder, complete
    assert json.loads((runs / "two" / "manifest.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["world_size"] == 1
    two, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("runs/two", "one"))
    assert two["steps_per_epoch"] == one["steps_per_epoch"] == 4  # the global batch: 16 per domain
    for k in ("train_loss_class", "train_loss_domain", "train_domain_acc", "target_accuracy", "source_accuracy"):
        assert two["history"][0][k] == pytest.approx(one["history"][0][k], rel=RTOL, abs=ATOL), k


def test_gan_paused_alone_resumes_under_torchrun(tmp_path, monkeypatch):
    # the world size is not part of a run's identity: 2 processes train on the same global batches
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "mnist"
    root.mkdir()
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 64), ("t10k", 40)):
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=gen))
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    runs = tmp_path / "runs"
    args = ["gan", "--data-root", str(root), "--epochs", "2", "--batch-size", "16", "--ngf", "4", "--ndf", "4",
            "--eval-samples", "40", "--classifier-epochs", "1", "--grid-every", "0", "--precision", "fp32",
            "--out", str(runs / "gan")]
    assert main([*args, "--stop-after-batches", "3"]) == 3
    assert (runs / "gan.partial" / "checkpoint.pt").is_file()
    resumed = torchrun("-m", "vislab", *args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming at epoch 1/2, step 3") == 1  # rank 0 read the checkpoint
    out = runs / "gan"
    assert [p.name for p in runs.iterdir()] == ["gan"] and not (out / "checkpoint.pt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["resumed"] is True
    assert json.loads((out / "metrics.json").read_text())["batches"] == 8
    assert len(json.loads((out / "history.json").read_text())["loss_d"]) == 8
