"""DCGAN (Radford et al. 2016) and conditional DCGAN (Mirza & Osindero 2014) for 1-channel digits.

Architectures exactly as in SPEC Part D (32x32 images in [-1, 1], z ~ N(0, I) of shape (N, nz)):

* :class:`Generator` ``(N, nz) -> (N, 1, 32, 32)``: ConvT(nz->4ngf, 4,1,0), ConvT(4ngf->2ngf, 4,2,1),
  ConvT(2ngf->ngf, 4,2,1), each without bias + BatchNorm + ReLU; ConvT(ngf->1, 4,2,1) + Tanh
  (spatial sizes 1 -> 4 -> 8 -> 16 -> 32).
* :class:`Discriminator` ``(N, 1, 32, 32) -> (N,)`` probabilities: Conv(1->ndf), Conv(ndf->2ndf),
  Conv(2ndf->4ndf), each 4x4 stride 2 pad 1 without bias + BatchNorm + LeakyReLU(0.2);
  Conv(4ndf->1, 4,1,0) + Sigmoid.
* :class:`CondGenerator` / :class:`CondDiscriminator`: the cDCGAN, y one-hot of size 10 entering
  through its own branch in both networks. With ngf = ndf = 32 the widths are the SPEC's
  (G: 256 + 256 -> 256 -> 128 -> 1; D: 64 + 64 -> 256 -> 512 -> 1).

``image_size=64`` adds one block to each network (one more doubling of the spatial size in G,
one more halving in D, the widest layer doubled), everything else unchanged.

The discriminators keep the Sigmoid of the SPEC in ``forward`` but also expose ``logits(...)``:
the training losses use the logits (``binary_cross_entropy_with_logits``) because BCE on a
probability that rounded to 0 or 1 (easy in bf16) gives infinite losses and NaN gradients.

Parameter counts (SPEC defaults, nz = 100, ngf = ndf = 32, BatchNorm affine parameters counted):
G 369,600 and D 166,848 -- derived by hand in ``tests/test_gan.py``.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .layout import flatten_keep_layout, is_channels_last

NUM_CLASSES = 10


def _n_blocks(image_size: int) -> int:
    """Number of stride-2 blocks for a square image of ``image_size`` (32 -> 3, 64 -> 4)."""
    if image_size not in (32, 64):
        raise ValueError(f"image_size={image_size}: use 32 or 64")
    return int(math.log2(image_size)) - 2


class _ProjectT(nn.ConvTranspose2d):
    """``ConvTranspose2d(cin, cout, 4, 1, 0)`` applied to a 1x1 input is a matrix product
    ``(N, cin) @ (cin, cout*16)``; oneDNN's convolution is several times slower than that matmul
    on CPU for this shape, so the 1x1 case is computed as one (same parameters, same result)."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if x.shape[-2:] != (1, 1) or self.bias is not None or output_size is not None:
            return super().forward(x, output_size)
        n, k = x.shape[0], self.kernel_size
        out = x.reshape(n, self.in_channels) @ self.weight.reshape(self.in_channels, -1).to(x.dtype)
        out = out.reshape(n, self.out_channels, *k)
        # the layers after it take the network's layout: mixing layouts makes their kernels slow
        return out.contiguous(memory_format=torch.channels_last) if is_channels_last(self.weight) else out


