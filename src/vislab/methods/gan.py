"""GAN objectives (Goodfellow et al. 2014) and one alternating DCGAN training step.

All losses take the discriminator's *logits* ``l`` (shape ``(N,)``), so ``D(x) = sigmoid(l)``, and
return a scalar float32 mean over the batch:

* discriminator (maximise ``log D(x) + log(1 - D(G(z)))``), as a loss to minimise::

      L_D = -mean(log sigmoid(l_real)) - mean(log(1 - sigmoid(l_fake)))
          = BCE(l_real, 1) + BCE(l_fake, 0)

* generator, non-saturating (maximise ``log D(G(z))``, the practical choice of the paper)::

      L_G = -mean(log sigmoid(l_fake)) = BCE(l_fake, 1)

* generator, "true" minimax (minimise ``log(1 - D(G(z)))``; saturates when D rejects the fakes)::

      L_G = mean(log(1 - sigmoid(l_fake))) = -BCE(l_fake, 0)

Computing from logits (``binary_cross_entropy_with_logits``, i.e. softplus) rather than from the
Sigmoid output keeps the losses finite when D is confident, and the losses are always evaluated in
float32 even when the networks run under bf16 autocast.

:class:`GAN` is the training as an algorithm object for :func:`vislab.training.fit` (``update`` /
``predict`` / ``state``); the remaining functions build the generator inputs of the figures (class
grids, latent interpolations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import autocast

GLoss = Literal["non-saturating", "minimax"]


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean log D(x) - mean log(1 - D(G(z)))`` from logits ``(N,)``, ``(M,)``."""
    return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)


def generator_loss(fake_logits: torch.Tensor, kind: GLoss = "non-saturating") -> torch.Tensor:
    """Non-saturating ``-mean log D(G(z))`` or minimax ``mean log(1 - D(G(z)))`` from logits ``(N,)``."""
    if kind == "non-saturating":
        return _bce(fake_logits, 1.0)
    if kind == "minimax":
        return -_bce(fake_logits, 0.0)
    raise ValueError(f"generator loss {kind!r}: use 'non-saturating' or 'minimax'")


def _g(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return g(z) if y is None else g(z, y)


def _d(d: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return d.logits(x) if y is None else d.logits(x, y)


def train_step(g: nn.Module, d: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               real: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None, *,
               g_loss: GLoss = "non-saturating", dtype: torch.dtype | None = None,
               update_d: bool = True, update_g: bool = True, d_sees_label: bool = True) -> dict[str, float]:
    """One DCGAN iteration (Radford et al. 2016 / the PyTorch DCGAN recipe): update D on a real batch
    ``real (N, C, S, S)`` and a fake batch ``G(z)`` (``z (N, nz)``, labels ``y (N,)`` for the
    conditional model, the same labels for real and fake), then update G on the same fakes.

    Real and fake batches go through D separately so that BatchNorm statistics are per-source, as
    in the reference recipe. Returns ``loss_d``, ``loss_g``, ``d_x`` (mean D(x)), ``d_g_z`` (mean
    D(G(z)) seen by the D update) and ``d_g_z_after`` (after it, seen by the G update). ``dtype``:
    the autocast dtype of the networks (:func:`vislab.precision.resolve_precision`; None = float32).

    ``update_d`` / ``update_g`` False: that network is not updated (its losses are still computed and
    returned; ablations of SPEC D1). ``d_sees_label`` False: D gets no labels (a cDCGAN whose D has no
    y branch). ``g_grad_norm``: the L2 norm of G's whole gradient just before its step (0 when G is
    not updated).
    """
    dev = real.device
    y_d = y if d_sees_label else None
    # -- D: maximise log D(x) + log(1 - D(G(z)))
    opt_d.zero_grad(set_to_none=True)
    with autocast(dev, dtype):
        fake = _g(g, z, y)
        real_logits = _d(d, real, y_d)
        fake_logits = _d(d, fake.detach(), y_d)
    loss_d = discriminator_loss(real_logits, fake_logits)
    if update_d:
        loss_d.backward()
        opt_d.step()
    # -- G: non-saturating or minimax loss on the same fakes, through the updated D
    opt_g.zero_grad(set_to_none=True)
    d.requires_grad_(False)  # G's backward pass needs D's input gradients only, not its weight gradients
    try:
        with torch.set_grad_enabled(update_g), autocast(dev, dtype):
            fake_logits2 = _d(d, fake, y_d)
        loss_g = generator_loss(fake_logits2, g_loss)
        if update_g:
            loss_g.backward()
    finally:
        d.requires_grad_(True)
    g_grad_norm = 0.0
    if update_g:
        g_grad_norm = _total_grad_norm(g)
        opt_g.step()
    with torch.no_grad():
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_x": torch.sigmoid(real_logits.float()).mean().item(),
            "d_g_z": torch.sigmoid(fake_logits.float()).mean().item(),
            "d_g_z_after": torch.sigmoid(fake_logits2.float()).mean().item(),
            "g_grad_norm": g_grad_norm,
        }


def _total_grad_norm(net: nn.Module) -> float:
    """L2 norm of all of ``net``'s parameter gradients together (read only: nothing is clipped)."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def make_optimizers(g: nn.Module, d: nn.Module, lr_g: float = 5e-4, lr_d: float = 2e-4,
                    betas: tuple[float, float] = (0.5, 0.999)) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G and D with the DCGAN betas (beta1 = 0.5)."""
    # fused: one kernel for all parameters instead of a Python loop (CPU and CUDA support it)
    return (torch.optim.Adam(g.parameters(), lr=lr_g, betas=betas, fused=True),
            torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas, fused=True))


