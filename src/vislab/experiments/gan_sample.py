"""``vislab gan sample``: a grid of samples from a trained generator (cDCGAN: one row per class).

Writes ``samples.png`` and ``metrics.json`` (images, model, layout) into its run folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config import RunConfig, option
from ..runs import Run


@dataclass
class SampleConfig(RunConfig):
    """``vislab gan sample``: a grid from a trained generator."""

    run: str | None = option(None, "training run folder (or its generator.pt) to sample from")
    num: int = option(64, "DCGAN: number of samples in the grid", min=1)
    columns: int = option(10, "cDCGAN: number of noise vectors (columns); rows are the 10 classes", min=1)
    precision: Literal["bf16", "fp32"] = option("fp32", "precision of the generator")


def run_sample(cfg: SampleConfig) -> int:
    from ..methods.gan import generate, grid_inputs
    from ..precision import resolve_precision
    from ..reporting.figures.gan import image_grid
    from .gan_store import load_generator

    with Run("gan-sample", cfg) as run:
        g, blob = load_generator(cfg.run, run.device)
        conditional = blob["model"] == "cdcgan"
        gen = torch.Generator().manual_seed(cfg.seed)
        z, y, nrow = grid_inputs(torch.randn(cfg.columns if conditional else cfg.num, blob["nz"], generator=gen),
                                 conditional)
        images = generate(g, z.to(run.device), None if y is None else y.to(run.device),
                          dtype=resolve_precision(cfg.precision, run.device))
        image_grid(images, run.path("samples.png"), nrow)
        run.metrics.update({"images": len(images), "model": blob["model"],
                            "layout": "rows = classes 0-9, columns = noise vectors" if conditional
                            else f"{nrow} per row"})
    return 0
