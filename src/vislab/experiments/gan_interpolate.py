"""``vislab gan interpolate``: strips ``alpha*z1 + (1-alpha)*z2`` from a trained generator.

Writes ``interpolation.png`` (one strip per row, alpha going from 1 to 0) and ``metrics.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config import RunConfig, option
from ..runs import Run


@dataclass
class InterpolateConfig(RunConfig):
    """``vislab gan interpolate``: strips alpha*z1 + (1-alpha)*z2 from a trained generator."""

    run: str | None = option(None, "training run folder (or its generator.pt)")
    pairs: int = option(8, "number of (z1, z2) pairs, one strip (row) each", min=1)
    steps: int = option(10, "images per strip, alpha going from 1 (z1) to 0 (z2)", min=2)
    label: int = option(-1, "cDCGAN: class of every strip (-1 = strip i shows class i mod 10)", min=-1, max=9)
    precision: Literal["bf16", "fp32"] = option("fp32", "precision of the generator")


def interpolation_images(predict, nz: int, conditional: bool, *, pairs: int, steps: int, label: int, seed: int,
                         device: torch.device) -> torch.Tensor:
    """``pairs`` strips of ``steps`` images through ``predict(z, y)``, latents drawn with ``seed``."""
    from ..methods.gan import interpolation_inputs

    z, y = interpolation_inputs(nz, pairs, steps, torch.Generator().manual_seed(seed), conditional=conditional,
                                label=label)
    return predict(z.to(device), None if y is None else y.to(device))


def run_interpolate(cfg: InterpolateConfig) -> int:
    from ..methods.gan import generate
    from ..precision import resolve_precision
    from ..reporting.figures.gan import image_grid
    from .gan_store import load_generator

    with Run("gan-interpolate", cfg) as run:
        g, blob = load_generator(cfg.run, run.device)
        dtype = resolve_precision(cfg.precision, run.device)
        images = interpolation_images(lambda z, y: generate(g, z, y, dtype=dtype), blob["nz"],
                                      blob["model"] == "cdcgan", pairs=cfg.pairs, steps=cfg.steps, label=cfg.label,
                                      seed=cfg.seed, device=run.device)
        image_grid(images, run.path("interpolation.png"), cfg.steps)
        run.metrics.update({"pairs": cfg.pairs, "steps": cfg.steps,
                            "layout": "one strip per row; alpha*z1 + (1-alpha)*z2 with alpha from 1 to 0"})
    return 0
