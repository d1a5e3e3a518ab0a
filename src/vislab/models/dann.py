"""The DANN networks for 28x28 digits (SPEC Part C; Ganin & Lempitsky 2015, MNIST experiment).

- feature extractor G_f: Conv(3->32, 5x5, pad 2) ReLU MaxPool2 -> Conv(32->48, 5x5, pad 2) ReLU
  MaxPool2 -> flatten: (N, 3, 28, 28) -> (N, 2352);
- label classifier G_y: FC 2352->100 ReLU FC 100->100 ReLU FC 100->10: (N, 2352) -> (N, 10);
- domain classifier G_d: FC 2352->100 ReLU FC 100->1: (N, 2352) -> (N,) logits (source = 1).

The Gradient Reversal Layer is not part of the network: the method (``vislab.methods.dann``)
puts it between G_f and G_d, so the same network also serves the source-only and oracle baselines.
"""
from __future__ import annotations

import torch
from torch import nn

from .layout import Flatten

FEATURE_DIM = 48 * 7 * 7


def feature_extractor(in_channels: int = 3) -> nn.Sequential:
    # MaxPool before ReLU: the same function as the SPEC's Conv-ReLU-MaxPool (ReLU is monotonic,
    # so max(relu(x)) = relu(max(x))), but ReLU then runs on a quarter of the values. Measured with
    # bf16 autocast + channels_last, batch 64 + 64 (benchmarks/dann_throughput.py, two runs): 73.6
    # and 67.9 steps/s against 63.4 and 66.1 for ReLU-then-pool; an in-place ReLU before the pool
    # was far slower (46 vs 94 in a separate probe).
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Conv2d(32, 48, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        Flatten(),
    )


def label_classifier(num_classes: int = 10, hidden: int = 100) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def domain_classifier(hidden: int = 100) -> nn.Sequential:
    return nn.Sequential(nn.Linear(FEATURE_DIM, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1), nn.Flatten(0))


class DANNNet(nn.Module):
    """The three parts; ``forward(x)`` gives class logits (N, 10) only (what ``predict`` needs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.features = feature_extractor(in_channels)
        self.classifier = label_classifier(num_classes)
        self.domain = domain_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
