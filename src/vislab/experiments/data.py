"""``vislab data fetch NAME``: download a dataset into vislab's cache (or ``--dest``)."""
from __future__ import annotations

import importlib

from ..errors import UserError
from ..io import writing

# name -> (function "module:attr" taking dest, one-line description)
DATASETS = {
    "mnist": ("vislab.data.mnist:fetch_mnist", "MNIST (each file SHA-256-checked)"),
    "15scene": ("vislab.data.scenes:fetch_15scene", "15-Scene, the course archive (images content-checked)"),
    "bsds500": ("vislab.data.mnistm:fetch_bsds500",
                "BSDS500 training photos, backgrounds of MNIST-M (content-checked)"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="download datasets", description="download datasets")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", help="download one dataset",
                               description="download a dataset; " + "; ".join(
                                   f"{k}: {d}" for k, (_, d) in DATASETS.items()))
    fetch.add_argument("name", choices=list(DATASETS), help="which dataset")
    fetch.add_argument("--dest", metavar="DIR", default=None,
                       help="where to put it (default: $VISLAB_CACHE or ~/.cache/vislab)")
    fetch.set_defaults(handler=lambda args: fetch_dataset(args.name, args.dest))


def fetch_dataset(name: str, dest: str | None = None) -> int:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    module, attr = DATASETS[name][0].split(":")
    with writing(dest or "$VISLAB_CACHE", "--dest"):  # a read-only or full destination: one line naming it
        path = getattr(importlib.import_module(module), attr)(dest)
    print(path)
    return 0
