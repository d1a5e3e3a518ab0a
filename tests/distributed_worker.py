"""The trainings of tests/test_distributed.py, run by every rank under ``torchrun`` (and once
in-process as the single-process reference): DANN and the DCGAN for a few steps of
:func:`vislab.training.fit` on tiny synthetic data, each rank writing what it saw to
``OUT/rank<r>.pt``. Usage: ``torchrun --standalone --nproc_per_node 2 distributed_worker.py OUT``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from vislab import distributed
from vislab.data.domains import DomainBatches, Domains
from vislab.data.mnist import DigitSet
from vislab.errors import UserError
from vislab.methods.dann import DANN, AdaptHParams
from vislab.methods.gan import GAN, Digits
from vislab.models.dann import DANNNet
from vislab.models.dcgan import build_gan
from vislab.training import Checkpoint, Paused, Plan, fit

BATCH, EPOCHS = 16, 2


def _digits(n: int, channels: int, seed: int) -> DigitSet:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 28, 28) if channels == 1 else (n, channels, 28, 28)
    return DigitSet(torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g))


def dann():
    """DANN with gradient clipping and the weight average: (algorithm, data, plan, rngs)."""
    domains = Domains(_digits(64, 1, 1), _digits(8, 1, 2), _digits(64, 3, 3), _digits(8, 3, 4))
    norm = (0.5, 0.25)
    data = DomainBatches(domains, {"source": norm, "target": norm}, BATCH)
    plan = Plan(EPOCHS, data.steps_per_epoch)
    torch.manual_seed(0)
    hp = AdaptHParams(precision="fp32", clip_grad_norm=1.0, ema_decay=0.99)
    return DANN(DANNNet(), hp, total_steps=EPOCHS * plan.steps_per_epoch), data, plan, {
        "order": torch.Generator().manual_seed(5)}


def dcgan(batchnorm_training: bool):
    """The DCGAN (tiny widths); BatchNorm in eval mode (running statistics) unless ``batchnorm_training``."""
    torch.manual_seed(0)
    g, d = build_gan("dcgan", nz=8, ngf=4, ndf=4)
    for bn in (m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.train(batchnorm_training)
    x = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    data = Digits(x, None, BATCH, nz=8)
    return GAN(g, d, dtype=None), data, Plan(EPOCHS, len(x) // BATCH), {"data": torch.Generator().manual_seed(7)}


def train(make, checkpoint: Checkpoint | None = None, resume: bool = False, stop_after: int = 0) -> dict:
    """Per-step stats and the final parameters of one training."""
    algorithm, data, plan, rngs = make()
    steps: list[dict] = []
    fit(algorithm, data, plan, rngs=rngs, checkpoint=checkpoint, resume=resume, stop_after_steps=stop_after,
        on_step=lambda step, stats: steps.append(stats))
    params = torch.cat([p.detach().reshape(-1) for m in distributed.modules_of(algorithm) for p in m.parameters()])
    return {"steps": steps, "params": params}


def _refuse() -> None:
    raise UserError(f"refused on rank {distributed.rank()}")


def main(out: Path) -> None:
    distributed.init_from_env()
    rank = distributed.rank()
    results = {"world_size": distributed.world_size(), "dann": train(dann),
               "dcgan_bn_eval": train(lambda: dcgan(False)), "dcgan_bn_train": train(lambda: dcgan(True))}
    # paused after 3 steps, then resumed: each rank has a checkpoint path of its own, only rank 0's is written
    checkpoint = Checkpoint(out / f"checkpoint-rank{rank}.pt", {"test": 1})
    try:
        train(dann, checkpoint, stop_after=3)
    except Paused:
        results["checkpoint_written"] = checkpoint.path.is_file()
    results["dann_resumed"] = train(dann, checkpoint, resume=True)
    try:  # a refusal on rank 0 (say, of the run folder) reaches every rank instead of leaving them waiting
        distributed.on_main(_refuse)
    except UserError as e:
        results["refusal"] = str(e)
    torch.save(results, out / f"rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
