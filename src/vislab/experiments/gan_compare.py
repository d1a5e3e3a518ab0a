"""``vislab gan compare``: train the course's variants of the default run and tabulate them.

The run folder OUT holds one training run folder per variant (``OUT/<variant>``, a complete
``vislab gan`` run) beside ``comparison.md``, ``comparison.json`` and ``metrics.json`` (``variants``:
the table's rows). Finished variants are reused: a later compare into the same OUT (same options,
other ``--variants``) reopens it as ``OUT.partial`` and trains only the variants it lacks
(``--overwrite`` retrains them all). ``OUT.partial/checkpoint.json`` lists the finished variants,
so an interrupted compare keeps them and the next one continues.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import RunConfig, build_config, check_same_options, option, resume_identity
from ..errors import UserError
from ..io import write_json, write_text
from ..reporting.tables import markdown_table
from ..runs import PARTIAL_SUFFIX, Run, read_run_json
from .gan import GanConfig, run_train

# The course's experiments as named variants of the default training run.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "minimax": {"g_loss": "minimax"},
    "nz10": {"nz": 10},
    "nz1000": {"nz": 1000},
    "ngf64": {"ngf": 64, "ndf": 64},
    "ngf16": {"ngf": 16, "ndf": 16},
    "init-default": {"init": "default"},
    "lr-equal": {"lr_g": 2e-4},
    "size64": {"image_size": 64},
}


@dataclass
class CompareConfig(RunConfig):
    """``vislab gan compare``: train named variants (each a run folder OUT/<variant>) and tabulate them."""

    data_root: str | None = option(None, "folder with the MNIST IDX files (default: download into the vislab cache)",
                                   resume_safe=True)
    model: Literal["dcgan", "cdcgan"] = option("dcgan", "model of every variant")
    variants: list[str] = option(["default", "minimax", "nz10", "nz1000"],
                                 f"variants to train (finished ones are reused): {', '.join(VARIANTS)}",
                                 resume_safe=True)
    epochs: int = option(5, "epochs of every variant", min=1)
    batch_size: int = option(128, "images per batch of every variant", min=1)
    eval_samples: int = option(10000, "images for FID / KID", min=2)
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "precision of every variant (see vislab gan --help)")
    train_size: int = option(0, "use only the first N training images (0 = all)", min=0)
    resume: bool = option(True, "continue the compare left in OUT.partial by an interrupted one (its finished "
                                "variants are kept)")


def _finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file()


def _reopen(out: Path, cfg: CompareConfig) -> None:
    """Make the finished compare in ``out`` the incomplete run ``out.partial`` again, for the Run to
    continue (checked first: nothing moves unless it can be continued)."""
    partial = Path(str(out) + PARTIAL_SUFFIX)
    if not (out.is_dir() and any(out.iterdir())):
        return
    manifest = read_run_json(out / "manifest.json", required=False)
    if manifest.get("experiment") != "gan-compare" or not (out / "config.json").is_file():
        raise UserError(f"--out {out}: not a folder written by `vislab gan compare`; choose another --out "
                        "(or replace it with --overwrite)")
    check_same_options(read_run_json(out / "config.json"), resume_identity(cfg), f"the comparison in {out}")
    if partial.exists():
        raise UserError(f"--out {out}: both {out} and {partial} (an interrupted compare) exist; remove one")
    os.replace(out, partial)


def _record_finished(run: Run) -> None:
    """``checkpoint.json``: what an interrupted compare leaves to the next one (and why Run keeps it)."""
    write_json(run.path("checkpoint.json"),
               {"finished": sorted(p.name for p in run.dir.iterdir() if p.is_dir() and _finished(p))})


def _variant_config(cfg: CompareConfig, name: str, folder: Path) -> GanConfig:
    return build_config(GanConfig, dict(
        VARIANTS[name], model=cfg.model, data_root=cfg.data_root, epochs=cfg.epochs, batch_size=cfg.batch_size,
        eval_samples=cfg.eval_samples, precision=cfg.precision, train_size=cfg.train_size, seed=cfg.seed,
        device=cfg.device, out=str(folder),
        overwrite=cfg.overwrite, resume=Path(str(folder) + PARTIAL_SUFFIX).exists()))


COMPARISON_COLUMNS = ["variant", "g_loss", "nz", "ngf/ndf", "lr_d/lr_g", "init", "size", "epochs", "fid",
                      "fid_real_baseline", "kid", "conditional_accuracy", "loss_d", "loss_g", "d_x", "d_g_z",
                      "train_seconds"]


def run_compare(cfg: CompareConfig) -> int:
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    cfg = dataclasses.replace(cfg, out=cfg.out or "runs/gan-compare")
    out = Path(cfg.out)
    if cfg.resume and not cfg.overwrite:
        _reopen(out, cfg)
    with Run("gan-compare", cfg, resume=cfg.resume and Path(str(out) + PARTIAL_SUFFIX).exists()) as run:
        _record_finished(run)
        folders = {}
        for name in cfg.variants:
            folders[name] = folder = run.dir / name
            if _finished(folder) and not cfg.overwrite:
                print(f"vislab gan compare: reusing the finished run {out / name}")
                continue
            print(f"vislab gan compare: training variant {name} -> {out / name}")
            run_train(_variant_config(cfg, name, folder))
            _record_finished(run)
        rows = comparison_rows(folders)
        table = comparison_markdown(rows)
        write_text(run.path("comparison.md"), table)
        write_json(run.path("comparison.json"), rows)
        run.path("checkpoint.json").unlink()
        run.metrics["variants"] = rows
        print(table)
    return 0


def comparison_rows(folders: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per finished run folder: its settings and its numbers."""
    rows = []
    for name, folder in folders.items():
        m = read_run_json(folder / "metrics.json")
        c = read_run_json(folder / "config.json")
        last = m.get("last_epoch_mean", {})
        rows.append({
            "variant": name, "g_loss": c["g_loss"], "nz": c["nz"], "ngf/ndf": f"{c['ngf']}/{c['ndf']}",
            "lr_d/lr_g": f"{c['lr_d']:g}/{c['lr_g']:g}", "init": c["init"], "size": c["image_size"],
            "epochs": c["epochs"], "fid": m["fid"], "fid_real_baseline": m["fid_real_baseline"], "kid": m["kid"],
            "conditional_accuracy": m.get("conditional_accuracy"),
            "loss_d": last.get("loss_d"), "loss_g": last.get("loss_g"), "d_x": last.get("d_x"),
            "d_g_z": last.get("d_g_z"), "train_seconds": m.get("train_seconds"),
        })
    return rows


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table; columns no variant has a value for (e.g. conditional_accuracy of
    DCGANs) are left out."""
    cols = [c for c in COMPARISON_COLUMNS if any(r.get(c) is not None for r in rows)]
    return markdown_table(rows, cols) + "\n"
