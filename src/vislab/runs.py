"""Run folders: every experiment writes one folder, atomically.

Layout of a finished run (``runs/<experiment>/<timestamp>`` or exactly ``--out DIR``)::

    config.json     the resolved config
    metrics.json    the numbers (what checks and reports read)
    manifest.json   seed, library versions, device, precision, git commit, command line, timings
    *.png           figures (and any other artefacts the experiment writes)

While it runs, the folder is ``DIR.partial``; it is renamed to ``DIR`` only after everything,
the manifest last, has been written, so an interrupted run never looks complete. Training
experiments keep their checkpoints (``checkpoint*``) in ``DIR.partial`` so that ``--resume`` can
continue; a failed run without a checkpoint leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import config_to_dict
from .io import save_figure, write_json

PARTIAL_SUFFIX = ".partial"


def resolve_device(name: str = "auto"):
    """``auto`` -> cuda when available, else cpu. Asking for cuda without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    versions: dict[str, str | None] = {"python": platform.python_version(), "vislab": __version__}
    for pkg in ("torch", "torchvision", "timm", "scikit-learn", "torchmetrics", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / experiment / stamp
    path, n = base, 1
    while path.exists() or path.with_name(path.name + PARTIAL_SUFFIX).exists():
        path, n = base.with_name(f"{stamp}-{n}"), n + 1
    return path


class Run:
    """One experiment run writing into its folder. Use as a context manager::

        with Run("inspect", cfg) as run:
            run.metrics["params_total"] = n
            run.save_figure(fig, "layers.png")
    """

    def __init__(self, experiment: str, cfg: Any, *, resume: bool = False, overwrite: bool | None = None):
        self.experiment = experiment
        self.cfg = cfg
        out = getattr(cfg, "out", None)
        self.final_dir = Path(out) if out else default_run_dir(experiment)
        self.dir = self.final_dir.with_name(self.final_dir.name + PARTIAL_SUFFIX)
        self.overwrite = getattr(cfg, "overwrite", False) if overwrite is None else overwrite
        self.resume = resume
        self.metrics: dict[str, Any] = {}
        self.seed = getattr(cfg, "seed", 0)
        self.device = resolve_device(getattr(cfg, "device", "auto"))
        self.resumed = False

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        if self.final_dir.exists() and any(self.final_dir.iterdir()) and not self.overwrite:
            raise FileExistsError(
                f"run folder {self.final_dir} already exists; choose another --out or pass --overwrite"
            )
        if self.dir.exists():
            if self.resume:
                self.resumed = True
            else:
                print(f"vislab: discarding the incomplete run left in {self.dir} (use --resume to continue it)",
                      file=sys.stderr)
                shutil.rmtree(self.dir)
        elif self.resume:
            print(f"vislab: nothing to resume in {self.dir}; starting a new run", file=sys.stderr)
        self.dir.mkdir(parents=True, exist_ok=True)
        seed_everything(self.seed)
        self._t0 = time.perf_counter()
        self._started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_json(self.dir / "config.json", config_to_dict(self.cfg) if dataclasses.is_dataclass(self.cfg) else self.cfg)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            # A folder with a checkpoint can be continued with --resume; anything else is useless
            # and would only be mistaken for results, so it goes.
            if any(self.dir.glob("checkpoint*")):
                print(f"vislab: run interrupted; its checkpoint is kept in {self.dir} (continue with --resume)",
                      file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
            return
        self.finish()

    def finish(self) -> Path:
        write_json(self.dir / "metrics.json", self.metrics)
        write_json(self.dir / "manifest.json", self.manifest())
        if self.final_dir.exists():  # only reachable with --overwrite (checked on entry)
            trash = self.final_dir.with_name(self.final_dir.name + f".old-{os.getpid()}")
            os.replace(self.final_dir, trash)
            os.replace(self.dir, self.final_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.dir, self.final_dir)
        self.dir = self.final_dir
        print(f"vislab: wrote {self.final_dir}", file=sys.stderr)
        return self.final_dir

    # -- outputs -------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """Path of an artefact inside the run folder (parents created)."""
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_figure(self, fig: Any, name: str) -> Path:
        return save_figure(fig, self.path(name))

    def save_json(self, name: str, obj: Any) -> Path:
        return write_json(self.path(name), obj)

    def manifest(self) -> dict[str, Any]:
        import torch

        return {
            "experiment": self.experiment,
            "seed": self.seed,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            "precision": getattr(self.cfg, "precision", "fp32"),
            "torch_threads": torch.get_num_threads(),
            "versions": library_versions(),
            "git_commit": _git_commit(),
            "command": sys.argv,
            "started": self._started,
            "wall_seconds": round(time.perf_counter() - self._t0, 3),
            "resumed": self.resumed,
        }
