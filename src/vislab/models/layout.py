"""Memory layout across a flatten: the networks run channels-last on the CPU, but their linear
layers read the features in PyTorch's (C, H, W) order so that the weights mean the same thing
whatever the layout."""
from __future__ import annotations

import torch
from torch import nn


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (and not also plainly contiguous, as a tensor
    with one channel or a 1x1 map is)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` channels-last when asked (the layout oneDNN's and cuDNN's convolutions want), else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class _FlattenKeepLayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = is_channels_last(x)
        return x.reshape(len(x), -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


def flatten_keep_layout(x: torch.Tensor) -> torch.Tensor:
    """``x.reshape(N, -1)`` in (C, H, W) order whose gradient comes back in ``x``'s memory layout.

    Why: the plain reshape's gradient of a channels-last ``x`` is channels-first, and the backward
    kernels before it (ReLU, LeakyReLU, max-pool, BatchNorm) then mix two layouts, which is slow:
    ReLU backward on DANN's (128, 48, 7, 7) features took 0.72 ms instead of 0.03 ms."""
    return _FlattenKeepLayout.apply(x)


class Flatten(nn.Module):
    """``nn.Flatten()`` with :func:`flatten_keep_layout`'s gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flatten_keep_layout(x)
