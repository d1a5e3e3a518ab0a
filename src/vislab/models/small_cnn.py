"""A small CNN trained from scratch: the baseline that transfer learning is compared with (question A5:
why not train a big network directly on 1,500 images?).

``blocks`` times (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), the width doubling from ``width`` at each
block, then global average pooling and a linear layer. Input: (N, 3, H, W) pixels in [0, 1], H and W
at least ``2 ** blocks`` (96 or 128 px keeps a CPU epoch of 15-Scene short); output (N, n_classes)
logits. With the defaults (4 blocks, width 32) it has about 0.4 M parameters, VGG16 has 138 M.
"""
from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 32, blocks: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for b in range(blocks):
            out = width * 2 ** b
            # no conv bias: the BatchNorm that follows has its own shift
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.feature_dim = channels
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x):
        # pixels in [0, 1] -> [-1, 1], centred like the normalised input of the ImageNet networks
        return self.head(self.features(2 * x - 1))

