"""Training the MNIST classifier whose features measure the GANs (:mod:`vislab.models.mnist_classifier`).

Adam with a one-cycle learning rate; random shifts of up to 2 px (one per batch: cheap) as the only
augmentation. The loss is computed in float32 even when the network runs under bf16 autocast. The
step is :class:`vislab.methods.trainers.ClassifierTrainer`'s and the training goes through
:func:`vislab.training.fit`, like every classifier training in vislab.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..models.mnist_classifier import MnistClassifier, predict
from ..precision import autocast
from ..training import Plan, fit
from .trainers import ClassifierTrainer

SHIFT = 2  # pixels of random translation, each way
BATCH_SIZE = 128


class ClassifierTraining(ClassifierTrainer):
    """:class:`MnistClassifier` training as an algorithm object: ``update((x, y))`` is one Adam step
    on the cross-entropy (the forward pass under autocast to ``dtype``), then one step of the
    one-cycle schedule over ``total_steps``."""

    def __init__(self, net: MnistClassifier, *, lr: float, total_steps: int, dtype: torch.dtype | None):
        super().__init__(net, torch.optim.Adam(net.parameters(), lr=lr))
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=total_steps)
        self.dtype = dtype

    def update(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        with autocast(x.device, self.dtype):
            logits = self.model(x)
        stats = self.step(logits, y)
        self.sched.step()
        return stats

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return predict(self.model, x)

    def state(self) -> dict:
        return {**super().state(), "sched": self.sched.state_dict()}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.sched.load_state_dict(state["sched"])


class ShiftedDigits:
    """The epochs' data: a permutation of the images per epoch, batches cut at a random offset of
    the images padded by :data:`SHIFT` px of background (-1)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.padded = F.pad(images, (SHIFT,) * 4, value=-1.0)
        self.labels, self.batch_size, self.size = labels, batch_size, images.shape[-1]

    def order(self, rngs: dict[str, torch.Generator]) -> torch.Tensor:
        return torch.randperm(len(self.labels), generator=rngs["data"])

    def batch(self, order: torch.Tensor, i: int, rngs: dict[str, torch.Generator]) -> Any:
        idx = order[i * self.batch_size:(i + 1) * self.batch_size]
        dx, dy = torch.randint(0, 2 * SHIFT + 1, (2,), generator=rngs["data"]).tolist()
        return self.padded[idx, :, dy:dy + self.size, dx:dx + self.size], self.labels[idx]


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 3, batch_size: int = BATCH_SIZE,
                     lr: float = 3e-3, seed: int = 0,
                     dtype: torch.dtype | None = torch.bfloat16) -> MnistClassifier:
    """Train :class:`MnistClassifier` on ``images (N, 1, 32, 32)`` in [-1, 1] and ``labels (N,)``."""
    # The global RNG (init, dropout) is forked: whether the classifier comes from a cache or is
    # trained must not change the random numbers a GAN run draws afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MnistClassifier()
        steps_per_epoch = math.ceil(len(images) / batch_size)
        algorithm = ClassifierTraining(net, lr=lr, total_steps=epochs * steps_per_epoch, dtype=dtype)
        net.train()
        fit(algorithm, ShiftedDigits(images, labels, batch_size), Plan(epochs, steps_per_epoch),
            rngs={"data": torch.Generator().manual_seed(seed)}, desc="MNIST classifier (GAN metrics)")
    return net.eval()
