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

What is never lost (every check runs before anything on disk changes):

- a checkpoint in ``DIR.partial`` is discarded only with ``--overwrite``; without ``--resume`` the
  run is refused and the message says how to continue it;
- ``--resume`` continues only a run made with the same options (:func:`vislab.config.resume_identity`);
  a changed option is refused by name;
- ``--overwrite`` replaces only a vislab run folder (one with ``manifest.json``) or an empty one.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import __version__, distributed
from .config import check_same_options, config_to_dict, resume_identity
from .errors import MalformedRunError, UserError
from .io import ensure_dir, output_error, save_figure, write_json, writing

PARTIAL_SUFFIX = ".partial"


def resolve_device(name: str = "auto"):
    """``auto`` -> cuda when available, else cpu. Asking for cuda without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or --device auto")
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


def _non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` (or a sub-folder: one per mode of ``vislab adapt``) holds a checkpoint."""
    return folder.is_dir() and any(folder.rglob("checkpoint*"))


def read_run_json(path: str | Path, required: bool = True) -> dict[str, Any]:
    """A run's JSON object (metrics, manifest, config): strict JSON, or older files with bare NaN
    (Python's json reads both). A missing optional file is ``{}``; an unreadable one is a
    :class:`MalformedRunError` naming it."""
    path = Path(path)
    if not required and not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise MalformedRunError(f"{path}: cannot be read as JSON ({e})") from e
    if not isinstance(data, dict):
        raise MalformedRunError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


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
        # Under torchrun rank 0 alone owns the run folder: it checks and opens it, and the other ranks
        # write into a scratch folder of their own that goes at the end (they compute the same things).
        self.resumed = distributed.on_main(self._open)
        if not distributed.is_main():
            self.dir = Path(tempfile.mkdtemp(prefix=f"vislab-rank{distributed.rank()}-"))
        seed_everything(self.seed)
        self._t0 = time.perf_counter()
        self._started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        try:
            self.save_json("config.json", config_to_dict(self.cfg) if dataclasses.is_dataclass(self.cfg) else self.cfg)
        except BaseException as e:  # e.g. a full disk: clean up as for a failure inside the block
            self._failed(e)
            raise
        return self

    def _open(self) -> bool:
        """Check and create the folder; return whether it continues an incomplete run."""
        discard = self._check_folders()  # every refusal happens before anything on disk changes
        resumed = False
        if discard:
            print(f"vislab: discarding the incomplete run left in {self.dir}", file=sys.stderr)
            shutil.rmtree(self.dir)
        elif self.dir.exists():
            resumed = True
        elif self.resume:
            print(f"vislab: nothing to resume in {self.dir}; starting a new run", file=sys.stderr)
        ensure_dir(self.dir, where="--out")
        return resumed

    def _check_folders(self) -> bool:
        """Refuse what must not be replaced (:class:`UserError`); return whether the incomplete run
        in ``self.dir`` is to be discarded."""
        final, partial = self.final_dir, self.dir
        for folder in (final, partial):
            if folder.exists() and not folder.is_dir():
                raise UserError(f"--out {final}: {folder} is a file, not a folder; choose another --out")
        if _non_empty(final):
            if not self.overwrite:
                raise UserError(f"run folder {final} already exists; choose another --out or pass --overwrite")
            if not (final / "manifest.json").is_file():
                raise UserError(f"--overwrite: {final} is not a vislab run folder (no manifest.json) and is not "
                                f"empty; vislab replaces only its own runs: choose another --out or empty it yourself")
        if not partial.exists():
            return False
        if _non_empty(partial) and not (partial / "config.json").is_file():
            raise UserError(f"{partial} is not an incomplete vislab run (no config.json); choose another --out "
                            f"or remove that folder yourself")
        has_checkpoint = _has_checkpoint(partial)
        if self.resume and dataclasses.is_dataclass(self.cfg) and (partial / "config.json").is_file():
            try:
                saved = read_run_json(partial / "config.json")
                check_same_options(saved, resume_identity(self.cfg), f"the incomplete run in {partial}")
            except UserError as e:
                if not self.overwrite:
                    if isinstance(e, MalformedRunError):
                        raise MalformedRunError(f"{e}; the run cannot be resumed: start over with --overwrite") from e
                    raise
                return True  # --resume --overwrite: continue the same run, else start over
        if self.resume:
            return False
        if has_checkpoint and not self.overwrite:
            raise UserError(f"{partial} holds the checkpoint of an interrupted run: continue it with --resume "
                            f"(same options), or discard it with --overwrite")
        return True

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed(exc)
            return
        try:
            self.finish()
        except BaseException as e:
            self._failed(e)
            raise

    def _failed(self, exc: BaseException) -> None:
        """Clean up after ``exc``; re-raise it as an :class:`OutputError` if it is a write failure the user can fix."""
        if self.dir == self.final_dir:  # already renamed: the run is complete, keep it
            return
        if not distributed.is_main():  # a scratch folder (rank 0 keeps the run's checkpoint)
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        # A folder with a checkpoint can be continued with --resume; anything else is useless
        # and would only be mistaken for results, so it goes.
        if not _has_checkpoint(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        elif isinstance(exc, UserError):  # its message says what to do (a corrupt checkpoint: start over)
            print(f"vislab: the checkpoint is kept in {self.dir}", file=sys.stderr)
        else:
            print(f"vislab: run interrupted; its checkpoint is kept in {self.dir}: continue it with the same "
                  f"command and options plus --resume", file=sys.stderr)
        err = output_error(exc, exc.filename if isinstance(exc, OSError) and exc.filename else self.dir, "--out")
        if err is not None:
            raise err from exc

    def finish(self) -> Path:
        from .schemas import SCHEMAS, check_metrics

        if self.experiment in SCHEMAS:  # the one place every metrics.json is checked against its schema
            check_metrics(self.experiment, self.metrics)
        if not distributed.is_main():
            shutil.rmtree(self.dir, ignore_errors=True)
            return self.final_dir
        write_json(self.dir / "metrics.json", self.metrics)
        write_json(self.dir / "manifest.json", self.manifest())
        with writing(self.final_dir, "--out"):
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

        from .precision import resolved_precision_name

        return {
            "experiment": self.experiment,
            "seed": self.seed,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            # resolved, so that runs of one config on CPUs with and without native bf16 tell apart
            "precision": resolved_precision_name(getattr(self.cfg, "precision", "fp32"), self.device),
            "torch_threads": torch.get_num_threads(),
            "versions": library_versions(),
            "git_commit": _git_commit(),
            "command": sys.argv,
            "started": self._started,
            "wall_seconds": round(time.perf_counter() - self._t0, 3),
            "resumed": self.resumed,
            "world_size": distributed.world_size(),  # processes that trained together (torchrun)
        }
