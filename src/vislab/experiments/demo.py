"""``vislab demo``: the offline tour -- every experiment that needs no download, then one report.

Offline it runs Part A's inspection and Part B's saliency, fooling and class visualisation on
photos that ship with the installed packages (scikit-learn's sample photos; the 20 labelled
ImageNet photos of the foolbox package when the ``offline`` extra is installed). Given local data
(``--mnist DIR``, ``--scenes DIR``) it adds short runs of transfer learning, domain adaptation and
GANs. Each experiment writes its own run folder under the demo folder; ``report.html`` ties them up.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

from ..config import RunConfig, add_command, option
from ..io import write_json
from ..reporting.html import ReportConfig, write_report
from ..runs import default_run_dir


@dataclasses.dataclass
class DemoConfig(RunConfig):
    model: str = option("efficientnet_lite0", "backbone of parts A and B (the default works offline)")
    mnist: str | None = option(None, "folder with the MNIST IDX files: adds a short DANN and a short DCGAN run")
    backgrounds: str | None = option(None, "background photos for MNIST-M (e.g. BSDS500 train); default: photos "
                                           "shipped with scikit-learn / scikit-image")
    scenes: str | None = option(None, "15-Scene folder (train/<class>/, test/<class>/): adds transfer learning")
    classviz_iterations: int = option(200, "class-visualisation steps (the course's 200)")


def register(subparsers) -> None:
    add_command(subparsers, "demo", DemoConfig, demo,
                help="run every offline experiment briefly and write one HTML report (a few minutes on a CPU)")


def _sample_photos(folder: Path) -> list[str]:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("china.jpg", "flower.jpg"):
        Image.fromarray(load_sample_image(name)).save(folder / name)
        paths.append(str(folder / name))
    return paths


def demo(cfg: DemoConfig) -> int:
    root = Path(cfg.out) if cfg.out else default_run_dir("demo")
    if root.exists() and any(root.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"demo folder {root} already exists; choose another --out or pass --overwrite")
    common = dict(seed=cfg.seed, device=cfg.device, overwrite=cfg.overwrite)
    have_foolbox = importlib.util.find_spec("foolbox") is not None
    steps = _steps(cfg, root, common, have_foolbox)
    timings, status = {}, 0
    for name, fn, step_cfg in steps:
        print(f"\n=== vislab demo: {name} ===", file=sys.stderr)
        t0 = time.perf_counter()
        status = max(status, int(fn(step_cfg) or 0))
        timings[name] = round(time.perf_counter() - t0, 1)
    write_json(root / "timings.json", timings)
    write_report(ReportConfig(runs=[str(root)], output=str(root / "report.html")))
    print("\n" + "\n".join(f"{k:>10}: {v:6.1f} s" for k, v in timings.items()), file=sys.stderr)
    return status


def _steps(cfg: DemoConfig, root: Path, common: dict, have_foolbox: bool) -> list:
    from .inspect import InspectConfig, inspect
    from .visualize import ClassVizConfig, FoolConfig, SaliencyConfig, classviz, fool_images, saliency

    photos = _sample_photos(root / "photos")
    samples = dict(samples="foolbox") if have_foolbox else dict(images=photos)
    steps = [
        ("inspect", inspect, InspectConfig(out=str(root / "inspect"), model=cfg.model, images=photos, **common)),
        ("saliency", saliency, SaliencyConfig(out=str(root / "saliency"), model=cfg.model, **samples, **common)),
        ("fool", fool_images, FoolConfig(out=str(root / "fool"), model=cfg.model, **samples, **common)),
        ("classviz", classviz, ClassVizConfig(out=str(root / "classviz"), model=cfg.model,
                                              iterations=cfg.classviz_iterations, **common)),
    ]
    if cfg.scenes:
        from .transfer import TransferConfig, transfer

        steps.append(("transfer", transfer, TransferConfig(out=str(root / "transfer"), data=cfg.scenes,
                                                           model=cfg.model, **common)))
    if cfg.mnist:
        from .adapt import AdaptConfig, run_adapt
        from .gan import GanConfig, run_train

        steps.append(("adapt", run_adapt, AdaptConfig(out=str(root / "adapt"), mode=["source-only", "dann"],
                                                      epochs=2, data_root=cfg.mnist,
                                                      backgrounds=cfg.backgrounds, **common)))
        steps.append(("gan", run_train, GanConfig(out=str(root / "gan"), data_root=cfg.mnist, epochs=1, **common)))
    return steps