def interpolate_latents(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    """``alpha * z1 + (1 - alpha) * z2`` for ``alpha`` = 1, ..., 0 in ``steps`` values:
    ``(nz,)`` x 2 -> ``(steps, nz)``; the strip goes from z1 to z2."""
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps, got {steps}")
    alpha = torch.linspace(1.0, 0.0, steps, dtype=z1.dtype, device=z1.device)[:, None]
    return alpha * z1[None] + (1 - alpha) * z2[None]


@torch.no_grad()
def generate(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """``G(z[, y])`` in eval mode (BatchNorm running statistics), float32, in batches; G's mode is
    restored afterwards."""
    was_training = g.training
    g.eval()
    out = []
    try:
        for i in range(0, len(z), batch_size):
            with autocast(z.device, dtype):
                out.append(_g(g, z[i:i + batch_size], None if y is None else y[i:i + batch_size]).float())
    finally:
        g.train(was_training)
    return torch.cat(out)


class GAN:
    """DCGAN or cDCGAN training (the networks of :func:`vislab.models.dcgan.build_gan`) as an
    algorithm object: ``update((real, z, y))`` is one :func:`train_step` (``y`` None for the
    unconditional model), ``predict(z[, y])`` generates, ``state()`` / ``load_state()`` hold both
    networks and both optimisers."""

    def __init__(self, g: nn.Module, d: nn.Module, *, lr_g: float = 5e-4, lr_d: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), g_loss: GLoss = "non-saturating",
                 dtype: torch.dtype | None = None, train_only: Literal["both", "d", "g"] = "both",
                 d_sees_label: bool = True):
        self.g, self.d = g, d
        self.opt_g, self.opt_d = make_optimizers(g, d, lr_g=lr_g, lr_d=lr_d, betas=betas)
        self.g_loss, self.dtype = g_loss, dtype
        self.update_d, self.update_g = train_only in ("both", "d"), train_only in ("both", "g")
        self.d_sees_label = d_sees_label

    def update(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> dict[str, float]:
        real, z, y = batch
        return train_step(self.g, self.d, self.opt_g, self.opt_d, real, z, y, g_loss=self.g_loss, dtype=self.dtype,
                          update_d=self.update_d, update_g=self.update_g, d_sees_label=self.d_sees_label)

    def predict(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return generate(self.g, z, y, dtype=self.dtype)

    def state(self) -> dict:
        return {"g": self.g.state_dict(), "d": self.d.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict()}

    def load_state(self, state: dict) -> None:
        self.g.load_state_dict(state["g"]), self.d.load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"]), self.opt_d.load_state_dict(state["opt_d"])


@dataclass
class Digits:
    """The training images (on the device) as :class:`vislab.training.EpochData`: a permutation per
    epoch, then batches of ``(real, z, labels or None)`` with fresh noise, all from ``rngs["data"]``."""

    x: torch.Tensor  # (N, 1, S, S) in [-1, 1]
    labels: torch.Tensor | None  # (N,) for the cDCGAN
    batch_size: int
    nz: int

    def order(self, rngs: dict[str, torch.Generator]) -> torch.Tensor:
        return torch.randperm(len(self.x), generator=rngs["data"])

    def batch(self, order: torch.Tensor, i: int, rngs: dict[str, torch.Generator]) -> tuple:
        idx = order[i * self.batch_size:(i + 1) * self.batch_size].to(self.x.device)
        real = self.x[idx].contiguous(memory_format=torch.channels_last)
        z = torch.randn(len(idx), self.nz, generator=rngs["data"]).to(self.x.device)
        return real, z, None if self.labels is None else self.labels[idx]


class BatchHistory:
    """Per-batch ``update`` stats (losses, D(x), D(G(z))), checkpointed with the run."""

    KEYS = ("loss_d", "loss_g", "d_x", "d_g_z", "d_g_z_after", "g_grad_norm")

    def __init__(self):
        self.values: dict[str, list[float]] = {k: [] for k in self.KEYS}

    def add(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.values[k].append(v)

    def state(self) -> dict:
        return self.values

    def load_state(self, state: dict) -> None:
        self.values = state


def grid_inputs(z: torch.Tensor, conditional: bool,
                num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Inputs of a sample grid and its images per row. cDCGAN: ``num_classes`` rows x ``len(z)``
    columns, row k = class k, column j = z[j] (make_grid fills rows first); DCGAN: the ``z`` in a
    square-ish grid."""
    if conditional:
        cols = len(z)
        return z.repeat(num_classes, 1), torch.arange(num_classes).repeat_interleave(cols), cols
    return z, None, max(1, round(math.sqrt(len(z))))


def interpolation_inputs(nz: int, pairs: int, steps: int, gen: torch.Generator, *, conditional: bool,
                         label: int = -1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs of ``pairs`` strips of ``steps`` images from ``z1`` to ``z2`` (both drawn from ``gen``):
    ``(pairs * steps, nz)`` latents, and for the cDCGAN the class of each image (strip i shows class
    ``label``, or i mod 10 when ``label`` is -1)."""
    z1, z2 = torch.randn(pairs, nz, generator=gen), torch.randn(pairs, nz, generator=gen)
    z = torch.cat([interpolate_latents(z1[i], z2[i], steps) for i in range(pairs)])
    if not conditional:
        return z, None
    cls = torch.arange(pairs) % 10 if label < 0 else torch.full((pairs,), label)
    return z, cls.repeat_interleave(steps)