class _HeadConv(nn.Conv2d):
    """The discriminator's last ``Conv2d(cin, 1, 4, 1, 0)`` sees a 4x4 map, i.e. it is a dot product of
    the flattened map with the flattened kernel; computed as a matmul for speed (same parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.kernel_size or self.bias is not None:
            return super().forward(x)
        w = self.weight.to(x.dtype)
        # flatten in the kernel's (C, kh, kw) order whatever the memory format of x
        out = flatten_keep_layout(x) @ w.reshape(w.shape[0], -1).t()
        return out.reshape(x.shape[0], w.shape[0], 1, 1)


def _up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
    conv = _ProjectT(cin, cout, 4, 1, 0, bias=False) if first else nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _down(cin: int, cout: int, bn: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class Generator(nn.Module):
    """DCGAN generator: ``(N, nz)`` or ``(N, nz, 1, 1)`` noise -> ``(N, channels, S, S)`` in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 32, channels: int = 1, image_size: int = 32):
        super().__init__()
        n = _n_blocks(image_size)  # 3 hidden blocks for 32x32: 4ngf, 2ngf, ngf
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]
        layers = _up(nz, widths[0], first=True)
        for cin, cout in zip(widths, widths[1:]):
            layers += _up(cin, cout)
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz, self.image_size, self.channels = nz, image_size, channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """DCGAN discriminator: ``(N, channels, S, S)`` -> ``(N,)`` probability that the image is real."""

    def __init__(self, ndf: int = 32, channels: int = 1, image_size: int = 32):
        super().__init__()
        n = _n_blocks(image_size)
        widths = [ndf * 2 ** i for i in range(n)]
        layers = _down(channels, widths[0])
        for cin, cout in zip(widths, widths[1:]):
            layers += _down(cin, cout)
        layers.append(_HeadConv(widths[-1], 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def one_hot(y: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Class indices ``(N,)`` -> float one-hot ``(N, num_classes)`` (already one-hot input passes)."""
    if y.ndim == 2:
        return y.float()
    if y.dtype.is_floating_point or y.ndim != 1:
        raise ValueError(f"labels must be (N,) integer class indices or (N, {num_classes}) one-hot, got "
                         f"{tuple(y.shape)} {y.dtype}")
    return nn.functional.one_hot(y, num_classes).float()


class CondGenerator(nn.Module):
    """cDCGAN generator: noise ``(N, nz)`` and labels ``(N,)`` -> ``(N, channels, S, S)``."""

    def __init__(self, nz: int = 100, ngf: int = 32, channels: int = 1, image_size: int = 32,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        n = _n_blocks(image_size)
        # 32x32: branches of 8ngf each (256), concat 16ngf (512) -> 8ngf -> 4ngf -> 1
        branch = ngf * 2 ** (n)
        self.z_branch = nn.Sequential(*_up(nz, branch, first=True))
        self.y_branch = nn.Sequential(*_up(num_classes, branch, first=True))
        widths = [2 * branch // 2 ** i for i in range(n)]  # 512, 256, 128 (32x32)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            layers += _up(cin, cout)
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz, self.image_size, self.channels, self.num_classes = nz, image_size, channels, num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        yh = one_hot(y, self.num_classes).to(z.dtype)
        h = torch.cat([self.z_branch(z.reshape(z.shape[0], self.nz, 1, 1)),
                       self.y_branch(yh.reshape(yh.shape[0], self.num_classes, 1, 1))], dim=1)
        return self.net(h)


class CondDiscriminator(nn.Module):
    """cDCGAN discriminator: images ``(N, channels, S, S)`` and labels ``(N,)`` -> ``(N,)`` probabilities.

    The label enters as a one-hot map expanded to ``(N, 10, S, S)``; both branches are a plain
    Conv + LeakyReLU (with bias, no BatchNorm, as in the SPEC) before being concatenated."""

    def __init__(self, ndf: int = 32, channels: int = 1, image_size: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        n = _n_blocks(image_size)
        branch = 2 * ndf  # 64 each for ndf = 32
        self.x_branch = nn.Sequential(*_down(channels, branch, bn=False))
        self.y_branch = nn.Sequential(*_down(num_classes, branch, bn=False))
        widths = [2 * branch * 2 ** i for i in range(n)]  # 128, 256, 512 (32x32)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            layers += _down(cin, cout)
        layers.append(_HeadConv(widths[-1], 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes

    def logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        yh = one_hot(y, self.num_classes).to(x.dtype)
        ymap = yh[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = torch.cat([self.x_branch(x), self.y_branch(ymap)], dim=1)
        return self.net(h).reshape(x.shape[0])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x, y))


def init_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2016, sec. 4): conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02),
    bias 0. Conv biases (only where no BatchNorm follows) start at 0. Use as ``net.apply(init_weights)``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_gan(model: Literal["dcgan", "cdcgan"] = "dcgan", *, nz: int = 100, ngf: int = 32, ndf: int = 32,
              channels: int = 1, image_size: int = 32,
              init: Literal["custom", "default"] = "custom") -> tuple[nn.Module, nn.Module]:
    """``(G, D)`` for ``model``; ``init='custom'`` applies :func:`init_weights`, ``'default'`` keeps PyTorch's."""
    if model == "dcgan":
        g: nn.Module = Generator(nz, ngf, channels, image_size)
        d: nn.Module = Discriminator(ndf, channels, image_size)
    elif model == "cdcgan":
        g = CondGenerator(nz, ngf, channels, image_size)
        d = CondDiscriminator(ndf, channels, image_size)
    else:
        raise ValueError(f"model {model!r}: use 'dcgan' or 'cdcgan'")
    if init == "custom":
        g.apply(init_weights)
        d.apply(init_weights)
    elif init != "default":
        raise ValueError(f"init {init!r}: use 'custom' or 'default'")
    return g, d


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
